import Foundation
import UMSDecision
import UMSModel

/// The Coordinator's HTTP routes, in one place (the OpenAPI file `docs/openapi.yaml` lists the same).
public enum Routes {
    public static let system = "/v1/system"
    public static let containers = "/v1/containers"
    public static func container(_ name: String) -> String { "/v1/containers/\(name)" }
    public static func restart(_ name: String) -> String { "/v1/containers/\(name)/restart" }
    public static let migrations = "/v1/migrations"
    public static let migrationPlan = "/v1/migrations/plan"
    public static let endpoints = "/v1/endpoints"
    public static func endpoint(_ service: String) -> String { "/v1/endpoints/\(service)" }
    public static let frontmen = "/v1/frontmen"
    public static let metrics = "/metrics"
    public static func migration(_ id: String) -> String { "/v1/migrations/\(id)" }
    // Peer routes: what a source Coordinator calls on a destination.
    /// An image at the destination; an engine's own image (an adopted container's) says so.
    public static func peerImage(_ image: ImageReference) -> String {
        "/v1/peer/images/\(image.digest)" + (image.format == .engine ? "?format=engine" : "")
    }
    public static let peerMigrations = "/v1/peer/migrations"
    public static func peerMigration(_ id: String) -> String { "/v1/peer/migrations/\(id)" }
    public static func peerFiles(_ id: String, part: String) -> String { "/v1/peer/migrations/\(id)/files/\(part)" }
    public static func peerRestore(_ id: String) -> String { "/v1/peer/migrations/\(id)/restore" }
    public static func peerCommit(_ id: String) -> String { "/v1/peer/migrations/\(id)/commit" }
    public static let incoming = "/v1/incoming"
    public static func peerVolume(_ id: String, _ volume: String) -> String { "/v1/peer/migrations/\(id)/volumes/\(volume)" }
    public static func peerBind(_ id: String, _ index: Int) -> String { "/v1/peer/migrations/\(id)/binds/\(index)" }
    public static func resolve(_ id: String) -> String { "/v1/migrations/\(id)/resolve" }
}

/// `GET /v1/system`: who a Coordinator is and what it can do (also the peer availability check).
public struct SystemInfo: Codable, Sendable, Equatable {
    public var name: String
    public var url: String
    public var version: String
    public var profile: SystemProfile
    /// What this system admits from peers (its operator's policy).
    public var admission: AdmissionPolicy?
    /// Present when this system shares a migration network with its peers (established
    /// connections can cross to and from it).
    public var migrationNetwork: MigrationNetworkInfo?
    /// The image stream versions it reads: 2 = zero pages elided, zstd and lz4 (issue 17). Absent:
    /// version 1 only, so a source sends it every byte as read.
    public var imageStreamVersions: [Int]?

    public init(
        name: String, url: String, version: String, profile: SystemProfile, admission: AdmissionPolicy? = nil,
        migrationNetwork: MigrationNetworkInfo? = nil, imageStreamVersions: [Int]? = [1, 2]
    ) {
        self.imageStreamVersions = imageStreamVersions
        self.migrationNetwork = migrationNetwork
        self.name = name
        self.url = url
        self.version = version
        self.profile = profile
        self.admission = admission
    }
}

/// `POST /v1/containers`: start a container on the embedded orchestrator.
public struct RunRequest: Codable, Sendable, Equatable {
    public var name: String
    /// A directory on the Coordinator's host holding the root filesystem.
    public var rootfs: String
    public var command: [String]
    public var environment: [String]?
    public var workingDirectory: String?
    /// `PORT` or `HOSTPORT:CONTAINERPORT`.
    public var publish: [String]?
    public var memoryBytes: Int64?
    public var labels: [String: String]?
    /// Container-level: run the unchanged root filesystem nested in the system's outer host image.
    public var nested: Bool?
    /// Where a cluster may place it (Swarm constraints); a single host ignores it.
    public var placement: [String]?

    public init(name: String, rootfs: String, command: [String], environment: [String]? = nil, workingDirectory: String? = nil,
                publish: [String]? = nil, memoryBytes: Int64? = nil, labels: [String: String]? = nil, nested: Bool? = nil,
                placement: [String]? = nil) {
        self.placement = placement
        self.name = name
        self.rootfs = rootfs
        self.command = command
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.publish = publish
        self.memoryBytes = memoryBytes
        self.labels = labels
        self.nested = nested
    }
}

/// A container with the approaches that could move it.
public struct ContainerView: Codable, Sendable, Equatable {
    public var container: ContainerInfo
    public var approaches: [Feasibility]

