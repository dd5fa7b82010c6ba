import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Testing
import UMSAPI
@testable import UMSCoordination
import UMSMigration
import UMSModel
import UMSDecision
import UMSOS

/// What the source asked of the fake destination, in order.
enum PeerCall: String, Sendable, CaseIterable {
    case system, hasImage, sendImage, prepare, sendFiles, restore, commit, abort, status
}

/// A destination Coordinator that answers like a real one, fails the calls it is told to, and
/// remembers every call: the driver's branches without a second system, root, runc or CRIU.
actor FakePeer: PeerCoordinator {
    nonisolated let baseURL = "http://198.18.0.9:7000"
    var failing: Set<PeerCall>
    private(set) var calls: [PeerCall] = []
    /// What the fake destination's journal says (nil: no record), moved by the calls as a real
    /// one's is.
    var journal: IncomingState?

    init(failing: Set<PeerCall> = [], journal: IncomingState? = nil) {
        self.failing = failing
        self.journal = journal
    }

    func fail(_ calls: Set<PeerCall>) { failing = calls }
    func setJournal(_ state: IncomingState?) { journal = state }

    func call(_ call: PeerCall) throws {
        calls.append(call)
        if failing.contains(call) { throw UMSError(.unavailable, "failed to \(call.rawValue): the fake destination refuses") }
    }

    func system() async throws -> SystemInfo {
        try call(.system)
        let capabilities = OrchestratorCapabilities(orchestrator: .runc, runtimeVersion: "1.0", criuVersion: "4.2.1", canCheckpoint: true)
        return SystemInfo(name: "b", url: baseURL, version: UMSVersion.current, profile: SystemProfile(capabilities: capabilities, approaches: [.orchestrator]))
    }

    func hasImage(_ image: ImageReference) async throws -> Bool {
        try call(.hasImage)
        return true
    }

    func sendImage(_ image: ImageReference, produce: @escaping ChunkProducer) async throws -> UploadResponse {
        try call(.sendImage)
        try await produce { _ in }
        return UploadResponse(bytes: 0, digest: nil)
    }

    func prepare(_ body: PrepareRequest) async throws -> PrepareResponse {
        try call(.prepare)
        journal = .prepared
        return PrepareResponse(container: ContainerInfo(name: body.specification.name, state: .created, specification: body.specification, orchestrator: .runc))
    }

    func sendFiles(_ id: String, part: FilePart, produce: @escaping ChunkProducer) async throws -> UploadResponse {
        try call(.sendFiles)
        journal = .receiving
        try await produce { _ in }
        return UploadResponse(bytes: 1, digest: nil)
    }

    func sendVolume(_ id: String, volume: String, produce: @escaping ChunkProducer) async throws -> UploadResponse {
        try call(.sendFiles)
        try await produce { _ in }
        return UploadResponse(bytes: 1, digest: nil)
    }

    func sendBind(_ id: String, index: Int, produce: @escaping ChunkProducer) async throws -> UploadResponse {
        try call(.sendFiles)
        try await produce { _ in }
        return UploadResponse(bytes: 1, digest: nil)
    }

    func restore(_ id: String, _ body: PeerRestoreRequest) async throws -> RestoreResponse {
        try call(.restore)
        journal = .restored
        let specification = Specification(name: "svc", image: .init(digest: "sha256:" + String(repeating: "0", count: 64)), command: ["/x"])
        return RestoreResponse(container: ContainerInfo(
            name: "svc", state: .running, specification: specification, endpoints: ["198.18.0.9:8080"], orchestrator: .runc
        ))
    }

    func commit(_ id: String) async throws -> CommitResponse {
        try call(.commit)
        journal = .committed
        return CommitResponse(pageBytes: 0)
    }

    func abort(_ id: String) async throws {
        try call(.abort)
        if journal == .committed { throw UMSError(.invalidState, "failed to abort: it is committed") }
        if journal != nil { journal = .aborted }
    }

    func status(_ id: String) async throws -> IncomingStatus? {
        try call(.status)
        return journal.map { IncomingStatus(id: id, state: $0, settled: $0.isTerminal) }
    }
}

/// Every branch of the source's driver: a failure at each step (through the fault seam) and at
/// each call to the destination, and what the rollback then does — without root.
@Suite("Migration driver: every step × a failure there, against a fake destination")
struct MigrationDriverTests {
    struct Outcome {
        var record: MigrationRecord
        var peerCalls: [PeerCall]
        var approachCalls: [String]
        var source: ContainerInfo?
    }

