import NIOCore
import UMSCheckpoint
import UMSModel
import UMSOS

/// What an orchestrator on one system can do, as the decision layer needs to know it.
public struct OrchestratorCapabilities: Codable, Sendable, Equatable {
    /// `runc`, `podman`, `docker`, `containerd`.
    public var kind: String
    public var runtimeVersion: String
    public var criuVersion: String?
    /// The engine can checkpoint and restore its containers itself (orchestrator-level approach).
    public var canCheckpoint: Bool
    /// The capability this system gives a checkpoint agent (`CAP_CHECKPOINT_RESTORE`, or
    /// `CAP_SYS_ADMIN` where the engine predates it). CRIU restores a process tree only into a
    /// container with the same capabilities it had, so agents move only between systems that agree.
    public var agentCapability: String

    public init(kind: String, runtimeVersion: String, criuVersion: String?, canCheckpoint: Bool, agentCapability: String = "CAP_CHECKPOINT_RESTORE") {
        self.kind = kind
        self.runtimeVersion = runtimeVersion
        self.criuVersion = criuVersion
        self.canCheckpoint = canCheckpoint
        self.agentCapability = agentCapability
    }
}

/// Options for an orchestrator-level checkpoint.
public struct CheckpointRequest: Sendable, Equatable {
    /// Where the images are written; the synchronization module streams them from there while
    /// they are written.
    public var imagesDirectory: String
    /// Keep the (frozen) container after the dump, so a failure can resume it.
    public var leaveRunning: Bool
    /// Post-copy: dump all but the pages, then serve the pages here until the destination has
    /// them all.
    public var lazyPages: PageServerAddress?

    public init(imagesDirectory: String, leaveRunning: Bool = true, lazyPages: PageServerAddress? = nil) {
        self.imagesDirectory = imagesDirectory
        self.leaveRunning = leaveRunning
        self.lazyPages = lazyPages
    }

    /// CRIU's work directory for this dump (its log is there).
    public var workDirectory: String { "\(imagesDirectory).work" }
}

/// Options for an orchestrator-level restore.
public struct RestoreRequest: Sendable, Equatable {
    public var imagesDirectory: String
    /// Post-copy: a lazy-pages daemon already listens in `workDirectory`.
    public var lazyPages: Bool

    public init(imagesDirectory: String, lazyPages: Bool = false) {
        self.imagesDirectory = imagesDirectory
        self.lazyPages = lazyPages
    }

    /// CRIU's work directory for this restore (its log, and the lazy-pages socket, are there).
    public var workDirectory: String { "\(imagesDirectory).work" }
}

/// The seam between UMS and a system's container orchestrator. One adapter per engine (runc, and
/// later Podman, Docker Engine, containerd) implements it; everything above speaks only this.
///
/// Control operations (`delete`, `restart`) are refused with `invalidState` while a migration
/// holds the container's lock, unless that migration itself asks (`migration:`).
public protocol Orchestrator: Sendable {
    var kind: String { get }
    func capabilities() async -> OrchestratorCapabilities

    // Images
    func hasImage(_ image: ImageReference) async -> Bool
    /// Imports a canonical tar stream as an image, verifying it against `expected`.
    func importImage<Chunks: AsyncSequence & Sendable>(_ chunks: Chunks, expected: ImageReference) async throws -> ImageReference
        where Chunks.Element == ByteBuffer
    /// Streams the canonical tar of an image.
    func exportImage(_ image: ImageReference, consume: @Sendable (ByteBuffer) async throws -> Void) async throws
    /// Imports a directory on this host as an image (`ums run --rootfs DIR`).
    func importDirectory(_ directory: String) async throws -> ImageReference

    // Containers
    func list() async throws -> [ContainerInfo]
    func inspect(_ name: String) async throws -> ContainerInfo
    /// The Specification (paper Step 1), with the process count read now.
    func specification(of name: String) async throws -> Specification
    /// Creates a container; `start: false` leaves it ready to be restored into (its ports are
    /// checked but not yet published). `migration:` creates it already locked.
    func create(_ specification: Specification, start: Bool, migration: String?) async throws -> ContainerInfo
    func restart(_ name: String, migration: String?) async throws
    func delete(_ name: String, migration: String?) async throws

    // Control lock (paper Step 8)
    func lock(_ name: String, migration: String) async throws
    func unlock(_ name: String, migration: String) async throws

    // Orchestrator-level checkpoint/restore
    func freeze(_ name: String) async throws
    func resume(_ name: String) async throws
    /// Dumps the frozen container. For post-copy it returns once the non-page images are written,
    /// with the process that serves the pages (it exits when the destination has them all).
    func checkpoint(_ name: String, request: CheckpointRequest) async throws -> BackgroundProcess?
    /// Streams the container's own changes to its root filesystem (taken while it is frozen).
    func exportChanges(_ name: String, consume: @Sendable (ByteBuffer) async throws -> Void) async throws -> Int64
    func importChanges<Chunks: AsyncSequence & Sendable>(_ name: String, _ chunks: Chunks) async throws -> StreamSummary
        where Chunks.Element == ByteBuffer
    func restore(_ name: String, request: RestoreRequest) async throws -> ContainerInfo
}