    public init(container: ContainerInfo, approaches: [Feasibility]) {
        self.container = container
        self.approaches = approaches
    }
}

/// `POST /v1/migrations`.
public struct MigrateRequest: Codable, Sendable, Equatable {
    public var container: String
    /// The destination Coordinator's base URL.
    public var destination: String
    public var approach: ApproachRequest?
    /// The destination's bearer token, when the source has none configured for it.
    public var destinationToken: String?
    /// `stop-and-copy` (default) or `post-copy`.
    public var mode: TransferMode?
    /// What the source's Frontman does with HTTP requests once the destination confirms:
    /// `forward` them (default) or answer `307` to the new location.
    public var frontman: FrontmanMode?
    /// `copy` the container's volumes and host directories (default) or `skip` them.
    public var volumes: VolumeHandling?
    /// What happens to established connections: `auto` (default), `carry` or `close`.
    public var connections: ConnectionHandling?
    /// How the checkpoint images are compressed: `auto` (default), `off`, `zstd` or `lz4`.
    public var compress: ImageCompression?
    /// Where the destination's cluster may place the service (Swarm constraints, e.g.
    /// `node.hostname==worker-2`); the source's own placement does not travel.
    public var placement: [String]?

    public init(
        container: String, destination: String, approach: ApproachRequest? = nil, destinationToken: String? = nil,
        mode: TransferMode? = nil, frontman: FrontmanMode? = nil, volumes: VolumeHandling? = nil, connections: ConnectionHandling? = nil,
        compress: ImageCompression? = nil, placement: [String]? = nil
    ) {
        self.placement = placement
        self.compress = compress
        self.connections = connections
        self.volumes = volumes
        self.container = container
        self.destination = destination
        self.approach = approach
        self.destinationToken = destinationToken
        self.mode = mode
        self.frontman = frontman
    }
}

/// `POST /v1/migrations/plan`: what a migration request would do, without doing it.
public struct MigrationPlan: Codable, Sendable, Equatable {
    public var container: String
    public var source: SystemRef
    public var destination: SystemRef
    public var requestedApproach: ApproachRequest
    public var mode: TransferMode
    /// The approach the Coordinator would use; nil when none is feasible.
    public var approach: Approach?
    /// Every approach with its verdict and reason, in order of preference.
    public var verdicts: [Feasibility]
    /// Why the request cannot be carried out, when it cannot.
    public var infeasible: String?
    /// What the destination's admission policy says: `admitted`, or the rule that would refuse it
    /// (nil when the destination publishes no policy).
    public var admission: String?
    /// Whether established connections would be carried, or closed and why.
    public var connections: ConnectionsSummary?
    /// How the checkpoint images would cross (the compression policy, or the plain stream and why).
    public var images: String?

    public init(container: String, source: SystemRef, destination: SystemRef, requestedApproach: ApproachRequest, mode: TransferMode,
                approach: Approach?, verdicts: [Feasibility], infeasible: String?, admission: String? = nil) {
        self.admission = admission
        self.container = container
        self.source = source
        self.destination = destination
        self.requestedApproach = requestedApproach
        self.mode = mode
        self.approach = approach
        self.verdicts = verdicts
        self.infeasible = infeasible
    }
}

/// `POST /v1/peer/migrations`: the source asks the destination to create the identical container
/// and get ready to receive (paper Steps 3-7).
public struct PrepareRequest: Codable, Sendable, Equatable {
    public var id: String
    public var approach: Approach
    public var specification: Specification
    public var source: SystemRef
    /// Whether the volumes and host directories come with it (nil: `copy`).
    public var volumes: VolumeHandling?
    /// The bytes of volumes and host directories the source will send, measured before the freeze
    /// (the destination's admission rule maxVolumeBytes weighs it; the streams are bounded anyway).
    public var volumeBytes: Int64?
    /// The service keeps its address here and its connections cross through the tunnel.
    public var carry: CarriedConnections?
    /// How the pages will cross (nil: stop-and-copy, as from a source before post-copy existed
    /// for every approach): a service-level post-copy needs more of the destination's container.
    public var mode: TransferMode?

    public init(
        id: String, approach: Approach, specification: Specification, source: SystemRef, volumes: VolumeHandling? = nil, volumeBytes: Int64? = nil,
        carry: CarriedConnections? = nil, mode: TransferMode? = nil
    ) {
        self.carry = carry
        self.mode = mode
        self.id = id
        self.approach = approach
        self.specification = specification
        self.source = source
        self.volumes = volumes
        self.volumeBytes = volumeBytes
    }

