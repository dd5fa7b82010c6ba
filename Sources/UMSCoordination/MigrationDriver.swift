import Synchronization
import Foundation
import Logging
import NIOCore
import UMSAPI
import UMSDecision
import UMSFrontman
import UMSMigration
import UMSImage
import UMSModel
import UMSOrchestrator
import UMSOS
import UMSTrust

/// Drives one outgoing migration through the three phases of the paper's Fig. 2, on the source
/// Coordinator: one method per phase. Each step is entered through the `MigrationStateMachine`
/// (and the fault seam), timed, and logged in the record; any failure before the destination
/// confirms rolls back: the destination removes what it created and the source container
/// resumes from where it was frozen.
struct MigrationDriver: Sendable {
    let id: String
    let container: String
    let request: ApproachRequest
    let system: SystemContext
    let records: OutgoingMigrations
    let peer: any PeerCoordinator
    let frontmen: Frontmen?
    let endpoints: Endpoints
    let faults: any FaultInjector
    let workDirectory: String
    let mode: TransferMode
    /// Whether the container's volumes and host directories move with it.
    var volumes: VolumeHandling = .copy
    /// Whether the Frontman answers HTTP with `307` to the new location instead of forwarding.
    let redirect: Bool
    /// What happens to the established connections (issue 16).
    var connections: ConnectionHandling = .auto
    /// How the images are compressed when the destination reads the compressed stream.
    var compression: ImageCompression = .auto
    /// Where the destination's cluster may place the service (the source's placement names its
    /// own nodes and does not travel).
    var placement: [String]?
    let logger: Logger
    /// Whether the Coordinator is shutting down.
    var shuttingDown: @Sendable () -> Bool = { false }
    let clock = ContinuousClock()

    /// What has been done so far, so that rollback undoes exactly that.
    struct Progress {
        var machine = MigrationStateMachine()
        var destinationPrepared = false
        var frozen = false
        var restoreRequested = false
        var approach: (any MigrationApproach)?
        var frozenAt: ContinuousClock.Instant?
        /// Post-copy: the dump serving pages, and where CRIU listens; stopped on rollback.
        var pageServing: BackgroundProcess?
        var pageServer: PageServerAddress?
        /// Post-copy over mutual TLS: the relay in front of CRIU's page server.
        var relay: TLSRelay?
        /// The Frontman holds this service's clients (from the freeze until confirm/rollback).
        var holding = false
        var bytes: Int64 = 0
        var durations = MigrationRecord.Durations()
        /// From the freeze until the service runs at the destination.
        var downtime: Duration?
        /// Carried connections: the tunnel to the destination, and whether the service's address
        /// has been sent there (a rollback brings it back).
        var carry: CarriedConnections?
        var tunnel: MigrationTunnel?
        var sentAway = false
    }

    /// What pre-migration found and made.
    struct Plan {
        var specification: Specification
        var destination: SystemInfo
        var approach: any MigrationApproach
        var prepared: PrepareResponse
    }

    /// What the migration phase left for post-migration.
    struct Moved {
        var restored: ContainerInfo
        var postCopy: PageServerAddress?
    }

    func run() async {
        var logger = self.logger
        logger[metadataKey: "migration.id"] = "\(id)"
        logger[metadataKey: "container"] = "\(container)"
        var progress = Progress()
        let started = clock.now
        do {
            let plan = try await preMigration(&progress)
            let moved = try await migration(plan, &progress)
            let endpoints = try await postMigration(plan, moved, &progress, logger: logger)
            try progress.machine.complete(endpoints: endpoints)
            progress.durations.total = (clock.now - started).seconds
            let (state, progress) = (progress.machine.state, progress)
            await records.update(id) { record in
                record.apply(state)
                record.bytesMoved = progress.bytes
                record.durations = progress.durations
                record.downtime = progress.downtime?.seconds
                record.finishedAt = Date()
                record.events.append(.init(at: Date(), step: "completed", message: "\(record.container) runs at \(record.destination.name) (\(endpoints.joined(separator: ", ")))"))
            }
            logger.info("migration completed", metadata: ["total": "\(progress.durations.total ?? 0)", "downtime": "\(progress.downtime?.seconds ?? 0)"])
        } catch {
            let cause = UMSError.wrap(error, .internalError, "failed to migrate \(container)")
            logger.error("migration failed", metadata: ["error": "\(cause)", "step": "\(progress.machine.state.step?.rawValue ?? "-")"])
            await rollBack(&progress, cause: cause, total: clock.now - started, logger: logger)
        }
    }

