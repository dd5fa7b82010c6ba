import NIOCore
import UMSModel
import UMSOS

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

/// An orchestrator's images: root filesystems by content digest, never pulled from a registry.
public protocol ImageHolding: Sendable {
    func hasImage(_ image: ImageReference) async -> Bool
    /// Imports a canonical tar stream as an image, verifying it against `expected`.
    func importImage<Chunks: AsyncSequence & Sendable>(_ chunks: Chunks, expected: ImageReference) async throws -> ImageReference
        where Chunks.Element == ByteBuffer
    /// Streams the canonical tar of an image.
    func exportImage(_ image: ImageReference, consume: @Sendable (ByteBuffer) async throws -> Void) async throws
    /// Imports a directory on this host as an image (`ums run --rootfs DIR`).
    func importDirectory(_ directory: String) async throws -> ImageReference
}

/// An orchestrator's containers, with the control lock (paper Step 8): control operations
/// (`delete`, `restart`) are refused with `invalidState` while a migration holds a container's
/// lock, unless that migration itself asks (`migration:`). Every adapter implements this.
public protocol ContainerOrchestrator: Sendable {
    var kind: OrchestratorKind { get }
    /// The runtime's or engine's version, as read at start-up.
    func runtimeVersion() async -> String
    /// The CRIU the system checkpoints with, if any.
    var criuVersion: String? { get }
    /// The capability this system gives a checkpoint agent (see `OrchestratorCapabilities`).
    var agentCapability: String { get }

    func list() async throws -> [ContainerInfo]
    func inspect(_ name: String) async throws -> ContainerInfo
    /// The Specification (paper Step 1), with the process count read now.
    func specification(of name: String) async throws -> Specification
    /// Creates a container; `start: false` leaves it ready to be restored into (its ports are
    /// checked but not yet published). `migration:` creates it already locked.
    func create(_ specification: Specification, start: Bool, migration: String?) async throws -> ContainerInfo
    func restart(_ name: String, migration: String?) async throws
    func delete(_ name: String, migration: String?) async throws

    func lock(_ name: String, migration: String) async throws
    func unlock(_ name: String, migration: String) async throws
}

/// An orchestrator that checkpoints and restores its containers itself: what the
/// orchestrator-level approach needs. Adapters that cannot do this do not conform, and the
/// decision reads that from the conformance (`canCheckpoint`).
public protocol CheckpointingOrchestrator: ContainerOrchestrator {
    /// Whether it checkpoints the containers UMS made too, not only those its engine made
    /// without UMS (adopted): containerd checkpoints only `ctr run` containers.
    var checkpointsOwnContainers: Bool { get }
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

/// The seam between UMS and a system's container orchestrator: containers and images; one
/// adapter per engine (runc, containerd, Podman, Docker Engine). Everything above speaks only
/// this, and asks `checkpointing` for the rest.
public typealias Orchestrator = ContainerOrchestrator & ImageHolding

extension ContainerOrchestrator {
    public var agentCapability: String { "CAP_CHECKPOINT_RESTORE" }

    public func capabilities() async -> OrchestratorCapabilities {
        OrchestratorCapabilities(
            orchestrator: kind, runtimeVersion: await runtimeVersion(), criuVersion: criuVersion,
            canCheckpoint: (self as? any CheckpointingOrchestrator)?.checkpointsOwnContainers ?? false,
            checkpointsAdopted: self is any CheckpointingOrchestrator, agentCapability: agentCapability
        )
    }

    /// The named containers as `inspect` sees them, leaving out any that vanished meanwhile.
    func inspectAll(_ names: [String]) async -> [ContainerInfo] {
        var result: [ContainerInfo] = []
        for name in names {
            if let info = try? await inspect(name) { result.append(info) }
        }
        return result
    }