    enum CodingKeys: String, CodingKey { case id, approach, specification, source, volumes, volumeBytes, carry, mode }

    /// A peer's request: the id names directories here, so it is checked as it is decoded (the
    /// Specification checks itself).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        try MigrationID.validate(id)
        approach = try container.decode(Approach.self, forKey: .approach)
        specification = try container.decode(Specification.self, forKey: .specification)
        source = try container.decode(SystemRef.self, forKey: .source)
        volumes = try container.decodeIfPresent(VolumeHandling.self, forKey: .volumes)
        volumeBytes = try container.decodeIfPresent(Int64.self, forKey: .volumeBytes)
        guard (volumeBytes ?? 0) >= 0 else { throw UMSError(.invalidArgument, "invalid volume bytes: negative") }
        carry = try container.decodeIfPresent(CarriedConnections.self, forKey: .carry)
        mode = try container.decodeIfPresent(TransferMode.self, forKey: .mode)
    }
}

public struct PrepareResponse: Codable, Sendable, Equatable {
    /// The identical container, created and ready to be restored into.
    public var container: ContainerInfo
    /// Where the source's agent streams the images itself (service-level); nil when they travel
    /// through the Coordinators.
    public var intake: CheckpointIntake?

    public init(container: ContainerInfo, intake: CheckpointIntake? = nil) {
        self.container = container
        self.intake = intake
    }
}

/// The answer to a file upload: what the receiver saw, so the sender can compare.
public struct UploadResponse: Codable, Sendable, Equatable {
    public var bytes: Int64
    /// `sha256:<hex>` of the stream as it arrived; the client checks it against what it sent.
    public var digest: String?

    public init(bytes: Int64, digest: String?) {
        self.bytes = bytes
        self.digest = digest
    }
}

/// Every error response's body.
public struct ErrorBody: Codable, Sendable {
    public var error: UMSError

    public init(error: UMSError) {
        self.error = error
    }
}

/// `POST /v1/peer/migrations/{id}/commit`: the destination adopted the container.
public struct CommitResponse: Codable, Sendable, Equatable {
    /// Post-copy: bytes of memory pages that crossed after the restore (0 for stop-and-copy).
    public var pageBytes: Int64
    /// Carried migrations: the established TCP connections the restored service has (counted
    /// after the commit, off the downtime's path).
    public var carriedConnections: Int?

    public init(pageBytes: Int64, carriedConnections: Int? = nil) {
        self.pageBytes = pageBytes
        self.carriedConnections = carriedConnections
    }

    enum CodingKeys: String, CodingKey { case pageBytes, carriedConnections }

    /// A peer's answer: the page count is added to this side's totals, so it is bounded as it is
    /// decoded (0 to 1 PiB) and can never overflow them.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        pageBytes = try container.decode(Int64.self, forKey: .pageBytes)
        guard (0...(1 << 50)).contains(pageBytes) else {
            throw UMSError(.invalidArgument, "invalid page bytes \(pageBytes): expected 0 to 1 PiB")
        }
        carriedConnections = try container.decodeIfPresent(Int.self, forKey: .carriedConnections)
    }
}

/// `POST /v1/peer/migrations/{id}/restore` (optional body): how to restore.
public struct PeerRestoreRequest: Codable, Sendable, Equatable {
    /// Post-copy: `host:port` where the source serves the pages.
    public var postCopySource: String?

    public init(postCopySource: String?) {
        self.postCopySource = postCopySource
    }
}

/// `POST /v1/peer/migrations/{id}/restore`: the restored container, running.
public struct RestoreResponse: Codable, Sendable, Equatable {
    public var container: ContainerInfo

    public init(container: ContainerInfo) {
        self.container = container
    }
}

public enum FrontmanMode: String, Codable, Sendable, CaseIterable {
    case forward, redirect
}

/// `GET /v1/endpoints`: where each service this system knows of is reached — its own services,
/// and those that migrated away from it. The same record is written in hosts format to the
/// system's endpoints file, for a DNS server or load balancer to follow.
public struct EndpointEntry: Codable, Sendable, Equatable {
    public var service: String
    /// The address clients use (the system the service runs on).
    public var address: String
    /// `host:port` per published port.
    public var endpoints: [String]
    /// The system the service runs on.
    public var system: String
    public var updatedAt: Date

