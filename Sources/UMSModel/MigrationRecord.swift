import Foundation

/// One system as a migration sees it.
public struct SystemRef: Codable, Sendable, Equatable {
    public var name: String
    public var url: String

    public init(name: String, url: String) {
        self.name = name
        self.url = url
    }
}

/// The record of one migration, kept by the source Coordinator and shown by `ums migrations`.
public struct MigrationRecord: Codable, Sendable, Equatable {
    /// Time spent in each step, in seconds (the benchmark's columns).
    public struct Durations: Codable, Sendable, Equatable {
        public var preMigration: Double?
        public var checkpoint: Double?
        public var transfer: Double?
        public var restore: Double?
        public var postMigration: Double?
        public var total: Double?

        public init() {}
    }

    /// One line of the migration's history: a step entered, finished or failed.
    public struct Event: Codable, Sendable, Equatable {
        public var at: Date
        public var step: String
        public var message: String

        public init(at: Date, step: String, message: String) {
            self.at = at
            self.step = step
            self.message = message
        }
    }

    public var id: String
    public var container: String
    public var approach: Approach?
    public var requestedApproach: ApproachRequest
    public var mode: TransferMode
    public var source: SystemRef
    public var destination: SystemRef
    public var status: MigrationStatus
    /// The step the migration is in (or failed in).
    public var step: MigrationStep?
    public var phase: MigrationStep.Phase?
    public var endpoints: [String]
    public var bytesMoved: Int64
    /// Post-copy: the bytes of pages the destination fetched after the restore (part of
    /// `bytesMoved`).
    public var pageBytes: Int64?
    public var durations: Durations
    /// Seconds the service did not run: from the freeze at the source to running at the
    /// destination (with post-copy, pages may still be crossing then).
    public var downtime: Double?
    public var error: UMSError?
    public var startedAt: Date
    public var finishedAt: Date?
    public var events: [Event]
    /// Set while the source container could not be deleted after the service moved (it stays
    /// frozen, never running twice): why, while the Coordinator keeps retrying. Nil once deleted.
    public var sourceLeft: String?
    /// Set while the destination could not be told to remove what it prepared after a rollback
    /// (the link was cut): why, while the Coordinator keeps telling it. Nil once it confirmed.
    public var destinationLeft: String?
    /// What happened to the connections established before the migration (carried or closed).
    public var connections: ConnectionsSummary?
    /// How the checkpoint images crossed (through the Coordinators; nil when an agent streamed them).
    public var images: ImageTransferSummary?

    public init(
        id: String, container: String, requestedApproach: ApproachRequest, mode: TransferMode = .stopAndCopy,
        source: SystemRef, destination: SystemRef, startedAt: Date
    ) {
        self.id = id
        self.container = container
        self.requestedApproach = requestedApproach
        self.mode = mode
        self.source = source
        self.destination = destination
        self.status = .pending
        self.endpoints = []
        self.bytesMoved = 0
        self.durations = Durations()
        self.startedAt = startedAt
        self.events = []
    }

    /// Copies the state machine's state into the record's flat, serialisable fields.
    public mutating func apply(_ state: MigrationState) {
        status = state.status
        step = state.step
        phase = state.step?.phase
        switch state {
        case .completed(let endpoints):
            self.endpoints = endpoints
        case .rolledBack(_, let cause), .failed(_, let cause), .rollingBack(_, let cause), .awaitingPeer(_, let cause):
            error = cause
        case .requested, .running:
            break
        }
    }
}
