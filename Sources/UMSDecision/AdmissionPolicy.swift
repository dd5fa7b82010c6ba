import UMSImage
import UMSModel

/// What the destination's operator lets a peer ask for (YAML `admission:`). A migration that asks
/// for more is refused with 403 and the rule that refused it, before anything is created; `ums
/// migrate --dry-run` shows the same verdict from the destination's published policy.
public struct AdmissionPolicy: Codable, Sendable, Equatable {
    /// Capabilities a peer's container may add to the runtime's defaults.
    public var allowedCapabilities: [String]
    /// Whether containers that run containers (the outer containers of container-level) are admitted.
    public var allowNested: Bool
    /// Whether a container may run without a seccomp filter (agents need it).
    public var allowSeccompUnconfined: Bool
    /// The host ports a peer's container may publish, inclusive.
    public var hostPorts: ClosedRange<Int>
    public var maxMemoryBytes: Int64?
    public var maxCPUs: Double?
    public var maxPids: Int?
    /// Bytes of root filesystem one migration may send (an image this system lacks).
    public var maxImageBytes: Int64
    /// Bytes of checkpoint (images and rootfs changes) one migration may send.
    public var maxCheckpointBytes: Int64
    /// Incoming migrations at once.
    public var maxConcurrentIncoming: Int
    /// Host directories under which a peer's container may bring bind mounts (their contents are
    /// written there); none by default.
    public var allowedBindPaths: [String] = []
    /// Bytes of named volumes and host directories one migration may bring (as the source measured
    /// them before the freeze; what streams in is bounded by twice this: a pass while the service
    /// runs and the changes after the freeze).
    public var maxVolumeBytes: Int64 = 64 << 30
    /// Whether this system shares a migration network with its peers: a VXLAN tunnel between the
    /// two systems, a service keeping its address across them and its established connections
    /// carried (issue 16). Off unless the operator turns it on (both systems must).
    public var migrationNetwork = false

    /// What UMS's own approaches need, and generous bounds: the agents' capabilities, nested
    /// containers, unprivileged host ports, 64 GiB of image or checkpoint, 8 at once.
    public static let standard = AdmissionPolicy(
        allowedCapabilities: Array(Set(MigratableImage.security.addCapabilities + NestedImage.security.addCapabilities)).sorted(),
        allowNested: true, allowSeccompUnconfined: true, hostPorts: 1024...65535,
        maxMemoryBytes: nil, maxCPUs: nil, maxPids: nil, maxImageBytes: 64 << 30, maxCheckpointBytes: 64 << 30, maxConcurrentIncoming: 8
    )

    public init(
        allowedCapabilities: [String], allowNested: Bool, allowSeccompUnconfined: Bool, hostPorts: ClosedRange<Int>,
        maxMemoryBytes: Int64?, maxCPUs: Double?, maxPids: Int?, maxImageBytes: Int64, maxCheckpointBytes: Int64, maxConcurrentIncoming: Int
    ) {
        self.allowedCapabilities = allowedCapabilities
        self.allowNested = allowNested
        self.allowSeccompUnconfined = allowSeccompUnconfined
        self.hostPorts = hostPorts
        self.maxMemoryBytes = maxMemoryBytes
        self.maxCPUs = maxCPUs
        self.maxPids = maxPids
        self.maxImageBytes = maxImageBytes
        self.maxCheckpointBytes = maxCheckpointBytes
        self.maxConcurrentIncoming = maxConcurrentIncoming
    }

    enum CodingKeys: String, CodingKey {
        case allowedCapabilities, allowNested, allowSeccompUnconfined, hostPorts, maxMemoryBytes, maxCPUs, maxPids
        case maxImageBytes, maxCheckpointBytes, maxConcurrentIncoming, allowedBindPaths, maxVolumeBytes, migrationNetwork
    }

