import UMSModel

/// Whether a migration carries the service's established TCP connections (issue 16), and why
/// (not). Pure, so every rule is unit-tested; `ums migrate --dry-run` shows its answer.
public enum ConnectionDecision {
    /// What one side says about itself.
    public struct Side: Sendable {
        /// Published when the system shares a migration network and its orchestrator can restore
        /// established sockets (nil otherwise).
        public var network: MigrationNetworkInfo?
        public var name: String

        public init(name: String, network: MigrationNetworkInfo?) {
            self.name = name
            self.network = network
        }
    }

    /// The verdict: carried (with what the destination needs) or closed with the reason. With
    /// `carry` asked and not possible, an error with the reason (refused before anything moves).
    public static func decide(
        _ requested: ConnectionHandling, approach: Approach, mode: TransferMode, serviceAddress: String?, alsoHolds carriedAddress: String? = nil,
        source: Side, destination: Side
    ) throws(UMSError) -> (summary: ConnectionsSummary, carry: CarriedConnections?) {
        let verdict = evaluate(
            requested, approach: approach, mode: mode, serviceAddress: serviceAddress, alsoHolds: carriedAddress, source: source, destination: destination
        )
        switch verdict {
        case .success(let carry):
            let reason = "through the tunnel between \(source.name) (\(carry.tunnelAddress)) and \(destination.name) (\(destination.network?.tunnelAddress ?? "?")), the service keeping its address \(carry.address)"
            return (ConnectionsSummary(mode: .carried, reason: reason), carry)
        case .failure(let reason):
            if requested == .carry {
                throw UMSError(.unsupported, "failed to carry the established connections: \(reason.message)")
            }
            return (ConnectionsSummary(mode: .closed, reason: reason.message), nil)
        }
    }

    struct Reason: Error { var message: String }

    static func evaluate(
        _ requested: ConnectionHandling, approach: Approach, mode: TransferMode, serviceAddress: String?, alsoHolds carriedAddress: String?,
        source: Side, destination: Side
    ) -> Result<CarriedConnections, Reason> {
        if requested == .close { return .failure(Reason(message: "closed as asked (--connections close); clients reconnect")) }
        guard approach != .service else {
            return .failure(Reason(message: "the service-level agent runs CRIU unprivileged inside the service's container, which cannot repair TCP sockets; connections are carried by the orchestrator- and container-level approaches"))
        }
        guard mode == .stopAndCopy else {
            return .failure(Reason(message: "post-copy restores lazily; connections are carried with stop-and-copy only"))
        }
        // A container-level service restored with connections carried from a third system still
        // holds that system's address: its sockets there could not be restored anywhere else.
        if let carriedAddress {
            return .failure(Reason(message: "the service still holds \(carriedAddress), carried here with its connections from another system; only connections on a service's own address are carried"))
        }
        guard let local = source.network else {
            return .failure(Reason(message: "\(source.name) shares no migration network (admission migrationNetwork off, or its orchestrator cannot restore established connections)"))
        }
        guard let remote = destination.network else {
            return .failure(Reason(message: "\(destination.name) shares no migration network (admission migrationNetwork off, or its orchestrator cannot restore established connections)"))
        }
        for (side, network) in [(source, local), (destination, remote)] where !network.carries(approach) {
            let carried = network.carriedApproaches
            let named = carried.isEmpty ? "no" : carried.map { "\($0.rawValue)-level" }.joined(separator: " and ")
            return .failure(Reason(message: "\(side.name)'s orchestrator carries the connections of the \(named) approach\(carried.count == 1 ? "" : "es") only, not the \(approach.rawValue)-level one"))
        }
        guard let localBlock = IPv4.containerBlock(local.containerNetwork), let remoteBlock = IPv4.containerBlock(remote.containerNetwork) else {
            return .failure(Reason(message: "a container network is not an aligned block inside 198.19.0.0/16"))
        }
        // Aligned blocks overlap exactly when the wider one holds the narrower one's first address.
        let (wider, narrower) = localBlock.prefix <= remoteBlock.prefix ? (localBlock, remoteBlock) : (remoteBlock, localBlock)
        if IPv4.contains(wider, narrower.base) {
            return .failure(Reason(message: "the container networks of \(source.name) (\(local.containerNetwork)) and \(destination.name) (\(remote.containerNetwork)) overlap; give each system its own (umsd --container-network)"))
        }
        guard let serviceAddress, let value = IPv4.value(serviceAddress), IPv4.contains(localBlock, value) else {
            return .failure(Reason(message: "the service's address \(serviceAddress ?? "(none)") is not from \(source.name)'s container network \(local.containerNetwork)"))
        }
        guard local.tunnelAddress != remote.tunnelAddress, IPv4.value(remote.tunnelAddress) != nil else {
            return .failure(Reason(message: "the two systems' tunnel addresses are the same or invalid"))
        }
        do {
            return .success(try CarriedConnections(address: serviceAddress, tunnelAddress: local.tunnelAddress))
        } catch {
            return .failure(Reason(message: error.message))
        }
    }
}
