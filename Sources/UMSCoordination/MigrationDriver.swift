import Foundation
import Logging
import NIOCore
import UMSAPI
import UMSCheckpoint
import UMSDecision
import UMSFrontman
import UMSMigration
import UMSModel
import UMSOrchestrator
import UMSOS

/// Drives one outgoing migration through the three phases of the paper's Fig. 2, on the source
/// Coordinator. Each step is entered through the `MigrationStateMachine`, timed, and logged in
/// the record; any failure before the destination confirms rolls back: the destination removes
/// what it created and the source container resumes from where it was frozen.
struct MigrationDriver: Sendable {
    let id: String
    let container: String
    let request: ApproachRequest
    let coordinator: Coordinator
    let peer: CoordinatorClient
    let orchestrator: any Orchestrator
    let approaches: [Approach: any MigrationApproach]
    let workDirectory: String
    let mode: TransferMode
    /// This system's address, where a post-copy dump serves its pages.
    let advertiseHost: String
    /// Whether the Frontman answers HTTP with `307` to the new location instead of forwarding.
    let redirect: Bool
    let logger: Logger

    /// What has been done so far, so that rollback undoes exactly that.
    struct Progress {
        var machine = MigrationStateMachine()
        var destinationPrepared = false
        var frozen = false
        var restoreRequested = false
        var approach: (any MigrationApproach)?
        var frozenAt: ContinuousClock.Instant?
        /// Post-copy: the dump serving pages, and where; stopped on rollback.
        var pageServing: BackgroundProcess?
        var pageServer: PageServerAddress?
        /// The Frontman holds this service's clients (from the freeze until confirm/rollback).
        var holding = false
    }

