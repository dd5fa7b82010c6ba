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

    @Test("the same migration cannot be prepared twice")
    func duplicate() async throws {
        let (coordinator, _, state) = try coordinator(timeout: .seconds(60))
        defer { try? FileManager.default.removeItem(atPath: state) }
        _ = try await coordinator.incoming.prepare(request("m-3"))
        let error = await #expect(throws: UMSError.self) { try await coordinator.incoming.prepare(request("m-3")) }
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
        let again = await #expect(throws: UMSError.self) { try await coordinator.incoming.restore("m-4", PeerRestoreRequest(postCopySource: nil)) }
        #expect(again?.code == .invalidState)
        try await coordinator.incoming.abort("m-4")
        #expect(await coordinator.incoming.state("m-4") == nil)
        let gone = await #expect(throws: UMSError.self) { try await coordinator.incoming.restore("m-4", PeerRestoreRequest(postCopySource: nil)) }
        #expect(gone?.code == .notFound)
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
        #expect(await coordinator.incoming.state("m-5") == nil)
        #expect(try await orchestrator.list().isEmpty, "the abort undid what the restore made")
    }
}