    func migrate(
        faults: [FaultPoint: FaultAction] = [:], failing: Set<PeerCall> = [], deleteFailures: Int = 0, settle: Duration = .zero,
        until settled: @escaping @Sendable (MigrationRecord) -> Bool = { $0.sourceLeft == nil }
    ) async throws -> Outcome {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("ums-driver-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let orchestrator = InMemoryOrchestrator(["svc"])
        await orchestrator.failDeletes(deleteFailures)
        let approach = InMemoryApproach(orchestrator: orchestrator)
        let peer = FakePeer(failing: failing)
        let coordinator = try Coordinator(
            name: "a", url: "http://198.18.0.8:7000", orchestrator: orchestrator, approaches: [approach], stateDirectory: state,
            advertiseHost: "198.18.0.8", http: HTTPClient.shared, peerTokens: [:], logger: Logger(label: "test"),
            faults: ScheduledFaults(faults), peers: { _, _ in peer }
        )
        let record = try await withBackground(coordinator) {
            let accepted = try await coordinator.outgoing.migrate(MigrateRequest(container: "svc", destination: peer.baseURL))
            await coordinator.outgoing.drain()
            let record = try await coordinator.outgoing.record(accepted.id)
            if settle > .zero {
                // Background work (a source retried) has this long to finish.
                let deadline = ContinuousClock.now + settle
                while ContinuousClock.now < deadline, !settled(try await coordinator.outgoing.record(accepted.id)) {
                    try await Task.sleep(for: .milliseconds(100))
                }
                return try await coordinator.outgoing.record(accepted.id)
            }
            return record
        }
        return Outcome(
            record: record, peerCalls: await peer.calls, approachCalls: await approach.log.calls,
            source: try? await orchestrator.inspect("svc")
        )
    }

    @Test("without faults the migration completes: the source is deleted, nothing aborted or resumed")
    func completes() async throws {
        let outcome = try await migrate()
        #expect(outcome.record.status == .completed, "\(outcome.record.error?.description ?? "")")
        #expect(outcome.peerCalls == [.system, .hasImage, .prepare, .sendFiles, .sendFiles, .restore, .commit])
        #expect(outcome.approachCalls == ["freeze", "checkpoint"])
        #expect(outcome.source == nil, "the source container was deleted")
        #expect(outcome.record.endpoints == ["198.18.0.9:8080"])
    }

    @Test("a failure at a step up to confirming rolls back exactly what was done; after it, nothing is rolled back", arguments: MigrationStep.allCases)
    func failureAtStep(step: MigrationStep) async throws {
        let outcome = try await migrate(faults: [.source(step): .fail])
        let prepared = step > .creatingDestination
        let frozen = step > .lockingControl
        if step.canRollBack {
            #expect(outcome.record.status == .rolledBack, "\(step)")
            #expect(outcome.record.step == step)
            #expect(outcome.peerCalls.contains(.abort) == prepared, "the destination is asked to remove only what it prepared")
            #expect(outcome.approachCalls.contains("resume") == frozen, "the source is resumed only if it was frozen")
            let source = try #require(outcome.source, "the source container is never lost")
            #expect(source.migratingIn == nil, "the control lock is released")
        } else {
            // The service runs at the destination: resuming the source would run it twice.
            #expect(outcome.record.status == .failed, "\(step)")
            #expect(!outcome.peerCalls.contains(.abort))
            #expect(!outcome.approachCalls.contains("resume"))
            #expect(outcome.record.error?.message.contains("fault injected") == true)
        }
    }

    @Test("a destination that fails a call: rolled back, the destination cleaned up when it prepared, the source resumed when frozen",
          arguments: [PeerCall.system, .hasImage, .prepare, .sendFiles, .restore, .commit])
    func failingDestination(call: PeerCall) async throws {
        let outcome = try await migrate(failing: [call])
        #expect(outcome.record.status == .rolledBack, "\(call)")
        let prepared = [.sendFiles, .restore, .commit].contains(call)
        #expect(outcome.peerCalls.contains(.abort) == prepared)
        #expect(outcome.approachCalls.contains("resume") == prepared)
        #expect(outcome.source?.migratingIn == nil)
    }

    @Test("the destination cannot confirm it removed what it restored: the source stays frozen and locked (never twice) and awaits the peer; once it answers, its journal decides")
    func abortFailsAfterRestore() async throws {
        let outcome = try await migrate(failing: [.commit, .abort, .status])
        #expect(outcome.record.status == .awaitingPeer)
        #expect(!outcome.approachCalls.contains("resume"), "resuming could make the service run twice")
        #expect(outcome.source?.migratingIn != nil, "the lock stays until the destination answers")
        #expect(outcome.record.error?.message.contains("ums migrations resolve") == true)
    }

    @Test("the destination cannot confirm an abort before any restore: the source runs again (nothing can run there), the record says what is left")
    func abortFailsBeforeRestore() async throws {
        let outcome = try await migrate(failing: [.sendFiles, .abort], settle: .seconds(3), until: { $0.destinationLeft != nil })
        #expect(outcome.record.status == .rolledBack)
        #expect(outcome.approachCalls.contains("resume"))
        #expect(outcome.source?.migratingIn == nil)
        #expect(outcome.record.destinationLeft?.contains("not told") == true, "told again in the background")
    }

    @Test("a source that cannot be deleted: the record says so (completed, source left frozen) and it is retried until it is gone")
    func sourceDeleteRetried() async throws {
        let stuck = try await migrate(deleteFailures: 100)
        #expect(stuck.record.status == .completed)
        #expect(stuck.record.sourceLeft?.contains("could not be deleted") == true)
        #expect(stuck.source != nil, "still there, frozen")
        let retried = try await migrate(deleteFailures: 4, settle: .seconds(8))
        #expect(retried.record.status == .completed)
        #expect(retried.record.sourceLeft == nil, "deleted on a later attempt")
        #expect(retried.source == nil)
        #expect(retried.record.events.contains { $0.message.contains("deleted on a later attempt") })
    }

    /// What the fake destination says when a restarted source asks.
    enum PeerAnswer: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case unknown, prepared, receiving, restoring, restored, committed, aborted, unreachable
        var journal: IncomingState? { IncomingState(rawValue: rawValue) }
        var testDescription: String { rawValue }
    }