    func run() async {
        var logger = self.logger
        logger[metadataKey: "migration.id"] = "\(id)"
        logger[metadataKey: "container"] = "\(container)"
        var progress = Progress()
        let clock = ContinuousClock()
        let started = clock.now
        var phaseStart = started
        do {
            // MARK: Pre-migration
            try await enter(.specification, &progress)
            let specification = try await orchestrator.specification(of: container)
            let sourceProfile = await coordinator.profile()

            try await enter(.checkingDestination, &progress)
            let destination: SystemInfo
            do {
                destination = try await peer.system()
            } catch let error as UMSError {
                throw UMSError(error.code, "failed to check destination \(peer.baseURL): \(error.code == .unauthenticated ? "it refused our credentials" : "it is not available")", cause: error)
            }
            let chosen = try ApproachDecision.choose(request, specification, source: sourceProfile, destination: destination.profile)
            guard let approach = approaches[chosen] else {
                throw UMSError(.unsupported, "failed to migrate: this system does not implement the \(chosen.rawValue)-level approach")
            }
            guard mode == .stopAndCopy || approach.supportsPostCopy else {
                throw UMSError(.unsupported, "failed to migrate \(container): the \(chosen.rawValue)-level approach does not implement \(mode.rawValue); use stop-and-copy")
            }
            progress.approach = approach
            await coordinator.update(id) {
                $0.approach = chosen
                $0.destination.name = destination.name
                $0.events.append(.init(at: Date(), step: "checkingDestination", message: "destination \(destination.name) available; approach \(chosen.rawValue)"))
            }

            try await enter(.creatingDestination, &progress)
            var bytes: Int64 = 0
            if try await !peer.hasImage(specification.image.digest) {
                let sent = try await peer.upload(Routes.peerImage(specification.image.digest)) { consume in
                    try await orchestrator.exportImage(specification.image, consume: consume)
                }
                bytes += sent.bytes
                await note("rootfs \(specification.image.digest.prefix(19)) sent (\(sent.bytes) bytes)")
            }
            let prepared = try await peer.prepare(PrepareRequest(
                id: id, approach: chosen, specification: specification,
                source: SystemRef(name: await coordinator.name, url: await coordinator.url)
            ))
            progress.destinationPrepared = true
            let preMigration = clock.now - phaseStart

            // MARK: Migration
            phaseStart = clock.now
            try await enter(.lockingControl, &progress)
            // Control operations have been refused since the request was accepted; now the data
            // plane stops: the service is frozen and stays frozen until the destination confirms.
            // The Frontman holds new requests and connections from the moment of the freeze.
            await coordinator.frontmen?.hold(container)
            progress.holding = true
            progress.frozenAt = clock.now
            try await approach.freeze(container)
            progress.frozen = true

            try await enter(.checkpointing, &progress)
            let directory = "\(workDirectory)/images"
            FileSystem.remove(workDirectory)
            try FileSystem.makeDirectory(directory)
            defer { FileSystem.remove(workDirectory) }
            // Steps 8-9 overlap: the images stream to the destination while CRIU writes them.
            // With post-copy the dump writes all but the pages, then serves those from here.
            let postCopy = mode == .postCopy ? PageServerAddress(host: advertiseHost, port: Int.random(in: 27100...27999)) : nil
            let dump = DumpProgress()
            let parts = approach.coordinatorParts
            async let imagesSent: Int64 = parts.contains(.images)
                ? peer.upload(Routes.peerFiles(id, part: FilePart.images.rawValue)) { consume in
                    _ = try await approach.exportFiles(
                        container, part: .images, checkpointDirectory: directory, dumpFinished: { await dump.isFinished }, consume: consume
                    )
                }.bytes
                : 0
            let pageServing: BackgroundProcess?
            do {
                let result = try await approach.checkpoint(container, into: directory, postCopy: postCopy, intake: prepared.intake)
                pageServing = result.pageServing
                progress.pageServing = pageServing
                progress.pageServer = postCopy
                bytes += result.bytesSent
            } catch {
                // Leaving this scope cancels and awaits the stream.
                await dump.finish()
                throw error
            }
            await dump.finish()
            let checkpoint = clock.now - phaseStart

            phaseStart = clock.now
            try await enter(.transferring, &progress)
            bytes += try await imagesSent
            if parts.contains(.changes) {
                let changes = try await peer.upload(Routes.peerFiles(id, part: FilePart.changes.rawValue)) { consume in
                    _ = try await approach.exportFiles(container, part: .changes, checkpointDirectory: directory, dumpFinished: { true }, consume: consume)
                }
                bytes += changes.bytes
            }
            let transfer = clock.now - phaseStart

            phaseStart = clock.now
            try await enter(.restoring, &progress)
            progress.restoreRequested = true
            let restored = try await peer.restore(id, PeerRestoreRequest(postCopySource: postCopy?.description))
            let restore = clock.now - phaseStart
            let downtime = progress.frozenAt.map { clock.now - $0 }

            // MARK: Post-migration
            phaseStart = clock.now
            try await enter(.confirming, &progress)
            guard restored.container.state == .running else {
                throw UMSError(.internalError, "failed to confirm: the restored container is \(restored.container.state.rawValue)")
            }
            // Step 14: the service runs at the destination, so what the Frontman held, and
            // everything after, goes there now. The destination's own Frontman holds it until the
            // commit below, so nothing reaches the restored service before it is confirmed; what
            // crosses meanwhile is the A → B leg, overlapped with the commit. (On a rollback the
            // destination's Frontman refuses what it held as `closed`, and this one sends it back
            // to the resumed source.)
            let newHost = restored.container.endpoints.first.flatMap { endpoint in endpoint.lastIndex(of: ":").map { String(endpoint[..<$0]) } } ?? (URL(string: peer.baseURL)?.host ?? "")
            await coordinator.frontmen?.release(container, to: Frontmen.target(host: newHost, specification: specification), redirect: redirect, role: .forwarding)
            // With post-copy the destination answers once every page has crossed; by then this
            // side's page-serving dump has ended too.
            bytes += try await peer.commit(id).pageBytes
            if let pageServing {
                try await pageServing.finish(timeout: .seconds(30))
                progress.pageServing = nil
            }

            try await enter(.reportingEndpoint, &progress)
            let endpoints = ServiceEndpoints.of(restored.container)
            await coordinator.update(id) { $0.endpoints = endpoints }
            let hookProblem = await coordinator.endpointRecord.set(EndpointEntry(
                service: container, address: newHost, endpoints: endpoints, system: destination.name, updatedAt: Date()
            ))
            await note("endpoint record: \(container) at \(newHost)" + (hookProblem.map { " (\($0))" } ?? ""))

            try await enter(.deletingSource, &progress)
            await deleteSource(logger: logger)
            // The source is gone with whatever was in flight inside it: the Frontman retries
            // what it safely can at the destination, then stays until clients follow the record.
            await coordinator.frontmen?.cutStale(container)
            await coordinator.frontmen?.retire(container)
            if let stats = await coordinator.frontmen?.stats(container) {
                let longest = String(format: "%.3f", stats.longestHoldSeconds)
                await note("frontman: held \(stats.held) request(s)/connection(s) (longest \(longest) s) and sent them to \(newHost); refused \(stats.rejected), retried \(stats.retried)")
            }
            let postMigration = clock.now - phaseStart

            try progress.machine.complete(endpoints: endpoints)
            let total = clock.now - started
            let (state, movedBytes) = (progress.machine.state, bytes)
            await coordinator.update(id) { record in
                record.apply(state)
                record.bytesMoved = movedBytes
                record.durations.preMigration = preMigration.seconds
                record.durations.checkpoint = checkpoint.seconds
                record.durations.transfer = transfer.seconds
                record.durations.restore = restore.seconds
                record.durations.postMigration = postMigration.seconds
                record.durations.total = total.seconds
                record.downtime = downtime?.seconds
                record.finishedAt = Date()
                record.events.append(.init(at: Date(), step: "completed", message: "\(record.container) runs at \(record.destination.name) (\(endpoints.joined(separator: ", ")))"))
            }
            logger.info("migration completed", metadata: ["total": "\(total.seconds)", "downtime": "\(downtime?.seconds ?? 0)"])
        } catch {
            let cause = UMSError.wrap(error, .internalError, "failed to migrate \(container)")
            logger.error("migration failed", metadata: ["error": "\(cause)", "step": "\(progress.machine.state.step?.rawValue ?? "-")"])
            await rollBack(&progress, cause: cause, total: clock.now - started, logger: logger)
        }
    }

