import Foundation
import Testing
import UMSOS

/// The start-up sweep finds processes by a directory of the Coordinator's own, and only those.
@Suite("Process sweep")
struct ProcessSweepTests {
    @Test("a process working in a migration's directory (and its child) is found and ended; one of a migration still needed, and any other, is not")
    func sweep() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ums-sweep-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        for id in ["m-over", "m-live"] { try FileManager.default.createDirectory(atPath: "\(root)/incoming/\(id)", withIntermediateDirectories: true) }
        // Spawned from a thread of their own (the test's cooperative threads stay free).
        let (over, live, other) = try await withCheckedThrowingContinuation { continuation in
            Thread {
                do {
                    func start(_ arguments: [String], in directory: String? = nil) throws -> Process {
                        let process = Process()
                        process.executableURL = URL(fileURLWithPath: "/bin/sh")
                        process.arguments = arguments
                        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
                        try process.run()
                        return process
                    }
                    // Like runc with CRIU under it: the parent names the directory, the child does not.
                    let over = try start(["-c", "sleep 30 & wait", "sweep-test", "--image-path=\(root)/incoming/m-over/images"])
                    let live = try start(["-c", "sleep 30"], in: "\(root)/incoming/m-live")
                    let other = try start(["-c", "sleep 30"])
                    continuation.resume(returning: (over, live, other))
                } catch {
                    continuation.resume(throwing: error)
                }
            }.start()
        }
        defer { for process in [over, live, other] where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        try await Task.sleep(for: .milliseconds(300))
        let found = ProcessSweep.find(referring: ["\(root)/incoming/"], except: ["\(root)/incoming/m-live/"])
        #expect(found.contains(over.processIdentifier))
        #expect(found.count >= 2, "its child (sleep) goes with it: \(found)")
        #expect(!found.contains(live.processIdentifier), "a migration still needed keeps its processes")
        #expect(!found.contains(other.processIdentifier), "a process of anyone else's is never touched: \(found), other \(other.processIdentifier)")
        let killed = ProcessSweep.kill(referring: ["\(root)/incoming/"], except: ["\(root)/incoming/m-live/"])
        #expect(Set(killed) == Set(found))
        try await Task.sleep(for: .milliseconds(300))
        #expect(!over.isRunning)
        #expect(live.isRunning && other.isRunning)
    }
}