    public init(service: String, address: String, endpoints: [String], system: String, updatedAt: Date) {
        self.service = service
        self.address = address
        self.endpoints = endpoints
        self.system = system
        self.updatedAt = updatedAt
    }
}

/// `GET /v1/frontmen`: the Frontmen of this system, what they do and what they did.
public struct FrontmanView: Codable, Sendable, Equatable {
    public struct Port: Codable, Sendable, Equatable {
        public var published: Int
        public var listening: Int
        public var kind: FrontmanProtocol

        public init(published: Int, listening: Int, kind: FrontmanProtocol) {
            self.published = published
            self.listening = listening
            self.kind = kind
        }
    }

    public var service: String
    public var role: FrontmanRole
    public var mode: FrontmanState
    /// `host` the Frontman sends to, when not holding.
    public var target: String?
    public var ports: [Port]
    /// What it has done so far.
    public var counts: FrontmanStats

    public init(service: String, role: FrontmanRole, mode: FrontmanState, target: String?, ports: [Port], counts: FrontmanStats) {
        self.service = service
        self.role = role
        self.mode = mode
        self.target = target
        self.ports = ports
        self.counts = counts
    }
}

/// The destination's journal entry for one incoming migration, written durably before each step
/// acts (`GET /v1/incoming`). After a restart the destination goes on from it, and a source asks
/// for its `state` (`GET /v1/peer/migrations/{id}`) to learn which copy runs.
public struct IncomingRecord: Codable, Sendable, Equatable {
    public var id: String
    public var approach: Approach
    public var specification: Specification
    public var source: SystemRef
    /// The pinned peer that prepared it (nil: prepared by an operator); only it may continue it.
    public var owner: String?
    public var state: IncomingState
    /// Whether what `state` asks of this system is done: for `aborted`, everything the
    /// migration made here is removed; for `committed`, the container is this system's.
    public var settled: Bool
    public var preparedAt: Date
    public var updatedAt: Date
    /// The answers given, given again to a repeated call.
    public var prepared: PrepareResponse?
    public var restored: ContainerInfo?
    public var pageBytes: Int64?
    /// Why it ended as it did (an abort's or an expiry's reason).
    public var reason: String?
    /// `skip`: the volumes and host directories were this system's own, never removed by an abort.
    public var volumes: VolumeHandling?
    /// The service keeps its address here; its connections cross the tunnel (issue 16).
    public var carry: CarriedConnections?
    /// Post-copy (nil: stop-and-copy): a commit waits for every page.
    public var mode: TransferMode?

    public init(id: String, approach: Approach, specification: Specification, source: SystemRef, owner: String?, at: Date = Date()) {
        self.id = id
        self.approach = approach
        self.specification = specification
        self.source = source
        self.owner = owner
        self.state = .prepared
        self.settled = false
        self.preparedAt = at
        self.updatedAt = at
    }
}

/// `GET /v1/peer/migrations/{id}`: where an incoming migration stands at the destination, as its
/// journal says — what a source asks when it recovers.
public struct IncomingStatus: Codable, Sendable, Equatable {
    public var id: String
    public var state: IncomingState
    public var settled: Bool

    public init(id: String, state: IncomingState, settled: Bool) {
        self.id = id
        self.state = state
        self.settled = settled
    }
}

/// Which copy an operator keeps when the peer is gone for good (`ums migrations resolve`).
public enum ResolveKeep: String, Codable, Sendable, CaseIterable {
    case source, destination
}

/// `POST /v1/migrations/{id}/resolve`: an operator decides an unfinished migration.
public struct ResolveRequest: Codable, Sendable, Equatable {
    public var keep: ResolveKeep
    /// Only say what would be done.
    public var dryRun: Bool

    public init(keep: ResolveKeep, dryRun: Bool = false) {
        self.keep = keep
        self.dryRun = dryRun
    }

    enum CodingKeys: String, CodingKey { case keep, dryRun }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        keep = try container.decode(ResolveKeep.self, forKey: .keep)
        dryRun = try container.decodeIfPresent(Bool.self, forKey: .dryRun) ?? false
    }
}

/// What a resolve did (or, with `dryRun`, would do), on this system.
public struct ResolveResponse: Codable, Sendable, Equatable {
    public var id: String
    /// `outgoing` (this system was the source) or `incoming` (the destination).
    public var side: String
    public var actions: [String]
    public var done: Bool

    public init(id: String, side: String, actions: [String], done: Bool) {
        self.id = id
        self.side = side
        self.actions = actions
        self.done = done
    }
}
