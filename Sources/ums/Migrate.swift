import ArgumentParser
import Foundation
import UMSAPI
import UMSModel

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Migrate a running container live to another system.",
        discussion: """
            Shows each step of the three phases as it happens (on a terminal), then the record. \
            Exits 0 only when the migration completed; a failed migration has been rolled back \
            and the container runs on the source as before.
            """
    )

    @OptionGroup var coordinator: CoordinatorOptions

    @Argument(help: "The container to move.")
    var name: String

    @Option(help: "The destination Coordinator's URL.")
    var to: String

    @Option(help: "auto, orchestrator, service or container.")
    var approach: String = "auto"

    @Option(help: ArgumentHelp(
        "stop-and-copy or post-copy.",
        discussion: "post-copy restores at the destination before the memory pages have crossed: downtime stops growing with memory, but until the last page arrives the service needs both systems and the link."
    ))
    var mode: String = TransferMode.stopAndCopy.rawValue

    @Option(name: .customLong("to-token-file"), help: "The destination's token, if the source has none configured for it.")
    var toTokenFile: String?

    @Option(help: ArgumentHelp(
        "forward or redirect.",
        discussion: "Once the destination confirms, the source's Frontman forwards HTTP requests there (default) or answers them 307 with the new location."
    ))
    var frontman: String = FrontmanMode.forward.rawValue

    @Option(help: ArgumentHelp(
        "copy or skip.",
        discussion: "copy (default): named volumes and bind-mounted host directories move with the service — the bulk while it still runs, what changed after the freeze — and are removed at the source once it runs at the destination. skip: they stay where they are; the destination mounts its own volumes of the same names (made empty when missing) and host directories that must exist there."
    ))
    var volumes: String = VolumeHandling.copy.rawValue

    @Option(help: ArgumentHelp(
        "auto, carry or close.",
        discussion: "What happens to TCP connections established before the migration. carry: they go on over the same connection at the destination (the service keeps its address; both systems must share a migration network — admission migrationNetwork — and the approach is orchestrator- or container-level on runc, stop-and-copy), or the migration is refused before anything freezes. close: they are cut and their clients reconnect. auto (default): carried when possible, closed otherwise; the record and --dry-run say which and why."
    ))
    var connections: String = ConnectionHandling.auto.rawValue

    @Option(help: ArgumentHelp(
        "auto, off, zstd or lz4.",
        discussion: "How the checkpoint images cross (orchestrator-level; the agents stream their own). Whole zero pages never cross, whatever this says. auto (default): zstd at its fast level where a run of pages shrinks by a tenth or more, judged on a 64 KiB sample first; random or already compressed data goes as it is. zstd, lz4: that codec on every chunk, kept where smaller. off: no compression. The record's images line shows the images' size and what crossed."
    ))
    var compress: String = ImageCompression.auto.rawValue

    @Option(help: ArgumentHelp(
        "Where the destination's cluster may place the service: KEY==VALUE or KEY!=VALUE (repeatable).",
        discussion: "For a destination that is a cluster (orchestrator swarm): Swarm placement constraints such as node.hostname==worker-2 or node.labels.zone==edge. The source's own placement names its nodes and does not travel. A single-host destination ignores it."
    ))
    var placement: [String] = []

    @Flag(help: "Print the final migration record as JSON.")
    var json = false

    @Flag(help: "Return once the migration is accepted; follow it with `ums migrations ID`.")
    var detach = false

    @Flag(name: .customLong("dry-run"), help: "Show which approach would be used and why, without migrating; exit 1 if infeasible.")
    var dryRun = false

    func validate() throws {
        guard ApproachRequest(rawValue: approach) != nil else {
            throw ValidationError("unknown approach '\(approach)': expected auto, orchestrator, service or container")
        }
        guard TransferMode(rawValue: mode) != nil else {
            throw ValidationError("unknown mode '\(mode)': expected stop-and-copy or post-copy")
        }
        guard FrontmanMode(rawValue: frontman) != nil else {
            throw ValidationError("unknown frontman mode '\(frontman)': expected forward or redirect")
        }
        guard VolumeHandling(rawValue: volumes) != nil else {
            throw ValidationError("unknown volume handling '\(volumes)': expected copy or skip")
        }
        guard ConnectionHandling(rawValue: connections) != nil else {
            throw ValidationError("unknown connection handling '\(connections)': expected auto, carry or close")
        }
        guard ImageCompression(rawValue: compress) != nil else {
            throw ValidationError("unknown compression '\(compress)': expected auto, off, zstd or lz4")
        }
        for constraint in placement {
            do { try PlacementConstraint.validate(constraint) } catch { throw ValidationError(error.message) }
        }
    }

    func run() async throws {
        do {
            let client = try coordinator.client()
            let destinationToken = try toTokenFile.map(Credentials.read) ?? Credentials.lookUp(to.hasSuffix("/") ? String(to.dropLast()) : to)
            if dryRun {
                let plan = try await client.plan(MigrateRequest(
                    container: name, destination: to, approach: ApproachRequest(rawValue: approach), destinationToken: destinationToken,
                    mode: TransferMode(rawValue: mode), volumes: VolumeHandling(rawValue: volumes), connections: ConnectionHandling(rawValue: connections),
                    compress: ImageCompression(rawValue: compress), placement: placement.isEmpty ? nil : placement
                ))
                if json {
                    try Output.json(plan)
                } else {
                    print("\(plan.container): \(plan.source.name) → \(plan.destination.name), requested \(plan.requestedApproach), \(plan.mode.rawValue)")
                    Output.table(["APPROACH", "FEASIBLE", "REASON"], plan.verdicts.map {
                        [$0.approach.rawValue + ($0.approach == plan.approach ? " (chosen)" : ""), $0.feasible ? "yes" : "no", $0.reason]
                    })
                    if let infeasible = plan.infeasible { print("infeasible: \(infeasible)") }
                    if let admission = plan.admission { print("destination's admission policy: \(admission)") }
                    if let carried = plan.connections { print("connections: \(carried.mode == .carried ? "carried" : "closed") — \(carried.reason)") }
                    if let images = plan.images { print("images: \(images)") }
                }
                if plan.approach == nil || (plan.admission.map { $0 != "admitted" } ?? false) { throw ExitCode(1) }
                return
            }
            var record = try await client.migrate(MigrateRequest(
                container: name, destination: to, approach: ApproachRequest(rawValue: approach), destinationToken: destinationToken,
                mode: TransferMode(rawValue: mode), frontman: FrontmanMode(rawValue: frontman), volumes: VolumeHandling(rawValue: volumes),
                connections: ConnectionHandling(rawValue: connections), compress: ImageCompression(rawValue: compress),
                placement: placement.isEmpty ? nil : placement
            ))
            if !detach {
                record = try await follow(record, client: client)
            }
            if json {
                try Output.json(record)
            } else {
                Migrations.describe(record)
            }
            if !detach, record.status != .completed { throw ExitCode(1) }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw fail(error)
        }
    }

    /// Polls the record until it is final, printing each new event on a terminal.
    func follow(_ initial: MigrationRecord, client: CoordinatorClient) async throws -> MigrationRecord {
        let live = isatty(STDERR_FILENO) == 1
        var shown = 0
        var record = initial
        let started = initial.startedAt
        while true {
            if live {
                for event in record.events.dropFirst(shown) {
                    let offset = String(format: "%7.3fs", event.at.timeIntervalSince(started))
                    FileHandle.standardError.write(Data("\(offset)  \(event.message)\n".utf8))
                }
            }
            shown = record.events.count
            if record.status.isFinal || record.status == .awaitingPeer { return record }
            try await Task.sleep(for: .milliseconds(50))
            record = try await client.migration(record.id)
        }
    }
}