    /// Enters a step: the state machine checks the order, the record shows it.
    func enter(_ step: MigrationStep, _ progress: inout Progress) async throws {
        try Task.checkCancellation()
        try progress.machine.advance(to: step)
        let state = progress.machine.state
        await coordinator.update(id) { record in
            record.apply(state)
            record.events.append(.init(at: Date(), step: step.rawValue, message: "\(step.phase.rawValue): \(step.rawValue)"))
        }
    }

    func note(_ message: String) async {
        let step = await (try? coordinator.migration(id))?.step?.rawValue ?? "-"
        await coordinator.update(id) { $0.events.append(.init(at: Date(), step: step, message: message)) }
    }

    /// Step 15. The service already runs at the destination, so this never rolls back; it retries,
    /// and the source stays frozen (never running twice) if it cannot be removed.
    func deleteSource(logger: Logger) async {
        for attempt in 1...3 {
            do {
                try await orchestrator.delete(container, migration: id)
                return
            } catch {
                logger.warning("failed to delete source container", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                await note("failed to delete the source container (attempt \(attempt)): \(error); it stays frozen")
                try? await Task.sleep(for: .milliseconds(200 * attempt))
            }
        }
    }

    func rollBack(_ progress: inout Progress, cause: UMSError, total: Duration, logger: Logger) async {
        var problems: [String] = []
        var sourceMayResume = true
        do {
            try progress.machine.beginRollback(cause: cause)
        } catch {
            // After confirmation nothing is rolled back: record the failure as it is.
            try? progress.machine.fail(cause: cause)
            let state = progress.machine.state
            await coordinator.update(id) { $0.apply(state); $0.finishedAt = Date(); $0.durations.total = total.seconds }
            return
        }
        let rollingBack = progress.machine.state
        await coordinator.update(id) {
            $0.apply(rollingBack)
            $0.events.append(.init(at: Date(), step: "rollback", message: "rolling back: \(cause)"))
        }
        // The Frontman may already send to the destination (released once the restore
        // succeeded): back to holding, so what the destination's Frontman refuses comes back here
        // and waits for the source.
        if progress.holding { await coordinator.frontmen?.hold(container) }
        if progress.destinationPrepared {
            do {
                try await peer.abort(id)
            } catch {
                problems.append("the destination did not confirm it removed the incoming container: \(error)")
                // If the destination may already run the service, resuming the source could make
                // it run twice; keep the source frozen for an operator instead.
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
        if progress.frozen, sourceMayResume, let approach = progress.approach {
            do {
                try await approach.resume(container)
            } catch {
                problems.append("failed to resume the source: \(error)")
            }
        }
        if sourceMayResume {
            try? await orchestrator.unlock(container, migration: id)
            // What the Frontman held goes to the source, which runs again.
            if progress.holding { await coordinator.frontmen?.resume(container) }
        }
        if problems.isEmpty {
            try? progress.machine.finishRollback()
        } else {
            try? progress.machine.fail(cause: UMSError(cause.code, cause.message, cause: CommandFailure(([cause.cause].compactMap { $0 } + problems).joined(separator: "; "))))
        }
        let state = progress.machine.state
        await coordinator.update(id) {
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
