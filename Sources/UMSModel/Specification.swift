/// The Specification of a container (paper Fig. 2, step 1): everything a destination system needs
/// to create an identical container, independent of which orchestrator runs it.
public struct Specification: Codable, Sendable, Equatable {
    /// The container's name; unique within one system.
    public var name: String
    /// The root filesystem the container runs from, identified by content.
    public var image: ImageReference
    /// The command and its arguments, run as the container's first process.
    public var command: [String]
    /// `KEY=VALUE` pairs.
    public var environment: [String]
    public var workingDirectory: String
    /// Ports the service listens on inside its network namespace, published on its system.
    public var ports: [PortMapping]
    public var limits: ResourceLimits
    /// Processes in the container at the time the Specification was taken.
    public var processCount: Int
    public var labels: [String: String]
    /// What the container's processes may do beyond the runtime's defaults (nil: the defaults).
    public var security: SecurityOptions?
    /// A container its engine made outside UMS (`docker run`, `podman run`): what that engine
    /// records beyond the fields above, so the destination's engine makes the same (nil: UMS made it).
    public var engine: EngineConfiguration?
    /// Named volumes the container mounts: their contents move with it (nil or empty: none).
    public var volumes: [VolumeMount]?
    /// Host directories bind-mounted into the container: their contents move with it, to the
    /// same path at the destination (only where its admission policy allows).
    public var binds: [BindMount]?
    /// tmpfs mounts (`--tmpfs /path:size=64m`): made anew at the destination, their contents
    /// carried by the checkpoint.
    public var tmpfs: [TmpfsMount]?
    /// A pod (Podman) that moves as one unit: its containers, frozen and restored together into
    /// one pod — one network namespace — at the destination. The fields above then describe the
    /// pod: its name, its published ports, its first container's image and command, and every
    /// volume and host directory its containers mount (each member keeps its own).
    public var pod: PodSpecification?
    /// Where a cluster's scheduler may place it (Swarm's constraints: `node.hostname==worker-1`,
    /// `node.labels.zone==edge`); a system of one host ignores it. Not carried to another system:
    /// its nodes are another's (a migration names the destination's, `--placement`).
    public var placement: [String]?

    public init(
        name: String, image: ImageReference, command: [String], environment: [String] = [],
        workingDirectory: String = "/", ports: [PortMapping] = [], limits: ResourceLimits = .init(),
        processCount: Int = 1, labels: [String: String] = [:], security: SecurityOptions? = nil, engine: EngineConfiguration? = nil,
        volumes: [VolumeMount]? = nil, binds: [BindMount]? = nil
    ) {
        self.engine = engine
        self.volumes = volumes
        self.binds = binds
        self.name = name
        self.image = image
        self.command = command
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.ports = ports
        self.limits = limits
        self.processCount = processCount
        self.labels = labels
        self.security = security
    }

    enum CodingKeys: String, CodingKey {
        case name, image, command, environment, workingDirectory, ports, limits, processCount, labels, security, engine, volumes, binds, pod, tmpfs, placement
    }

    /// Decodes and validates (`validate()`): what a peer or a file sends is checked here.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            name: try container.decode(String.self, forKey: .name),
            image: try container.decode(ImageReference.self, forKey: .image),
            command: try container.decode([String].self, forKey: .command),
            environment: try container.decodeIfPresent([String].self, forKey: .environment) ?? [],
            workingDirectory: try container.decodeIfPresent(String.self, forKey: .workingDirectory) ?? "/",
            ports: try container.decodeIfPresent([PortMapping].self, forKey: .ports) ?? [],
            limits: try container.decodeIfPresent(ResourceLimits.self, forKey: .limits) ?? ResourceLimits(),
            processCount: try container.decodeIfPresent(Int.self, forKey: .processCount) ?? 1,
            labels: try container.decodeIfPresent([String: String].self, forKey: .labels) ?? [:],
            security: try container.decodeIfPresent(SecurityOptions.self, forKey: .security),
            engine: try container.decodeIfPresent(EngineConfiguration.self, forKey: .engine),
            volumes: try container.decodeIfPresent([VolumeMount].self, forKey: .volumes),
            binds: try container.decodeIfPresent([BindMount].self, forKey: .binds)
        )
        pod = try container.decodeIfPresent(PodSpecification.self, forKey: .pod)
        tmpfs = try container.decodeIfPresent([TmpfsMount].self, forKey: .tmpfs)
        placement = try container.decodeIfPresent([String].self, forKey: .placement)
        try validate()
    }

    /// The value of `KEY` in the environment, if set.
    public func environmentValue(_ key: String) -> String? {
        environment.last { $0.hasPrefix("\(key)=") }.map { String($0.dropFirst(key.count + 1)) }
    }
}