    struct Recovered {
        var record: MigrationRecord
        var resumed: Bool
        var source: ContainerInfo?
        var peerCalls: [PeerCall]
        var peerJournal: IncomingState?
        /// What the record's approach was asked (with `approach`).
        var approachCalls: [String] = []
    }

    /// A previous run of the source Coordinator left a record at `step` (the container locked,
    /// frozen); this run recovers, asking the fake destination, which answers `answer`.
    func recover(
        at step: MigrationStep, status: MigrationStatus? = nil, answer: PeerAnswer, approach: Approach? = nil, then: ((Coordinator, FakePeer) async throws -> Void)? = nil
    ) async throws -> Recovered {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("ums-recover-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        var record = MigrationRecord(id: "m-left", container: "svc", requestedApproach: .auto, source: SystemRef(name: "a", url: "http://198.18.0.8:7000"),
                                     destination: SystemRef(name: "b", url: "http://198.18.0.9:7000"), startedAt: Date())
        record.apply(.running(step))
        record.approach = approach
        if let status { record.status = status }
        try JSONStore<MigrationRecord>(directory: "\(state)/migrations").save(record, key: record.id)
        let orchestrator = InMemoryOrchestrator(["svc"])
        try await orchestrator.lock("svc", migration: "m-left")
        let peer = FakePeer(failing: answer == .unreachable ? [.status, .abort, .commit] : [], journal: answer.journal)
        let approaches = approach.map { [InMemoryApproach(approach: $0, orchestrator: orchestrator)] } ?? []
        let coordinator = try Coordinator(
            name: "a", url: "http://198.18.0.8:7000", orchestrator: orchestrator, approaches: approaches, stateDirectory: state,
            advertiseHost: "198.18.0.8", http: HTTPClient.shared, peerTokens: [:], logger: Logger(label: "test"), peers: { _, _ in peer }
        )
        let recovered = try await withBackground(coordinator) {
            await coordinator.recover()
            // The resolver and the destination's cleanup run in the background: until settled —
            // generously where it will settle (a loaded CI machine runs 165 tests beside it), only
            // a short while where nothing can (the destination unreachable or mid-restore).
            let settles = answer != .restoring && answer != .unreachable
            let deadline = ContinuousClock.now + .seconds(settles ? 15 : 3)
            var current = try await coordinator.outgoing.record("m-left")
            while ContinuousClock.now < deadline, !current.status.isFinal || current.destinationLeft != nil || current.sourceLeft != nil {
                try await Task.sleep(for: .milliseconds(50))
                current = try await coordinator.outgoing.record("m-left")
            }
            try await then?(coordinator, peer)
            return try await coordinator.outgoing.record("m-left")
        }
        return Recovered(
            record: recovered, resumed: await orchestrator.resumed == ["svc"], source: try? await orchestrator.inspect("svc"),
            peerCalls: await peer.calls, peerJournal: await peer.journal, approachCalls: await approaches.first?.log.calls ?? []
        )
    }