    // MARK: Pre-migration

    /// Steps 1-7: the Specification, the destination's availability and the approach, the
    /// identical container at the destination.
    func preMigration(_ progress: inout Progress) async throws -> Plan {
        let phaseStart = clock.now
        try await enter(.specification, &progress)
        let specification = try await system.orchestrator.specification(of: container)
        if !(specification.volumes ?? []).isEmpty, !(system.orchestrator is any VolumeCarrying) {
            throw UMSError(.unsupported, "failed to migrate \(container): it mounts volumes and the \(system.orchestrator.kind) adapter does not carry them")
        }
        let sourceProfile = await system.profile()

        try await enter(.checkingDestination, &progress)
        let destination: SystemInfo
        do {
            destination = try await peer.system()
        } catch let error as UMSError {
            throw UMSError(error.code, "failed to check destination \(peer.baseURL): \(error.code == .unauthenticated ? "it refused our credentials" : "it is not available")", cause: error)
        }
        let chosen = try ApproachDecision.choose(request, specification, source: sourceProfile, destination: destination.profile, mode: mode)
        guard let approach = system.approaches[chosen] else {
            throw UMSError(.unsupported, "failed to migrate: this system does not implement the \(chosen.rawValue)-level approach")
        }
        guard mode == .stopAndCopy || approach.supportsPostCopy else {
            throw UMSError(.unsupported, "failed to migrate \(container) with \(mode.rawValue): \(approach.postCopyRefusal)")
        }
        progress.approach = approach
        await records.update(id) {
            $0.approach = chosen
            $0.destination.name = destination.name
            $0.events.append(.init(at: Date(), step: "checkingDestination", message: "destination \(destination.name) available; approach \(chosen.rawValue)"))
        }

        // What the destination's published policy refuses is refused here, before the image or
        // anything else crosses (its prepare checks again).
        let carried = Self.carried(specification, handling: volumes, orchestrator: system.orchestrator, approach: chosen)
        let volumeBytes = carried.isEmpty ? nil : try await carried.bytes()
        if let refusal = Self.publishedRefusal(of: specification, by: destination, at: peer.baseURL, volumeBytes: volumeBytes) {
            throw UMSError(refusal.code, "\(refusal.message) (the destination's published policy; nothing was sent)")
        }

        try await decideConnections(specification, approach: chosen, destination: destination, &progress)

        try await enter(.creatingDestination, &progress)
        // The image, or each image of a pod's containers, that the destination lacks.
        for image in specification.images where try await !peer.hasImage(image) {
            let orchestrator = system.orchestrator
            let sent = try await peer.sendImage(image) { consume in
                try await orchestrator.exportImage(image, consume: consume)
            }
            progress.bytes += sent.bytes
            await records.note(id, "rootfs \(image.digest.prefix(19)) sent (\(sent.bytes) bytes)")
        }
        var identical = specification
        identical.placement = placement
        let prepared = try await peer.prepare(PrepareRequest(
            id: id, approach: chosen, specification: identical, source: system.ref, volumes: volumes, volumeBytes: volumeBytes,
            carry: progress.carry, mode: mode == .stopAndCopy ? nil : mode
        ))
        progress.destinationPrepared = true
        // The bulk of the volumes and host directories crosses while the service still runs;
        // after the freeze only what changed since.
        progress.bytes += try await send(carried, pass: "while the service runs")
        progress.durations.preMigration = (clock.now - phaseStart).seconds
        return Plan(specification: specification, destination: destination, approach: approach, prepared: prepared)
    }