struct Migrations: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List migrations this system drove, or show one; decide one whose peer is gone.",
        subcommands: [Show.self, Resolve.self, Incoming.self], defaultSubcommand: Show.self
    )

    static func describe(_ record: MigrationRecord) { Show.describe(record) }
}

extension Migrations {
struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "List migrations this system drove (as the source), or show one.")

    @OptionGroup var coordinator: CoordinatorOptions

    @Argument(help: "A migration id.")
    var id: String?

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        do {
            let client = try coordinator.client()
            if let id {
                let record = try await client.migration(id)
                if json { return try Output.json(record) }
                Self.describe(record)
                return
            }
            let records = try await client.migrations()
            if json { return try Output.json(records) }
            Output.table(
                ["ID", "CONTAINER", "APPROACH", "TO", "STATUS", "TOTAL", "DOWNTIME"],
                records.map {
                    [$0.id, $0.container, $0.approach?.rawValue ?? "-", $0.destination.name.isEmpty ? $0.destination.url : $0.destination.name,
                     $0.status.rawValue, Output.seconds($0.durations.total), Output.seconds($0.downtime)]
                }
            )
        } catch {
            throw fail(error)
        }
    }

    static func describe(_ record: MigrationRecord) {
        let d = record.durations
        print("""
            migration     \(record.id)
            container     \(record.container)
            approach      \(record.approach?.rawValue ?? "-") (requested \(record.requestedApproach)), \(record.mode.rawValue)
            from → to     \(record.source.name) (\(record.source.url)) → \(record.destination.name) (\(record.destination.url))
            status        \(record.status.rawValue)\(record.step.map { " at \($0.rawValue)" } ?? "")
            endpoint      \(record.endpoints.isEmpty ? "-" : record.endpoints.joined(separator: ", "))
            bytes moved   \(record.bytesMoved)
            steps         pre-migration \(Output.seconds(d.preMigration)), checkpoint \(Output.seconds(d.checkpoint)), transfer \(Output.seconds(d.transfer)), restore \(Output.seconds(d.restore)), post-migration \(Output.seconds(d.postMigration))
            total         \(Output.seconds(d.total))
            downtime      \(Output.seconds(record.downtime))
            """)
        if let connections = record.connections {
            let counts = [
                connections.carried.map { "\($0) carried" }, connections.closed.map { "\($0) closed" }, connections.held.map { "\($0) held" },
                connections.closedAtLinger.map { "\($0) closed at the linger's end" },
            ].compactMap { $0 }
            print("connections   \(connections.mode.rawValue)\(counts.isEmpty ? "" : " (\(counts.joined(separator: ", ")))") — \(connections.reason)")
        }
        if let images = record.images {
            let mib = { (bytes: Int64) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
            print("images        \(mib(images.rawBytes)) crossed as \(mib(images.wireBytes)) (compression \(images.compression.rawValue); \(mib(images.zeroBytes)) in zero pages not sent, \(mib(images.compressedBytes)) compressed)")
        }
        if let left = record.sourceLeft {
            print("source        \(left)")
        }
        if let left = record.destinationLeft {
            print("destination   \(left)")
        }
        if let error = record.error {
            print("error         \(error)")
        }
    }
}

