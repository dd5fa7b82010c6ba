import Foundation
import NIOCore
import UMSModel
import UMSCheckpoint
import UMSMigration
import UMSOrchestrator
import UMSOS

/// A test double of the `Orchestrator` seam that keeps containers in memory. It is used only to
/// test the HTTP layer's validation and locking; real migrations are tested against runc and
/// CRIU in IntegrationTests.
actor InMemoryOrchestrator: Orchestrator, CheckpointingOrchestrator {
    nonisolated let kind = OrchestratorKind.runc
    nonisolated let criuVersion: String? = "4.2.1"
    func runtimeVersion() async -> String { "1.0" }
    var containers: [String: (spec: Specification, lock: String?)] = [:]

    init(_ names: [String] = []) {
        for name in names {
            containers[name] = (Specification(name: name, image: .init(digest: "sha256:" + String(repeating: "0", count: 64)), command: ["/bin/true"]), nil)
        }
    }


    func hasImage(_ image: ImageReference) async -> Bool { false }
    func importImage<Chunks: AsyncSequence & Sendable>(_ chunks: Chunks, expected: ImageReference) async throws -> ImageReference where Chunks.Element == ByteBuffer {
        throw UMSError(.unsupported, "not in memory")
    }
    func exportImage(_ image: ImageReference, consume: @Sendable (ByteBuffer) async throws -> Void) async throws {}
    func importDirectory(_ directory: String) async throws -> ImageReference { ImageReference(digest: "sha256:" + String(repeating: "0", count: 64)) }

    func info(_ name: String) throws -> ContainerInfo {
        guard let entry = containers[name] else { throw UMSError(.notFound, "no container named '\(name)'") }
        return ContainerInfo(name: name, state: .running, specification: entry.spec, migratingIn: entry.lock, orchestrator: kind)
    }

    func list() async throws -> [ContainerInfo] { try containers.keys.sorted().map(info) }
    func inspect(_ name: String) async throws -> ContainerInfo { try info(name) }
    func specification(of name: String) async throws -> Specification { try info(name).specification }

    func create(_ specification: Specification, start: Bool, migration: String?) async throws -> ContainerInfo {
        containers[specification.name] = (specification, migration)
        return try info(specification.name)
    }

    func checkUnlocked(_ name: String, migration: String?) throws {
        if let lock = try info(name).migratingIn, lock != migration {
            throw UMSError(.invalidState, "failed to change '\(name)': it is migrating (migration \(lock))")
        }
    }

    func restart(_ name: String, migration: String?) async throws { try checkUnlocked(name, migration: migration) }
    /// Deletes that fail before one succeeds (a source the driver cannot remove at once).
    var deleteFailures = 0

    func failDeletes(_ count: Int) { deleteFailures = count }

    func delete(_ name: String, migration: String?) async throws {
        try checkUnlocked(name, migration: migration)
        if deleteFailures > 0 {
            deleteFailures -= 1
            throw UMSError(.unavailable, "failed to remove '\(name)': the runtime does not answer")
        }
        containers[name] = nil
    }

    func lock(_ name: String, migration: String) async throws {
        try checkUnlocked(name, migration: migration)
        containers[name]?.lock = migration
    }

    func unlock(_ name: String, migration: String) async throws {
        if containers[name]?.lock == migration { containers[name]?.lock = nil }
    }

    func freeze(_ name: String) async throws {}
    /// Containers resumed, in order (what a recovery did).
    var resumed: [String] = []
    func resume(_ name: String) async throws { resumed.append(name) }
    func checkpoint(_ name: String, request: CheckpointRequest) async throws -> BackgroundProcess? { nil }
    func exportChanges(_ name: String, consume: @Sendable (ByteBuffer) async throws -> Void) async throws -> Int64 { 0 }
    func importChanges<Chunks: AsyncSequence & Sendable>(_ name: String, _ chunks: Chunks) async throws -> StreamSummary where Chunks.Element == ByteBuffer {
        StreamSummary(digest: "sha256:", bytes: 0)
    }
    func restore(_ name: String, request: RestoreRequest) async throws -> ContainerInfo { try info(name) }
}

/// A test double of the `MigrationApproach` seam over `InMemoryOrchestrator`, for the
/// destination-side bookkeeping of the Coordinator; real approaches are tested in IntegrationTests.
struct InMemoryApproach: MigrationApproach {
    var approach = Approach.orchestrator
    let supportsPostCopy = true
    let coordinatorParts: [FilePart] = [.images, .changes]
    let orchestrator: InMemoryOrchestrator
    /// How long a restore takes (to land other calls during one).
    var restoreDelay: Duration = .zero
    /// The source-side calls, to see what a rollback undid.
    let log = ApproachLog()

    func prepare(_ incoming: IncomingMigration) async throws -> PreparedIncoming {
        PreparedIncoming(container: try await orchestrator.create(incoming.specification, start: false, migration: incoming.id))
    }
    /// Reads what arrives (as a real approach would), keeping nothing.
    func importFiles<Chunks: AsyncSequence & Sendable>(_ incoming: IncomingMigration, part: FilePart, _ chunks: Chunks) async throws -> StreamSummary
        where Chunks.Element == ByteBuffer
    {
        var bytes: Int64 = 0
        for try await chunk in chunks { bytes += Int64(chunk.readableBytes) }
        return StreamSummary(digest: "sha256:", bytes: bytes)
    }
    func restore(_ incoming: IncomingMigration, postCopySource: PageServerAddress?) async throws -> ContainerInfo {
        if restoreDelay > .zero { try await Task.sleep(for: restoreDelay) }
        return try await orchestrator.inspect(incoming.specification.name)
    }
    func awaitPages(_ incoming: IncomingMigration) async throws -> Int64 { 0 }
    func abort(_ incoming: IncomingMigration) async {
        try? await orchestrator.delete(incoming.specification.name, migration: incoming.id)
    }
    func freeze(_ name: String) async throws { await log.add("freeze") }
    func checkpoint(
        _ name: String, into directory: String, postCopy: PageServerAddress?, intake: CheckpointIntake?, compression: ImageCompression?
    ) async throws -> CheckpointResult {
        await log.add("checkpoint")
        return CheckpointResult()
    }
    /// One byte per part, so that every upload carries something.
    func exportFiles(
        _ name: String, part: FilePart, checkpointDirectory: String, dumpFinished: @escaping @Sendable () async -> Bool,
        compression: ImageCompression?, consume: @Sendable (ByteBuffer) async throws -> Void
    ) async throws -> ExportedFiles {
        try await consume(ByteBuffer(string: "x"))
        return ExportedFiles(bytes: 1)
    }
    func resume(_ name: String) async throws { await log.add("resume") }
}

/// An approach's calls on the source, in order.
actor ApproachLog {
    private(set) var calls: [String] = []
    func add(_ call: String) { calls.append(call) }
}
