/// The three migration approaches of UMS (paper §III-C), named by the level at which they act.
/// Which one is feasible depends on how much control the user has over the two systems.
public enum Approach: String, Codable, Sendable, CaseIterable, Comparable {
    /// The runtime's own checkpoint/restore; needs both orchestrators to be able to do it and be
    /// compatible (full control).
    case orchestrator
    /// A checkpoint agent inside the service's image (limited control: the image may change).
    case service
    /// The unchanged service nested in an outer container that carries a runtime (no control).
    case container

    /// Preference under `auto`, cheapest first.
    var rank: Int {
        switch self {
        case .orchestrator: 0
        case .service: 1
        case .container: 2
        }
    }

    public static func < (lhs: Approach, rhs: Approach) -> Bool { lhs.rank < rhs.rank }
}

/// What a migration request asks for: a specific approach, or the Coordinator's choice.
public enum ApproachRequest: Sendable, Equatable, Codable, CustomStringConvertible {
    case auto
    case specific(Approach)

    public init?(rawValue: String) {
        if rawValue == "auto" { self = .auto; return }
        guard let approach = Approach(rawValue: rawValue) else { return nil }
        self = .specific(approach)
    }

    public var rawValue: String {
        switch self {
        case .auto: "auto"
        case .specific(let approach): approach.rawValue
        }
    }

    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        guard let value = ApproachRequest(rawValue: raw) else {
            throw UMSError(.invalidArgument, "unknown approach '\(raw)': expected auto, orchestrator, service or container")
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// How memory pages cross in a migration.
public enum TransferMode: String, Codable, Sendable, CaseIterable {
    /// Stop-and-copy: the whole checkpoint (pages included) crosses before the destination
    /// restores. The source holds the only complete state until the destination runs it.
    case stopAndCopy = "stop-and-copy"
    /// Post-copy (CRIU lazy-pages): the destination restores as soon as the non-page images have
    /// crossed and fetches the pages from the frozen source while the service already runs there.
    /// Downtime no longer grows with memory; until the last page has crossed, the service needs
    /// both systems and the link between them.
    case postCopy = "post-copy"

    /// Why the service-level approach has no post-copy: its agent's CRIU mode.
    public static let serviceLevelPostCopyUnavailable =
        "post-copy needs CRIU's lazy pages (userfaultfd), which CRIU 4.2's unprivileged mode, the one the service-level agent runs, does not have; the container- and orchestrator-level approaches have post-copy"
}