    /// Keys left out take the standard values; `hostPorts` is `"LOW-HIGH"`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let standard = Self.standard
        allowedCapabilities = try container.decodeIfPresent([String].self, forKey: .allowedCapabilities) ?? standard.allowedCapabilities
        allowNested = try container.decodeIfPresent(Bool.self, forKey: .allowNested) ?? standard.allowNested
        allowSeccompUnconfined = try container.decodeIfPresent(Bool.self, forKey: .allowSeccompUnconfined) ?? standard.allowSeccompUnconfined
        hostPorts = try container.decodeIfPresent(String.self, forKey: .hostPorts).map(Self.parsePorts) ?? standard.hostPorts
        maxMemoryBytes = try container.decodeIfPresent(Int64.self, forKey: .maxMemoryBytes)
        maxCPUs = try container.decodeIfPresent(Double.self, forKey: .maxCPUs)
        maxPids = try container.decodeIfPresent(Int.self, forKey: .maxPids)
        maxImageBytes = try container.decodeIfPresent(Int64.self, forKey: .maxImageBytes) ?? standard.maxImageBytes
        maxCheckpointBytes = try container.decodeIfPresent(Int64.self, forKey: .maxCheckpointBytes) ?? standard.maxCheckpointBytes
        maxConcurrentIncoming = try container.decodeIfPresent(Int.self, forKey: .maxConcurrentIncoming) ?? standard.maxConcurrentIncoming
        allowedBindPaths = try container.decodeIfPresent([String].self, forKey: .allowedBindPaths) ?? []
        for path in allowedBindPaths { try MountPath.validate(path, what: "allowed bind path") }
        maxVolumeBytes = try container.decodeIfPresent(Int64.self, forKey: .maxVolumeBytes) ?? standard.maxVolumeBytes
        migrationNetwork = try container.decodeIfPresent(Bool.self, forKey: .migrationNetwork) ?? false
        try SecurityOptions(addCapabilities: allowedCapabilities).validate()
        guard maxImageBytes >= 0, maxCheckpointBytes >= 0, maxVolumeBytes >= 0, maxConcurrentIncoming >= 0, (maxCPUs ?? 1).isFinite else {
            throw UMSError(.invalidArgument, "invalid admission policy: limits must be 0 or more")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(allowedCapabilities, forKey: .allowedCapabilities)
        try container.encode(allowNested, forKey: .allowNested)
        try container.encode(allowSeccompUnconfined, forKey: .allowSeccompUnconfined)
        try container.encode("\(hostPorts.lowerBound)-\(hostPorts.upperBound)", forKey: .hostPorts)
        try container.encodeIfPresent(maxMemoryBytes, forKey: .maxMemoryBytes)
        try container.encodeIfPresent(maxCPUs, forKey: .maxCPUs)
        try container.encodeIfPresent(maxPids, forKey: .maxPids)
        try container.encode(maxImageBytes, forKey: .maxImageBytes)
        try container.encode(maxCheckpointBytes, forKey: .maxCheckpointBytes)
        try container.encode(maxConcurrentIncoming, forKey: .maxConcurrentIncoming)
        try container.encode(allowedBindPaths, forKey: .allowedBindPaths)
        try container.encode(maxVolumeBytes, forKey: .maxVolumeBytes)
        try container.encode(migrationNetwork, forKey: .migrationNetwork)
    }

    static func parsePorts(_ text: String) throws -> ClosedRange<Int> {
        let parts = text.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2, (1...65535).contains(parts[0]), (parts[0]...65535).contains(parts[1]) else {
            throw UMSError(.invalidArgument, "invalid admission host ports '\(text)': expected LOW-HIGH within 1-65535")
        }
        return parts[0]...parts[1]
    }

    /// The first rule `specification` breaks, as a 403 naming the rule; nil when admitted.
    /// `reservedPorts` are this system's own (the Coordinator's port and UMS's port ranges);
    /// `volumeBytes` what its volumes and host directories hold (nil: not sent).
    public func refusal(of specification: Specification, reservedPorts: Set<Int>, volumeBytes: Int64? = nil) -> UMSError? {
        func refuse(_ rule: String, _ reason: String) -> UMSError {
            UMSError(.forbidden, "admission refused (rule \(rule)): \(reason)")
        }
        let security = specification.security ?? SecurityOptions()
        if let capability = security.addCapabilities.first(where: { !allowedCapabilities.contains($0) }) {
            return refuse("allowedCapabilities", "\(capability) is not allowed here")
        }
        if security.runsContainers && !allowNested {
            return refuse("allowNested", "containers that run containers are not admitted here")
        }
        if security.seccompUnconfined && !allowSeccompUnconfined {
            return refuse("allowSeccompUnconfined", "containers without a seccomp filter are not admitted here")
        }
        // The agent's own published port is replaced by the destination's (UMS's own range).
        let agentPort = specification.labels[SpecificationLabels.agent] != nil || specification.labels[SpecificationLabels.nested] != nil
            ? MigratableImage.agentPort(of: specification) : nil
        for port in specification.ports where port.containerPort != agentPort {
            if reservedPorts.contains(port.hostPort) {
                return refuse("hostPorts", "host port \(port.hostPort) is reserved by this system")
            }
            if !hostPorts.contains(port.hostPort) {
                return refuse("hostPorts", "host port \(port.hostPort) is outside \(hostPorts.lowerBound)-\(hostPorts.upperBound)")
            }
        }
        if let maxMemoryBytes, (specification.limits.memoryBytes ?? .max) > maxMemoryBytes {
            return refuse("maxMemoryBytes", "the container may use more than \(maxMemoryBytes) bytes (set a memory limit of at most that)")
        }
        if let maxCPUs, (specification.limits.cpus ?? .infinity) > maxCPUs {
            return refuse("maxCPUs", "the container may use more than \(maxCPUs) CPUs")
        }
        if let maxPids, (specification.limits.pids ?? .max) > maxPids {
            return refuse("maxPids", "the container may run more than \(maxPids) processes")
        }
        for bind in specification.binds ?? [] where !allowedBindPaths.contains(where: { MountPath.isWithin(bind.hostPath, $0) }) {
            return refuse("allowedBindPaths", "the host directory \(bind.hostPath) is not under \(allowedBindPaths.isEmpty ? "any allowed path (none are)" : allowedBindPaths.joined(separator: ", "))")
        }
        if let volumeBytes, volumeBytes > maxVolumeBytes {
            return refuse("maxVolumeBytes", "its volumes and host directories hold \(volumeBytes) bytes, more than the \(maxVolumeBytes) allowed here")
        }
        return nil
    }
}
