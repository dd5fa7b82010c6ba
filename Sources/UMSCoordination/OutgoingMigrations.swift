import Foundation
import Synchronization
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

    /// Goes on with the migrations a previous run of this Coordinator left unfinished, before it
    /// touches their services, by the rule in docs/reliability.md: **the destination's journal
    /// decides**. Before the restore could have been asked, nothing runs there: the source
    /// resumes (and the destination is told to remove what it prepared). Once it may have been
    /// asked, the destination is asked where it stands: restored or committed — its copy runs,
    /// the source is deleted; anything else — it removes its copy, the source resumes. Until it
    /// answers the source stays frozen and locked, and the record says it awaits the peer.
    func recover() async {
        for record in records.values where !record.status.isFinal {
            let step = record.step ?? .specification
            if record.status == .awaitingPeer || step == .restoring || step == .confirming {
                awaitPeer(record.id, because: "the coordinator restarted during \(step.rawValue), after the restore may have been asked")
            } else if step.order > MigrationStep.confirming.order {
                // The destination committed: only the post-migration's bookkeeping was left.
                note(record.id, "the coordinator restarted during \(step.rawValue): the destination had committed; finishing")
                await finishForward(record.id)
            } else {
                await resumeSource(record.id, because: "migration interrupted: the coordinator restarted during \(step.rawValue)")
                if step.order >= MigrationStep.creatingDestination.order {
                    retryAbortingDestination(record.id)
                }
            }
        }
        // Sources that could not be deleted after their service moved are retried again, and
        // destinations that were not told of a rollback are told.
        for record in records.values where record.status == .completed && record.sourceLeft != nil {
            retryDeletingSource(record.id, container: record.container)
        }
        for record in records.values where record.destinationLeft != nil && record.status == .rolledBack {
            retryAbortingDestination(record.id)
        }
    }

    /// The source runs again: resumed where it was frozen, unlocked, fronted as before.
    func resumeSource(_ id: String, because reason: String) async {
        guard let record = records[id] else { return }
        var problem: String?
        if record.connections?.mode == .carried, let carrier = system.orchestrator as? any ConnectionCarrying {
            // Its address may have been routed to the destination at the freeze.
            try? await carrier.bringBack(record.container)
            try? await carrier.carryConnections(record.container, false)
        }
        do {
            // Through the approach that froze it: an agent-based one's service is frozen inside
            // its container (by the agent's CRIU or the nested runc), which the orchestrator
            // sees running.
            if let approach = record.approach.flatMap({ system.approaches[$0] }) {
                try await approach.resume(record.container)
            } else {
                try await (system.orchestrator as? any CheckpointingOrchestrator)?.resume(record.container)
            }
        } catch let error as UMSError where error.code == .notFound || error.code == .invalidState {
            // Not frozen (the freeze never came) or gone: nothing to resume.
        } catch {
            problem = "failed to resume the source: \(error)"
        }
        try? await system.orchestrator.unlock(record.container, migration: id)
        await frontmen?.resume(record.container)
        update(id) {
            $0.status = problem == nil ? .rolledBack : .failed
            $0.error = UMSError(.internalError, reason + (problem.map { "; \($0)" } ?? ""))
            $0.finishedAt = Date()
            $0.events.append(.init(at: Date(), step: "rollback", message: problem == nil ? "\(reason): the source runs again" : problem!))
        }
        logger.notice("source resumed", metadata: ["migration.id": "\(id)", "reason": "\(reason)"])
    }

    /// The destination committed: the service is there. The endpoint record follows, the frozen
    /// source is deleted (retried in the background if it resists), the record says completed.
    func finishForward(_ id: String) async {
        guard let record = records[id] else { return }
        let host = URL(string: record.destination.url)?.host ?? ""
        if (try? HostAddress.validate(host)) != nil {
            if let specification = try? await system.orchestrator.specification(of: record.container) {
                await frontmen?.release(record.container, to: Frontmen.target(host: host, specification: specification), redirect: false, role: .forwarding)
            }
            _ = await endpoints.moved(record.container, to: host, endpoints: record.endpoints, system: record.destination.name)
        }
        do {
            try await system.orchestrator.delete(record.container, migration: id)
        } catch let error as UMSError where error.code == .notFound {
        } catch {
            update(id) { $0.sourceLeft = "the source container could not be deleted (\(error)); it stays frozen and is retried" }
            retryDeletingSource(id, container: record.container)
        }
        await frontmen?.cutStale(record.container)
        await frontmen?.retire(record.container)
        update(id) {
            $0.status = .completed
            $0.error = nil
            $0.finishedAt = Date()
            $0.events.append(.init(at: Date(), step: "completed", message: "\($0.container) runs at \($0.destination.name) (the destination's journal says committed)"))
        }
    }

    /// The source stays frozen and locked until the destination says where it stands: asked
    /// again with backoff (1 s doubling to 30 s), then resolved by the rule of `recover()`.
    func awaitPeer(_ id: String, because reason: String) {
        update(id) {
            $0.status = .awaitingPeer
            $0.error = UMSError(.unavailable, "\(reason); the source stays frozen and locked until the destination (\($0.destination.url)) says which copy runs, or an operator runs `ums migrations resolve \($0.id)`")
            $0.events.append(.init(at: Date(), step: "awaiting-peer", message: reason))
        }
        guard let record = records[id] else { return }
        let peer = connect(record.destination.url, nil)
        let heard = Mutex(true)
        background.retrying(first: .seconds(1), max: .seconds(30)) { [weak self] in
            guard let self else { return true }
            do {
                return try await self.settleWithPeer(id, peer: peer)
            } catch {
                if heard.withLock({ let first = $0; $0 = false; return first }) {
                    await self.note(id, "the destination does not answer (\(error)); asked again with backoff")
                }
                return false
            }
        }
    }

    /// One attempt to agree with the destination. Returns whether the migration is settled.
    func settleWithPeer(_ id: String, peer: any PeerCoordinator) async throws -> Bool {
        guard records[id]?.status == .awaitingPeer else { return true }
        let status = try await peer.status(id)
        guard records[id]?.status == .awaitingPeer else { return true }
        switch status?.state {
        case .restored:
            note(id, "the destination's journal says restored: committing there")
            _ = try await peer.commit(id)
            await finishForward(id)
        case .committed:
            await finishForward(id)
        case .restoring:
            // Its restore is still under way (or its restart is about to remove it): ask again.
            return false
        case .prepared, .receiving:
            try await peer.abort(id)
            await resumeSource(id, because: "the destination had not restored (its journal says \(status!.state.rawValue)); it removed its copy")
        case .aborted:
            await resumeSource(id, because: "the destination's journal says aborted")
        case nil:
            await resumeSource(id, because: "the destination has no record of the migration")
        }
        return true
    }

    /// After a rollback the destination could not be told to remove what it prepared (nothing
    /// runs there): told again with backoff until it confirms; the record says so meanwhile.
    func retryAbortingDestination(_ id: String) {
        guard let record = records[id] else { return }
        let peer = connect(record.destination.url, nil)
        background.retrying(first: .milliseconds(500), max: .seconds(30)) { [weak self] in
            guard let self else { return true }
            do {
                try await peer.abort(id)
            } catch let error as UMSError where error.code == .notFound || error.code == .invalidState {
                // Never prepared there, or already ended there (committed is impossible before the restore).
            } catch {
                await self.update(id) { $0.destinationLeft = "the destination was not told to remove what it prepared (\(error)); told again" }
                return false
            }
            await self.update(id) { $0.destinationLeft = nil }
            return true
        }
    }

    /// An operator decides a migration the destination cannot settle (gone for good): keep the
    /// source (resume it) or the destination (delete the frozen source). Says what it does
    /// before doing it (`dryRun`).
    public func resolve(_ id: String, keep: ResolveKeep, dryRun: Bool) async throws -> ResolveResponse {
        let record = try record(id)
        if record.status.isFinal && record.sourceLeft == nil {
            return ResolveResponse(id: id, side: "outgoing", actions: ["nothing to do: the migration is \(record.status.rawValue)"], done: true)
        }
        guard !running.contains(id) || record.status == .awaitingPeer else {
            throw UMSError(.invalidState, "failed to resolve \(id): it is still running (\(record.status.rawValue)); wait for it")
        }
        let other = "run `ums migrations resolve \(id) --keep \(keep.rawValue)` on the destination too if it holds a copy and cannot be reached"
        switch keep {
        case .source:
            guard record.status != .completed else {
                throw UMSError(.invalidState, "failed to keep the source of \(id): the destination committed and the source was deleted or is being deleted")
            }
            let actions = ["resume \(record.container) here (frozen since the migration) and unlock it", "tell the destination to remove its copy (retried until it confirms)", other]
            if dryRun { return ResolveResponse(id: id, side: "outgoing", actions: actions, done: false) }
            await resumeSource(id, because: "an operator kept the source's copy")
            retryAbortingDestination(id)
            return ResolveResponse(id: id, side: "outgoing", actions: actions, done: true)
        case .destination:
            let actions = ["delete \(record.container) here (frozen since the migration)", "record its endpoint at \(record.destination.name)", other]
            if dryRun { return ResolveResponse(id: id, side: "outgoing", actions: actions, done: false) }
            note(id, "an operator kept the destination's copy")
            await finishForward(id)
            return ResolveResponse(id: id, side: "outgoing", actions: actions, done: true)
        }
    }

    /// Ids whose work directory or container lock is still needed.
    func unfinishedIDs() -> Set<String> {
        Set(records.values.filter { !$0.status.isFinal || $0.sourceLeft != nil }.map(\.id))
    }

    /// Checks a migration request's container and destination; returns the destination's URL.
    func validate(_ request: MigrateRequest) async throws -> String {
        try ContainerName.validate(request.container)
        guard let destination = URL(string: request.destination), let scheme = destination.scheme,
              ["http", "https"].contains(scheme), destination.host != nil
        else {
            throw UMSError(.invalidArgument, "invalid destination '\(request.destination)': expected the destination Coordinator's URL, e.g. http://198.18.0.2:7000")
        }
        let placement = request.placement ?? []
        guard placement.count <= SpecificationBounds.maxPlacementConstraints else {
            throw UMSError(.invalidArgument, "invalid placement: more than \(SpecificationBounds.maxPlacementConstraints) constraints")
        }
        for constraint in placement { try PlacementConstraint.validate(constraint) }
        let destinationURL = request.destination.hasSuffix("/") ? String(request.destination.dropLast()) : request.destination
        guard destinationURL != system.url else {
            throw UMSError(.invalidArgument, "invalid destination '\(request.destination)': it is this system")
        }
        let container = try await system.orchestrator.inspect(request.container)
        // CRIU run as root (the orchestrator- and container-level approaches) must be able to
        // dump every process of the service; asked before anything freezes. The service-level
        // approach's agent runs CRIU as the service's own user.
        let hasAgent = container.specification.labels[SpecificationLabels.agent] != nil
        if request.approach != .specific(.service), !hasAgent, let pid = container.pid, let problem = CheckpointPermission.problem(pid: pid) {
            throw UMSError(.unsupported, "failed to migrate \(request.container): \(problem); nothing was frozen")
        }
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
        let mode = request.mode ?? .stopAndCopy
        let verdicts = ApproachDecision.evaluate(specification, source: source, destination: destination.profile, mode: mode)
        var chosen: Approach?
        var infeasible: String?
        do {
            chosen = try ApproachDecision.choose(approachRequest, specification, source: source, destination: destination.profile, mode: mode)
        } catch {
            infeasible = error.message
        }
        // The destination's own check happens at its prepare; this is what its published policy
        // says.
        let carried = MigrationDriver.carried(specification, handling: request.volumes ?? .copy, orchestrator: system.orchestrator, approach: chosen)
        let volumeBytes = carried.isEmpty ? nil : try await carried.bytes()
        let refusal = MigrationDriver.publishedRefusal(of: specification, by: destination, at: destinationURL, volumeBytes: volumeBytes)
        let admission = destination.admission.map { _ in refusal?.message ?? "admitted" }
        var plan = MigrationPlan(
            container: request.container, source: system.ref,
            destination: SystemRef(name: destination.name, url: destinationURL), requestedApproach: approachRequest,
            mode: request.mode ?? .stopAndCopy, approach: chosen, verdicts: verdicts, infeasible: infeasible, admission: admission
        )
        plan.images = CompressionDecision.decide(
            request.compress ?? .auto, destination: destination.name, reads: destination.imageStreamVersions, approach: chosen
        ).reason
        if let chosen {
            do {
                plan.connections = try ConnectionDecision.decide(
                    request.connections ?? .auto, approach: chosen, mode: plan.mode, serviceAddress: try await system.orchestrator.inspect(request.container).address,
                    alsoHolds: await (system.orchestrator as? any ConnectionCarrying)?.carriedAddress(request.container),
                    source: .init(name: system.name, network: system.migrationNetwork), destination: .init(name: destination.name, network: destination.migrationNetwork)
                ).summary
            } catch {
                plan.infeasible = (error as? UMSError)?.message ?? "\(error)"
            }
        }
        return plan
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
        record.events.append(.init(at: Date(), step: "requested", message: "migration of \(request.container) to \(destinationURL) accepted" + (request.volumes == .skip ? " (volumes and host directories skipped)" : "")))
        save(record)
        var driver = MigrationDriver(
            id: record.id, container: request.container, request: approachRequest, system: system, records: self,
            peer: WatchedPeer(peer: connect(destinationURL, request.destinationToken)), frontmen: frontmen, endpoints: endpoints, faults: faults,
            workDirectory: "\(system.stateDirectory)/outgoing/\(record.id)", mode: record.mode,
            redirect: request.frontman == .redirect, logger: logger
        )
        let background = self.background
        driver.shuttingDown = { background.isFinishing }
        driver.volumes = request.volumes ?? .copy
        driver.connections = request.connections ?? .auto
        driver.compression = request.compress ?? .auto
        driver.placement = request.placement
        running.insert(record.id)
        let migration = driver
        let started = background.spawn {
            await migration.run()
            await self.finished(migration.id)
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
        let orchestrator = system.orchestrator
        background.retrying(first: firstDelay, max: .seconds(60), waitFirst: true) { [weak self] in
            do {
                try await orchestrator.delete(container, migration: id)
                await self?.update(id) {
                    $0.sourceLeft = nil
                    $0.events.append(.init(at: Date(), step: "deletingSource", message: "the source container was deleted on a later attempt"))
                }
            } catch let error as UMSError where error.code == .notFound {
                await self?.update(id) { $0.sourceLeft = nil }
            } catch {
                return false
            }
            return true
        }
    }

    /// Carried connections: the moved service's address stays routed into the tunnel for
    /// `linger`; then the connections still open are counted into the record and closed (the
    /// route and the kept network go). On shutdown that happens at once.
    func releaseCarried(_ id: String, service: String, kept: KeptNetwork, after linger: Duration) async {
        guard let carrier = system.orchestrator as? any ConnectionCarrying else { return }
        let logger = self.logger
        let started = background.spawn { [weak self] in
            try? await Task.sleep(for: linger)
            // Connections to the address still tracked here: the Frontman's and those a published
            // port translated.
            let open = ConnectionMetrics.established(to: kept.network.containerAddress)
            await carrier.release(kept)
            if let open { ConnectionMetrics.closed(service, when: "linger").increment(by: open) }
            logger.info("carried connections' linger ended", metadata: ["migration.id": "\(id)", "open": "\(open.map(String.init) ?? "?")"])
            await self?.update(id) {
                $0.connections?.closedAtLinger = open
                $0.events.append(.init(at: Date(), step: "connections", message: "connection linger ended: \(open.map(String.init) ?? "?") carried connection(s) still open closed; the address no longer routed to the destination"))
            }
        }
        if !started { await carrier.release(kept) }
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
