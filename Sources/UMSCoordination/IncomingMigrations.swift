import Foundation
import Logging
import NIOCore
import UMSAPI
import UMSDecision
import UMSFrontman
import UMSMigration
import UMSModel
import UMSOS

/// The destination part of a Coordinator: one `Entry` per incoming migration, whose
/// `IncomingStateMachine` decides which of the source's requests are allowed when.
public actor IncomingMigrations {
    /// One incoming migration: what it is, which approach carries it, and where it stands.
    struct Entry: Sendable {
        var migration: IncomingMigration
        let approach: any MigrationApproach
        let source: SystemRef
        var machine = IncomingStateMachine()
        /// Until then the source may go silent before the restore and this system gives up.
        let expiresAt: ContinuousClock.Instant
        /// Where the restored service runs here (set once `restored`).
        var target: FrontmanTarget?
        /// Checkpoint bytes received so far (bounded by the admission policy).
        var checkpointBytes: Int64 = 0
        /// The pinned peer that prepared it (nil: an operator); only it may continue it.
        var owner: String?
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
    var entries: [String: Entry] = [:]
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
    ) {
        self.admission = admission
        self.reservedPorts = reservedPorts
        self.system = system
        self.frontmen = frontmen
        self.endpoints = endpoints
        self.faults = faults
        self.timeout = timeout
        self.background = background
        self.logger = logger
    }

    /// The entry, for `caller` (a peer's name; nil: an operator, who may touch any).
    func entry(_ id: String, by caller: String? = nil) throws(UMSError) -> Entry {
        guard let entry = entries[id] else {
            throw UMSError(.notFound, "no incoming migration with id '\(String(id.prefix(64)))' on system \(system.name)")
        }
        if let caller, entry.owner != caller {
            throw UMSError(.forbidden, "failed to touch incoming migration \(id): it belongs to another peer")
        }
        return entry
    }

    /// The state of an incoming migration (tests, diagnostics).
    public func state(_ id: String) -> IncomingState? {
        entries[id]?.machine.state
    }

    func directory(_ id: String) -> String { "\(system.stateDirectory)/incoming/\(id)" }

    public func hasImage(_ digest: String) async -> Bool {
        await system.orchestrator.hasImage(ImageReference(digest: digest))
    }

    public func receiveImage<Chunks: AsyncSequence & Sendable>(_ digest: String, _ chunks: Chunks) async throws -> UploadResponse
        where Chunks.Element == ByteBuffer
    {
        // The store keeps the image only if the stream's digest is the announced one, so that is
        // also the digest of what arrived.
        try ImageReference(digest: digest).validate()
        let bounded = ByteLimited(chunks, limit: admission.maxImageBytes, what: "maxImageBytes")
        let image = try await system.orchestrator.importImage(bounded, expected: ImageReference(digest: digest))
        return UploadResponse(bytes: image.sizeBytes ?? 0, digest: image.digest)
    }

    /// Paper Steps 4-7: create the identical container and get ready to receive.
    public func prepare(_ request: PrepareRequest, by caller: String? = nil) async throws -> PrepareResponse {
        // Decoding checked the request; the id is checked again because it names directories here
        // whoever calls (the orchestrator checks the Specification when it creates the container).
        try MigrationID.validate(request.id)
        guard entries[request.id] == nil else {
            throw UMSError(.exists, "failed to prepare migration \(request.id): it is already being received")
        }
        // The destination's operator decides what a peer may ask for: refused before anything
        // is created.
        if entries.values.filter({ !$0.machine.state.isTerminal }).count >= admission.maxConcurrentIncoming {
            throw UMSError(.forbidden, "admission refused (rule maxConcurrentIncoming): \(admission.maxConcurrentIncoming) incoming migrations at once already")
        }
        if let refusal = admission.refusal(of: request.specification, reservedPorts: reservedPorts) {
            throw refusal
        }
        guard let approach = system.approaches[request.approach] else {
            throw UMSError(.unsupported, "failed to prepare migration \(request.id): system \(system.name) does not implement the \(request.approach.rawValue)-level approach")
        }
        let migration = IncomingMigration(id: request.id, specification: request.specification, imagesDirectory: "\(directory(request.id))/images")
        // Entered before the first suspension point: a second prepare of the same id is refused.
        entries[request.id] = Entry(migration: migration, approach: approach, source: request.source, expiresAt: .now + timeout, owner: caller)
        do {
            try await faults.check(.destination(.prepare))
            let prepared = try await approach.prepare(migration)
            // Clients that already come here wait for the service instead of finding nothing.
            await frontmen?.install(request.specification, target: nil, role: .incoming)
            logger.info("incoming migration prepared", metadata: ["migration.id": "\(request.id)", "container": "\(request.specification.name)", "peer": "\(request.source.name)"])
            return PrepareResponse(container: prepared.container, intake: prepared.intake)
        } catch {
            forget(request.id)
            throw error
        }
    }

    public func receiveFiles<Chunks: AsyncSequence & Sendable>(_ id: String, part: FilePart, _ chunks: Chunks, by caller: String? = nil) async throws -> UploadResponse
        where Chunks.Element == ByteBuffer
    {
        var entry = try entry(id, by: caller)
        try entry.machine.receive()
        entries[id] = entry
        try await faults.check(.destination(.receive))
        let allowance = max(0, admission.maxCheckpointBytes - entry.checkpointBytes)
        let received = try await entry.approach.importFiles(entry.migration, part: part, ByteLimited(chunks, limit: allowance, what: "maxCheckpointBytes"))
        entries[id]?.checkpointBytes += received.bytes
        return UploadResponse(bytes: received.bytes, digest: received.digest)
    }

    /// Paper Step 11: restore, and confirm the service runs. From here on only the source
    /// decides (the service may run here): the migration no longer expires.
    public func restore(_ id: String, _ request: PeerRestoreRequest, by caller: String? = nil) async throws -> RestoreResponse {
        try await serialized(id) { try await restoreNow(id, request, by: caller) }
    }

    func restoreNow(_ id: String, _ request: PeerRestoreRequest, by caller: String?) async throws -> RestoreResponse {
        var entry = try entry(id, by: caller)
        let source = try request.postCopySource.map { text throws(UMSError) in try PageServerAddress(parsing: text) }
        try entry.machine.beginRestore()
        entries[id] = entry
        try await faults.check(.destination(.restore))
        let info = try await entry.approach.restore(entry.migration, postCopySource: source)
        guard var current = entries[id] else {
            throw UMSError(.invalidState, "failed to restore \(id): it was aborted meanwhile")
        }
        try current.machine.restored()
        current.target = Frontmen.target(of: info)
        entries[id] = current
        // With post-copy the service works here from now on while its pages still cross (a
        // rollback would lose what it did anyway): its clients need not wait for every page.
        if source != nil, let target = current.target {
            await frontmen?.release(info.name, to: target, redirect: false, role: .serving)
        }
        logger.info("incoming migration restored", metadata: ["migration.id": "\(id)", "container": "\(info.name)"])
        return RestoreResponse(container: info)
    }

    /// The source saw the restore succeed: once every page is here (post-copy), adopt the
    /// container as an ordinary one.
    public func commit(_ id: String, by caller: String? = nil) async throws -> CommitResponse {
        try await serialized(id) { try await commitNow(id, by: caller) }
    }

    func commitNow(_ id: String, by caller: String?) async throws -> CommitResponse {
        var entry = try entry(id, by: caller)
        guard entry.machine.state == .restored else {
            throw UMSError(.invalidState, "failed to commit the incoming migration \(id): it is \(entry.machine.state.rawValue)")
        }
        try await faults.check(.destination(.commit))
        let pageBytes = try await entry.approach.awaitPages(entry.migration)
        let name = entry.migration.specification.name
        try await system.orchestrator.unlock(name, migration: id)
        try entry.machine.commit()
        // The service is this system's now: what was held here goes to it, at once (the
        // source's Frontman already sends its clients here).
        let target = entry.target
        if let target { await frontmen?.release(name, to: target, redirect: false, role: .serving) }
        forget(id)
        // The endpoint record after answering: the source waits for none of it.
        let (orchestrator, frontmen, endpoints, host) = (system.orchestrator, frontmen, endpoints, system.advertiseHost)
        background.spawn {
            guard let info = try? await orchestrator.inspect(name) else { return }
            if target == nil, let found = Frontmen.target(of: info) {
                await frontmen?.release(name, to: found, redirect: false, role: .serving)
            }
            await endpoints.record(info, at: host)
        }
        return CommitResponse(pageBytes: pageBytes)
    }

    /// The source gave up: remove everything this migration created here.
    public func abort(_ id: String, by caller: String? = nil) async throws {
        try await serialized(id) { try await abortNow(id, by: caller) }
    }

    func abortNow(_ id: String, by caller: String?) async throws {
        var entry = try entry(id, by: caller)
        try await faults.check(.destination(.abort))
        try entry.machine.abort()
        entries[id] = entry
        await entry.approach.abort(entry.migration)
        await frontmen?.remove(entry.migration.specification.name)
        forget(id)
        logger.info("incoming migration aborted", metadata: ["migration.id": "\(id)"])
    }

    /// Sources that prepared a migration here and then went silent (crashed, or lost the link)
    /// before asking for the restore: nothing runs here yet, so remove what was prepared.
    func expireStale(now: ContinuousClock.Instant = .now) async {
        for (id, entry) in entries where entry.machine.state.mayExpire && entry.expiresAt <= now {
            var expired = entry
            guard (try? expired.machine.abort()) != nil else { continue }
            entries[id] = expired
            logger.warning("incoming migration expired: the source did not ask for the restore in time", metadata: ["migration.id": "\(id)"])
            await entry.approach.abort(entry.migration)
            await frontmen?.remove(entry.migration.specification.name)
            forget(id)
        }
    }

    func forget(_ id: String) {
        entries[id] = nil
        FileSystem.remove(directory(id))
    }
}
