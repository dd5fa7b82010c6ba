/// The orchestrators UMS has adapters for.
public enum OrchestratorKind: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    /// The embedded orchestrator: UMS drives runc itself.
    case runc
    case podman
    case docker
    /// The embedded orchestrator's bundles, with containerd running the containers.
    case containerd
    /// A Docker Swarm: services on a cluster of nodes, placed and restarted by its manager.
    case swarm

    public var description: String { rawValue }
}

/// What an orchestrator on one system can do, as the decision layer needs to know it.
public struct OrchestratorCapabilities: Codable, Sendable, Equatable {
    public var orchestrator: OrchestratorKind
    public var runtimeVersion: String
    public var criuVersion: String?
    /// The engine can checkpoint and restore its containers itself (orchestrator-level approach).
    public var canCheckpoint: Bool
    /// It can for containers its engine made without UMS (adopted), even where it cannot for
    /// UMS's own (containerd: `ctr run` containers, not UMS's bundles). Absent on the wire:
    /// as `canCheckpoint`.
    public var checkpointsAdopted: Bool
    /// The capability this system gives a checkpoint agent (`CAP_CHECKPOINT_RESTORE`, or
    /// `CAP_SYS_ADMIN` where the engine predates it). CRIU restores a process tree only into a
    /// container with the same capabilities it had, so agents move only between systems that agree.
    public var agentCapability: String

    public init(
        orchestrator: OrchestratorKind, runtimeVersion: String, criuVersion: String?, canCheckpoint: Bool,
        checkpointsAdopted: Bool? = nil, agentCapability: String = "CAP_CHECKPOINT_RESTORE"
    ) {
        self.checkpointsAdopted = checkpointsAdopted ?? canCheckpoint
        self.orchestrator = orchestrator
        self.runtimeVersion = runtimeVersion
        self.criuVersion = criuVersion
        self.canCheckpoint = canCheckpoint
        self.agentCapability = agentCapability
    }

    enum CodingKeys: String, CodingKey {
        case orchestrator, runtimeVersion, criuVersion, canCheckpoint, checkpointsAdopted, agentCapability
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        orchestrator = try container.decode(OrchestratorKind.self, forKey: .orchestrator)
        runtimeVersion = try container.decode(String.self, forKey: .runtimeVersion)
        criuVersion = try container.decodeIfPresent(String.self, forKey: .criuVersion)
        canCheckpoint = try container.decode(Bool.self, forKey: .canCheckpoint)
        checkpointsAdopted = try container.decodeIfPresent(Bool.self, forKey: .checkpointsAdopted) ?? canCheckpoint
        agentCapability = try container.decode(String.self, forKey: .agentCapability)
    }
}
