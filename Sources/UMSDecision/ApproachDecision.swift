import UMSModel

/// What the decision layer needs to know about one system.
@dynamicMemberLookup
public struct SystemProfile: Codable, Sendable, Equatable {
    /// What the system's orchestrator can do.
    public var capabilities: OrchestratorCapabilities
    /// Approaches this system's Coordinator implements.
    public var approaches: [Approach]

    public init(capabilities: OrchestratorCapabilities, approaches: [Approach]) {
        self.capabilities = capabilities
        self.approaches = approaches
    }

    public subscript<Value>(dynamicMember keyPath: WritableKeyPath<OrchestratorCapabilities, Value>) -> Value {
        get { capabilities[keyPath: keyPath] }
        set { capabilities[keyPath: keyPath] = newValue }
    }

    // On the wire the capabilities' fields sit next to `approaches`, one flat object.
    enum CodingKeys: String, CodingKey {
        case approaches
    }

    public init(from decoder: any Decoder) throws {
        capabilities = try OrchestratorCapabilities(from: decoder)
        approaches = try decoder.container(keyedBy: CodingKeys.self).decode([Approach].self, forKey: .approaches)
    }

    public func encode(to encoder: any Encoder) throws {
        try capabilities.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(approaches, forKey: .approaches)
    }
}

/// Whether one approach can move one container between two systems, and why (not).
public struct Feasibility: Codable, Sendable, Equatable {
    public var approach: Approach
    public var feasible: Bool
    public var reason: String

    public init(approach: Approach, feasible: Bool, reason: String) {
        self.approach = approach
        self.feasible = feasible
        self.reason = reason
    }
}

/// The Coordinator's choice of approach (paper §III-A: "how" to migrate), from the container's
/// Specification and what the two systems can do. Pure, so every rule is unit-tested.
public enum ApproachDecision {
    /// Every approach with its verdict, in order of preference, for the transfer mode asked for.
    public static func evaluate(
        _ specification: Specification, source: SystemProfile, destination: SystemProfile?, mode: TransferMode = .stopAndCopy
    ) -> [Feasibility] {
        preference(for: specification).map { evaluate($0, specification, source: source, destination: destination, mode: mode) }
    }



    /// The order `auto` tries the approaches in. A container built for an approach (its image
    /// carries the agent, or its service runs nested) prefers that one: its owner chose it, it
    /// needs nothing from the orchestrators, and it works between orchestrators of different
    /// kinds. Otherwise the orchestrator's own checkpoint/restore comes first.
    public static func preference(for specification: Specification) -> [Approach] {
        let builtFor: Approach? =
            specification.labels[SpecificationLabels.nested] != nil ? .container
            : specification.labels[SpecificationLabels.agent] != nil ? .service : nil
        let rest = Approach.allCases.sorted().filter { $0 != builtFor }
        return (builtFor.map { [$0] } ?? []) + rest
    }