/// The containers of a pod, in the order they are restored (the infra container that holds the
/// pod's namespaces is the engine's own: made anew at the destination, never moved).
public struct PodSpecification: Codable, Sendable, Equatable {
    public var members: [Specification]
    /// The namespaces its containers share (`podman pod create --share`): a checkpoint restores
    /// only into a pod that shares the same ones.
    public var sharedNamespaces: [String]

    /// What `--share` may name.
    public static let sharable: Set<String> = ["cgroup", "ipc", "net", "pid", "uts"]

    public init(members: [Specification], sharedNamespaces: [String] = ["ipc", "net", "uts"]) {
        self.members = members
        self.sharedNamespaces = sharedNamespaces
    }
}

extension Specification {
    /// The containers it stands for: a pod's, or itself.
    public var containers: [Specification] { pod?.members ?? [self] }

    /// The images a destination needs (each once, in order).
    public var images: [ImageReference] {
        var seen: Set<String> = []
        return containers.map(\.image).filter { seen.insert($0.digest).inserted }
    }
}

/// What an engine records of a container it made itself (`docker run`, `podman run`) beyond a
/// Specification's common fields, read from the engine's own description when UMS adopts it.
public struct EngineConfiguration: Codable, Sendable, Equatable {
    /// The engine that made the container (`ums ps`: MADE BY).
    public var madeBy: OrchestratorKind
    /// The image's entrypoint as the container runs it (`command` follows it).
    public var entrypoint: [String]
    /// `user[:group]` the first process runs as (nil: the image's default).
    public var user: String?
    public var hostname: String?
    /// What the engine does when the container exits. UMS turns it off at the source while it
    /// migrates (the engine must not restart a checkpointed container) and sets it at the
    /// destination once the restore ran.
    public var restartPolicy: RestartPolicy
    /// The image's name as the container was made with it (`localhost/app:1`): the destination
    /// gives its copy (moved by ID) that name, unless it has an image of that name already.
    public var imageName: String?

    public enum RestartPolicy: String, Codable, Sendable, CaseIterable {
        case no, always
        case unlessStopped = "unless-stopped"
        case onFailure = "on-failure"
    }

    public init(
        madeBy: OrchestratorKind, entrypoint: [String] = [], user: String? = nil, hostname: String? = nil, restartPolicy: RestartPolicy = .no,
        imageName: String? = nil
    ) {
        self.imageName = imageName
        self.madeBy = madeBy
        self.entrypoint = entrypoint
        self.user = user
        self.hostname = hostname
        self.restartPolicy = restartPolicy
    }
}

/// A named volume mounted into a container. Its contents cross with the migration (after the
/// freeze) and are recreated under the same name at the destination, owners and modes kept.
public struct VolumeMount: Codable, Sendable, Equatable {
    /// The engine's volume name (a-z, A-Z, 0-9, `_`, `.`, `-`; what names a directory there).
    public var name: String
    /// Where it is mounted in the container (absolute, without `..`).
    public var destination: String
    public var readOnly: Bool

    public init(name: String, destination: String, readOnly: Bool = false) {
        self.name = name
        self.destination = destination
        self.readOnly = readOnly
    }
}

