import AsyncHTTPClient
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

/// The Coordinator of one system (paper Fig. 1): it owns the system's view of its containers,
/// drives outgoing migrations through their three phases, and serves the destination side of
/// incoming ones. The HTTP layer only decodes requests and calls it.
public actor Coordinator {
    public let name: String
    public let url: String
    let orchestrator: any Orchestrator
    let approaches: [Approach: any MigrationApproach]
    let stateDirectory: String
    let advertiseHost: String
    let http: HTTPClient
    let peerTokens: [String: String]
    let logger: Logger
    let migrationStore: JSONStore<MigrationRecord>
    var migrations: [String: MigrationRecord] = [:]
    var incoming: [String: IncomingMigration] = [:]
    var incomingApproach: [String: Approach] = [:]
    /// Incoming migrations whose restore has started: from then on only the source decides.
    var restoringIncoming: Set<String> = []
    /// How long an incoming migration may wait for its restore before this system gives up on
    /// the source and removes what it prepared.
    let incomingTimeout: Duration
    var tasks: [String: Task<Void, Never>] = [:]
    /// Test hook: corrupts received checkpoints so the destination's restore really fails.
    let failRestoreForTesting: Bool
    /// The outer image nested services run in (container-level), if this system has one.
    let hostImage: String?
    /// Host commands (composing nested images).
    let runner: any CommandRunner
    /// The Frontmen in front of this system's services (nil: none, e.g. in unit tests).
    let frontmen: Frontmen?
    /// Where each service is reached, for DNS servers and load balancers to follow.
    let endpointRecord: EndpointRecord
    /// Incoming services restored and waiting for the source's commit: where they run here.
    var incomingTargets: [String: FrontmanTarget] = [:]

    public init(
        name: String, url: String, orchestrator: any Orchestrator, approaches: [any MigrationApproach],
        stateDirectory: String, advertiseHost: String, http: HTTPClient, peerTokens: [String: String],
        logger: Logger, failRestoreForTesting: Bool = false, incomingTimeout: Duration = .seconds(600), hostImage: String? = nil,
        frontman: FrontmanSettings? = nil, frontmanHTTP: HTTPClient? = nil, endpointsFile: String? = nil, endpointHook: String? = nil
    ) throws {
        self.hostImage = hostImage
        let runner = SubprocessRunner(logger: logger)
        self.runner = runner
        self.frontmen = frontman.map { Frontmen(runner: runner, http: frontmanHTTP ?? http, limits: $0.limits, linger: $0.linger, logger: logger) }
        self.endpointRecord = try EndpointRecord(
            stateDirectory: stateDirectory, hostsFile: endpointsFile, hook: endpointHook, system: name, runner: runner, logger: logger
        )
        self.incomingTimeout = incomingTimeout
        self.name = name
        self.url = url
        self.orchestrator = orchestrator
        self.approaches = Dictionary(uniqueKeysWithValues: approaches.map { ($0.approach, $0) })
        self.stateDirectory = stateDirectory
        self.advertiseHost = advertiseHost
        self.http = http
        self.peerTokens = peerTokens
        self.logger = logger
        self.failRestoreForTesting = failRestoreForTesting
        self.migrationStore = try JSONStore(directory: "\(stateDirectory)/migrations")
        for record in migrationStore.loadAll() { migrations[record.id] = record }
    }

    // MARK: System

    public func profile() async -> SystemProfile {
        let capabilities = await orchestrator.capabilities()
        return SystemProfile(
            orchestrator: capabilities.kind, runtimeVersion: capabilities.runtimeVersion,
            criuVersion: capabilities.criuVersion, canCheckpoint: capabilities.canCheckpoint,
            approaches: approaches.keys.sorted(), agentCapability: capabilities.agentCapability
        )
    }

    public func systemInfo() async -> SystemInfo {
        SystemInfo(name: name, url: url, version: UMSVersion.current, profile: await profile())
    }

    /// Marks migrations that a previous run of this Coordinator left unfinished, resuming sources
    /// it had frozen: a restart never leaves a service frozen without a record saying so.
    public func recover() async {
        for var record in migrations.values where ![.completed, .rolledBack, .failed].contains(record.status) {
            let canResume = record.step.map(\.canRollBack) ?? true
            if canResume {
                try? await orchestrator.resume(record.container)
                try? await orchestrator.unlock(record.container, migration: record.id)
                record.status = .rolledBack
            } else {
                record.status = .failed
            }
            record.error = UMSError(.internalError, "migration interrupted: the coordinator restarted during \(record.step?.rawValue ?? "start-up")")
            record.finishedAt = Date()
            save(record)
        }
        // Frontmen and the endpoint record follow what runs here now.
        await frontmen?.prepare()
        for info in (try? await orchestrator.list()) ?? [] where info.state == .running {
            await frontmen?.serve(info)
            await recordEndpoint(of: info)
        }
    }

    /// The endpoint record says `info`'s service runs here.
    func recordEndpoint(of info: ContainerInfo) async {
        let endpoints = ServiceEndpoints.of(info)
        guard !endpoints.isEmpty else { return }
        await endpointRecord.set(EndpointEntry(service: info.name, address: advertiseHost, endpoints: endpoints, system: name, updatedAt: Date()))
    }

    public func endpoints() -> [EndpointEntry] {
        endpointRecord.entries()
    }

    public func endpoint(_ service: String) throws -> EndpointEntry {
        guard let entry = endpointRecord.entry(service) else {
            throw UMSError(.notFound, "no endpoint recorded for '\(service)' on system \(name)")
        }
        return entry
    }

    public func frontmanViews() async -> [FrontmanView] {
        await frontmen?.views() ?? []
    }

    // MARK: Containers

    func view(_ info: ContainerInfo, profile: SystemProfile) -> ContainerView {
        let verdicts = ApproachDecision.evaluate(info.specification, source: profile, destination: nil)
        var container = info
        container.approaches = verdicts.filter(\.feasible).map(\.approach)
        container.endpoints = ServiceEndpoints.of(info)
        return ContainerView(container: container, approaches: verdicts)
    }

    public func containers() async throws -> [ContainerView] {
        let profile = await profile()
        return try await orchestrator.list().map { view($0, profile: profile) }
    }

    public func container(_ name: String) async throws -> ContainerView {
        view(try await orchestrator.inspect(name), profile: await profile())
    }

    public func run(_ request: RunRequest) async throws -> ContainerView {
        try ContainerName.validate(request.name)
        guard !request.command.isEmpty else {
            throw UMSError(.invalidArgument, "failed to run '\(request.name)': no command given (put it after --)")
        }
        let ports = try (request.publish ?? []).map { text throws(UMSError) in try PortMapping(parsing: text) }
        if (try? await orchestrator.inspect(request.name)) != nil {
            throw UMSError(.exists, "failed to run '\(request.name)': a container with that name exists on system \(name)")
        }
        var rootfs = request.rootfs
        var nested: NestedImage.Manifest?
        if request.nested == true {
            // Container-level: the unchanged image goes nested into the outer host image.
            guard let hostImage else {
                throw UMSError(.unsupported, "failed to run '\(request.name)' nested: system \(name) has no host image (umsd --host-image; scripts/build-host-image builds one)")
            }
            rootfs = "\(stateDirectory)/compose/\(request.name)-\(UUID().uuidString.prefix(8))"
            nested = try await NestedImage.compose(hostImage: hostImage, service: request.rootfs, into: rootfs, runner: runner)
        }
        defer { if nested != nil { FileSystem.remove(rootfs) } }
        let image = try await orchestrator.importDirectory(rootfs)
        var specification = Specification(
            name: request.name, image: image, command: request.command, environment: request.environment ?? [],
            workingDirectory: request.workingDirectory ?? "/", ports: ports,
            limits: ResourceLimits(memoryBytes: request.memoryBytes), labels: request.labels ?? [:]
        )
        // A migratable image (one with the UMS agent) runs the command behind its agent, with
        // the privileges the agent needs: that is what makes the service-level approach feasible.
        if let nested {
            specification = NestedImage.specification(specification, manifest: nested, token: AgentApproach.secret())
        } else if let manifest = MigratableImage.manifest(rootfs: request.rootfs) {
            specification = MigratableImage.specification(specification, manifest: manifest, token: AgentApproach.secret())
        }
        let info = try await orchestrator.create(specification, start: true, migration: nil)
        await frontmen?.serve(info)
        await recordEndpoint(of: info)
        return view(info, profile: await profile())
    }

    public func remove(_ name: String) async throws {
        try await orchestrator.delete(name, migration: nil)
        await frontmen?.remove(name)
        await endpointRecord.remove(name)
    }

    public func restart(_ name: String) async throws -> ContainerView {
        try await orchestrator.restart(name, migration: nil)
        let info = try await orchestrator.inspect(name)
        await frontmen?.serve(info)
        return view(info, profile: await profile())
    }

    // MARK: Migrations (source side)

    public func migrationRecords() -> [MigrationRecord] {
        migrations.values.sorted { $0.startedAt < $1.startedAt }
    }

    public func migration(_ id: String) throws -> MigrationRecord {
        guard let record = migrations[id] else {
            throw UMSError(.notFound, "no migration with id '\(id)' on system \(name)")
        }
        return record
    }

    func save(_ record: MigrationRecord) {
        migrations[record.id] = record
        do {
            try migrationStore.save(record, key: record.id)
        } catch {
            logger.error("failed to persist migration record", metadata: ["migration.id": "\(record.id)", "error": "\(error)"])
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
        guard destinationURL != url else {
            throw UMSError(.invalidArgument, "invalid destination '\(request.destination)': it is this system")
        }
        _ = try await orchestrator.inspect(request.container)
        return destinationURL
    }

    func peer(_ destinationURL: String, token: String?) -> CoordinatorClient {
        CoordinatorClient(baseURL: destinationURL, token: token ?? peerTokens[destinationURL], http: http)
    }

    /// What `migrate` would do (a dry run): asks the destination what it is, and decides.
    /// Changes nothing, here or there.
    public func plan(_ request: MigrateRequest) async throws -> MigrationPlan {
        let destinationURL = try await validate(request)
        let destination = try await peer(destinationURL, token: request.destinationToken).system()
        let specification = try await orchestrator.specification(of: request.container)
        let approachRequest = request.approach ?? .auto
        let source = await profile()
        let verdicts = ApproachDecision.evaluate(specification, source: source, destination: destination.profile)
        var chosen: Approach?
        var infeasible: String?
        do {
            chosen = try ApproachDecision.choose(approachRequest, specification, source: source, destination: destination.profile)
        } catch {
            infeasible = error.message
        }
        return MigrationPlan(
            container: request.container, source: SystemRef(name: name, url: url),
            destination: SystemRef(name: destination.name, url: destinationURL), requestedApproach: approachRequest.rawValue,
            mode: request.mode ?? .stopAndCopy, approach: chosen, verdicts: verdicts, infeasible: infeasible
        )
    }

    /// Accepts a migration request: validates it, takes the container's control lock (so a
    /// second request is refused at once), and starts the migration in the background.
    public func migrate(_ request: MigrateRequest) async throws -> MigrationRecord {
        let destinationURL = try await validate(request)
        let id = "m-" + UUID().uuidString.lowercased().prefix(12)
        try await orchestrator.lock(request.container, migration: id)
        let approachRequest = request.approach ?? .auto
        var record = MigrationRecord(
            id: String(id), container: request.container, requestedApproach: approachRequest.rawValue, mode: request.mode ?? .stopAndCopy,
            source: SystemRef(name: name, url: url), destination: SystemRef(name: "", url: destinationURL), startedAt: Date()
        )
        record.events.append(.init(at: Date(), step: "requested", message: "migration of \(request.container) to \(destinationURL) accepted"))
        save(record)
        let peer = peer(destinationURL, token: request.destinationToken)
        let driver = MigrationDriver(
            id: record.id, container: request.container, request: approachRequest, coordinator: self, peer: peer,
            orchestrator: orchestrator, approaches: approaches, workDirectory: "\(stateDirectory)/outgoing/\(record.id)",
            mode: record.mode, advertiseHost: advertiseHost, redirect: request.frontman == .redirect, logger: logger
        )
        let recordID = record.id
        tasks[recordID] = Task {
            await driver.run()
            await self.finished(recordID)
        }
        return record
    }

    func finished(_ id: String) {
        tasks[id] = nil
    }

    func update(_ id: String, _ change: (inout MigrationRecord) -> Void) {
        guard var record = migrations[id] else { return }
        change(&record)
        save(record)
    }

    /// Waits for all running migrations (graceful shutdown, tests).
    public func drain() async {
        for task in tasks.values { await task.value }
    }

    // MARK: Migrations (destination side)

    func incomingMigration(_ id: String) throws -> (IncomingMigration, any MigrationApproach) {
        guard let migration = incoming[id], let approach = incomingApproach[id].flatMap({ approaches[$0] }) else {
            throw UMSError(.notFound, "no incoming migration with id '\(id)' on system \(name)")
        }
        return (migration, approach)
    }

    public func hasImage(_ digest: String) async -> Bool {
        await orchestrator.hasImage(ImageReference(digest: digest))
    }

    public func receiveImage<Chunks: AsyncSequence & Sendable>(_ digest: String, _ chunks: Chunks) async throws -> UploadResponse
        where Chunks.Element == ByteBuffer
    {
        // The store keeps the image only if the stream's digest is the announced one, so that is
        // also the digest of what arrived.
        let image = try await orchestrator.importImage(chunks, expected: ImageReference(digest: digest))
        return UploadResponse(bytes: image.sizeBytes ?? 0, digest: image.digest)
    }

    /// Paper Steps 4-7: create the identical container and get ready to receive.
    public func prepareIncoming(_ request: PrepareRequest) async throws -> PrepareResponse {
        try ContainerName.validate(request.specification.name)
        guard incoming[request.id] == nil else {
            throw UMSError(.exists, "failed to prepare migration \(request.id): it is already being received")
        }
        guard let approach = approaches[request.approach] else {
            throw UMSError(.unsupported, "failed to prepare migration \(request.id): system \(name) does not implement the \(request.approach.rawValue)-level approach")
        }
        let migration = IncomingMigration(
            id: request.id, specification: request.specification,
            imagesDirectory: "\(stateDirectory)/incoming/\(request.id)/images"
        )
        incoming[request.id] = migration
        incomingApproach[request.id] = request.approach
        do {
            let prepared = try await approach.prepare(migration)
            // Clients that already come here wait for the service instead of finding nothing.
            await frontmen?.install(request.specification, target: nil, role: .incoming)
            logger.info("incoming migration prepared", metadata: ["migration.id": "\(request.id)", "container": "\(request.specification.name)", "peer": "\(request.source.name)"])
            let timeout = incomingTimeout
            Task { [weak self] in
                try? await Task.sleep(for: timeout)
                await self?.expireIncoming(request.id)
            }
            return PrepareResponse(container: prepared.container, intake: prepared.intake)
        } catch {
            incoming[request.id] = nil
            incomingApproach[request.id] = nil
            FileSystem.remove("\(stateDirectory)/incoming/\(request.id)")
            throw error
        }
    }

    public func receiveFiles<Chunks: AsyncSequence & Sendable>(_ id: String, part: FilePart, _ chunks: Chunks) async throws -> UploadResponse
        where Chunks.Element == ByteBuffer
    {
        let (migration, approach) = try incomingMigration(id)
        let received = try await approach.importFiles(migration, part: part, chunks)
        return UploadResponse(bytes: received.bytes, digest: received.digest)
    }

    /// Paper Step 11: restore, and confirm the service runs.
    public func restoreIncoming(_ id: String, _ request: PeerRestoreRequest) async throws -> RestoreResponse {
        let (migration, approach) = try incomingMigration(id)
        if failRestoreForTesting {
            // Corrupt the received process tree image so that CRIU's real restore fails: the
            // rollback tests exercise the same path a damaged transfer would take.
            FileManager.default.createFile(atPath: "\(migration.imagesDirectory)/pstree.img", contents: Data("corrupt".utf8))
        }
        let source = try request.postCopySource.map { text throws(UMSError) in try PageServerAddress(parsing: text) }
        restoringIncoming.insert(id)
        let info = try await approach.restore(migration, postCopySource: source)
        incomingTargets[id] = Frontmen.target(of: info)
        // With post-copy the service works here from now on while its pages still cross (a
        // rollback would lose what it did anyway): its clients need not wait for every page.
        if source != nil, let target = incomingTargets[id] {
            await frontmen?.release(info.name, to: target, redirect: false, role: .serving)
        }
        logger.info("incoming migration restored", metadata: ["migration.id": "\(id)", "container": "\(info.name)"])
        return RestoreResponse(container: info)
    }

    /// The source saw the restore succeed: once every page is here (post-copy), adopt the
    /// container as an ordinary one.
    public func commitIncoming(_ id: String) async throws -> CommitResponse {
        let (migration, approach) = try incomingMigration(id)
        let pageBytes = try await approach.awaitPages(migration)
        let name = migration.specification.name
        try await orchestrator.unlock(name, migration: id)
        // The service is this system's now: what was held here goes to it, at once (the
        // source's Frontman already sends its clients here).
        let target = incomingTargets[id]
        if let target { await frontmen?.release(name, to: target, redirect: false, role: .serving) }
        forgetIncoming(id)
        // The endpoint record after answering: the source waits for none of it.
        Task {
            guard let info = try? await self.orchestrator.inspect(name) else { return }
            if target == nil, let found = Frontmen.target(of: info) {
                await self.frontmen?.release(name, to: found, redirect: false, role: .serving)
            }
            await self.recordEndpoint(of: info)
        }
        return CommitResponse(pageBytes: pageBytes)
    }

    /// The source gave up: remove everything this migration created here.
    public func abortIncoming(_ id: String) async throws {
        let (migration, approach) = try incomingMigration(id)
        await approach.abort(migration)
        await frontmen?.remove(migration.specification.name)
        forgetIncoming(id)
        logger.info("incoming migration aborted", metadata: ["migration.id": "\(id)"])
    }

    /// A source that prepared a migration here and then went silent (it crashed, or lost the
    /// link) before asking for the restore: nothing runs here yet, so remove what was prepared.
    func expireIncoming(_ id: String) async {
        guard let migration = incoming[id], let approach = incomingApproach[id].flatMap({ approaches[$0] }),
              !restoringIncoming.contains(id)
        else { return }
        logger.warning("incoming migration expired: the source did not ask for the restore in time", metadata: ["migration.id": "\(id)"])
        await approach.abort(migration)
        await frontmen?.remove(migration.specification.name)
        forgetIncoming(id)
    }

    func forgetIncoming(_ id: String) {
        incoming[id] = nil
        incomingApproach[id] = nil
        restoringIncoming.remove(id)
        incomingTargets[id] = nil
        FileSystem.remove("\(stateDirectory)/incoming/\(id)")
    }
}

/// How this system's Frontmen hold, and how long one stays after its service left.
public struct FrontmanSettings: Sendable {
    public var limits: HoldLimits
    public var linger: Duration

    public init(limits: HoldLimits = HoldLimits(), linger: Duration = .seconds(10)) {
        self.limits = limits
        self.linger = linger
    }
}

public enum UMSVersion {
    public static let current = "0.1.0"
}