    static func evaluate(
        _ approach: Approach, _ specification: Specification, source: SystemProfile, destination: SystemProfile?, mode: TransferMode
    ) -> Feasibility {
        func verdict(_ ok: Bool, _ reason: String) -> Feasibility { Feasibility(approach: approach, feasible: ok, reason: reason) }
        guard source.approaches.contains(approach) else {
            return verdict(false, "this system's Coordinator does not implement the \(approach.rawValue)-level approach")
        }
        if let destination, !destination.approaches.contains(approach) {
            return verdict(false, "the destination's Coordinator does not implement the \(approach.rawValue)-level approach")
        }
        if mode == .postCopy, approach == .service {
            return verdict(false, TransferMode.serviceLevelPostCopyUnavailable)
        }
        switch approach {
        case .orchestrator:
            if specification.labels[SpecificationLabels.nested] != nil {
                return verdict(false, "the service runs nested in an outer container; the container-level approach moves it")
            }
            // A container its engine made without UMS (adopted) needs only that the engines
            // checkpoint such containers (containerd: `ctr run` ones, not UMS's bundles).
            let adopted = specification.engine != nil
            func checkpoints(_ system: SystemProfile) -> Bool { system.canCheckpoint || (adopted && system.checkpointsAdopted) }
            func only(_ system: SystemProfile) -> String {
                system.orchestrator == .swarm ? " (Docker Swarm has no checkpoint API; the service- and container-level approaches move its services)"
                    : system.checkpointsAdopted ? " it did not make itself (only those made with its own tools)" : ""
            }
            guard checkpoints(source) else {
                return verdict(false, "the source orchestrator (\(source.orchestrator)) cannot checkpoint containers\(only(source))")
            }
            guard let destination else {
                return verdict(true, "the source orchestrator (\(source.orchestrator)) can checkpoint; the destination decides the rest")
            }
            guard checkpoints(destination) else {
                return verdict(false, "the destination orchestrator (\(destination.orchestrator)) cannot restore checkpoints\(only(destination))")
            }
            guard destination.orchestrator == source.orchestrator else {
                return verdict(false, "the orchestrators differ (\(source.orchestrator) → \(destination.orchestrator)); a runtime's checkpoint only restores into the same kind of runtime")
            }
            guard let sourceCRIU = source.criuVersion, let destinationCRIU = destination.criuVersion, major(sourceCRIU) == major(destinationCRIU) else {
                return verdict(false, "CRIU versions are incompatible (\(source.criuVersion ?? "none") → \(destination.criuVersion ?? "none"))")
            }
            guard major(source.runtimeVersion) == major(destination.runtimeVersion) else {
                return verdict(false, "runtime versions are incompatible (\(source.runtimeVersion) → \(destination.runtimeVersion))")
            }
            return verdict(true, "both systems run \(source.orchestrator) with checkpoint/restore (CRIU \(sourceCRIU) → \(destinationCRIU))")
        case .service:
            guard specification.labels[SpecificationLabels.agent] != nil else {
                return verdict(false, "the service's image carries no UMS checkpoint agent")
            }
            if let destination, destination.agentCapability != source.agentCapability {
                let (ours, theirs) = (source.agentCapability, destination.agentCapability)
                return verdict(false, "the agent runs with \(ours) here but \(destination.orchestrator) gives it \(theirs); CRIU restores a process tree only with the capabilities it had (the container-level approach does not depend on this)")
            }
            return verdict(true, "the image carries the UMS checkpoint agent")
        case .container:
            guard specification.labels[SpecificationLabels.nested] != nil else {
                return verdict(false, "the service does not run nested in an outer container")
            }
            return verdict(true, "the service runs nested in an outer container that carries a runtime")
        }
    }

    /// Picks the approach for a request: the requested one if feasible, else under `auto` the
    /// most efficient feasible one. Throws `unsupported` saying why nothing fits.
    public static func choose(
        _ request: ApproachRequest, _ specification: Specification, source: SystemProfile, destination: SystemProfile, mode: TransferMode = .stopAndCopy
    ) throws(UMSError) -> Approach {
        let verdicts = evaluate(specification, source: source, destination: destination, mode: mode)
        switch request {
        case .specific(let approach):
            guard let verdict = verdicts.first(where: { $0.approach == approach }), verdict.feasible else {
                let reason = verdicts.first { $0.approach == approach }?.reason ?? "unknown approach"
                throw UMSError(.unsupported, "failed to migrate '\(specification.name)' with the \(approach.rawValue)-level approach: infeasible, because \(reason)")
            }
            return approach
        case .auto:
            if let chosen = verdicts.first(where: \.feasible) { return chosen.approach }
            let reasons = verdicts.map { "\($0.approach.rawValue): \($0.reason)" }.joined(separator: "; ")
            throw UMSError(.unsupported, "failed to migrate '\(specification.name)': no approach is feasible (\(reasons))")
        }
    }

    static func major(_ version: String) -> Int {
        Int(version.split(separator: ".").first.map { $0.prefix { $0.isNumber } } ?? "") ?? -1
    }
}
