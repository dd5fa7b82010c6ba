/// The steps of a migration, in the order of the paper's Fig. 2, grouped into its three phases.
public enum MigrationStep: String, Codable, Sendable, CaseIterable {
    // Pre-migration
    /// Step 1: get the container's Specification from the orchestrator and pick the approach.
    case specification
    /// Step 2: check that the destination Coordinator is available and accepts our credentials.
    case checkingDestination
    /// Steps 3-7: the destination creates an identical container (its rootfs sent if missing).
    case creatingDestination
    // Migration
    /// Step 8: refuse control operations on the container and freeze it.
    case lockingControl
    /// Step 8: checkpoint; memory pages stream to the destination while they are written.
    case checkpointing
    /// Step 9: the remaining checkpoint files and the rootfs changes go to the destination.
    case transferring
    /// Step 11: the destination restores.
    case restoring
    // Post-migration
    /// Steps 12-13: the destination confirms the service runs and adopts the container.
    case confirming
    /// Step 14: the new endpoint is recorded for the requester.
    case reportingEndpoint
    /// Step 15: the source container is deleted.
    case deletingSource

    public enum Phase: String, Codable, Sendable {
        case preMigration = "pre-migration"
        case migration
        case postMigration = "post-migration"
    }

    public var phase: Phase {
        switch self {
        case .specification, .checkingDestination, .creatingDestination: .preMigration
        case .lockingControl, .checkpointing, .transferring, .restoring: .migration
        case .confirming, .reportingEndpoint, .deletingSource: .postMigration
        }
    }

    public var order: Int { Self.allCases.firstIndex(of: self) ?? 0 }

    /// Until the destination has confirmed, a failure resumes the source; after it, the service
    /// runs at the destination and going back would make it run twice.
    public var canRollBack: Bool { order <= MigrationStep.confirming.order }
}

/// The lifecycle of one migration as an explicit state machine. Each state carries what is known
/// in it; `MigrationStateMachine` refuses transitions that skip back or leave a final state.
public enum MigrationState: Sendable, Equatable {
    case requested
    case running(MigrationStep)
    /// A step failed before the destination confirmed; the source is being resumed.
    case rollingBack(from: MigrationStep, cause: UMSError)
    /// Terminal: the source runs again as before, nothing is left at the destination.
    case rolledBack(from: MigrationStep, cause: UMSError)
    /// Terminal: the service runs at the destination.
    case completed(endpoints: [String])
    /// Terminal: something failed and could not be fully undone; `cause` says what is left.
    case failed(from: MigrationStep, cause: UMSError)
    /// The restore may have been asked and the destination could not be reached to learn its
    /// outcome: the source stays frozen and locked, and the Coordinator asks the destination again
    /// (with backoff) until both agree which copy runs — or an operator resolves it.
    case awaitingPeer(from: MigrationStep, cause: UMSError)

    public var isTerminal: Bool {
        switch self {
        case .rolledBack, .completed, .failed: true
        case .requested, .running, .rollingBack, .awaitingPeer: false
        }
    }

    public var status: MigrationStatus {
        switch self {
        case .requested: .pending
        case .running: .running
        case .rollingBack: .rollingBack
        case .rolledBack: .rolledBack
        case .completed: .completed
        case .failed: .failed
        case .awaitingPeer: .awaitingPeer
        }
    }

    public var step: MigrationStep? {
        switch self {
        case .requested, .completed: nil
        case .running(let step): step
        case .rollingBack(let step, _), .rolledBack(let step, _), .failed(let step, _), .awaitingPeer(let step, _): step
        }
    }
}

public enum MigrationStatus: String, Codable, Sendable {
    case pending, running
    case rollingBack = "rolling-back"
    case rolledBack = "rolled-back"
    case completed, failed
    case awaitingPeer = "awaiting-peer"

    /// Whether nothing more happens to the migration by itself.
    public var isFinal: Bool { self == .completed || self == .rolledBack || self == .failed }
}

/// Enforces the legal transitions of `MigrationState`.
public struct MigrationStateMachine: Sendable {
    public private(set) var state: MigrationState = .requested

    public init() {}

    /// Moves to `step`, which must come after the current one.
    public mutating func advance(to step: MigrationStep) throws(UMSError) {
        switch state {
        case .requested:
            break
        case .running(let current) where step.order > current.order:
            break
        default:
            throw UMSError(.invalidState, "failed to advance migration to \(step.rawValue): it is \(describe(state))")
        }
        state = .running(step)
    }

    /// Starts undoing after a failure. Only legal while the destination has not yet confirmed.
    public mutating func beginRollback(cause: UMSError) throws(UMSError) {
        guard case .running(let step) = state, step.canRollBack else {
            if case .requested = state {
                state = .rollingBack(from: .specification, cause: cause)
                return
            }
            throw UMSError(.invalidState, "failed to roll back migration: it is \(describe(state))")
        }
        state = .rollingBack(from: step, cause: cause)
    }

    public mutating func finishRollback() throws(UMSError) {
        guard case .rollingBack(let step, let cause) = state else {
            throw UMSError(.invalidState, "failed to finish rollback: it is \(describe(state))")
        }
        state = .rolledBack(from: step, cause: cause)
    }

    public mutating func complete(endpoints: [String]) throws(UMSError) {
        guard case .running(let step) = state, step.order >= MigrationStep.confirming.order else {
            throw UMSError(.invalidState, "failed to complete migration: it is \(describe(state))")
        }
        state = .completed(endpoints: endpoints)
    }

    /// The rollback could not learn from the destination whether its copy runs: wait for it.
    public mutating func awaitPeer(cause: UMSError) throws(UMSError) {
        guard case .rollingBack(let step, _) = state else {
            throw UMSError(.invalidState, "failed to await the peer: it is \(describe(state))")
        }
        state = .awaitingPeer(from: step, cause: cause)
    }

    /// Marks the migration failed for good: a rollback that itself failed, or a failure after the
    /// destination confirmed.
    public mutating func fail(cause: UMSError) throws(UMSError) {
        switch state {
        case .running(let step), .rollingBack(let step, _), .awaitingPeer(let step, _):
            state = .failed(from: step, cause: cause)
        case .requested:
            state = .failed(from: .specification, cause: cause)
        default:
            throw UMSError(.invalidState, "failed to mark migration failed: it is \(describe(state))")
        }
    }

    private func describe(_ state: MigrationState) -> String {
        switch state {
        case .requested: "requested"
        case .running(let step): "at \(step.rawValue)"
        case .rollingBack: "rolling back"
        case .rolledBack: "rolled back"
        case .completed: "completed"
        case .failed: "failed"
        case .awaitingPeer: "awaiting the peer"
        }
    }
}
