import Foundation
import Logging
import UMSAPI
import UMSDecision
import UMSMigration
import UMSModel
import UMSOrchestrator
import UMSOS

/// The source part of a Coordinator: accepts migration requests, drives each as a
/// `MigrationDriver` (a child of the Coordinator's background work), and keeps the migration
/// records, persisted as JSON.
public actor OutgoingMigrations {
    let system: SystemContext
    let frontmen: Frontmen?
    let endpoints: Endpoints
    let connect: PeerConnector
    let faults: any FaultInjector
    let background: BackgroundTasks
    let logger: Logger
    let store: JSONStore<MigrationRecord>
    var records: [String: MigrationRecord] = [:]
    /// Migrations whose driver runs now.
    var running: Set<String> = []
    var drained: [CheckedContinuation<Void, Never>] = []

    init(
        system: SystemContext, frontmen: Frontmen?, endpoints: Endpoints, connect: @escaping PeerConnector,
        faults: any FaultInjector, background: BackgroundTasks, logger: Logger
    ) throws {
        self.system = system
        self.frontmen = frontmen
        self.endpoints = endpoints
        self.connect = connect
        self.faults = faults
        self.background = background
        self.logger = logger
        self.store = try JSONStore(directory: "\(system.stateDirectory)/migrations", logger: logger)
        for record in store.loadAll() { records[record.id] = record }
    }

    public func all() -> [MigrationRecord] {
        records.values.sorted { $0.startedAt < $1.startedAt }
    }

    public func record(_ id: String) throws -> MigrationRecord {
        guard let record = records[id] else {
            throw UMSError(.notFound, "no migration with id '\(id)' on system \(system.name)")
        }
        return record
    }

    func save(_ record: MigrationRecord) {
        records[record.id] = record
        do {
            try store.save(record, key: record.id)
        } catch {
            logger.error("failed to persist migration record", metadata: ["migration.id": "\(record.id)", "error": "\(error)"])
        }
    }

    func update(_ id: String, _ change: (inout MigrationRecord) -> Void) {
        guard var record = records[id] else { return }
        change(&record)
        save(record)
    }

    /// Appends an event at the record's current step.
    func note(_ id: String, _ message: String) {
        update(id) { $0.events.append(.init(at: Date(), step: $0.step?.rawValue ?? "-", message: message)) }
    }

    /// Marks migrations that a previous run of this Coordinator left unfinished, resuming sources
    /// it had frozen: a restart never leaves a service frozen without a record saying so.
    func recover() async {
        for var record in records.values where ![.completed, .rolledBack, .failed].contains(record.status) {
            let canResume = record.step.map(\.canRollBack) ?? true
            // Once the restore may have been asked of the destination, the service may run
            // there: resuming the source could make it run twice. It stays frozen and locked
            // until the destination is asked (or an operator decides).
            let restoreAsked = record.step == .restoring || record.step == .confirming
            var reason = "migration interrupted: the coordinator restarted during \(record.step?.rawValue ?? "start-up")"
            if canResume && !restoreAsked {
                try? await (system.orchestrator as? any CheckpointingOrchestrator)?.resume(record.container)
                try? await system.orchestrator.unlock(record.container, migration: record.id)
                record.status = .rolledBack
            } else {
                record.status = .failed
                if restoreAsked {
                    reason += "; the destination (\(record.destination.url)) may run the service, so the source stays frozen and locked until it is asked"
                }
            }
            record.error = UMSError(.internalError, reason)
            record.finishedAt = Date()
            save(record)
        }
        // Sources that could not be deleted after their service moved are retried again.
        for record in records.values where record.status == .completed && record.sourceLeft != nil {
            retryDeletingSource(record.id, container: record.container)
        }
    }

    /// Checks a migration request's container and destination; returns the destination's URL.
    func validate(_ request: MigrateRequest) async throws -> String {
        try ContainerName.validate(request.container)
        guard let destination = URL(string: request.destination), let scheme = destination.scheme,
              ["http", "https"].contains(scheme), destination.host != nil
        else {
            throw UMSError(.invalidArgument, "invalid destination '\(request.destination)': expected the destination Coordinator's URL, e.g. http://198.18.0.2:7000")
        }
        let destinationURL = request.destination.hasSuffix("/") ? String(request.destination.dropLast()) : request.destination
        guard destinationURL != system.url else {
            throw UMSError(.invalidArgument, "invalid destination '\(request.destination)': it is this system")
        }
        _ = try await system.orchestrator.inspect(request.container)
        return destinationURL
    }

    /// What `migrate` would do (a dry run): asks the destination what it is, and decides.
    /// Changes nothing, here or there.
    public func plan(_ request: MigrateRequest) async throws -> MigrationPlan {
        let destinationURL = try await validate(request)
        let destination = try await connect(destinationURL, request.destinationToken).system()
        let specification = try await system.orchestrator.specification(of: request.container)
        let approachRequest = request.approach ?? .auto
        let source = await system.profile()
        let verdicts = ApproachDecision.evaluate(specification, source: source, destination: destination.profile)
        var chosen: Approach?
        var infeasible: String?
        do {
            chosen = try ApproachDecision.choose(approachRequest, specification, source: source, destination: destination.profile)
        } catch {
            infeasible = error.message
        }
        // The destination's own check happens at its prepare; this is what its published policy
        // says (its Coordinator's port and UMS's own ranges are reserved there too).
        let reserved = Coordinator.umsPorts.union(URL(string: destinationURL)?.port.map { [$0] } ?? [])
        let admission = destination.admission.map { policy in
            policy.refusal(of: specification, reservedPorts: reserved)?.message ?? "admitted"
        }
        return MigrationPlan(
            container: request.container, source: system.ref,
            destination: SystemRef(name: destination.name, url: destinationURL), requestedApproach: approachRequest,
            mode: request.mode ?? .stopAndCopy, approach: chosen, verdicts: verdicts, infeasible: infeasible, admission: admission
        )
    }

    /// Accepts a migration request: validates it, takes the container's control lock (so a
    /// second request is refused at once), and starts the migration in the background.
    public func migrate(_ request: MigrateRequest) async throws -> MigrationRecord {
        let destinationURL = try await validate(request)
        let id = "m-" + UUID().uuidString.lowercased().prefix(12)
        try await system.orchestrator.lock(request.container, migration: id)
        let approachRequest = request.approach ?? .auto
        var record = MigrationRecord(
            id: String(id), container: request.container, requestedApproach: approachRequest, mode: request.mode ?? .stopAndCopy,
            source: system.ref, destination: SystemRef(name: "", url: destinationURL), startedAt: Date()
        )
        record.events.append(.init(at: Date(), step: "requested", message: "migration of \(request.container) to \(destinationURL) accepted"))
        save(record)
        let driver = MigrationDriver(
            id: record.id, container: request.container, request: approachRequest, system: system, records: self,
            peer: connect(destinationURL, request.destinationToken), frontmen: frontmen, endpoints: endpoints, faults: faults,
            workDirectory: "\(system.stateDirectory)/outgoing/\(record.id)", mode: record.mode,
            redirect: request.frontman == .redirect, logger: logger
        )
        running.insert(record.id)
        let started = background.spawn {
            await driver.run()
            await self.finished(driver.id)
        }
        guard started else {
            running.remove(record.id)
            try? await system.orchestrator.unlock(request.container, migration: record.id)
            update(record.id) {
                $0.status = .rolledBack
                $0.error = UMSError(.unavailable, "failed to migrate: the coordinator is shutting down")
                $0.finishedAt = Date()
            }
            throw UMSError(.unavailable, "failed to migrate \(request.container): the coordinator is shutting down")
        }
        return record
    }

    /// A source container that could not be deleted after its service moved: retried with
    /// backoff (1 s doubling to 60 s) until it is gone; the record says so meanwhile.
    func retryDeletingSource(_ id: String, container: String, firstDelay: Duration = .seconds(1)) {
        let (orchestrator, background) = (system.orchestrator, self.background)
        background.spawn { [weak self] in
            var delay = firstDelay
            // Until it is gone, or the Coordinator stops (a restart retries it again).
            while await background.pause(delay) {
                do {
                    try await orchestrator.delete(container, migration: id)
                    await self?.update(id) {
                        $0.sourceLeft = nil
                        $0.events.append(.init(at: Date(), step: "deletingSource", message: "the source container was deleted on a later attempt"))
                    }
                    return
                } catch let error as UMSError where error.code == .notFound {
                    await self?.update(id) { $0.sourceLeft = nil }
                    return
                } catch {
                    delay = min(delay * 2, .seconds(60))
                }
            }
        }
    }

    func finished(_ id: String) {
        running.remove(id)
        if running.isEmpty {
            for waiter in drained { waiter.resume() }
            drained = []
        }
    }

    /// Waits until no migration runs (tests).
    public func drain() async {
        guard !running.isEmpty else { return }
        await withCheckedContinuation { drained.append($0) }
    }
}
