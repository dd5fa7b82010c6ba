import Foundation
import Testing

/// The agent's control line (`agent/ums-agent.c`): what a Coordinator sends it goes into CRIU's
/// and runc's command lines, so every argument is checked as it is parsed. The real agent, run as
/// a plain process here (run mode, its service `sleep`), answers each malformed command with an
/// error before it acts on anything.
@Suite("The agent as a plain process: its control line refuses what it cannot parse; its PID floor", .serialized, .enabled(if: interopAgent != nil, "no gcc to build the agent (run scripts/setup)"))
struct AgentControlTests {
    static let token = "control-test-token"

    /// Starts the agent on a free port (`launcher`: a command that runs it, e.g. in namespaces of
    /// its own), runs `body`, and ends it.
    func withAgent(launcher: [String] = [], _ body: (Int) async throws -> Void) async throws {
        let agent = try #require(interopAgent)
        let port = Int.random(in: 29100...29899)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: launcher.first ?? agent)
        process.arguments = (launcher.isEmpty ? [] : Array(launcher.dropFirst()) + [agent]) + ["run", "--", "/bin/sleep", "60"]
        process.environment = ["UMS_AGENT_TOKEN": Self.token, "UMS_AGENT_PORT": String(port), "PATH": "/usr/bin:/bin"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            // A launcher waits for its child whatever it is sent but SIGKILL; its child (the
            // agent, the namespace's first process) is then killed with it (--kill-child).
            if launcher.isEmpty { process.terminate() } else { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        var ready = false
        for _ in 0..<100 where !ready {
            ready = await send("STATUS", port: port).hasPrefix("OK ")
            if !ready { try await Task.sleep(for: .milliseconds(50)) }
        }
        try #require(ready, "the agent answers STATUS")
        try await body(port)
    }

    /// One command, one answer line (bash's /dev/tcp: no client of ours in between).
    func send(_ command: String, port: Int) async -> String {
        let result = await offThePool {
            StreamInteropTests.run(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/$1 && printf '%s\\n' \"$2\" >&3 && head -n1 <&3", "_", String(port), "\(Self.token) \(command)"])
        }
        return String(decoding: result.output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("in a PID namespace of its own the service starts above the agent's PID floor (1000)")
    func pidFloor() async throws {
        // A container's fresh namespace, as at a destination: low PIDs are left to the agent's
        // helpers, so a later restore of this service never collides with them.
        try await withAgent(launcher: ["/usr/bin/unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]) { port in
            let status = await send("STATUS", port: port)
            let pid = status.split(separator: " ").first { $0.hasPrefix("pid=") }.flatMap { Int($0.dropFirst(4)) }
            #expect((pid ?? 0) >= 1000, "\(status)")
        }
    }

    @Test("post-copy's, compression's and carried connections' options: malformed ones are refused, well-formed ones reach the command")
    func options() async throws {
        try await withAgent { port in
            for bad in [
                "RESTORE lazy=198.18.0.1:0", "RESTORE lazy=198.18.0.1:65536", "RESTORE lazy=example.com:80", "RESTORE lazy=198.18.0.1:80;reboot",
                "RESTORE lazy=198.18.0.1", "RESTORE 10 20", "RESTORE 5 lazy=198.18.0.1:80 lazy=198.18.0.1:81", "RESTORE lazy=-1.2.3.4:80",
                // Carried connections: the nested container's (host mode) only; a service-level
                // agent's unprivileged CRIU cannot repair TCP.
                "RESTORE tcp=1", "RESTORE 5 tcp=1", "RESTORE tcp=2", "RESTORE tcp=1 tcp=1", "RESTORE 5 tcp=", "RESTORE 5 lazy=198.18.0.1:80 tcp=1 x",
            ] {
                let answer = await send(bad, port: port)
                #expect(answer.hasPrefix("ERR invalid RESTORE") || answer.hasPrefix("ERR unknown command"), "\(bad) → \(answer)")
            }
            for bad in [
                "DUMP 127.0.0.1 9 s lazy=0", "DUMP 127.0.0.1 9 s lazy=70000", "DUMP 127.0.0.1 9 s lazy=1 lazy=2",
                "DUMP 127.0.0.1 9 s compress=brotli", "DUMP 127.0.0.1 9 s lazy=--port", "DUMP 127.0.0.1 9 s compress=zstd compress=lz4",
                "DUMP 127.0.0.1 9 s tcp=1", "DUMP 127.0.0.1 9 s tcp=0", "DUMP 127.0.0.1 9 s tcp=yes", "DUMP 127.0.0.1 9 s compress=off tcp=1 lazy=5",
            ] {
                let answer = await send(bad, port: port)
                #expect(answer.hasPrefix("ERR invalid DUMP option"), "\(bad) → \(answer)")
            }
            for bad in ["PAGES 0", "PAGES 1e9", "PAGES 5 6", "PAUSE now", "PAUSE 1 2"] {
                let answer = await send(bad, port: port)
                #expect(answer.hasPrefix("ERR unknown command"), "\(bad) → \(answer)")
            }
            // Well-formed: a run-mode agent is not waiting for a checkpoint, and has no pages to fetch.
            #expect(await send("RESTORE 5 lazy=198.18.0.1:27123", port: port).hasPrefix("ERR cannot restore"))
            #expect(await send("PAGES", port: port) == "OK bytes=0")
            // PAUSE is a nested service's (host mode); this agent runs its service itself.
            #expect(await send("PAUSE", port: port).hasPrefix("ERR cannot pause: PAUSE is for a nested service"))
            #expect(await send("STATUS", port: port).contains("version=5"))
        }
    }
}