    /// Whether the established connections are carried (both systems share a migration network,
    /// the approach and engines restore established sockets) or closed, in the record; carried,
    /// the tunnel is made and the next checkpoint keeps them.
    func decideConnections(_ specification: Specification, approach: Approach, destination: SystemInfo, _ progress: inout Progress) async throws {
        let address = try await system.orchestrator.inspect(container).address
        let decision = try ConnectionDecision.decide(
            connections, approach: approach, mode: mode, serviceAddress: address,
            alsoHolds: await (system.orchestrator as? any ConnectionCarrying)?.carriedAddress(container),
            source: .init(name: system.name, network: system.migrationNetwork), destination: .init(name: destination.name, network: destination.migrationNetwork)
        )
        await records.update(id) {
            $0.connections = decision.summary
            $0.events.append(.init(at: Date(), step: "checkingDestination", message: "connections: \(decision.summary.mode.rawValue) (\(decision.summary.reason))"))
        }
        let carrier = system.orchestrator as? any ConnectionCarrying
        if approach == .orchestrator { try await carrier?.carryConnections(container, decision.carry != nil) }
        if decision.carry == nil, let open = await carrier?.establishedConnections(container) {
            // What the move will close (counted here, off the freeze's path: those opened until
            // the freeze are closed too).
            await records.update(id) { $0.connections?.closed = open }
        }
        guard let carry = decision.carry, let carrier, let remote = destination.migrationNetwork?.tunnelAddress else { return }
        let tunnel = try MigrationTunnel.between(local: carry.tunnelAddress, remote: remote)
        try await carrier.ensure(tunnel)
        progress.carry = carry
        progress.tunnel = tunnel
    }

    // MARK: Migration

    /// Steps 8-11: freeze (the Frontman holds from here), checkpoint while the images stream,
    /// the rest of the files, the destination's restore.
    func migration(_ plan: Plan, _ progress: inout Progress) async throws -> Moved {
        var phaseStart = clock.now
        let approach = plan.approach
        try await enter(.lockingControl, &progress)
        // Control operations have been refused since the request was accepted; now the data
        // plane stops: the service is frozen and stays frozen until the destination confirms.
        // The Frontman holds new requests and connections from the moment of the freeze.
        // An approach whose agent dumps the connections itself is told whether to (every time:
        // a rolled-back carried migration must not leave the next one carrying).
        try await approach.carryConnections(container, through: progress.tunnel)
        // An approach whose checkpoint stops the service checks first: clients are held no
        // earlier than they must be (every held request's wait counts against the downtime).
        if approach.freezesAtCheckpoint { try await approach.freeze(container) }
        await frontmen?.hold(container)
        progress.holding = true
        progress.frozenAt = clock.now
        // What reached the service a moment ago is answered before it freezes (bounded): in
        // the frozen copy it could only be sent again (idempotent HTTP) or cut (TCP).
        if let quiet = await frontmen?.quiesce(container), quiet.waited >= .milliseconds(1) || quiet.unanswered > 0 {
            let unanswered = quiet.unanswered == 0 ? "" : ", \(quiet.unanswered) still unanswered"
            await records.note(id, "frontman: waited \(Int(quiet.waited.seconds * 1000)) ms for answers to what \(container) was already sent\(unanswered)")
        }
        if !approach.freezesAtCheckpoint { try await approach.freeze(container) }
        progress.frozen = true
        if let tunnel = progress.tunnel, let carrier = system.orchestrator as? any ConnectionCarrying {
            // Before the dump: the frozen copy's sockets still live in this kernel (CRIU leaves
            // them so, for a rollback); nothing from them may reach a client, and what clients
            // send goes to the destination, which holds it until the commit. Recorded first: a
            // rollback brings the address back whether or not this finished. Container-level:
            // the agent inside dumps and streams, so the approach silences all but its traffic
            // before the dump and routes the address away once the images crossed.
            await records.note(id, "connections: \(container)'s address routed to \(plan.destination.name) through the tunnel, the frozen copy silenced")
            progress.sentAway = true
            if approach.approach == .orchestrator { try await carrier.sendAway(container, through: tunnel) }
        }

        try await enter(.checkpointing, &progress)
        let directory = "\(workDirectory)/images"
        FileSystem.remove(directory)
        try FileSystem.makeDirectory(directory)
        defer { FileSystem.remove(workDirectory) }
        // Steps 8-9 overlap: the images stream to the destination while CRIU writes them.
        // With post-copy the dump writes all but the pages, then serves those from here.
        let postCopy = mode == .postCopy ? PageServerAddress(host: system.advertiseHost, port: Int.random(in: 27100...27999)) : nil
        let dump = DumpProgress()
        // Where the destination fetches the pages (the approach may put a relay in front).
        var published = postCopy
        let (container, peer, id) = (container, peer, id)
        // Compressed (and zero pages elided) only for a destination that reads that stream.
        let compression = CompressionDecision.decide(
            self.compression, destination: plan.destination.name, reads: plan.destination.imageStreamVersions, approach: approach.approach
        ).compression
        let crossed = Mutex<ImageTransferSummary?>(nil)
        async let imagesSent: Int64 = approach.coordinatorParts.contains(.images)
            ? peer.sendFiles(id, part: .images) { consume in
                let exported = try await approach.exportFiles(
                    container, part: .images, checkpointDirectory: directory, dumpFinished: { await dump.isFinished },
                    compression: compression, consume: consume
                )
                crossed.withLock { $0 = exported.images }
            }.bytes
            : 0
        do {
            let result = try await approach.checkpoint(container, into: directory, postCopy: postCopy, intake: plan.prepared.intake, compression: compression)
            if let images = result.images { await records.update(id) { $0.images = images } }
            progress.pageServing = result.pageServing
            progress.pageServer = result.localPageServer ?? postCopy
            progress.relay = result.relay
            published = result.pageServer ?? postCopy
            progress.bytes += result.bytesSent
        } catch {
            // Leaving this scope cancels and awaits the stream.
            await dump.finish()
            throw error
        }
        await dump.finish()
        progress.durations.checkpoint = (clock.now - phaseStart).seconds

        phaseStart = clock.now
        try await enter(.transferring, &progress)
        progress.bytes += try await imagesSent
        if let images = crossed.withLock({ $0 }) {
            await records.update(id) { $0.images = images }
        }
        if approach.coordinatorParts.contains(.changes) {
            let changes = try await peer.sendFiles(id, part: .changes) { consume in
                _ = try await approach.exportFiles(
                    container, part: .changes, checkpointDirectory: directory, dumpFinished: { true }, compression: nil, consume: consume
                )
            }
            progress.bytes += changes.bytes
        }
        // What changed in the volumes and host directories since their first pass (the service
        // cannot change them any more).
        progress.bytes += try await send(
            Self.carried(plan.specification, handling: volumes, orchestrator: system.orchestrator, approach: approach.approach),
            pass: "changes after the freeze"
        )
        progress.durations.transfer = (clock.now - phaseStart).seconds

        phaseStart = clock.now
        try await enter(.restoring, &progress)
        // An HTTP-only service's held requests cross to the destination's Frontman now, while it
        // restores: it holds them until the commit (nothing reaches the restored service before
        // the source confirmed), and on a rollback refuses them as `closed` before they reached
        // any service, so they come back here. That takes the A → B leg off the downtime's path.
        // Not for TCP ports: a byte stream refused there could not be sent again.
        // Stop-and-copy only: with post-copy the destination's Frontman lets requests through at
        // the restore, so a rollback after it could not say what had reached the service.
        if !redirect, mode == .stopAndCopy, Frontmen.ports(of: plan.specification).allSatisfy({ $0.kind == .http }),
           let host = try? Self.destinationHost(plan.prepared.container, peer: peer) {
            await frontmen?.sendAhead(container, to: Frontmen.target(host: host, specification: plan.specification))
        }
        progress.restoreRequested = true
        let restored = try await peer.restore(id, PeerRestoreRequest(postCopySource: published?.description))
        progress.durations.restore = (clock.now - phaseStart).seconds
        progress.downtime = progress.frozenAt.map { clock.now - $0 }
        return Moved(restored: restored.container, postCopy: postCopy)
    }