    @Test("a restart of an agent-based migration before the restore was asked resumes the service through its approach — the agent that froze it inside its container — not through the orchestrator, which sees that container running",
          arguments: [Approach.container, .service])
    func recoveryResumesThroughTheApproach(approach: Approach) async throws {
        let outcome = try await recover(at: .transferring, answer: .unknown, approach: approach)
        #expect(outcome.record.status == .rolledBack, "\(outcome.record.error.map { "\($0)" } ?? "")")
        #expect(outcome.approachCalls == ["resume"], "the agent was told to resume")
        #expect(!outcome.resumed, "not the orchestrator's resume")
    }

    @Test("a restart at every step, whatever the destination's journal says: exactly one copy runs — the one both journals agree on",
          arguments: MigrationStep.allCases, PeerAnswer.allCases)
    func recoveryAfterRestart(step: MigrationStep, answer: PeerAnswer) async throws {
        let outcome = try await recover(at: step, answer: answer)
        let label = "\(step) / destination \(answer)"
        if step <= .transferring {
            // The restore was never asked: nothing can run there. The source runs again, and
            // the destination is told to remove what it prepared.
            #expect(outcome.record.status == .rolledBack, "\(label)")
            #expect(outcome.resumed, "\(label)")
            #expect(outcome.source?.migratingIn == nil, "\(label)")
            #expect(outcome.peerCalls.contains(.status) == false, "\(label): nothing to ask")
            if step >= .creatingDestination, answer != .unreachable {
                #expect(outcome.peerJournal == nil || outcome.peerJournal == .aborted || outcome.peerJournal == .committed, "\(label)")
            }
        } else if step >= .reportingEndpoint {
            // The destination committed before the source got there: only its bookkeeping is left.
            #expect(outcome.record.status == .completed, "\(label)")
            #expect(!outcome.resumed && outcome.source == nil, "\(label): the source deleted, never resumed")
        } else {
            switch answer {
            case .restored, .committed:
                #expect(outcome.record.status == .completed, "\(label)")
                #expect(!outcome.resumed && outcome.source == nil, "\(label): the destination's copy runs, the source is deleted")
                #expect(outcome.peerJournal == .committed, "\(label)")
            case .unknown, .prepared, .receiving, .aborted:
                #expect(outcome.record.status == .rolledBack, "\(label)")
                #expect(outcome.resumed && outcome.source?.migratingIn == nil, "\(label): the source runs again")
                #expect(outcome.peerJournal == nil || outcome.peerJournal == .aborted, "\(label): nothing runs there")
            case .restoring, .unreachable:
                // Nothing that could make a second copy: frozen, locked, asked again.
                #expect(outcome.record.status == .awaitingPeer, "\(label)")
                #expect(!outcome.resumed && outcome.source?.migratingIn == "m-left", "\(label)")
            }
        }
    }