/// A tmpfs mounted into a container: where, and its size and mode (nil: the engine's defaults).
public struct TmpfsMount: Codable, Sendable, Equatable {
    public var destination: String
    public var sizeBytes: Int64?
    /// Permission bits (e.g. 0o1777).
    public var mode: Int?

    public init(destination: String, sizeBytes: Int64? = nil, mode: Int? = nil) {
        self.destination = destination
        self.sizeBytes = sizeBytes
        self.mode = mode
    }

    /// `size=N,mode=O`, as Docker's `--tmpfs` and Podman's mounts take them.
    public var options: [String] {
        (sizeBytes.map { ["size=\($0)"] } ?? []) + (mode.map { ["mode=" + String($0, radix: 8)] } ?? [])
    }

    /// Reads `size=64m,mode=1777,…` (other options are the engine's defaults); nil when a size or
    /// mode is not one.
    public static func parse(destination: String, options: String) -> TmpfsMount? {
        var mount = TmpfsMount(destination: destination)
        for option in options.split(separator: ",") {
            let parts = option.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "size":
                let units: [Character: Int64] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30]
                let unit = parts[1].last.flatMap { units[Character($0.lowercased())] }
                guard let number = Int64(unit == nil ? parts[1] : String(parts[1].dropLast())), number >= 0 else { return nil }
                let (bytes, overflow) = number.multipliedReportingOverflow(by: unit ?? 1)
                guard !overflow else { return nil }
                mount.sizeBytes = bytes
            case "mode":
                guard let mode = Int(parts[1], radix: 8), (0...0o7777).contains(mode) else { return nil }
                mount.mode = mode
            default:
                continue
            }
        }
        return mount
    }
}

/// A host directory bind-mounted into a container (`-v /srv/data:/data`).
public struct BindMount: Codable, Sendable, Equatable {
    /// The directory on the host (absolute, without `..`); the same path at the destination.
    public var hostPath: String
    public var destination: String
    public var readOnly: Bool

    public init(hostPath: String, destination: String, readOnly: Bool = false) {
        self.hostPath = hostPath
        self.destination = destination
        self.readOnly = readOnly
    }
}

/// Labels by which a Specification tells how its container is built.
public enum SpecificationLabels {
    /// Set on containers whose image carries the UMS checkpoint agent as entrypoint; the value is
    /// the agent's port inside the container.
    public static let agent = "ums.agent"
    /// Set on containers whose service runs nested in an outer container.
    public static let nested = "ums.nested"
}

/// Privileges beyond a runtime's defaults, in terms every orchestrator can grant
/// (`--cap-add`, `--security-opt seccomp=unconfined` and their API equivalents).
public struct SecurityOptions: Codable, Sendable, Equatable {
    /// Linux capabilities added to the default set, e.g. `CAP_CHECKPOINT_RESTORE`.
    public var addCapabilities: [String]
    /// No seccomp filter at all (CRIU cannot dump a process that runs under one).
    public var seccompUnconfined: Bool
    /// The container runs containers itself: its cgroup filesystem and `/proc/sys` are writable
    /// (Docker/Podman: what `--privileged` implies for these two).
    public var runsContainers: Bool

    public init(addCapabilities: [String] = [], seccompUnconfined: Bool = false, runsContainers: Bool = false) {
        self.addCapabilities = addCapabilities
        self.seccompUnconfined = seccompUnconfined
        self.runsContainers = runsContainers
    }

    enum CodingKeys: String, CodingKey { case addCapabilities, seccompUnconfined, runsContainers }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        addCapabilities = try container.decodeIfPresent([String].self, forKey: .addCapabilities) ?? []
        seccompUnconfined = try container.decodeIfPresent(Bool.self, forKey: .seccompUnconfined) ?? false
        runsContainers = try container.decodeIfPresent(Bool.self, forKey: .runsContainers) ?? false
    }
}

