/// What a source asks of a destination for one incoming migration (the peer routes), in order.
public enum IncomingStep: String, Codable, Sendable, CaseIterable {
    case prepare, receive, restore, commit, abort
}

/// The destination's lifecycle of one incoming migration:
/// `prepared → receiving → restoring → restored → committed`, or `aborted` from any state
/// before `committed`. From `restoring` on only the source decides (the service may run here).
public enum IncomingState: String, Codable, Sendable, CaseIterable {
    /// The identical container exists, not yet restored into.
    case prepared
    /// Checkpoint files are arriving.
    case receiving
    /// The restore has begun (it may have failed: the source then aborts).
    case restoring
    /// The service runs here, waiting for the source's commit.
    case restored
    /// Terminal: the service is this system's.
    case committed
    /// Terminal: everything the migration created here was removed.
    case aborted

    public var isTerminal: Bool { self == .committed || self == .aborted }

    /// Whether this system may give up on the source alone: only while nothing can run here yet.
    public var mayExpire: Bool { self == .prepared || self == .receiving }
}

/// The transitions of an incoming migration, all through one place: each throws `invalidState`
/// when asked in the wrong state.
public struct IncomingStateMachine: Sendable, Equatable, Codable {
    public private(set) var state: IncomingState = .prepared

    public init() {}

    /// Where a journal left it (a restart).
    public init(state: IncomingState) {
        self.state = state
    }

    /// Checkpoint files start or continue arriving.
    public mutating func receive() throws(UMSError) {
        try move(.receive, from: [.prepared, .receiving], to: .receiving)
    }

    /// The restore begins.
    public mutating func beginRestore() throws(UMSError) {
        try move(.restore, from: [.prepared, .receiving], to: .restoring)
    }

    /// The restore succeeded: the service runs here.
    public mutating func restored() throws(UMSError) {
        try move(.restore, from: [.restoring], to: .restored)
    }

    public mutating func commit() throws(UMSError) {
        try move(.commit, from: [.restored], to: .committed)
    }

    public mutating func abort() throws(UMSError) {
        guard !state.isTerminal else {
            throw UMSError(.invalidState, "failed to abort the incoming migration: it is already \(state.rawValue)")
        }
        state = .aborted
    }

    mutating func move(_ step: IncomingStep, from allowed: Set<IncomingState>, to next: IncomingState) throws(UMSError) {
        guard allowed.contains(state) else {
            throw UMSError(.invalidState, "failed to \(step.rawValue) the incoming migration: it is \(state.rawValue)")
        }
        state = next
    }
}