    @Test("awaiting a destination: it answers later and its journal decides; or an operator resolves, saying first what will be done")
    func awaitingPeerResolves() async throws {
        // The destination comes back with the service restored: its copy wins.
        let later = try await recover(at: .confirming, answer: .unreachable) { coordinator, peer in
            #expect(try await coordinator.outgoing.record("m-left").status == .awaitingPeer)
            await peer.fail([])
            await peer.setJournal(.restored)
            let deadline = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < deadline, try await coordinator.outgoing.record("m-left").status == .awaitingPeer {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        #expect(later.record.status == .completed)
        #expect(later.source == nil && !later.resumed)
        #expect(later.peerJournal == .committed)

        // Gone for good: the operator keeps the source. The dry run changes nothing.
        let kept = try await recover(at: .restoring, answer: .unreachable) { coordinator, _ in
            let plan = try await coordinator.resolve("m-left", ResolveRequest(keep: .source, dryRun: true))
            #expect(!plan.done && plan.actions.contains { $0.contains("resume svc") })
            #expect(try await coordinator.outgoing.record("m-left").status == .awaitingPeer, "a dry run changes nothing")
            let done = try await coordinator.resolve("m-left", ResolveRequest(keep: .source))
            #expect(done.done)
        }
        #expect(kept.record.status == .rolledBack)
        #expect(kept.resumed && kept.source?.migratingIn == nil)

        // Or the destination.
        let moved = try await recover(at: .confirming, answer: .unreachable) { coordinator, _ in
            _ = try await coordinator.resolve("m-left", ResolveRequest(keep: .destination))
        }
        #expect(moved.record.status == .completed)
        #expect(moved.source == nil && !moved.resumed)
    }

    @Test("graceful shutdown: a migration before its restore rolls back at its next step, one past it finishes, a new one is refused; past the grace period what runs is cancelled",
          arguments: [MigrationStep.checkpointing, .confirming])
    func gracefulShutdown(step: MigrationStep) async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("ums-term-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let orchestrator = InMemoryOrchestrator(["svc", "other"])
        let peer = FakePeer()
        let coordinator = try Coordinator(
            name: "a", url: "http://198.18.0.8:7000", orchestrator: orchestrator, approaches: [InMemoryApproach(orchestrator: orchestrator)],
            stateDirectory: state, advertiseHost: "198.18.0.8", http: HTTPClient.shared, peerTokens: [:], logger: Logger(label: "test"),
            faults: ScheduledFaults([.source(step): .delay(.milliseconds(600))]), peers: { _, _ in peer }
        )
        async let background: Void = coordinator.runBackground(sweepEvery: .milliseconds(50), grace: .seconds(10))
        let accepted = try await coordinator.outgoing.migrate(MigrateRequest(container: "svc", destination: peer.baseURL))
        while try await coordinator.outgoing.record(accepted.id).step != step { try await Task.sleep(for: .milliseconds(20)) }
        let clock = ContinuousClock()
        let stopping = clock.now
        coordinator.finishBackground()
        let refused = await #expect(throws: UMSError.self) {
            try await coordinator.outgoing.migrate(MigrateRequest(container: "other", destination: peer.baseURL))
        }
        #expect(refused?.code == .unavailable)
        await background
        #expect(clock.now - stopping < .seconds(5), "within the bound")
        let record = try await coordinator.outgoing.record(accepted.id)
        if step < .restoring {
            #expect(record.status == .rolledBack)
            #expect(record.error?.message.contains("shutting down") == true)
            #expect(await peer.calls.contains(.abort))
            #expect(try await orchestrator.inspect("svc").migratingIn == nil, "the source runs again, unlocked")
        } else {
            #expect(record.status == .completed, "past the restore it finishes")
        }

        // A migration that does not end within the grace period is cancelled; its journal stays
        // unfinished for the next start.
        let slow = try Coordinator(
            name: "a", url: "http://198.18.0.8:7000", orchestrator: orchestrator, approaches: [InMemoryApproach(orchestrator: orchestrator)],
            stateDirectory: state + "-slow", advertiseHost: "198.18.0.8", http: HTTPClient.shared, peerTokens: [:], logger: Logger(label: "test"),
            faults: ScheduledFaults([.source(.confirming): .delay(.seconds(30))]), peers: { _, _ in peer }
        )
        defer { try? FileManager.default.removeItem(atPath: state + "-slow") }
        async let slowBackground: Void = slow.runBackground(sweepEvery: .milliseconds(50), grace: .milliseconds(300))
        let stuck = try await slow.outgoing.migrate(MigrateRequest(container: "other", destination: peer.baseURL))
        while try await slow.outgoing.record(stuck.id).step != .confirming { try await Task.sleep(for: .milliseconds(20)) }
        let begun = clock.now
        slow.finishBackground()
        await slowBackground
        #expect(clock.now - begun < .seconds(5), "the grace period bounds the shutdown")
        #expect(try await slow.outgoing.record(stuck.id).status.isFinal == false, "left for the next start's recovery")
    }

    @Test("fault points parse from umsd's --fault and refuse what is not one")
    func parsing() throws {
        let faults = try ScheduledFaults(parsing: ["checkpointing=fail", "incoming.restore=corrupt-images"])
        #expect(faults.faults == [.source(.checkpointing): .fail, .destination(.restore): .corruptImages])
        #expect(throws: UMSError.self) { try ScheduledFaults(parsing: ["nowhere=fail"]) }
        #expect(throws: UMSError.self) { try ScheduledFaults(parsing: ["checkpointing=explode"]) }
        #expect(throws: UMSError.self) { try ScheduledFaults(parsing: ["checkpointing=corrupt-images"]) }
        #expect(try ScheduledFaults(parsing: ["restoring=delay:2.5"]).faults == [.source(.restoring): .delay(.milliseconds(2500))])
        #expect(try ScheduledFaults(parsing: ["incoming.receive=corrupt-stream"]).faults == [.destination(.receive): .corruptStream])
        for bad in ["restoring=delay:x", "restoring=delay:-1", "restoring=delay:99999", "checkpointing=corrupt-stream"] {
            #expect(throws: UMSError.self, "\(bad)") { try ScheduledFaults(parsing: [bad]) }
        }
    }
}

extension MigrationStep: Comparable {
    public static func < (lhs: MigrationStep, rhs: MigrationStep) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}
