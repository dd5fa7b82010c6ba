/// A container as a Coordinator reports it.
public struct ContainerInfo: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        case created, running, paused, stopped, unknown
    }

    public var name: String
    public var state: State
    public var specification: Specification
    /// The process id of the container's first process on its host, when running.
    public var pid: Int?
    /// Where clients reach the service (`host:port` per published port).
    public var endpoints: [String]
    /// Approaches that can move this container, decided from its Specification and the system.
    public var approaches: [Approach]
    /// The migration that holds the control lock on this container, if any.
    public var migratingIn: String?
    public var orchestrator: OrchestratorKind
    /// The container's own address on its system's network (where the system itself reaches it,
    /// e.g. its checkpoint agent's control port).
    public var address: String?
    /// The node of a cluster that runs it (a swarm's node, as its scheduler chose); nil on a
    /// system of one host.
    public var node: String?

    public init(
        name: String, state: State, specification: Specification, pid: Int? = nil, endpoints: [String] = [],
        approaches: [Approach] = [], migratingIn: String? = nil, orchestrator: OrchestratorKind, address: String? = nil,
        node: String? = nil
    ) {
        self.node = node
        self.name = name
        self.state = state
        self.specification = specification
        self.pid = pid
        self.endpoints = endpoints
        self.approaches = approaches
        self.migratingIn = migratingIn
        self.orchestrator = orchestrator
        self.address = address
    }
}

/// Where a source's checkpoint agent sends its images directly (service- and container-level
/// approaches): the destination agent's published address and a secret for this migration only.
public struct CheckpointIntake: Codable, Sendable, Equatable {
    /// `host:port`, reachable from the source system.
    public var address: String
    public var secret: String

    public init(address: String, secret: String) {
        self.address = address
        self.secret = secret
    }

    enum CodingKeys: String, CodingKey { case address, secret }

    /// A destination's answer: both fields reach the source agent's control line, so they are
    /// checked as they are decoded.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(address: try container.decode(String.self, forKey: .address), secret: try container.decode(String.self, forKey: .secret))
        _ = try endpoint()
    }

    /// The address as host and port, and the secret, checked: an IP address or DNS name, a port
    /// 1-65535, a secret of 1-64 hex digits.
    public func endpoint() throws(UMSError) -> (host: String, port: Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (1...65535).contains(port) else {
            throw UMSError(.invalidArgument, "invalid agent intake address '\(String(address.prefix(64)))': expected HOST:PORT")
        }
        let host = String(address[..<colon])
        try HostAddress.validate(host)
        guard (1...64).contains(secret.count), secret.unicodeScalars.allSatisfy({ ("0"..."9").contains($0) || ("a"..."f").contains($0) }) else {
            throw UMSError(.invalidArgument, "invalid agent intake secret: expected 1-64 hex digits")
        }
        return (host, port)
    }
}
