/// What a migration does with the TCP connections established to the service before it (issue 16).
public enum ConnectionHandling: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    /// Carried when both systems agree to a migration network and the approach and engines can
    /// restore established sockets; closed otherwise (the record says why).
    case auto
    /// Carried, or the migration is refused before the freeze with the reason.
    case carry
    /// Closed at the move, as before issue 16: their clients see a reset and reconnect.
    case close

    public var description: String { rawValue }
}

/// What a system publishes when it agrees to share a migration network with its peers: the
/// address its end of a tunnel uses and the block its containers' addresses come from.
public struct MigrationNetworkInfo: Codable, Sendable, Equatable {
    /// This system's IPv4 address, where the VXLAN tunnel ends.
    public var tunnelAddress: String
    /// `A.B.C.D/N`, inside 198.19.0.0/16.
    public var containerNetwork: String
    /// The approaches whose connections its orchestrator carries (runc: orchestrator- and
    /// container-level; UMS's containers on containerd: container-level). Absent from a peer of
    /// before container-level carried them: orchestrator-level only.
    public var approaches: [Approach]?

    public init(tunnelAddress: String, containerNetwork: String, approaches: [Approach] = [.orchestrator, .container]) {
        self.tunnelAddress = tunnelAddress
        self.containerNetwork = containerNetwork
        self.approaches = approaches
    }

    /// The approaches it carries, as said or implied (a peer that says nothing: orchestrator-level).
    public var carriedApproaches: [Approach] { approaches ?? [.orchestrator] }

    /// Whether connections of `approach` are carried to or from this system.
    public func carries(_ approach: Approach) -> Bool {
        carriedApproaches.contains(approach)
    }

    enum CodingKeys: String, CodingKey { case tunnelAddress, containerNetwork, approaches }

    /// A peer's: at most one entry per approach (each an approach this version knows).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        tunnelAddress = try container.decode(String.self, forKey: .tunnelAddress)
        containerNetwork = try container.decode(String.self, forKey: .containerNetwork)
        approaches = try container.decodeIfPresent([Approach].self, forKey: .approaches)
        if let approaches, approaches.count > Approach.allCases.count || Set(approaches).count != approaches.count {
            throw DecodingError.dataCorruptedError(forKey: .approaches, in: container, debugDescription: "at most one entry per approach")
        }
    }
}

/// In a prepare request: the service keeps its address at the destination and its established
/// connections cross through the tunnel between the two systems. Checked as it is decoded: both
/// are strict dotted IPv4, the service's inside UMS's container range, the tunnel's not a
/// loopback, multicast or unspecified address.
public struct CarriedConnections: Codable, Sendable, Equatable {
    /// The service's container address at the source (it keeps it).
    public var address: String
    /// The source's end of the tunnel.
    public var tunnelAddress: String

    public init(address: String, tunnelAddress: String) throws(UMSError) {
        self.address = address
        self.tunnelAddress = tunnelAddress
        try validate()
    }

    enum CodingKeys: String, CodingKey { case address, tunnelAddress }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        address = try container.decode(String.self, forKey: .address)
        tunnelAddress = try container.decode(String.self, forKey: .tunnelAddress)
        try validate()
    }

    func validate() throws(UMSError) {
        guard let service = IPv4.containerAddress(address), service & 0xFF != 0, service & 0xFF != 0xFF else {
            throw UMSError(.invalidArgument, "invalid carried service address '\(String(address.prefix(40)))': an address inside 198.19.0.0/16 expected")
        }
        guard let tunnel = IPv4.value(tunnelAddress), tunnel != 0, tunnel >> 24 != 127, tunnel >> 28 != 0xE, tunnel != .max else {
            throw UMSError(.invalidArgument, "invalid tunnel address '\(String(tunnelAddress.prefix(40)))': a unicast IPv4 address expected")
        }
    }
}

/// In the migration record: what happened to the established connections.
public struct ConnectionsSummary: Codable, Sendable, Equatable {
    public enum Mode: String, Codable, Sendable {
        /// Through the tunnel, with CRIU's `tcp-established`.
        case carried
        /// Restored closed (`tcp-close`): clients reconnect.
        case closed
    }

    public var mode: Mode
    /// Why they are closed, or how they cross.
    public var reason: String
    /// Established connections the destination restored (carried mode, once restored).
    public var carried: Int?
    /// Connections still open through the tunnel when `--connection-linger` ended, closed then.
    public var closedAtLinger: Int?
    /// Established connections the service had at the freeze, closed by the move (closed mode).
    public var closed: Int?
    /// New requests and connections the Frontman held during the freeze.
    public var held: Int?

    public init(mode: Mode, reason: String, carried: Int? = nil, closedAtLinger: Int? = nil, closed: Int? = nil, held: Int? = nil) {
        self.mode = mode
        self.reason = reason
        self.carried = carried
        self.closedAtLinger = closedAtLinger
        self.closed = closed
        self.held = held
    }
}
