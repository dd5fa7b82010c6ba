import Foundation
import Logging
import Testing
import UMSModel
import UMSOS

/// A container's network removed while something still holds its namespace (the closing sockets
/// of a service killed with open connections do, for up to a minute) must not leave its link
/// behind: the next container given the same slot makes a link of the same name.
@Suite("Container networks: a slot freed while its namespace lives on", .serialized, .enabled(if: getuid() == 0))
struct NetworkLeftoverTests {
    /// Runs every command inside one network namespace the test made, so that the links,
    /// addresses and rules it makes never touch the machine's own (`nsenter`, not `ip netns
    /// exec`: that one's mount namespace would keep the container's namespace file to itself).
    struct Inside: CommandRunner {
        let base: SubprocessRunner
        let namespace: String

        func run(_ command: Command) async throws -> CommandResult {
            var inside = command
            inside.executable = "nsenter"
            inside.arguments = ["--net=/run/netns/\(namespace)", command.executable] + command.arguments
            return try await base.run(inside)
        }
    }

    @Test("a network removed while a process still holds its namespace takes its link with it: the same slot's network is made again at once")
    func slotReusedWhileTheOldNamespaceLives() async throws {
        let base = SubprocessRunner(logger: Logger(label: "network-leftover-test"))
        let outer = "umsnl-\(UUID().uuidString.prefix(8).lowercased())"
        try await base.execute("ip", ["netns", "add", outer])
        let manager = NetworkManager(runner: Inside(base: base, namespace: outer))
        let network = ContainerNetwork.forSlot(7, system: "nl\(outer.suffix(4))", container: "svc")
        var holder: Process?
        defer {
            if let holder, holder.isRunning { kill(holder.processIdentifier, SIGKILL) }
        }
        do {
            try await manager.create(network, ports: [])
            // Something holds the container's namespace past its removal.
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            process.arguments = ["--net=\(network.namespacePath)", "/bin/sleep", "30"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            holder = process
            try await Task.sleep(for: .milliseconds(200))
            await manager.remove(network, ports: [])
            #expect(try await base.output("ip", ["-n", outer, "-br", "link"]).contains(network.hostInterface) == false, "its link went with it")
            try await manager.create(network, ports: [])
            await manager.remove(network, ports: [])
        } catch {
            await manager.remove(network, ports: [])
            _ = try? await base.run(Command("ip", ["netns", "del", outer]))
            throw error
        }
        _ = try? await base.run(Command("ip", ["netns", "del", outer]))
    }
}
