import Logging
import NIOCore
import UMSCheckpoint
import UMSModel
import UMSOrchestrator
import UMSOS
import UMSTrust

/// One side's view of an incoming migration: where its files land.
public struct IncomingMigration: Sendable, Equatable {
    public var id: String
    public var specification: Specification
    /// The directory the checkpoint images are gathered in.
    public var imagesDirectory: String
    /// The service keeps the source's address and its connections cross the tunnel.
    public var carry: CarriedConnections?
    /// How the pages cross (the source said so at the prepare).
    public var mode: TransferMode

    public init(id: String, specification: Specification, imagesDirectory: String, carry: CarriedConnections? = nil, mode: TransferMode = .stopAndCopy) {
        self.carry = carry
        self.mode = mode
        self.id = id
        self.specification = specification
        self.imagesDirectory = imagesDirectory
    }
}

/// What a destination prepared for an incoming migration.
public struct PreparedIncoming: Sendable, Equatable {
    /// The identical container, created (and, for the agent-based approaches, running its agent).
    public var container: ContainerInfo
    /// Where the source's agent sends the images directly, for approaches that do not send them
    /// through the Coordinators.
    public var intake: CheckpointIntake?

    public init(container: ContainerInfo, intake: CheckpointIntake? = nil) {
        self.container = container
        self.intake = intake
    }
}

/// What a checkpoint produced on the source.
public struct CheckpointResult: Sendable {
    /// Post-copy: the process serving the pages (it exits once the destination has them all).
    public var pageServing: BackgroundProcess?
    /// Post-copy: where the destination fetches the pages (nil: where it was asked to serve).
    public var pageServer: PageServerAddress?
    /// Post-copy: where CRIU itself listens (to hang up on it on rollback), when not `pageServer`.
    public var localPageServer: PageServerAddress?
    /// Post-copy over mutual TLS: the relay in front of CRIU's page server; closed once the
    /// pages have crossed or the migration rolled back.
    public var relay: TLSRelay?
    /// Bytes the approach sent to the destination itself (0 when the Coordinators carry them).
    public var bytesSent: Int64
    /// How the images the approach sent itself crossed (the agents' stream).
    public var images: ImageTransferSummary?

    public init(
        pageServing: BackgroundProcess? = nil, pageServer: PageServerAddress? = nil, localPageServer: PageServerAddress? = nil,
        relay: TLSRelay? = nil, bytesSent: Int64 = 0, images: ImageTransferSummary? = nil
    ) {
        self.images = images
        self.pageServing = pageServing
        self.pageServer = pageServer
        self.localPageServer = localPageServer
        self.relay = relay
        self.bytesSent = bytesSent
    }
}

/// The migration interface (paper Fig. 1): one implementation per approach, each doing the core
/// work of its level on both systems. The Coordinator drives the phases and moves bytes between
/// systems; an approach only knows how to freeze, dump, receive and restore at its level.
///
/// Source side: `freeze` → `checkpoint` (writes images locally) while `exportFiles(.images)`
/// streams them as they are written → `exportFiles(.changes)` → later `resume` on rollback, or
/// the orchestrator deletes the container on success. Only the parts in `coordinatorParts` go
/// through the Coordinators; an agent-based approach streams its images agent to agent during
/// `checkpoint`, to the `intake` the destination's `prepare` returned.
/// Destination side: `prepare` (container created; not started, or running its agent) →
/// `importFiles` → `restore`; `abort` undoes `prepare` at any point.
public protocol MigrationApproach: Sendable {
    var approach: Approach { get }
    /// Whether the approach can restore first and fetch the pages afterwards.
    var supportsPostCopy: Bool { get }
    /// Why not, when it cannot (the refusal a post-copy request gets before anything stops).
    var postCopyRefusal: String { get }
    /// The parts the Coordinators carry between the systems, in order.
    var coordinatorParts: [FilePart] { get }

    // Destination
    func prepare(_ incoming: IncomingMigration) async throws -> PreparedIncoming
    func importFiles<Chunks: AsyncSequence & Sendable>(_ incoming: IncomingMigration, part: FilePart, _ chunks: Chunks) async throws -> StreamSummary
        where Chunks.Element == ByteBuffer
    /// Restores; with `postCopySource`, as soon as the non-page images are here, fetching the
    /// pages from the source while the service runs.
    func restore(_ incoming: IncomingMigration, postCopySource: PageServerAddress?) async throws -> ContainerInfo
    /// Post-copy: waits until every page has arrived and returns their bytes (0 for stop-and-copy).
    func awaitPages(_ incoming: IncomingMigration) async throws -> Int64
    func abort(_ incoming: IncomingMigration) async

    // Source
    /// Whether the checkpoint itself stops the service (CRIU freezes the tree when its dump
    /// starts) and `freeze` only checks that it can: the driver then checks before the
    /// Frontman holds, so that clients are held no earlier than the service stops.
    var freezesAtCheckpoint: Bool { get }
    func freeze(_ name: String) async throws
    /// Dumps the frozen container into `directory` (or, with an `intake`, straight to the
    /// destination), keeping it frozen. With `postCopy`, dumps all but the pages and returns the
    /// process serving them there (it exits once all are served).
    func checkpoint(
        _ name: String, into directory: String, postCopy: PageServerAddress?, intake: CheckpointIntake?, compression: ImageCompression?
    ) async throws -> CheckpointResult
    /// Streams one part; for `.images`, while the dump writes them, until `dumpFinished()`,
    /// compressed as `compression` says (nil: the destination reads only the plain stream).
    func exportFiles(
        _ name: String, part: FilePart, checkpointDirectory: String, dumpFinished: @escaping @Sendable () async -> Bool,
        compression: ImageCompression?, consume: @Sendable (ByteBuffer) async throws -> Void
    ) async throws -> ExportedFiles
    func resume(_ name: String) async throws
    /// Source, before the freeze: the next checkpoint carries the established connections
    /// through `tunnel` (nil: closes them), for an approach that dumps them itself (the
    /// container-level agent); the orchestrator-level approach's runc is told by the orchestrator.
    func carryConnections(_ name: String, through tunnel: MigrationTunnel?) async throws
}

/// What `exportFiles` sent.
public struct ExportedFiles: Sendable, Equatable {
    /// The part's own bytes (before compression).
    public var bytes: Int64
    /// For images through the Coordinators: how they crossed.
    public var images: ImageTransferSummary?

    public init(bytes: Int64, images: ImageTransferSummary? = nil) {
        self.bytes = bytes
        self.images = images
    }
}

extension MigrationApproach {
    public var freezesAtCheckpoint: Bool { false }
    public var postCopyRefusal: String { "the \(approach.rawValue)-level approach does not implement post-copy" }
    public func carryConnections(_ name: String, through tunnel: MigrationTunnel?) async throws {}
}
