import Logging
import NIOCore
import UMSCheckpoint
import UMSModel
import UMSOrchestrator

/// What the destination tells the source after preparing to receive a migration.
public struct ReceiveEndpoint: Codable, Sendable, Equatable {
    /// Where the source's dump sends memory pages while it writes them.
    public var pageServer: PageServerAddress?

    public init(pageServer: PageServerAddress?) {
        self.pageServer = pageServer
    }
}

/// One side's view of an incoming migration: where its files land.
public struct IncomingMigration: Sendable, Equatable {
    public var id: String
    public var specification: Specification
    /// The directory the checkpoint images are gathered in.
    public var imagesDirectory: String

    public init(id: String, specification: Specification, imagesDirectory: String) {
        self.id = id
        self.specification = specification
        self.imagesDirectory = imagesDirectory
    }
}

/// The migration interface (paper Fig. 1): one implementation per approach, each doing the core
/// work of its level on both systems. The Coordinator drives the phases and moves bytes between
/// systems; an approach only knows how to freeze, dump, receive and restore at its level.
///
/// Source side: `freeze` → `checkpoint` (pages stream to the destination's `ReceiveEndpoint`) →
/// `exportFiles` (what is left: non-page images, rootfs changes) → later `resume` on rollback or
/// the orchestrator deletes the container on success.
/// Destination side: `prepare` (container created but not started, receiver listening) →
/// `importFiles` → `restore`; `abort` undoes `prepare` at any point.
public protocol MigrationApproach: Sendable {
    var approach: Approach { get }

    // Destination
    func prepare(_ incoming: IncomingMigration, listenAddress: String) async throws -> ReceiveEndpoint
    func importFiles<Chunks: AsyncSequence & Sendable>(_ incoming: IncomingMigration, part: FilePart, _ chunks: Chunks) async throws -> Int64
        where Chunks.Element == ByteBuffer
    func restore(_ incoming: IncomingMigration) async throws -> ContainerInfo
    func abort(_ incoming: IncomingMigration) async

    // Source
    func freeze(_ name: String) async throws
    /// Dumps the frozen container; returns bytes written locally (pages go to `endpoint`).
    func checkpoint(_ name: String, into directory: String, endpoint: ReceiveEndpoint) async throws -> Int64
    func exportFiles(_ name: String, part: FilePart, checkpointDirectory: String, consume: @Sendable (ByteBuffer) async throws -> Void) async throws -> Int64
    func resume(_ name: String) async throws
}

/// The parts of a checkpoint that cross after the dump, each as one tar stream.
public enum FilePart: String, Codable, Sendable, CaseIterable {
    /// The checkpoint's non-page images (process tree, fds, sockets, mounts, …).
    case images
    /// The container's own changes to its root filesystem (files it created or modified).
    case changes
}
