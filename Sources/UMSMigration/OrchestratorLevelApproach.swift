import Foundation
import Logging
import NIOCore
import UMSCheckpoint
import UMSModel
import UMSOrchestrator
import UMSOS

/// Orchestrator-level migration (paper §III-C-a): the runtime's own checkpoint/restore. Memory
/// pages stream to a CRIU page-server at the destination while runc dumps; the small remaining
/// images and the rootfs changes follow; the destination's runtime restores into the container
/// its orchestrator created in pre-migration.
public struct OrchestratorLevelApproach: MigrationApproach {
    public let approach = Approach.orchestrator
    let orchestrator: any Orchestrator
    let criu: CRIUInfo
    let portRange: ClosedRange<Int>
    let logger: Logger
    let pageServers: PageServerRegistry

    public init(orchestrator: any Orchestrator, criu: CRIUInfo, pageServerPorts: ClosedRange<Int> = 27100...27999, logger: Logger) {
        self.orchestrator = orchestrator
        self.criu = criu
        self.portRange = pageServerPorts
        self.logger = logger
        self.pageServers = PageServerRegistry()
    }

    // MARK: Destination

    public func prepare(_ incoming: IncomingMigration, listenAddress: String) async throws -> ReceiveEndpoint {
        try FileSystem.makeDirectory(incoming.imagesDirectory)
        _ = try await orchestrator.create(incoming.specification, start: false, migration: incoming.id)
        do {
            var lastError: (any Error)?
            // A port may be taken by something else; try a few from the range.
            for port in portRange.shuffled().prefix(8) {
                let options = PageServerOptions(
                    imagesDirectory: incoming.imagesDirectory, address: listenAddress, port: port,
                    logFile: "\(incoming.imagesDirectory)/../page-server.log"
                )
                do {
                    let server = try await PageServer.start(criu: criu, options: options, logger: logger)
                    await pageServers.add(server, for: incoming.id)
                    return ReceiveEndpoint(pageServer: PageServerAddress(host: listenAddress, port: port))
                } catch {
                    lastError = error
                }
            }
            throw UMSError.wrap(lastError ?? UMSError(.unavailable, "no port"), .unavailable, "failed to start a page-server")
        } catch {
            await abort(incoming)
            throw error
        }
    }

    public func importFiles<Chunks: AsyncSequence & Sendable>(_ incoming: IncomingMigration, part: FilePart, _ chunks: Chunks) async throws -> Int64
        where Chunks.Element == ByteBuffer
    {
        switch part {
        case .images:
            return try await Archive.extract(chunks, into: incoming.imagesDirectory).bytes
        case .changes:
            return try await orchestrator.importChanges(incoming.specification.name, chunks)
        }
    }

    public func restore(_ incoming: IncomingMigration) async throws -> ContainerInfo {
        // The dump is complete before the source sends the remaining images, so the page-server
        // has already been sent everything; wait for it to have written it.
        if let server = await pageServers.remove(incoming.id) {
            try await server.finish(timeout: .seconds(10))
        }
        return try await orchestrator.restore(incoming.specification.name, imagesDirectory: incoming.imagesDirectory)
    }

    public func abort(_ incoming: IncomingMigration) async {
        await pageServers.remove(incoming.id)?.cancel()
        try? await orchestrator.delete(incoming.specification.name, migration: incoming.id)
    }

    // MARK: Source

    public func freeze(_ name: String) async throws {
        try await orchestrator.freeze(name)
    }

    public func checkpoint(_ name: String, into directory: String, endpoint: ReceiveEndpoint) async throws -> Int64 {
        try await orchestrator.checkpoint(name, request: CheckpointRequest(imagesDirectory: directory, pageServer: endpoint.pageServer))
        return CheckpointImage.size(of: directory)
    }

    public func exportFiles(_ name: String, part: FilePart, checkpointDirectory: String, consume: @Sendable (ByteBuffer) async throws -> Void) async throws -> Int64 {
        switch part {
        case .images:
            return try await Archive.create(directory: checkpointDirectory, consume: consume).bytes
        case .changes:
            return try await orchestrator.exportChanges(name, consume: consume)
        }
    }

    public func resume(_ name: String) async throws {
        try await orchestrator.resume(name)
    }
}

/// Page-servers waiting for a dump, by migration id.
actor PageServerRegistry {
    var servers: [String: PageServer] = [:]

    func add(_ server: PageServer, for id: String) {
        servers[id] = server
    }

    func remove(_ id: String) -> PageServer? {
        servers.removeValue(forKey: id)
    }
}
