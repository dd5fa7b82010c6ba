import Foundation
import Logging
import NIOCore
import UMSCheckpoint
import UMSModel
import UMSOrchestrator
import UMSOS
import UMSTrust

/// Orchestrator-level migration (paper §III-C-a): the runtime's own checkpoint/restore. runc dumps
/// the frozen container through CRIU while the synchronization module streams the images to the
/// destination as they are written; the container's rootfs changes follow; the destination's
/// runtime restores into the container its orchestrator created in pre-migration.
public struct OrchestratorLevelApproach: MigrationApproach {
    public let approach = Approach.orchestrator
    public let supportsPostCopy = true
    public let coordinatorParts: [FilePart] = [.images, .changes]
    let orchestrator: any Orchestrator
    let criu: CRIUInfo
    let logger: Logger
    let lazyPagesDaemons = ProcessRegistry()
    /// Post-copy relays of incoming migrations (mutual TLS to the source's relay), by id.
    let relays = RelayRegistry()
    /// Mutual TLS for post-copy page traffic (nil: plain, only with `umsd --insecure`).
    let tls: TLSSettings?
    /// This system's address, where a source's page relay listens.
    let advertiseHost: String
    /// The fault seam: `incoming.restore=corrupt-images` damages the received process tree
    /// image, so CRIU's real restore fails as it would after a damaged transfer.
    let faults: any FaultInjector

    public init(
        orchestrator: any Orchestrator, criu: CRIUInfo, tls: TLSSettings? = nil, advertiseHost: String = "127.0.0.1",
        faults: any FaultInjector = NoFaults(), logger: Logger
    ) {
        self.tls = tls
        self.advertiseHost = advertiseHost
        self.orchestrator = orchestrator
        self.criu = criu
        self.faults = faults
        self.logger = logger
    }

    // MARK: Destination

    public func prepare(_ incoming: IncomingMigration) async throws -> PreparedIncoming {
        try FileSystem.makeDirectory(incoming.imagesDirectory)
        if let carry = incoming.carry {
            guard let carrier = orchestrator as? any ConnectionCarrying else {
                throw UMSError(.unsupported, "failed to prepare migration \(incoming.id): this system's \(orchestrator.kind) orchestrator cannot restore established connections")
            }
            let tunnel = try MigrationTunnel.between(local: advertiseHost, remote: carry.tunnelAddress)
            try await carrier.ensure(tunnel)
            return PreparedIncoming(container: try await carrier.createKeeping(incoming.specification, address: carry.address, tunnel: tunnel, migration: incoming.id))
        }
        return PreparedIncoming(container: try await orchestrator.create(incoming.specification, start: false, migration: incoming.id))
    }

    public func importFiles<Chunks: AsyncSequence & Sendable>(_ incoming: IncomingMigration, part: FilePart, _ chunks: Chunks) async throws -> StreamSummary
        where Chunks.Element == ByteBuffer
    {
        switch part {
        case .images:
            let summary = try await ImageStream.receive(chunks, into: incoming.imagesDirectory)
            // What crossed (the framed, compressed stream), not the images' size it expands to.
            return StreamSummary(digest: summary.digest, bytes: summary.wireBytes)
        case .changes:
            return try await orchestrator.checkpointing("receive rootfs changes").importChanges(incoming.specification.name, chunks)
        }
    }

    public func restore(_ incoming: IncomingMigration, postCopySource: PageServerAddress?) async throws -> ContainerInfo {
        let request = RestoreRequest(imagesDirectory: incoming.imagesDirectory, lazyPages: postCopySource != nil)
        if await faults.corruptsImages() {
            try FileSystem.writeAtomically(Data("corrupt".utf8), to: "\(incoming.imagesDirectory)/pstree.img")
        }
        guard let postCopySource else {
            return try await orchestrator.checkpointing("restore").restore(incoming.specification.name, request: request)
        }
        // Over mutual TLS: the daemon fetches from a relay on loopback that carries its traffic to
        // the source's relay, each side presenting its identity.
        var source = postCopySource
        if let tls {
            let relay = try await TLSRelay.plainToTLS(tls: try tls.client(), target: (postCopySource.host, postCopySource.port), logger: logger)
            await relays.add(relay, for: incoming.id)
            source = PageServerAddress(host: "127.0.0.1", port: relay.port)
        }
        let daemon = try await LazyPagesOptions(
            imagesDirectory: incoming.imagesDirectory, workDirectory: request.workDirectory, source: source
        ).start(criu: criu)
        await lazyPagesDaemons.add(daemon, for: incoming.id)
        return try await orchestrator.checkpointing("restore").restore(incoming.specification.name, request: request)
    }

