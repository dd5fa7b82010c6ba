import ArgumentParser
import Foundation
import Logging
import UMSImage
import UMSModel
import UMSOS

struct Image: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prepare root filesystems for migration.",
        subcommands: [Migratable.self]
    )
}

struct Migratable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a root filesystem migratable: add the UMS checkpoint agent and CRIU, with the agent as entrypoint.",
        discussion: """
            The result runs like the original: `ums run NAME --rootfs OUT -- CMD ...` starts CMD behind the agent \
            (`/.ums/ums-agent run -- CMD ...`), with CAP_CHECKPOINT_RESTORE and no seccomp filter, and the \
            Coordinator picks the service-level approach for it. Works locally on directories; nothing is \
            pulled. See docs/service-level.md.
            Example: ums image migratable /var/tmp/ums/rootfs/counter /var/tmp/ums/rootfs/counter-migratable
            """
    )

    @Argument(help: "The root filesystem to start from (a directory).")
    var source: String

    @Argument(help: "Where to write the migratable root filesystem (a new directory).")
    var output: String

    @Option(help: "The static ums-agent executable (default: next to this ums executable).")
    var agent: String?

    @Option(help: "The CRIU tree to carry (usr/sbin/criu with its loader and libraries).")
    var criu = "/opt/ums/criu"

    @Flag(help: "Replace OUTPUT if it exists.")
    var force = false

    @Flag(help: "Print the image's manifest as JSON.")
    var json = false

    func run() async throws {
        let agentPath = agent ?? Self.defaultAgent()
        do {
            let manifest = try await MigratableImage.make(
                from: Self.absolute(source), to: Self.absolute(output), agent: Self.absolute(agentPath), criu: Self.absolute(criu),
                replace: force, runner: SubprocessRunner(logger: Logger(label: "ums"))
            )
            if json { return try Output.json(manifest) }
            print("\(output) is migratable: entrypoint \(manifest.entrypoint.joined(separator: " ")) CMD..., agent port \(manifest.agentPort)")
        } catch {
            throw fail(error)
        }
    }

    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    static func defaultAgent() -> String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("ums-agent").path
    }
}