    /// The adapter's own checkpoint/restore, or `unsupported` saying so.
    public func checkpointing(_ operation: String) throws(UMSError) -> any CheckpointingOrchestrator {
        guard let checkpointing = self as? any CheckpointingOrchestrator else {
            throw UMSError(.unsupported, "failed to \(operation): the \(kind) adapter does not implement its orchestrator's own checkpoint/restore; use the service- or container-level approach")
        }
        return checkpointing
    }
}

extension CheckpointingOrchestrator {
    public var checkpointsOwnContainers: Bool { true }
}

/// An adapter that keeps host resources of its own per container (network namespaces, cgroups):
/// at a Coordinator's start-up it removes those of containers that no longer exist.
public protocol LeftoverSweeping: Sendable {
    func sweepLeftovers() async
}

/// An adapter whose engine keeps named volumes: their contents leave with a migrating container
/// and arrive under the same name.
public protocol VolumeCarrying: Sendable {
    /// Whether the engine's own checkpoint (orchestrator-level) already carries the volumes'
    /// contents (Podman's export does), so UMS does not send them again.
    var checkpointCarriesVolumes: Bool { get }
    func volumeExists(_ name: String) async -> Bool
    /// The volume's contents as a tar stream (owners, modes, extended attributes kept). With a
    /// `snapshot` file (GNU tar's listed-incremental) the first stream holds everything and the
    /// next only what changed since, and which names are gone.
    func exportVolume(_ name: String, snapshot: String?, consume: @Sendable (ByteBuffer) async throws -> Void) async throws -> StreamSummary
    /// The bytes of its files (what `exportVolume` will send, about).
    func volumeBytes(_ name: String) async throws -> Int64
    /// Creates the volume if missing and fills it from a peer's tar stream (a whole one, or the
    /// next of an incremental series: names it says are gone are removed), checked (no device
    /// nodes, FIFOs or setuid files; no foreign `trusted.*` attributes).
    func importVolume<Chunks: AsyncSequence & Sendable>(_ name: String, _ chunks: Chunks) async throws -> StreamSummary
        where Chunks.Element == ByteBuffer
    /// Removes it (idempotent; an engine refuses while a container uses it).
    func removeVolume(_ name: String) async
}

/// A network the source kept after deleting a container whose connections were carried: its
/// address is routed into the tunnel until `--connection-linger` ends.
public struct KeptNetwork: Codable, Sendable, Equatable {
    public var network: ContainerNetwork
    public var ports: [PortMapping]

    public init(network: ContainerNetwork, ports: [PortMapping]) {
        self.network = network
        self.ports = ports
    }
}

/// An orchestrator whose checkpoint/restore carries established TCP connections between systems
/// that share a migration network (issue 16): the service keeps its address, CRIU restores its
/// sockets with `tcp-established`, and packets for the address cross a `MigrationTunnel`.
public protocol ConnectionCarrying: Sendable {
    /// The block this system's containers take their addresses from (`A.B.C.D/N`).
    var containerNetwork: String { get }
    /// The approaches whose connections it carries.
    var carriedApproaches: Set<Approach> { get }
    /// The tunnel to a peer, made unless it is there.
    func ensure(_ tunnel: MigrationTunnel) async throws
    /// Destination: the identical container, not started, keeping `address` (checked to be none
    /// of this system's and unused here), its connections through `tunnel`; nothing reaches it
    /// or leaves it until `deliver`.
    func createKeeping(_ specification: Specification, address: String, tunnel: MigrationTunnel, migration: String) async throws -> ContainerInfo
    /// Destination, container-level: the identical outer container, created and started (its
    /// agent waits for the images) with an address of this system's, which also holds `address`
    /// (checked as `createKeeping` checks it) for the restored service's connections through
    /// `tunnel`; nothing reaches that address or leaves from it until `deliver`.
    func createAlsoKeeping(_ specification: Specification, address: String, tunnel: MigrationTunnel, migration: String) async throws -> ContainerInfo
    /// Destination, at the commit: the address reaches the restored service.
    func deliver(_ name: String) async throws
    /// The address a container holds besides its own, carried from another system
    /// (`createAlsoKeeping`), if any.
    func carriedAddress(_ name: String) async -> String?
    /// Established TCP connections in the container's network namespace.
    func establishedConnections(_ name: String) async -> Int?
    /// Source: whether the next checkpoint keeps established connections (`tcp-established`,
    /// the network locked by UMS) or closes them.
    func carryConnections(_ name: String, _ carry: Bool) async throws
    /// Source, from the freeze: nothing leaves the frozen copy, its address lives at the peer.
    func sendAway(_ name: String, through tunnel: MigrationTunnel) async throws
    /// Source, container-level, from the freeze: nothing leaves the frozen copy but `allowing`
    /// (its agent's control answers and image stream).
    func silence(_ name: String, allowing: [AllowedFlow]) async throws
    /// Source, container-level, once the images crossed: the address lives at the peer.
    func routeAway(_ name: String, through tunnel: MigrationTunnel) async throws
    /// Source, on a rollback (also after a restart): the address is the frozen copy's again.
    /// Idempotent.
    func bringBack(_ name: String) async throws
    /// Source, after the commit: deletes the container but keeps its network (the route into the
    /// tunnel, the host end's address the Frontman's carried connections come from).
    func deleteKeepingNetwork(_ name: String, migration: String) async throws -> KeptNetwork
    /// Source, once the linger ended: the kept network goes, and the route into the tunnel.
    func release(_ kept: KeptNetwork) async
}

/// An orchestrator whose controller replaces a container that stops with a new one made from the
/// service's specification, possibly on another node and at another address (a Swarm service's
/// task; a Kubernetes Deployment's pod). The Coordinator then follows the replacement: its
/// Frontman forwards to the new address, and a replacement of a service restored here — whose
/// specification starts its agent in restore mode — is told to start the service afresh.
public protocol ReplacingOrchestrator: Sendable {}
