import Foundation
import Logging
import NIOCore
import UMSAPI
import UMSDecision
import UMSFrontman
import UMSMigration
import UMSModel
import UMSOrchestrator
import UMSOS

/// The destination part of a Coordinator: one `Entry` per incoming migration, whose
/// `IncomingStateMachine` decides which of the source's requests are allowed when. Every step is
/// written to the journal (`STATE/incoming-journal`, one durable record per migration) before it
/// acts, so a restarted destination knows what it was doing, and answers a repeated call as it
/// did the first time.
public actor IncomingMigrations {
    /// One incoming migration: its journal record, which approach carries it, and where it stands.
    struct Entry: Sendable {
        var record: IncomingRecord
        /// Nil only after a restart with the approach no longer configured (it can then only be
        /// removed).
        let approach: (any MigrationApproach)?
        var machine: IncomingStateMachine
        /// Until then the source may go silent before the restore and this system gives up.
        let expiresAt: ContinuousClock.Instant
        /// Where the restored service runs here (set once `restored`).
        var target: FrontmanTarget?
        /// Checkpoint bytes received so far (bounded by the admission policy).
        var checkpointBytes: Int64 = 0
        /// Bytes of volumes and host directories received (their own allowance).
        var dataBytes: Int64 = 0
        var migration: IncomingMigration
        var owner: String? { record.owner }
    }

    let system: SystemContext
    let frontmen: Frontmen?
    let endpoints: Endpoints
    let faults: any FaultInjector
    /// How long an incoming migration may wait for its restore before this system gives up on
    /// the source and removes what it prepared.
    let timeout: Duration
    let background: BackgroundTasks
    let logger: Logger
    /// What a peer may ask for here.
    let admission: AdmissionPolicy
    /// Host ports of this system's own (the Coordinator's, UMS's agent and page-server ranges).
    let reservedPorts: Set<Int>
    let journal: JSONStore<IncomingRecord>
    var entries: [String: Entry] = [:]
    /// Ended migrations, kept a week so that a repeated call (or a source that recovers) gets
    /// the same answer.
    var finished: [String: IncomingRecord] = [:]
    static let keepFinished: TimeInterval = 7 * 24 * 3600
    /// Migrations with a restore, commit or abort under way, and who waits for them: the source's
    /// calls for one migration run one at a time (an abort during a restore waits for it, then
    /// undoes it).
    private var busy: Set<String> = []
    private var waiting: [String: [CheckedContinuation<Void, Never>]] = [:]

    func serialized<Result: Sendable>(_ id: String, _ body: () async throws -> Result) async throws -> Result {
        while busy.contains(id) {
            await withCheckedContinuation { waiting[id, default: []].append($0) }
        }
        busy.insert(id)
        defer {
            busy.remove(id)
            if var queue = waiting[id], !queue.isEmpty {
                let next = queue.removeFirst()
                waiting[id] = queue.isEmpty ? nil : queue
                next.resume()
            }
        }
        return try await body()
    }

    init(
        system: SystemContext, frontmen: Frontmen?, endpoints: Endpoints, faults: any FaultInjector, timeout: Duration,
        admission: AdmissionPolicy, reservedPorts: Set<Int>, background: BackgroundTasks, logger: Logger
    ) throws {
        self.admission = admission
        self.reservedPorts = reservedPorts
        self.system = system
        self.frontmen = frontmen
        self.endpoints = endpoints
        self.faults = faults
        self.timeout = timeout
        self.background = background
        self.logger = logger
        self.journal = try JSONStore(directory: "\(system.stateDirectory)/incoming-journal", logger: logger)
        let now = Date()
        for record in journal.loadAll() {
            if record.state.isTerminal && record.settled {
                if now.timeIntervalSince(record.updatedAt) < Self.keepFinished { finished[record.id] = record } else { journal.delete(key: record.id) }
                continue
            }
            let migration = IncomingMigration(
                id: record.id, specification: record.specification, imagesDirectory: "\(system.stateDirectory)/incoming/\(record.id)/images", carry: record.carry,
                mode: record.mode ?? .stopAndCopy
            )
            entries[record.id] = Entry(
                record: record, approach: system.approaches[record.approach], machine: IncomingStateMachine(state: record.state),
                expiresAt: .now + timeout, target: record.restored.flatMap(Frontmen.target(of:)), migration: migration
            )
        }
    }

    /// The entry, for `caller` (a peer's name; nil: an operator, who may touch any).
    func entry(_ id: String, by caller: String? = nil) throws(UMSError) -> Entry {
        guard let entry = entries[id] else {
            if let record = finished[id] {
                throw UMSError(.invalidState, "incoming migration \(id) is already \(record.state.rawValue)")
            }
            throw UMSError(.notFound, "no incoming migration with id '\(String(id.prefix(64)))' on system \(system.name)")
        }
        if let caller, entry.owner != caller {
            throw UMSError(.forbidden, "failed to touch incoming migration \(id): it belongs to another peer")
        }
        return entry
    }

    /// An ended migration's record, for `caller`.
    func finishedRecord(_ id: String, by caller: String?) throws(UMSError) -> IncomingRecord? {
        guard let record = finished[id] else { return nil }
        if let caller, record.owner != caller {
            throw UMSError(.forbidden, "failed to touch incoming migration \(id): it belongs to another peer")
        }
        return record
    }

    /// The state of an incoming migration (tests, diagnostics).
    public func state(_ id: String) -> IncomingState? {
        entries[id]?.machine.state ?? finished[id]?.state
    }

    /// Every incoming migration this system knows of, unfinished first (`GET /v1/incoming`).
    public func all() -> [IncomingRecord] {
        entries.values.map(\.record).sorted { $0.preparedAt < $1.preparedAt } + finished.values.sorted { $0.preparedAt < $1.preparedAt }
    }

    /// What a source asks when it recovers (`GET /v1/peer/migrations/{id}`): the journal's state.
    public func status(_ id: String, by caller: String? = nil) throws(UMSError) -> IncomingStatus {
        if let record = try finishedRecord(id, by: caller) {
            return IncomingStatus(id: id, state: record.state, settled: record.settled)
        }
        let entry = try entry(id, by: caller)
        return IncomingStatus(id: id, state: entry.machine.state, settled: entry.record.settled)
    }

    func directory(_ id: String) -> String { "\(system.stateDirectory)/incoming/\(id)" }

    /// Writes the entry's state to the journal (durably) before what follows acts on it.
    func write(_ id: String, _ change: (inout Entry) -> Void = { _ in }) throws {
        guard var entry = entries[id] else { return }
        change(&entry)
        entry.record.state = entry.machine.state
        entry.record.updatedAt = Date()
        try journal.save(entry.record, key: id)
        entries[id] = entry
    }

    public func hasImage(_ digest: String, format: ImageFormat? = nil) async -> Bool {
        await system.orchestrator.hasImage(ImageReference(digest: digest, format: format))
    }

    public func receiveImage<Chunks: AsyncSequence & Sendable>(_ digest: String, format: ImageFormat? = nil, _ chunks: Chunks) async throws -> UploadResponse
        where Chunks.Element == ByteBuffer
    {
        // The store keeps the image only if the stream's digest is the announced one (an engine
        // only if it then holds the announced ID), so that is also the digest of what arrived.
        let expected = ImageReference(digest: digest, format: format)
        try expected.validate()
        let bounded = ByteLimited(chunks, limit: admission.maxImageBytes, what: "maxImageBytes")
        guard expected.format == .engine else {
            let image = try await system.orchestrator.importImage(bounded, expected: expected)
            return UploadResponse(bytes: image.sizeBytes ?? 0, digest: image.digest)
        }
        // An engine's image is named by its configuration, not by the archive's bytes: the answer
        // carries the archive's own digest for the source to compare.
        let hasher = StreamHasher()
        let image = try await system.orchestrator.importImage(bounded.map { await hasher.update($0); return $0 }, expected: expected)
        return UploadResponse(bytes: image.sizeBytes ?? 0, digest: await hasher.digest())
    }

    /// Paper Steps 4-7: create the identical container and get ready to receive. A repeated
    /// prepare of the same migration by the same peer gets the first answer.
    /// `address`: where the request came from (the HTTP layer's peer address); a carried
    /// migration's tunnel may only end there.
    public func prepare(_ request: PrepareRequest, by caller: String? = nil, from address: String? = nil) async throws -> PrepareResponse {
        // Decoding checked the request; the id is checked again because it names directories here
        // whoever calls (the orchestrator checks the Specification when it creates the container).
        try MigrationID.validate(request.id)
        if let existing = entries[request.id] {
            if existing.owner == caller, existing.record.specification == request.specification,
               [.prepared, .receiving].contains(existing.machine.state), let answer = existing.record.prepared
            {
                return answer
            }
            throw UMSError(.exists, "failed to prepare migration \(request.id): it is already \(existing.machine.state.rawValue) here")
        }
        if let ended = finished[request.id] {
            throw UMSError(.exists, "failed to prepare migration \(request.id): it is already \(ended.state.rawValue) here")
        }
        // The destination's operator decides what a peer may ask for: refused before anything
        // is created.
        if entries.values.filter({ !$0.machine.state.isTerminal }).count >= admission.maxConcurrentIncoming {
            throw UMSError(.forbidden, "admission refused (rule maxConcurrentIncoming): \(admission.maxConcurrentIncoming) incoming migrations at once already")
        }
        let skipsData = request.volumes == .skip
        let mode = request.mode ?? .stopAndCopy
        if let refusal = admission.refusal(of: request.specification, reservedPorts: reservedPorts, volumeBytes: skipsData ? nil : request.volumeBytes) {
            throw refusal
        }
        guard let approach = system.approaches[request.approach] else {
            throw UMSError(.unsupported, "failed to prepare migration \(request.id): system \(system.name) does not implement the \(request.approach.rawValue)-level approach")
        }
        // Volumes arrive under their own names: never into one this system already has. Skipped,
        // the container mounts this system's own (its engine makes a missing one, empty).
        if let volumes = request.specification.volumes, !volumes.isEmpty, !skipsData {
            guard let carrier = system.orchestrator as? any VolumeCarrying else {
                throw UMSError(.unsupported, "failed to prepare migration \(request.id): system \(system.name)'s orchestrator does not carry volumes")
            }
            for volume in volumes where await carrier.volumeExists(volume.name) {
                throw UMSError(.exists, "failed to prepare migration \(request.id): a volume named \(volume.name) already exists on system \(system.name)")
            }
        }
        // Host directories likewise (the admission policy allowed where, above); skipped, they
        // must be here already.
        for bind in request.specification.binds ?? [] where FileSystem.exists(bind.hostPath) != skipsData {
            throw UMSError(skipsData ? .notFound : .exists, skipsData
                ? "failed to prepare migration \(request.id): the host directory \(bind.hostPath) is not on system \(system.name) (with volumes skipped it must be)"
                : "failed to prepare migration \(request.id): the host directory \(bind.hostPath) already exists on system \(system.name)")
        }
        if request.carry != nil {
            // The operator agreed to share a migration network, and the approach restores
            // established sockets here (runc's CRIU, or the nested runc's in an outer container
            // on a network this system made).
            guard admission.migrationNetwork else {
                throw UMSError(.forbidden, "admission refused (rule migrationNetwork): this system shares no migration network; established connections cannot be carried here")
            }
            // The tunnel ends where the peer is: never at a third host a peer names.
            if let address, let carry = request.carry, carry.tunnelAddress != address {
                throw UMSError(.forbidden, "failed to prepare migration \(request.id): the tunnel must end at the peer's own address \(address), not \(carry.tunnelAddress)")
            }
            guard let carrier = system.orchestrator as? any ConnectionCarrying, carrier.carriedApproaches.contains(request.approach) else {
                throw UMSError(.unsupported, "failed to prepare migration \(request.id): this system carries no established connections of the \(request.approach.rawValue)-level approach")
            }
        }
        let migration = IncomingMigration(
            id: request.id, specification: request.specification, imagesDirectory: "\(directory(request.id))/images", carry: request.carry, mode: mode
        )
        // Entered before the first suspension point: a second prepare of the same id is refused.
        entries[request.id] = Entry(
            record: IncomingRecord(id: request.id, approach: request.approach, specification: request.specification, source: request.source, owner: caller),
            approach: approach, machine: IncomingStateMachine(), expiresAt: .now + timeout, migration: migration
        )
        entries[request.id]?.record.volumes = request.volumes
        entries[request.id]?.record.carry = request.carry
        entries[request.id]?.record.mode = request.mode
        do {
            try write(request.id)
            try await faults.check(.destination(.prepare))
            for bind in request.specification.binds ?? [] where !skipsData {
                try HostDirectory.create(bind.hostPath, within: admission.allowedBindPaths)
            }
            let prepared = try await approach.prepare(migration)
            let answer = PrepareResponse(container: prepared.container, intake: prepared.intake)
            try write(request.id) { $0.record.prepared = answer }
            // Clients that already come here wait for the service instead of finding nothing.
            await frontmen?.install(request.specification, target: nil, role: .incoming)
            logger.info("incoming migration prepared", metadata: ["migration.id": "\(request.id)", "container": "\(request.specification.name)", "peer": "\(request.source.name)"])
            return answer
        } catch {
            await undo(request.id, reason: "the prepare failed: \(error)")
            throw error
        }
    }

    /// One upload of a migration's data (checkpoint files, a volume, a host directory): the
    /// migration moves to `receiving` (journaled once), the stream is bounded by what is left of
    /// the checkpoint allowance, and what arrived counts against it.
    func receiving<Chunks: AsyncSequence & Sendable>(
        _ id: String, by caller: String?, _ chunks: Chunks, data: Bool = false,
        _ store: (Entry, ByteLimited<Chunks>) async throws -> StreamSummary
    ) async throws -> UploadResponse where Chunks.Element == ByteBuffer {
        var entry = try entry(id, by: caller)
        let before = entry.machine.state
        try entry.machine.receive()
        if before != entry.machine.state {
            try write(id) { $0.machine = entry.machine }
        }
        try await faults.check(.destination(.receive))
        guard !data || entry.record.volumes != .skip else {
            throw UMSError(.invalidState, "failed to receive migration \(id)'s data: its volumes and host directories were skipped")
        }
        // Volumes and host directories have an allowance of their own: twice maxVolumeBytes (the
        // pass while the service ran and the changes after the freeze).
        let (limit, used, rule) = data
            ? (admission.maxVolumeBytes.multipliedReportingOverflow(by: 2).overflow ? Int64.max : admission.maxVolumeBytes * 2, entry.dataBytes, "maxVolumeBytes")
            : (admission.maxCheckpointBytes, entry.checkpointBytes, "maxCheckpointBytes")
        let received = try await store(entry, ByteLimited(chunks, limit: max(0, limit - used), what: rule))
        if data { entries[id]?.dataBytes += received.bytes } else { entries[id]?.checkpointBytes += received.bytes }
        return UploadResponse(bytes: received.bytes, digest: received.digest)
    }

    public func receiveFiles<Chunks: AsyncSequence & Sendable>(_ id: String, part: FilePart, _ chunks: Chunks, by caller: String? = nil) async throws -> UploadResponse
        where Chunks.Element == ByteBuffer
    {
        guard let approach = try entry(id, by: caller).approach else {
            throw UMSError(.unsupported, "failed to receive \(id): its approach is not configured here")
        }
        let corrupts = await faults.corruptsStream()
        let damage = part == .images && corrupts ? StreamDamage() : nil
        return try await receiving(id, by: caller, chunks) { entry, bounded in
            guard let damage else { return try await approach.importFiles(entry.migration, part: part, bounded) }
            // The fault seam: one byte flipped on arrival (the fault matrix's corrupted stream).
            return try await approach.importFiles(entry.migration, part: part, bounded.map { await damage.apply($0) })
        }
    }

    /// The contents of one of the container's named volumes (after the freeze), into the volume of
    /// the same name here.
    public func receiveVolume<Chunks: AsyncSequence & Sendable>(_ id: String, volume: String, _ chunks: Chunks, by caller: String? = nil) async throws -> UploadResponse
        where Chunks.Element == ByteBuffer
    {
        try VolumeName.validate(volume)
        guard try entry(id, by: caller).migration.specification.volumes?.contains(where: { $0.name == volume }) == true else {
            throw UMSError(.invalidArgument, "failed to receive volume \(volume): migration \(id) has no such volume")
        }
        guard let carrier = system.orchestrator as? any VolumeCarrying else {
            throw UMSError(.unsupported, "failed to receive volume \(volume): this system's orchestrator does not carry volumes")
        }
        return try await receiving(id, by: caller, chunks, data: true) { _, bounded in try await carrier.importVolume(volume, bounded) }
    }

    /// The contents of one of the container's bind-mounted host directories (`index` in its
    /// Specification), into the directory prepare made at the same path.
    public func receiveBind<Chunks: AsyncSequence & Sendable>(_ id: String, index: String, _ chunks: Chunks, by caller: String? = nil) async throws -> UploadResponse
        where Chunks.Element == ByteBuffer
    {
        let binds = try entry(id, by: caller).migration.specification.binds ?? []
        guard let position = Int(index), binds.indices.contains(position) else {
            throw UMSError(.invalidArgument, "failed to receive a host directory: migration \(id) has no bind mount '\(String(index.prefix(16)))'")
        }
        let directory = binds[position].hostPath
        return try await receiving(id, by: caller, chunks, data: true) { _, bounded in
            let received = try await Archive.extract(bounded, into: directory, untrusted: true, incremental: true)
            try TreeCheck.verify(directory)
            return received
        }
    }

    /// Paper Step 11: restore, and confirm the service runs. From here on only the source
    /// decides (the service may run here): the migration no longer expires. A repeated restore
    /// gets the first answer.
    public func restore(_ id: String, _ request: PeerRestoreRequest, by caller: String? = nil) async throws -> RestoreResponse {
        try await serialized(id) { try await restoreNow(id, request, by: caller) }
    }

    func restoreNow(_ id: String, _ request: PeerRestoreRequest, by caller: String?) async throws -> RestoreResponse {
        if let record = try finishedRecord(id, by: caller), record.state == .committed, let restored = record.restored {
            return RestoreResponse(container: restored)
        }
        var entry = try entry(id, by: caller)
        if entry.machine.state == .restored, let restored = entry.record.restored {
            return RestoreResponse(container: restored)
        }
        guard let approach = entry.approach else { throw UMSError(.unsupported, "failed to restore \(id): its approach is not configured here") }
        let source = try request.postCopySource.map { text throws(UMSError) in try PageServerAddress(parsing: text) }
        try entry.machine.beginRestore()
        try write(id) { $0.machine = entry.machine }
        try await faults.check(.destination(.restore))
        let info = try await approach.restore(entry.migration, postCopySource: source)
        guard var current = entries[id] else {
            throw UMSError(.invalidState, "failed to restore \(id): it was aborted meanwhile")
        }
        try current.machine.restored()
        let target = Frontmen.target(of: info)
        try write(id) {
            $0.machine = current.machine
            $0.record.restored = info
            $0.target = target
        }
        // With post-copy the service works here from now on while its pages still cross (a
        // rollback would lose what it did anyway): its clients need not wait for every page.
        if source != nil, let target {
            await frontmen?.release(info.name, to: target, redirect: false, role: .serving)
        }
        logger.info("incoming migration restored", metadata: ["migration.id": "\(id)", "container": "\(info.name)"])
        return RestoreResponse(container: info)
    }

    /// The source saw the restore succeed: once every page is here (post-copy), adopt the
    /// container as an ordinary one. A repeated commit gets the first answer.
    public func commit(_ id: String, by caller: String? = nil) async throws -> CommitResponse {
        try await serialized(id) { try await commitNow(id, by: caller) }
    }

    func commitNow(_ id: String, by caller: String?) async throws -> CommitResponse {
        if let record = try finishedRecord(id, by: caller), record.state == .committed {
            return CommitResponse(pageBytes: record.pageBytes ?? 0)
        }
        var entry = try entry(id, by: caller)
        guard entry.machine.state == .restored else {
            throw UMSError(.invalidState, "failed to commit the incoming migration \(id): it is \(entry.machine.state.rawValue)")
        }
        try await faults.check(.destination(.commit))
        let pageBytes = try await entry.approach?.awaitPages(entry.migration) ?? 0
        // The decision, in the journal before anything acts on it: the service is this system's.
        try entry.machine.commit()
        try write(id) {
            $0.machine = entry.machine
            $0.record.pageBytes = pageBytes
        }
        await adopt(id)
        // Carried: the connections the service has now that it goes on (counted after its clients
        // were let through, for the record).
        let carried = entry.migration.carry == nil ? nil
            : await (system.orchestrator as? any ConnectionCarrying)?.establishedConnections(entry.migration.specification.name)
        return CommitResponse(pageBytes: pageBytes, carriedConnections: carried)
    }

    /// After the commit: the container is an ordinary one of this system's, fronted and recorded.
    func adopt(_ id: String) async {
        guard let entry = entries[id] else { return }
        let name = entry.migration.specification.name
        // The service is this system's now (the commit is journaled): what was held here goes to
        // it, at once (the source's Frontman already sends its clients here) — first, since
        // every held client waits for it.
        let target = entry.target
        if let target { await frontmen?.release(name, to: target, redirect: false, role: .serving) }
        if entry.migration.carry != nil, let carrier = system.orchestrator as? any ConnectionCarrying {
            // Its kept address reaches it now, and what it sends leaves. Idempotent: a restart
            // does it again.
            do {
                try await carrier.deliver(name)
            } catch {
                logger.warning("failed to deliver a carried service's address; retried at the next start", metadata: ["migration.id": "\(id)", "error": "\(error)"])
                return
            }
        }
        do {
            try await system.orchestrator.unlock(name, migration: id)
        } catch let error as UMSError where error.code == .notFound {
        } catch {
            logger.warning("failed to unlock an adopted container; retried at the next start", metadata: ["migration.id": "\(id)", "error": "\(error)"])
            return
        }
        settle(id)
        FileSystem.remove(directory(id))
        // The endpoint record after answering: the source waits for none of it.
        let (orchestrator, frontmen, endpoints, host) = (system.orchestrator, frontmen, endpoints, system.advertiseHost)
        background.spawn {
            guard let info = try? await orchestrator.inspect(name) else { return }
            if target == nil, let found = Frontmen.target(of: info) {
                await frontmen?.release(name, to: found, redirect: false, role: .serving)
            }
            await endpoints.record(info, at: host)
        }
    }

    /// The source gave up: remove everything this migration created here. A repeated abort
    /// succeeds again; an abort during a restore waits for it, then undoes it.
    public func abort(_ id: String, by caller: String? = nil) async throws {
        try await serialized(id) { try await abortNow(id, by: caller) }
    }

    func abortNow(_ id: String, by caller: String?, reason: String = "the source aborted") async throws {
        if let record = try finishedRecord(id, by: caller) {
            guard record.state == .aborted else {
                throw UMSError(.invalidState, "failed to abort the incoming migration \(id): it is already \(record.state.rawValue)")
            }
            return
        }
        _ = try entry(id, by: caller)
        try await faults.check(.destination(.abort))
        await undo(id, reason: reason)
        logger.info("incoming migration aborted", metadata: ["migration.id": "\(id)", "reason": "\(reason)"])
    }

    /// The abort decision, journaled, then carried out: the container, the images, the Frontman.
    /// Idempotent (a restart carries out an unsettled abort again).
    func undo(_ id: String, reason: String) async {
        guard var entry = entries[id], entry.machine.state != .committed else { return }
        try? entry.machine.abort()
        do {
            try write(id) {
                $0.machine = entry.machine
                $0.record.reason = $0.record.reason ?? reason
            }
        } catch {
            logger.error("failed to journal an abort; carried out anyway", metadata: ["migration.id": "\(id)", "error": "\(error)"])
        }
        if let approach = entry.approach {
            await approach.abort(entry.migration)
        } else {
            try? await system.orchestrator.delete(entry.migration.specification.name, migration: id)
        }
        // Its volumes were made for it (prepare refuses a name that exists here), and its host
        // directories (prepare refused a path that existed) — unless they were skipped: then
        // they are this system's own.
        if entry.record.volumes != .skip {
            if let carrier = system.orchestrator as? any VolumeCarrying {
                for volume in entry.migration.specification.volumes ?? [] { await carrier.removeVolume(volume.name) }
            }
            for bind in entry.migration.specification.binds ?? [] { FileSystem.remove(bind.hostPath) }
        }
        await frontmen?.remove(entry.migration.specification.name)
        FileSystem.remove(directory(id))
        settle(id)
    }

    /// A terminal migration whose work here is done: kept (journaled) to answer repeated calls.
    func settle(_ id: String) {
        guard var entry = entries.removeValue(forKey: id) else { return }
        entry.record.state = entry.machine.state
        entry.record.settled = true
        entry.record.updatedAt = Date()
        finished[id] = entry.record
        do {
            try journal.save(entry.record, key: id)
        } catch {
            logger.error("failed to journal a settled migration", metadata: ["migration.id": "\(id)", "error": "\(error)"])
        }
    }

    /// At start-up, before anything else: what the journal says was under way when this
    /// Coordinator stopped. Nothing ran here before the restore, so those are removed (the
    /// source sees its calls fail and resumes its own copy); a restored service keeps running
    /// and waits for the source's commit or abort; decisions journaled but not carried out are
    /// carried out.
    func recover() async {
        for (id, entry) in entries {
            switch entry.machine.state {
            case .prepared, .receiving, .restoring, .aborted:
                await undo(id, reason: entry.machine.state == .aborted ? "aborted" : "the destination restarted during \(entry.machine.state.rawValue); the source keeps its copy")
                logger.warning("incoming migration removed at start-up", metadata: ["migration.id": "\(id)", "was": "\(entry.machine.state.rawValue)"])
            case .committed:
                await adopt(id)
            case .restored:
                logger.notice("incoming migration restored before the restart: the service runs here and waits for the source's decision", metadata: ["migration.id": "\(id)"])
            }
        }
        let now = Date()
        for (id, record) in finished where now.timeIntervalSince(record.updatedAt) >= Self.keepFinished {
            finished[id] = nil
            journal.delete(key: id)
        }
    }

    /// Ids whose incoming directory or container lock is still needed.
    func unfinishedIDs() -> Set<String> { Set(entries.keys) }

    /// An operator decides an incoming migration whose source is gone for good: `destination`
    /// keeps the restored service here (a commit), `source` removes everything here.
    func resolve(_ id: String, keep: ResolveKeep, dryRun: Bool) async throws -> ResolveResponse {
        try await serialized(id) {
            if let record = finished[id] {
                return ResolveResponse(id: id, side: "incoming", actions: ["nothing to do: the incoming migration is already \(record.state.rawValue)"], done: true)
            }
            let entry = try entry(id)
            let name = entry.migration.specification.name
            switch keep {
            case .destination:
                guard entry.machine.state == .restored || entry.machine.state == .committed else {
                    throw UMSError(.invalidState, "failed to keep the destination's copy of \(id): it was never restored here (it is \(entry.machine.state.rawValue)); keep the source instead")
                }
                let actions = ["commit: \(name) (restored here) becomes this system's container", "release its Frontman to it and record its endpoint"]
                if dryRun { return ResolveResponse(id: id, side: "incoming", actions: actions, done: false) }
                _ = try await commitNow(id, by: nil)
                return ResolveResponse(id: id, side: "incoming", actions: actions, done: true)
            case .source:
                let actions = ["abort: remove \(name) (\(entry.machine.state.rawValue) here), its images and its Frontman"]
                if dryRun { return ResolveResponse(id: id, side: "incoming", actions: actions, done: false) }
                await undo(id, reason: "an operator kept the source's copy")
                return ResolveResponse(id: id, side: "incoming", actions: actions, done: true)
            }
        }
    }

    /// Sources that prepared a migration here and then went silent (crashed, or lost the link)
    /// before asking for the restore: nothing runs here yet, so remove what was prepared.
    func expireStale(now: ContinuousClock.Instant = .now) async {
        for (id, entry) in entries where entry.machine.state.mayExpire && entry.expiresAt <= now && !busy.contains(id) {
            logger.warning("incoming migration expired: the source did not ask for the restore in time", metadata: ["migration.id": "\(id)"])
            await undo(id, reason: "expired: the source did not ask for the restore in time")
        }
    }
}

/// `incoming.receive=corrupt-stream`: flips one byte, once, in the first large chunk of a stream.
actor StreamDamage {
    private var done = false

    func apply(_ buffer: ByteBuffer) -> ByteBuffer {
        guard !done, buffer.readableBytes > 4096 else { return buffer }
        done = true
        var damaged = buffer
        let index = damaged.readerIndex + damaged.readableBytes / 2
        if let byte = damaged.getInteger(at: index, as: UInt8.self) {
            damaged.setInteger(byte ^ 0xFF, at: index)
        }
        return damaged
    }
}