/// A root filesystem, named by the SHA-256 of its canonical tar stream so that two systems agree
/// on whether they hold the same one without comparing trees.
public struct ImageReference: Codable, Sendable, Equatable, Hashable {
    /// `sha256:<hex>`.
    public var digest: String
    /// Nil: a UMS root filesystem (the digest of its canonical tar). `engine`: an engine's own
    /// image (the digest is the engine's image ID, the SHA-256 of its configuration, which names
    /// every layer by content), moved with the engines' own save and load.
    public var format: ImageFormat?
    /// Where it came from on the system that first ran it (informational).
    public var source: String?
    public var sizeBytes: Int64?

    public init(digest: String, source: String? = nil, sizeBytes: Int64? = nil, format: ImageFormat? = nil) {
        self.digest = digest
        self.format = format
        self.source = source
        self.sizeBytes = sizeBytes
    }
}

public struct PortMapping: Codable, Sendable, Equatable, Hashable {
    /// The port on the system's address.
    public var hostPort: Int
    /// The port inside the container.
    public var containerPort: Int
    public var proto: String
    /// `http` when the port speaks HTTP: its Frontman then works request by request (holds,
    /// retries idempotent requests, answers 503 beyond its bounds). Otherwise a TCP stream.
    public var application: String?

    public init(hostPort: Int, containerPort: Int, proto: String = "tcp", application: String? = nil) {
        self.hostPort = hostPort
        self.containerPort = containerPort
        self.proto = proto
        self.application = application
    }

    /// Parses `PORT`, `HOST:CONTAINER`, optionally suffixed `/tcp` or `/http` (TCP carrying HTTP).
    public init(parsing text: String) throws(UMSError) {
        var body = Substring(text)
        var proto = "tcp"
        var application: String?
        if let slash = body.firstIndex(of: "/") {
            proto = String(body[body.index(after: slash)...])
            body = body[..<slash]
        }
        if proto == "http" {
            (proto, application) = ("tcp", "http")
        }
        guard proto == "tcp" else {
            throw UMSError(.invalidArgument, "failed to parse port '\(text)': expected /tcp or /http (only TCP is supported)")
        }
        let parts = body.split(separator: ":", omittingEmptySubsequences: false)
        let numbers = parts.compactMap { Int($0) }
        guard parts.count == numbers.count, (1...2).contains(numbers.count),
              numbers.allSatisfy({ (1...65535).contains($0) })
        else {
            throw UMSError(.invalidArgument, "failed to parse port '\(text)': expected PORT or HOSTPORT:CONTAINERPORT, each 1-65535")
        }
        self.init(hostPort: numbers[0], containerPort: numbers.last ?? numbers[0], proto: proto, application: application)
    }
}

public struct ResourceLimits: Codable, Sendable, Equatable {
    public var memoryBytes: Int64?
    /// CPU quota in cores (e.g. 0.5).
    public var cpus: Double?
    public var pids: Int?

    public init(memoryBytes: Int64? = nil, cpus: Double? = nil, pids: Int? = nil) {
        self.memoryBytes = memoryBytes
        self.cpus = cpus
        self.pids = pids
    }
}

/// Checks that a name can be used for a container: it becomes part of paths, namespace and
/// interface names, so it is kept to a small safe alphabet.
public enum ContainerName {
    public static let maxLength = 48

    public static func validate(_ name: String) throws(UMSError) {
        let allowed = name.unicodeScalars.allSatisfy { scalar in
            ("a"..."z").contains(scalar) || ("0"..."9").contains(scalar) || scalar == "-" || scalar == "_"
        }
        guard !name.isEmpty, name.count <= maxLength, allowed, name.first != "-" else {
            throw UMSError(.invalidArgument, "invalid container name '\(name)': use 1-\(maxLength) characters of a-z, 0-9, '-' and '_', not starting with '-'")
        }
    }
}

public enum ImageFormat: String, Codable, Sendable, CaseIterable {
    case rootfs, engine
}