struct Resolve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decide a migration whose peer is gone for good: keep the source's copy or the destination's.",
        discussion: """
            Run it on the system where the migration waits (status awaiting-peer at the source, an \
            incoming migration restored at the destination). It first prints what it will do; \
            nothing changes without --yes. If the other system holds a copy and cannot be reached, \
            resolve it there too, keeping the same side.
            """
    )

    @OptionGroup var coordinator: CoordinatorOptions

    @Argument(help: "The migration id.")
    var id: String

    @Option(help: "Which copy runs from now on: source or destination.")
    var keep: ResolveKeep

    @Flag(help: "Do it (without: only say what would be done).")
    var yes = false

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        do {
            let client = try coordinator.client()
            let answer = try await client.resolve(id, ResolveRequest(keep: keep, dryRun: !yes))
            if json { return try Output.json(answer) }
            print(answer.done ? "done (\(answer.side) side of \(answer.id)):" : "would do (\(answer.side) side of \(answer.id)); re-run with --yes to do it:")
            for action in answer.actions { print("  - \(action)") }
        } catch {
            throw fail(error)
        }
    }
}

struct Incoming: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List migrations this system received (as the destination), from its journal.")

    @OptionGroup var coordinator: CoordinatorOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        do {
            let records = try await coordinator.client().incoming()
            if json { return try Output.json(records) }
            Output.table(
                ["ID", "CONTAINER", "FROM", "STATE", "SETTLED", "REASON"],
                records.map { [$0.id, $0.specification.name, $0.source.name, $0.state.rawValue, $0.settled ? "yes" : "no", $0.reason ?? "-"] }
            )
        } catch {
            throw fail(error)
        }
    }
}
}

extension ResolveKeep: ExpressibleByArgument {}
