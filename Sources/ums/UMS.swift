import ArgumentParser

/// `ums`: the command line of UMS. Each command is a small struct in its own file that talks to
/// one Coordinator through `UMSAPI.CoordinatorClient`.
@main
struct UMS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ums",
        abstract: "Run containers on a UMS system and migrate them live to another system.",
        discussion: """
            The Coordinator is given by --coordinator URL or UMS_COORDINATOR. Its token comes from \
            --token-file, UMS_TOKEN, or the credentials file (UMS_CREDENTIALS, default \
            ~/.config/ums/credentials: lines of 'URL TOKEN [CAFILE]', which scripts/testbed fills). An https \
            Coordinator is verified against --ca, UMS_CA, or the CAFILE of its credentials line.
            """,
        version: "0.1.0",
        groupedSubcommands: [
            CommandGroup(name: "Containers", subcommands: [Run.self, Ps.self, Rm.self, Image.self]),
            CommandGroup(name: "Migration", subcommands: [Migrate.self, Migrations.self, Endpoints.self, Frontmen.self]),
            CommandGroup(name: "System", subcommands: [Info.self, Trust.self]),
        ]
    )

    // Declared here too so that `ums --coordinator URL <command>` parses: subcommands read the
    // same group, wherever on the command line its flags stand.
    @OptionGroup var coordinator: CoordinatorOptions
}