    public func awaitPages(_ incoming: IncomingMigration) async throws -> Int64 {
        guard let daemon = await lazyPagesDaemons.remove(incoming.id) else { return 0 }
        // Generous: at 10 MB/s a GiB takes ~100 s; the link, not this bound, decides.
        try await daemon.finish(timeout: .seconds(600))
        await relays.remove(incoming.id)?.close()
        let log = RestoreRequest(imagesDirectory: incoming.imagesDirectory).workDirectory + "/lazy-pages.log"
        return LazyPagesOptions.transferredBytes(log: (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    public func abort(_ incoming: IncomingMigration) async {
        await lazyPagesDaemons.remove(incoming.id)?.cancel()
        await relays.remove(incoming.id)?.close()
        try? await orchestrator.delete(incoming.specification.name, migration: incoming.id)
    }

    // MARK: Source

    public func freeze(_ name: String) async throws {
        try await orchestrator.checkpointing("freeze \(name)").freeze(name)
    }

    public func checkpoint(
        _ name: String, into directory: String, postCopy: PageServerAddress?, intake: CheckpointIntake?, compression: ImageCompression?
    ) async throws -> CheckpointResult {
        let checkpointing = try orchestrator.checkpointing("checkpoint \(name)")
        guard let postCopy, let tls else {
            return CheckpointResult(pageServing: try await checkpointing.checkpoint(name, request: CheckpointRequest(imagesDirectory: directory, lazyPages: postCopy)))
        }
        // Over mutual TLS: CRIU serves the pages on loopback only; a relay on this system's
        // address carries them to the destination's relay, and accepts only pinned peers.
        let local = PageServerAddress(host: "127.0.0.1", port: postCopy.port)
        let relay = try await TLSRelay.tlsToPlain(host: advertiseHost, tls: try tls.server(peersOnly: true), target: (local.host, local.port), logger: logger)
        do {
            let serving = try await checkpointing.checkpoint(name, request: CheckpointRequest(imagesDirectory: directory, lazyPages: local))
            return CheckpointResult(
                pageServing: serving, pageServer: PageServerAddress(host: advertiseHost, port: relay.port), localPageServer: local, relay: relay
            )
        } catch {
            relay.close()
            throw error
        }
    }

    public func exportFiles(
        _ name: String, part: FilePart, checkpointDirectory: String, dumpFinished: @escaping @Sendable () async -> Bool,
        compression: ImageCompression?, consume: @Sendable (ByteBuffer) async throws -> Void
    ) async throws -> ExportedFiles {
        switch part {
        case .images:
            let sent = try await ImageStream.send(directory: checkpointDirectory, isFinished: dumpFinished, compression: compression, consume: consume)
            return ExportedFiles(bytes: sent.bytes, images: ImageTransferSummary(
                compression: compression ?? .off, rawBytes: sent.bytes, zeroBytes: sent.zeroBytes, compressedBytes: sent.compressedBytes,
                wireBytes: sent.wireBytes
            ))
        case .changes:
            return ExportedFiles(bytes: try await orchestrator.checkpointing("send rootfs changes").exportChanges(name, consume: consume))
        }
    }

    public func resume(_ name: String) async throws {
        try await orchestrator.checkpointing("resume \(name)").resume(name)
    }
}

/// Post-copy relays of incoming migrations, by migration id.
actor RelayRegistry {
    var relays: [String: TLSRelay] = [:]

    func add(_ relay: TLSRelay, for id: String) {
        relays[id] = relay
    }

    func remove(_ id: String) -> TLSRelay? {
        relays.removeValue(forKey: id)
    }
}

/// Background processes of incoming migrations, by migration id.
actor ProcessRegistry {
    var processes: [String: BackgroundProcess] = [:]

    func add(_ process: BackgroundProcess, for id: String) {
        processes[id] = process
    }

    func remove(_ id: String) -> BackgroundProcess? {
        processes.removeValue(forKey: id)
    }
}