    /// Where the service is reached at the destination: its published endpoints' host, else the
    /// peer's. It goes into the hosts file and the hook's environment: an address or a name, checked.
    static func destinationHost(_ container: ContainerInfo, peer: any PeerCoordinator) throws -> String {
        let host = container.endpoints.first.flatMap { endpoint in endpoint.lastIndex(of: ":").map { String(endpoint[..<$0]) } }
            ?? (URL(string: peer.baseURL)?.host ?? "")
        try HostAddress.validate(host)
        return host
    }

    // MARK: Post-migration

    /// Steps 12-15: confirm and commit, the endpoint record, the source deleted. Returns the
    /// service's endpoints at the destination.
    func postMigration(_ plan: Plan, _ moved: Moved, _ progress: inout Progress, logger: Logger) async throws -> [String] {
        let phaseStart = clock.now
        guard moved.restored.state == .running else {
            throw UMSError(.internalError, "failed to confirm: the restored container is \(moved.restored.state.rawValue)")
        }
        // Step 14: the service runs at the destination, so what the Frontman held, and
        // everything after, goes there now. The destination's own Frontman holds it until the
        // commit below, so nothing reaches the restored service before it is confirmed; what
        // crosses meanwhile is the A → B leg, overlapped with the commit. (On a rollback the
        // destination's Frontman refuses what it held as `closed`, and this one sends it back
        // to the resumed source.)
        let newHost = try Self.destinationHost(moved.restored, peer: peer)
        // Released before the step is recorded (a durable write): every held client waits for
        // this, and the destination's Frontman holds them until the commit anyway.
        await frontmen?.release(container, to: Frontmen.target(host: newHost, specification: plan.specification), redirect: redirect, role: .forwarding)
        // What the frozen copy here was asked (in flight at the freeze) and may be asked again
        // goes to the restored service now, not when the copy is deleted; the rest waits for
        // the deletion (or a rollback, when the copy answers it). Carried: those connections
        // reach the restored service themselves.
        if progress.carry == nil { await frontmen?.cutStale(container, onlyRetryable: true) }
        try await enter(.confirming, &progress)
        // With post-copy the destination answers once every page has crossed; by then this
        // side's page-serving dump has ended too.
        let committed = try await peer.commit(id)
        progress.bytes += committed.pageBytes
        if mode == .postCopy {
            await records.update(id) { $0.pageBytes = committed.pageBytes }
        }
        if let pageServing = progress.pageServing {
            try await pageServing.finish(timeout: .seconds(30))
            progress.pageServing = nil
        }
        progress.relay?.close()
        progress.relay = nil
        // The peer's count: a number it sends, bounded before it reaches the record and a metric.
        if progress.carry != nil, let carried = committed.carriedConnections, (0...1_000_000).contains(carried) {
            await records.update(id) { $0.connections?.carried = carried }
            ConnectionMetrics.carried(container).increment(by: carried)
        }

        try await enter(.reportingEndpoint, &progress)
        let endpoints = ServiceEndpoints.of(moved.restored)
        await records.update(id) { $0.endpoints = endpoints }
        let published = await self.endpoints.moved(container, to: newHost, endpoints: endpoints, system: plan.destination.name)
        await records.note(
            id, "endpoint record: \(container) at \(newHost)" + (published.problem.map { " (\($0))" } ?? "")
                + (published.dnsTTL.map { "; DNS updated, TTL \($0.components.seconds) s" } ?? "")
        )

        try await enter(.deletingSource, &progress)
        if await !deleteSource(keepingNetwork: progress.carry != nil, logger: logger) {
            // The service runs at the destination; the frozen source is retried in the background
            // and the record says so until it is gone.
            await records.retryDeletingSource(id, container: container)
        } else if volumes == .copy, let carrier = system.orchestrator as? any VolumeCarrying {
            // Its data lives at the destination now: no stale copy stays behind.
            for volume in plan.specification.volumes ?? [] { await carrier.removeVolume(volume.name) }
        }
        // The source is gone with whatever was in flight inside it: the Frontman retries
        // what it safely can at the destination, then stays until clients follow the record.
        // Carried connections are not stale: they reach the service at the destination.
        if progress.carry == nil { await frontmen?.cutStale(container) }
        await frontmen?.retire(container, dnsTTL: published.dnsTTL, carried: progress.carry == nil ? nil : system.connectionLinger)
        if let closed = try? await records.record(id).connections?.closed, closed > 0 {
            ConnectionMetrics.closed(container, when: "migration").increment(by: closed)
        }
        if let stats = await frontmen?.stats(container) {
            await records.update(id) { $0.connections?.held = stats.held }
            let longest = String(format: "%.3f", stats.longestHoldSeconds)
            await records.note(id, "frontman: held \(stats.held) request(s)/connection(s) (longest \(longest) s) and sent them to \(newHost); refused \(stats.rejected), retried \(stats.retried)")
        }
        progress.durations.postMigration = (clock.now - phaseStart).seconds
        return endpoints
    }

