import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Testing
import UMSAPI
@testable import UMSCoordination
import UMSModel
import UMSOS
import UMSMigration

@Suite("Incoming migrations")
struct IncomingMigrationTests {
    func coordinator(timeout: Duration) throws -> (Coordinator, InMemoryOrchestrator, String) {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("ums-in-\(UUID().uuidString)").path
        let orchestrator = InMemoryOrchestrator()
        let coordinator = try Coordinator(
            name: "b", url: "http://127.0.0.1:2", orchestrator: orchestrator, approaches: [InMemoryApproach(orchestrator: orchestrator)],
            stateDirectory: state, advertiseHost: "127.0.0.1", http: HTTPClient.shared, peerTokens: [:],
            logger: Logger(label: "test"), incomingTimeout: timeout
        )
        return (coordinator, orchestrator, state)
    }

    func request(_ id: String) -> PrepareRequest {
        PrepareRequest(id: id, approach: .orchestrator,
                       specification: Specification(name: "svc-\(id)", image: .init(digest: "sha256:" + String(repeating: "1", count: 64)), command: ["/x"]),
                       source: SystemRef(name: "a", url: "http://127.0.0.1:1"))
    }

    @Test("a source that goes silent before the restore: what was prepared is removed")
    func expires() async throws {
        let (coordinator, orchestrator, state) = try coordinator(timeout: .milliseconds(100))
        defer { try? FileManager.default.removeItem(atPath: state) }
        try await withBackground(coordinator) {
            _ = try await coordinator.incoming.prepare(request("m-1"))
            #expect(try await orchestrator.list().map(\.name) == ["svc-m-1"])
            // The sweep runs every 50 ms; a loaded machine may take longer than the timeout.
            for _ in 0..<100 where try await !orchestrator.list().isEmpty {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        #expect(try await orchestrator.list().isEmpty)
        await #expect(throws: UMSError.self) { try await coordinator.incoming.restore("m-1", PeerRestoreRequest(postCopySource: nil)) }
    }

    @Test("once the restore has begun, only the source decides")
    func restoredDoesNotExpire() async throws {
        let (coordinator, orchestrator, state) = try coordinator(timeout: .milliseconds(100))
        defer { try? FileManager.default.removeItem(atPath: state) }
        _ = try await coordinator.incoming.prepare(request("m-2"))
        _ = try await coordinator.incoming.restore("m-2", PeerRestoreRequest(postCopySource: nil))
        try await withBackground(coordinator) { try await Task.sleep(for: .milliseconds(400)) }
        #expect(try await orchestrator.list().map(\.name) == ["svc-m-2"])
        _ = try await coordinator.incoming.commit("m-2")
        #expect(try await orchestrator.inspect("svc-m-2").migratingIn == nil)
    }

    @Test("a repeated prepare of the same migration gets the first answer; another container under the same id is refused")
    func duplicate() async throws {
        let (coordinator, orchestrator, state) = try coordinator(timeout: .seconds(60))
        defer { try? FileManager.default.removeItem(atPath: state) }
        let first = try await coordinator.incoming.prepare(request("m-3"))
        let again = try await coordinator.incoming.prepare(request("m-3"))
        #expect(again == first)
        #expect(try await orchestrator.list().count == 1, "nothing created twice")
        var other = request("m-3")
        other.specification.command = ["/y"]
        let error = await #expect(throws: UMSError.self) { try await coordinator.incoming.prepare(other) }
        #expect(error?.code == .exists)
    }

    @Test("each request of the source is allowed only in its state: commit before the restore, a restore after an abort, files after the restore are refused")
    func wrongState() async throws {
        let (coordinator, _, state) = try coordinator(timeout: .seconds(60))
        defer { try? FileManager.default.removeItem(atPath: state) }
        _ = try await coordinator.incoming.prepare(request("m-4"))
        #expect(await coordinator.incoming.state("m-4") == .prepared)
        let early = await #expect(throws: UMSError.self) { try await coordinator.incoming.commit("m-4") }
        #expect(early?.code == .invalidState)
        _ = try await coordinator.incoming.restore("m-4", PeerRestoreRequest(postCopySource: nil))
        #expect(await coordinator.incoming.state("m-4") == .restored)
        let late = await #expect(throws: UMSError.self) {
            try await coordinator.incoming.receiveFiles("m-4", part: .images, noChunks())
        }
        #expect(late?.code == .invalidState)
        // Repeated calls get the same answer (a source that retries after a cut link).
        let first = try await coordinator.incoming.status("m-4")
        let again = try await coordinator.incoming.restore("m-4", PeerRestoreRequest(postCopySource: nil))
        #expect(again.container.name == "svc-m-4")
        #expect(try await coordinator.incoming.status("m-4") == first)
        try await coordinator.incoming.abort("m-4")
        #expect(await coordinator.incoming.state("m-4") == .aborted)
        try await coordinator.incoming.abort("m-4")
        let gone = await #expect(throws: UMSError.self) { try await coordinator.incoming.restore("m-4", PeerRestoreRequest(postCopySource: nil)) }
        #expect(gone?.code == .invalidState)
        let unknown = await #expect(throws: UMSError.self) { try await coordinator.incoming.restore("m-404", PeerRestoreRequest(postCopySource: nil)) }
        #expect(unknown?.code == .notFound)
    }

    @Test("an abort that comes during a restore waits for it, then undoes it: nothing is left, no stale record")
    func abortDuringRestore() async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("ums-in-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let orchestrator = InMemoryOrchestrator()
        let coordinator = try Coordinator(
            name: "b", url: "http://127.0.0.1:2", orchestrator: orchestrator,
            approaches: [InMemoryApproach(orchestrator: orchestrator, restoreDelay: .milliseconds(400))],
            stateDirectory: state, advertiseHost: "127.0.0.1", http: HTTPClient.shared, peerTokens: [:], logger: Logger(label: "test")
        )
        _ = try await coordinator.incoming.prepare(request("m-5"))
        let restore = Task { try await coordinator.incoming.restore("m-5", PeerRestoreRequest(postCopySource: nil)) }
        try await Task.sleep(for: .milliseconds(100))
        try await coordinator.incoming.abort("m-5")
        let restored = try await restore.value
        #expect(restored.container.name == "svc-m-5", "the restore ran to its end before the abort")
        #expect(await coordinator.incoming.state("m-5") == .aborted)
        #expect(try await orchestrator.list().isEmpty, "the abort undid what the restore made")
    }

    @Test("a destination restarted with migrations in every state: the journal brings back each — removed before the restore, kept once restored — and a later call gets the journal's answer")
    func restart() async throws {
        let (before, orchestrator, state) = try coordinator(timeout: .seconds(60))
        defer { try? FileManager.default.removeItem(atPath: state) }
        // m-p prepared, m-r receiving, m-s restored, m-c committed, m-a aborted.
        for id in ["m-p", "m-r", "m-s", "m-c", "m-a"] { _ = try await before.incoming.prepare(request(id)) }
        _ = try await before.incoming.receiveFiles("m-r", part: .images, noChunks())
        for id in ["m-s", "m-c"] { _ = try await before.incoming.restore(id, PeerRestoreRequest(postCopySource: nil)) }
        _ = try await before.incoming.commit("m-c")
        try await before.incoming.abort("m-a")
        #expect(FileSystem.exists("\(state)/incoming-journal/m-p.json"), "journaled")

        // The same engine, a new Coordinator on the same state directory (a crash and restart).
        let after = try Coordinator(
            name: "b", url: "http://127.0.0.1:2", orchestrator: orchestrator, approaches: [InMemoryApproach(orchestrator: orchestrator)],
            stateDirectory: state, advertiseHost: "127.0.0.1", http: HTTPClient.shared, peerTokens: [:], logger: Logger(label: "test")
        )
        #expect(await after.incoming.state("m-p") == .prepared, "read back from the journal")
        await after.recover()
        #expect(await after.incoming.state("m-p") == .aborted)
        #expect(await after.incoming.state("m-r") == .aborted)
        #expect(await after.incoming.state("m-s") == .restored, "a restored service waits for the source")
        #expect(await after.incoming.state("m-c") == .committed)
        #expect(try await orchestrator.list().map(\.name).sorted() == ["svc-m-c", "svc-m-s"], "nothing restored was prepared only")
        #expect(try await orchestrator.inspect("svc-m-s").migratingIn == "m-s", "still the source's to decide")
        #expect(!FileSystem.exists("\(state)/incoming/m-p"), "the images of removed migrations are gone")
        // The source asks, then decides; repeated calls answer the same.
        #expect(try await after.incoming.status("m-s").state == .restored)
        _ = try await after.incoming.commit("m-s")
        _ = try await after.incoming.commit("m-s")
        #expect(try await orchestrator.inspect("svc-m-s").migratingIn == nil)
        try await after.incoming.abort("m-p")
        let late = await #expect(throws: UMSError.self) { try await after.incoming.abort("m-c") }
        #expect(late?.code == .invalidState, "a committed service is never aborted")
    }
}
