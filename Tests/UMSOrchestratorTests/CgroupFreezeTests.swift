import Foundation
import Testing
import UMSOS

/// The orchestrator-level approach freezes a runc container through its cgroup's freezer itself
/// (not by starting `runc pause`): what it freezes must really stop, and thaw again.
@Suite("Cgroup freezer")
struct CgroupFreezeTests {
    @Test("a frozen cgroup's process makes no progress until thawed; a cgroup with no freezer is said so")
    func freezeStopsTheProcesses() async throws {
        let path = "/ums-freeze-test-\(UUID().uuidString.prefix(8))"
        let v1 = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/freezer/cgroup.procs")
        let directory = v1 ? "/sys/fs/cgroup/freezer\(path)" : "/sys/fs/cgroup\(path)"
        let thaw = v1 ? "echo THAWED > \(directory)/freezer.state" : "echo 0 > \(directory)/cgroup.freeze"
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ums-freeze-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        #expect(await Cgroups.freeze(path) == .noFreezer, "no such cgroup yet")

        // A writer in a cgroup of its own: a line every 10 ms. Started from a thread of its own
        // (the test's cooperative threads stay free), not put in the background by a shell.
        try await sh("mkdir -p \(directory)")
        let writer: Process = try await withCheckedThrowingContinuation { continuation in
            Thread {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/bin/sh")
                process.arguments = ["-c", "echo $$ > \(directory)/cgroup.procs && while :; do echo x >> \(file); sleep 0.01; done"]
                do { try process.run(); continuation.resume(returning: process) } catch { continuation.resume(throwing: error) }
            }.start()
        }
        defer {
            // Thawed first: a frozen process cannot die.
            try? (v1 ? "THAWED" : "0").write(toFile: v1 ? "\(directory)/freezer.state" : "\(directory)/cgroup.freeze", atomically: false, encoding: .utf8)
            if writer.isRunning { kill(writer.processIdentifier, SIGKILL) }
        }
        func lines() -> Int { ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").count }
        try await Task.sleep(for: .milliseconds(200))
        #expect(lines() > 0, "the writer runs")

        #expect(await Cgroups.freeze(path) == .frozen)
        let frozenAt = lines()
        try await Task.sleep(for: .milliseconds(300))
        #expect(lines() == frozenAt, "nothing written while frozen")

        try await sh(thaw)
        try await Task.sleep(for: .milliseconds(300))
        #expect(lines() > frozenAt, "it goes on once thawed")

        kill(writer.processIdentifier, SIGKILL)
        // Its last `sleep` ends within 10 ms; then the cgroup can go.
        try await sh("for i in $(seq 50); do rmdir \(directory) 2>/dev/null && exit 0; sleep 0.05; done; exit 1")
    }

    @Test("the process count is read from the cgroup and those below it (as runc ps lists them)")
    func processCount() async throws {
        let path = "/ums-count-test-\(UUID().uuidString.prefix(8))"
        let v1 = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/freezer/cgroup.procs")
        let directory = v1 ? "/sys/fs/cgroup/freezer\(path)" : "/sys/fs/cgroup\(path)"
        #expect(Cgroups.processCount(path) == nil, "no such cgroup")
        try await sh("mkdir -p \(directory)/inner")
        let sleepers: [Process] = try await withCheckedThrowingContinuation { continuation in
            Thread {
                do {
                    let sleepers = try [directory, "\(directory)/inner"].map { cgroup in
                        let process = Process()
                        process.executableURL = URL(fileURLWithPath: "/bin/sh")
                        process.arguments = ["-c", "echo $$ > \(cgroup)/cgroup.procs && exec sleep 30"]
                        try process.run()
                        return process
                    }
                    continuation.resume(returning: sleepers)
                } catch { continuation.resume(throwing: error) }
            }.start()
        }
        defer { for sleeper in sleepers where sleeper.isRunning { kill(sleeper.processIdentifier, SIGKILL) } }
        try await Task.sleep(for: .milliseconds(200))
        #expect(Cgroups.processCount(path) == 2)
        #expect(Cgroups.processCount("\(path)/inner") == 1)
        for sleeper in sleepers { kill(sleeper.processIdentifier, SIGKILL) }
        try await sh("for i in $(seq 50); do rmdir \(directory)/inner \(directory) 2>/dev/null && exit 0; sleep 0.05; done; exit 1")
    }
}