    /// Enters a step: the state machine checks the order, the record shows it, and the fault
    /// seam may fail it.
    func enter(_ step: MigrationStep, _ progress: inout Progress) async throws {
        try Task.checkCancellation()
        // On shutdown a migration that has not asked for the restore yet rolls back (quickly,
        // and the source runs again); one that has goes on to its end.
        if shuttingDown(), step.order <= MigrationStep.restoring.order {
            throw UMSError(.unavailable, "the coordinator is shutting down; rolled back before \(step.rawValue)")
        }
        try progress.machine.advance(to: step)
        let state = progress.machine.state
        await records.update(id) { record in
            record.apply(state)
            record.events.append(.init(at: Date(), step: step.rawValue, message: "\(step.phase.rawValue): \(step.rawValue)"))
        }
        try await faults.check(.source(step))
    }

    /// Step 15. The service already runs at the destination, so this never rolls back; it retries,
    /// and the source stays frozen (never running twice) if it cannot be removed. Returns whether
    /// it is gone.
    /// `keepingNetwork`: the connections were carried; the container's network stays (its address
    /// routed into the tunnel) until the connection linger ends.
    func deleteSource(keepingNetwork: Bool, logger: Logger) async -> Bool {
        for attempt in 1...3 {
            do {
                if keepingNetwork, let carrier = system.orchestrator as? any ConnectionCarrying {
                    let kept = try await carrier.deleteKeepingNetwork(container, migration: id)
                    await records.releaseCarried(id, service: container, kept: kept, after: system.connectionLinger)
                } else {
                    try await system.orchestrator.delete(container, migration: id)
                }
                return true
            } catch {
                logger.warning("failed to delete source container", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                await records.note(id, "failed to delete the source container (attempt \(attempt)): \(error); it stays frozen")
                await records.update(id) { $0.sourceLeft = "the source container could not be deleted (\(error)); it stays frozen and is retried" }
                try? await Task.sleep(for: .milliseconds(200 * attempt))
            }
        }
        return false
    }

    // MARK: Volumes and host directories

    /// The volumes and host directories UMS sends itself.
    struct Carried {
        var volumes: [VolumeMount] = []
        var binds: [BindMount] = []
        var carrier: (any VolumeCarrying)?

        var isEmpty: Bool { volumes.isEmpty && binds.isEmpty }

        /// What they hold, for the destination's admission.
        func bytes() async throws -> Int64 {
            var total: Int64 = 0
            for volume in volumes { total += try await carrier?.volumeBytes(volume.name) ?? 0 }
            for bind in binds { total += FileSystem.treeBytes(bind.hostPath) }
            return total
        }
    }

    /// None when they are skipped; no volumes where the engine's own checkpoint carries them
    /// (orchestrator-level).
    static func carried(_ specification: Specification, handling: VolumeHandling, orchestrator: any Orchestrator, approach: Approach?) -> Carried {
        guard handling == .copy else { return Carried() }
        let carrier = orchestrator as? any VolumeCarrying
        let engineCarries = approach == .orchestrator && carrier?.checkpointCarriesVolumes == true
        return Carried(volumes: carrier == nil || engineCarries ? [] : specification.volumes ?? [], binds: specification.binds ?? [], carrier: carrier)
    }

    /// What the destination's published admission policy says of `specification` (its
    /// Coordinator's port and UMS's own ranges are reserved there); nil when admitted or when it
    /// publishes none.
    static func publishedRefusal(of specification: Specification, by destination: SystemInfo, at url: String, volumeBytes: Int64?) -> UMSError? {
        let reserved = Coordinator.umsPorts.union(URL(string: url)?.port.map { [$0] } ?? [])
        return destination.admission?.refusal(of: specification, reservedPorts: reserved, volumeBytes: volumeBytes)
    }

    /// One pass over the volumes and host directories: the first sends everything, the next what
    /// changed since (GNU tar's listed-incremental files, one per volume, in the work directory).
    func send(_ carried: Carried, pass: String) async throws -> Int64 {
        guard !carried.isEmpty else { return 0 }
        let snapshots = "\(workDirectory)/snapshots"
        try FileSystem.makeDirectory(snapshots)
        var bytes: Int64 = 0
        if let carrier = carried.carrier {
            for volume in carried.volumes {
                let sent = try await peer.sendVolume(id, volume: volume.name) { consume in
                    _ = try await carrier.exportVolume(volume.name, snapshot: "\(snapshots)/volume-\(volume.name)", consume: consume)
                }
                bytes += sent.bytes
                await records.note(id, "volume \(volume.name) sent, \(pass) (\(sent.bytes) bytes)")
            }
        }
        // Host directories: the same path at the destination.
        for (index, bind) in carried.binds.enumerated() {
            let sent = try await peer.sendBind(id, index: index) { consume in
                _ = try await Archive.create(directory: bind.hostPath, snapshot: "\(snapshots)/bind-\(index)", consume: consume)
            }
            bytes += sent.bytes
            await records.note(id, "host directory \(bind.hostPath) sent, \(pass) (\(sent.bytes) bytes)")
        }
        return bytes
    }

    // MARK: Rollback

    func rollBack(_ progress: inout Progress, cause: UMSError, total: Duration, logger: Logger) async {
        // The volumes' snapshot files, if the first pass ran.
        defer { FileSystem.remove(workDirectory) }
        var problems: [String] = []
        var sourceMayResume = true
        do {
            try progress.machine.beginRollback(cause: cause)
        } catch {
            // After confirmation nothing is rolled back: record the failure as it is.
            try? progress.machine.fail(cause: cause)
            let state = progress.machine.state
            await records.update(id) { $0.apply(state); $0.finishedAt = Date(); $0.durations.total = total.seconds }
            return
        }
        let rollingBack = progress.machine.state
        await records.update(id) {
            $0.apply(rollingBack)
            $0.events.append(.init(at: Date(), step: "rollback", message: "rolling back: \(cause)"))
        }
        // The Frontman may already send to the destination (released once the restore
        // succeeded): back to holding, so what the destination's Frontman refuses comes back here
        // and waits for the source.
        if progress.holding { await frontmen?.hold(container) }
        var destinationUnanswered: (any Error)?
        if progress.destinationPrepared {
            do {
                try await peer.abort(id)
            } catch {
                destinationUnanswered = error
                // If the destination may already run the service, resuming the source could make
                // it run twice: the source stays frozen until the destination's journal says
                // which copy runs.
                if progress.restoreRequested { sourceMayResume = false }
            }
        }
        if let pageServing = progress.pageServing, sourceMayResume {
            // The destination is gone, so its lazy-pages daemon will never come (or came and
            // left): make the waiting dump fail, which releases the source as CRIU found it.
            progress.pageServer?.hangUp()
            do {
                try await pageServing.finish(timeout: .seconds(10))
            } catch {
                pageServing.cancel()
            }
        }
        progress.relay?.close()
        if sourceMayResume, let carrier = system.orchestrator as? any ConnectionCarrying, progress.carry != nil {
            // The address is the frozen copy's again (its sockets never left this kernel), and
            // the next checkpoint closes connections unless that migration carries them too.
            if progress.sentAway {
                do {
                    try await carrier.bringBack(container)
                } catch {
                    problems.append("failed to route the service's address back: \(error)")
                }
            }
            try? await carrier.carryConnections(container, false)
        }
        if progress.frozen, sourceMayResume, let approach = progress.approach {
            do {
                try await approach.resume(container)
            } catch {
                problems.append("failed to resume the source: \(error)")
            }
        }
        if sourceMayResume {
            try? await system.orchestrator.unlock(container, migration: id)
            // What the Frontman held goes to the source, which runs again.
            if progress.holding { await frontmen?.resume(container) }
        }
        if !sourceMayResume {
            try? progress.machine.awaitPeer(cause: cause)
            let state = progress.machine.state
            await records.update(id) {
                $0.apply(state)
                $0.durations.total = total.seconds
            }
            await records.awaitPeer(id, because: "the rollback could not reach the destination after the restore was asked (\(destinationUnanswered.map { "\($0)" } ?? "no answer"))")
            logger.warning("migration awaits the destination: the source stays frozen")
            return
        }
        if destinationUnanswered != nil {
            // Nothing runs there (the restore was never asked): the source runs again now, and
            // the destination is told in the background to remove what it prepared.
            await records.retryAbortingDestination(id)
        }
        if problems.isEmpty {
            try? progress.machine.finishRollback()
        } else {
            try? progress.machine.fail(cause: UMSError(cause.code, cause.message, cause: CommandFailure(([cause.cause].compactMap { $0 } + problems).joined(separator: "; "))))
        }
        let state = progress.machine.state
        await records.update(id) {
            $0.apply(state)
            $0.finishedAt = Date()
            $0.durations.total = total.seconds
            $0.events.append(.init(at: Date(), step: "rollback", message: problems.isEmpty ? "rolled back: the source runs again" : "rollback incomplete: \(problems.joined(separator: "; "))"))
        }
        logger.info("migration rolled back", metadata: ["complete": "\(problems.isEmpty)"])
    }
}

/// Whether the dump has finished writing, for the stream that tails its files.
actor DumpProgress {
    private(set) var isFinished = false

    func finish() {
        isFinished = true
    }
}
