import Foundation
import Logging
import NIOCore
import UMSCheckpoint
import UMSImage
import UMSModel
import UMSOrchestrator
import UMSOS
import UMSTrust

/// The two agent-based approaches, which differ only in what the agent inside the container does:
///
/// - **Service-level** (paper §III-C-b), for users who may change their service's image but not
///   the orchestrators: the image carries `ums-agent` as its entrypoint; the agent checkpoints only
///   the service's process tree with CRIU inside the container.
/// - **Container-level** (paper §III-C-c), for users who may change neither: the unchanged service
///   runs as a nested runc container inside an outer container whose agent (host mode) checkpoints
///   it with `runc checkpoint`.
///
/// Either way the agent streams the images, while they are written, straight to the agent in the
/// destination container, which the destination Coordinator started in restore mode during
/// pre-migration. The orchestrators only ever create, start and delete ordinary containers.
/// The Coordinators carry no image bytes (`coordinatorParts` is empty): they tell the agents
/// where to meet (the destination agent's published port and a one-time secret) and when to
/// dump, restore or resume. Files the service holds open travel with its images.
///
/// Post-copy (container-level): the source agent's `runc checkpoint --lazy-pages` dumps all but
/// the pages and serves those from inside the outer container (CRIU's page server behind a
/// mutual-TLS relay of the source system's); the destination agent restores without them, its
/// `criu lazy-pages` daemon (behind a relay of the destination system's) fetching each page on
/// its first touch and the rest in the background. Service-level post-copy is not possible with
/// CRIU 4.2: its `--unprivileged` mode, which the service-level agent runs, never uses
/// userfaultfd (`kerndat_uffd` returns before probing it), and CRIU's privileged mode inside a
/// service container would restore what the unprivileged dump never owned (rlimits, the time
/// namespace: docs/container-level.md says what was tried).
public struct AgentApproach: MigrationApproach {
    /// `.service` or `.container`.
    public let approach: Approach
    public var supportsPostCopy: Bool { approach == .container }
    /// The agent's CRIU freezes the service when DUMP starts; `freeze` asks the agent's STATUS.
    public var freezesAtCheckpoint: Bool { true }
    public var postCopyRefusal: String {
        "the \(approach.rawValue)-level approach does not implement post-copy: \(TransferMode.serviceLevelPostCopyUnavailable)"
    }
    public let coordinatorParts: [FilePart] = []
    let orchestrator: any Orchestrator
    /// This system's address, where the destination agent's port is published.
    let advertiseHost: String
    /// Host ports the destination agents are published on.
    let agentPorts: ClosedRange<Int>
    /// The fault seam: `incoming.restore=corrupt-images` makes the destination agent damage
    /// what it received before CRIU restores it.
    let faults: any FaultInjector
    /// Mutual TLS between the systems: the agents' stream crosses inside it, through a relay on
    /// each system, and the destination agent's port is never published (nil: `--insecure`).
    let tls: TLSSettings?
    /// Relays of incoming migrations (destination) by id.
    let relays = RelayRegistry()
    /// Post-copy: relays from the destination agent's lazy-pages daemon to the source's page
    /// server, by incoming migration id.
    let pageRelays = RelayRegistry()
    let logger: Logger
    /// Agents by source container name (set by `freeze`) and by incoming migration id (set by
    /// `prepare`), so the steps inside the downtime do not ask the orchestrator again.
    let agents = AgentDirectory()

    public static func serviceLevel(
        orchestrator: any Orchestrator, advertiseHost: String, tls: TLSSettings? = nil, faults: any FaultInjector = NoFaults(), logger: Logger
    ) -> AgentApproach {
        AgentApproach(approach: .service, orchestrator: orchestrator, advertiseHost: advertiseHost, tls: tls, faults: faults, logger: logger)
    }

    public static func containerLevel(
        orchestrator: any Orchestrator, advertiseHost: String, tls: TLSSettings? = nil, faults: any FaultInjector = NoFaults(), logger: Logger
    ) -> AgentApproach {
        AgentApproach(approach: .container, orchestrator: orchestrator, advertiseHost: advertiseHost, tls: tls, faults: faults, logger: logger)
    }

    public init(
        approach: Approach, orchestrator: any Orchestrator, advertiseHost: String, agentPorts: ClosedRange<Int> = 27000...27099,
        tls: TLSSettings? = nil, faults: any FaultInjector = NoFaults(), logger: Logger
    ) {
        self.tls = tls
        precondition(approach != .orchestrator, "the orchestrator-level approach has no agent")
        self.approach = approach
        self.orchestrator = orchestrator
        self.advertiseHost = advertiseHost
        self.agentPorts = agentPorts
        self.faults = faults
        self.logger = logger
    }

    // MARK: Destination

    public func prepare(_ incoming: IncomingMigration) async throws -> PreparedIncoming {
        let label = approach == .service ? SpecificationLabels.agent : SpecificationLabels.nested
        guard incoming.specification.labels[label] != nil, incoming.specification.command.first == MigratableImage.agentPath else {
            throw UMSError(.invalidArgument, "failed to prepare \(incoming.specification.name) for the \(approach.rawValue)-level approach: its container does not run the UMS agent (label \(label))")
        }
        // Carried connections (container-level on an orchestrator that can): the outer container
        // also holds the source's address for the restored service's connections, its agent
        // talking over the container's own.
        var keeping: (carrier: any ConnectionCarrying, address: String, tunnel: MigrationTunnel)?
        if let carry = incoming.carry {
            guard approach == .container, let carrier = orchestrator as? any ConnectionCarrying else {
                throw UMSError(.unsupported, "failed to prepare \(incoming.specification.name): the \(approach.rawValue)-level approach does not carry established connections here")
            }
            let tunnel = try MigrationTunnel.between(local: advertiseHost, remote: carry.tunnelAddress)
            try await carrier.ensure(tunnel)
            keeping = (carrier, carry.address, tunnel)
        }
        let container = try await createRestoring(incoming, keeping: keeping)
        do {
            let agent = try AgentClient(for: container)
            await agents.set(agent, for: incoming.id)
            try await agent.waitUntilReady(timeout: .seconds(10))
            let secret = Self.secret()
            try await agent.send("RECEIVE \(secret)", timeout: .seconds(5), operation: "arm the destination agent")
            let port = MigratableImage.agentPort(of: container.specification)
            if let tls {
                // The stream comes over mutual TLS to a relay on this system's address, which
                // passes it to the agent at the container's own address.
                guard let address = container.address else {
                    throw UMSError(.internalError, "failed to prepare \(container.name): the orchestrator gives no address for it")
                }
                let relay = try await TLSRelay.tlsToPlain(host: advertiseHost, tls: try tls.server(peersOnly: true), target: (address, port), logger: logger)
                await relays.add(relay, for: incoming.id)
                return PreparedIncoming(container: container, intake: CheckpointIntake(address: "\(advertiseHost):\(relay.port)", secret: secret))
            }
            guard let published = container.specification.ports.first(where: { $0.containerPort == port }) else {
                throw UMSError(.internalError, "failed to prepare \(container.name): the agent's port is not published")
            }
            return PreparedIncoming(container: container, intake: CheckpointIntake(address: "\(advertiseHost):\(published.hostPort)", secret: secret))
        } catch {
            await relays.remove(incoming.id)?.close()
            await agents.remove(incoming.id)
            try? await orchestrator.delete(container.name, migration: incoming.id)
            throw error
        }
    }

    /// Creates the identical container with its agent in restore mode, publishing the agent's
    /// port on a free host port: a random one from `agentPorts`, another if the orchestrator
    /// says it is taken.
    func createRestoring(
        _ incoming: IncomingMigration, keeping: (carrier: any ConnectionCarrying, address: String, tunnel: MigrationTunnel)? = nil
    ) async throws -> ContainerInfo {
        var lastError: (any Error)?
        let damage = await faults.corruptsImages()
        // With mutual TLS the agent's port is not published: one attempt, no host port.
        let hostPorts: [Int?] = tls == nil ? agentPorts.shuffled().prefix(8).map { $0 } : [nil]
        for hostPort in hostPorts {
            var specification = MigratableImage.destinationSpecification(incoming.specification, agentHostPort: hostPort)
            if damage {
                // Only the agent sees what it received: it damages the images before CRIU reads them.
                specification.environment.append("\(MigratableImage.corruptImagesFaultVariable)=1")
            }
            do {
                if let keeping {
                    return try await keeping.carrier.createAlsoKeeping(specification, address: keeping.address, tunnel: keeping.tunnel, migration: incoming.id)
                }
                return try await orchestrator.create(specification, start: true, migration: incoming.id)
            } catch let error as UMSError where hostPort != nil && error.code == .exists && error.message.contains("port \(hostPort ?? 0)") {
                lastError = error
            }
        }
        throw lastError ?? UMSError(.unavailable, "failed to prepare \(incoming.specification.name): no free port for its agent in \(agentPorts)")
    }

    public func importFiles<Chunks: AsyncSequence & Sendable>(_ incoming: IncomingMigration, part: FilePart, _ chunks: Chunks) async throws -> StreamSummary
        where Chunks.Element == ByteBuffer
    {
        throw UMSError(.invalidArgument, "failed to receive \(part.rawValue) for \(incoming.id): the \(approach.rawValue)-level approach sends them agent to agent")
    }

    public func restore(_ incoming: IncomingMigration, postCopySource: PageServerAddress?) async throws -> ContainerInfo {
        let name = incoming.specification.name
        let agent = try await destinationAgent(incoming)
        // Carried: the nested service's established connections are restored (it stays stopped
        // until the commit delivers its address and continues it).
        var command = "RESTORE 120" + (incoming.carry != nil ? " tcp=1" : "")
        if let postCopySource {
            // The agent's lazy-pages daemon fetches the pages from a relay on this system's
            // address (reachable from its container), which carries them over mutual TLS.
            guard let tls else {
                throw UMSError(.unsupported, "failed to restore \(name) with post-copy: the \(approach.rawValue)-level approach fetches pages over mutual TLS only")
            }
            let relay = try await TLSRelay.plainToTLS(
                listenHost: advertiseHost, tls: try tls.client(), target: (postCopySource.host, postCopySource.port), logger: logger
            )
            await pageRelays.add(relay, for: incoming.id)
            command += " lazy=\(advertiseHost):\(relay.port)"
        }
        // The agent's container runs throughout (only the service inside it is restored): what
        // the orchestrator says of it is asked while the agent restores, not after — every held
        // client waits for this answer. Only the process count changes with the restore, and
        // it is read again after.
        async let inspected = orchestrator.inspect(name)
        let reply = try await agent.send(command, timeout: .seconds(150), operation: "restore \(name)")
        logger.info("agent restored the service", metadata: ["container": "\(name)", "pid": "\(reply.fields["pid"] ?? "?")", "restore_ms": "\(reply.fields["restore_ms"] ?? "?")"])
        var info = try await inspected
        if let count = try? await orchestrator.specification(of: name).processCount {
            info.specification.processCount = count
        }
        return info
    }

    /// Post-copy: once the agent's lazy-pages daemon has every page (the commit waits for it, so
    /// the source is never deleted while it still holds pages the service here lacks). A
    /// repeated call (a repeated commit) gets the same answer from the agent.
    public func awaitPages(_ incoming: IncomingMigration) async throws -> Int64 {
        var pages: Int64 = 0
        if incoming.mode == .postCopy {
            let agent = try await destinationAgent(incoming)
            let reply = try await agent.send("PAGES 600", timeout: .seconds(630), operation: "fetch the pages of \(incoming.specification.name)")
            pages = reply.int("bytes").flatMap { (0...(1 << 50)).contains($0) ? $0 : nil } ?? 0
        }
        await agents.remove(incoming.id)
        await relays.remove(incoming.id)?.close()
        await pageRelays.remove(incoming.id)?.close()
        return pages
    }

    /// The destination container's agent, as `prepare` found it (or asked of the orchestrator
    /// again after a restart).
    func destinationAgent(_ incoming: IncomingMigration) async throws -> AgentClient {
        if let known = await agents.get(incoming.id) { return known }
        return try AgentClient(for: try await orchestrator.inspect(incoming.specification.name))
    }

    public func abort(_ incoming: IncomingMigration) async {
        await agents.remove(incoming.id)
        await relays.remove(incoming.id)?.close()
        await pageRelays.remove(incoming.id)?.close()
        try? await orchestrator.delete(incoming.specification.name, migration: incoming.id)
    }

    // MARK: Source

    /// CRIU freezes the tree itself when the dump starts; this only checks that the agent is
    /// there and runs the service, so that a container without one fails before anything stops.
    public func freeze(_ name: String) async throws {
        let agent = try AgentClient(for: try await orchestrator.inspect(name))
        await agents.set(agent, for: name)
        let status = try await agent.send("STATUS", timeout: .seconds(5), operation: "reach the agent of \(name)")
        guard (status.int("pid") ?? 0) > 0 else {
            throw UMSError(.invalidState, "failed to checkpoint \(name): its agent runs no service (\(status.message))")
        }
        // An agent of an image made before issue 17 knows no `compress=`: it gets the plain stream.
        let version = status.int("version") ?? 1
        await agents.set(agent, for: name, version: version)
        if await agents.tunnel(name) != nil, version < 4 {
            throw UMSError(.unsupported, "failed to carry the connections of \(name): its agent predates carried connections (version \(version)); make its host image again (scripts/build-host-image)")
        }
    }

    /// Container-level: the next checkpoint carries the established connections through
    /// `tunnel` (nil: closes them). The agent dumps them with the nested service (`tcp=1`);
    /// around the dump this system silences the outer container's link but for the agent's own
    /// traffic, and routes the address into the tunnel once the images crossed.
    public func carryConnections(_ name: String, through tunnel: MigrationTunnel?) async throws {
        guard tunnel == nil || approach == .container else {
            throw UMSError(.unsupported, "failed to carry the connections of \(name): the \(approach.rawValue)-level approach does not carry them")
        }
        await agents.setTunnel(tunnel, for: name)
    }

    public func checkpoint(
        _ name: String, into directory: String, postCopy: PageServerAddress?, intake: CheckpointIntake?, compression: ImageCompression?
    ) async throws -> CheckpointResult {
        guard let intake else {
            throw UMSError(.invalidArgument, "failed to checkpoint \(name): the destination gave no address for its agent")
        }
        // What the destination said goes into the agent's control line: checked first.
        let destination = try intake.endpoint()
        var (host, port) = (destination.host, String(destination.port))
        // Over mutual TLS: the agent sends to a relay on this system's address (reachable from
        // its container), which carries the stream to the destination's relay.
        var relay: TLSRelay?
        if let tls {
            let opened = try await TLSRelay.plainToTLS(listenHost: advertiseHost, tls: try tls.client(), target: destination, logger: logger)
            relay = opened
            (host, port) = (advertiseHost, String(opened.port))
        }
        defer { relay?.close() }
        let agent = try await self.agent(of: name)
        // Post-copy: the agent's CRIU serves the pages on the port asked for, inside its
        // container; the destination reaches it through a relay on this system's address.
        var pages: TLSRelay?
        if let postCopy {
            guard await agents.version(name) >= 3 else {
                throw UMSError(.unsupported, "failed to checkpoint \(name) with post-copy: its agent predates post-copy; make its image again (ums image migratable, scripts/build-host-image)")
            }
            guard let tls else {
                throw UMSError(.unsupported, "failed to checkpoint \(name) with post-copy: the \(approach.rawValue)-level approach serves pages over mutual TLS only")
            }
            pages = try await TLSRelay.tlsToPlain(host: advertiseHost, tls: try tls.server(peersOnly: true), target: (agent.host, postCopy.port), logger: logger)
        }
        // Generous: the agents' stream is bounded by the link, and the dump by the memory size.
        // With a policy, the agents speak the stream's version 2 (the destination said it reads it).
        let compression = await agents.version(name) >= 2 ? compression : nil
        let tunnel = await agents.tunnel(name)
        let carrier = orchestrator as? any ConnectionCarrying
        let dump = "DUMP \(host) \(port) \(intake.secret)" + (compression.map { " compress=\($0.rawValue)" } ?? "")
            + (postCopy.map { " lazy=\($0.port)" } ?? "") + (tunnel != nil ? " tcp=1" : "")
        let reply: AgentClient.Reply
        do {
            if tunnel != nil {
                guard let carrier, let streamPort = Int(port) else {
                    throw UMSError(.unsupported, "failed to carry the connections of \(name): the \(orchestrator.kind) adapter does not carry them")
                }
                // Frozen first (agent protocol 5), as the orchestrator-level approach does: an
                // answer the service wrote before the freeze leaves now. Silenced before the
                // freeze, it waited in the dumped send queue for the restored socket's first
                // retransmission — 1 s after the commit. A rollback's RESUME thaws it.
                if await agents.version(name) >= 5 {
                    _ = try await agent.send("PAUSE", timeout: .seconds(30), operation: "freeze \(name)")
                }
                // Carried: from here nothing leaves the frozen copy's sockets (they stay in this
                // kernel for a rollback) but the agent's answers and its stream to `host`.
                try await carrier.silence(name, allowing: [.fromPort(agent.port), .to(host: host, port: streamPort)])
            }
            reply = try await agent.send(dump, timeout: .seconds(900), operation: "checkpoint \(name)")
            if let tunnel, let carrier {
                // The images crossed: what clients send goes to the destination now, which
                // holds it until the commit.
                try await carrier.routeAway(name, through: tunnel)
            }
        } catch {
            pages?.close()
            throw error
        }
        logger.info("agent dumped the service", metadata: [
            "container": "\(name)", "bytes": "\(reply.fields["bytes"] ?? "?")", "dump_ms": "\(reply.fields["dump_ms"] ?? "?")",
            "carried_files": "\(reply.fields["carried"] ?? "?")",
        ])
        // The agent's numbers: what it sent counts as moved, and the images' summary (bounded:
        // a count from another process is checked before it reaches the record).
        func count(_ key: String) -> Int64? { reply.int(key).flatMap { (0...(1 << 50)).contains($0) ? $0 : nil } }
        let (raw, wire) = (count("bytes") ?? 0, count("wire"))
        let images = wire.map { wire in
            ImageTransferSummary(
                compression: compression ?? .off, rawBytes: raw, zeroBytes: count("zeros") ?? 0, compressedBytes: count("packed") ?? 0, wireBytes: wire
            )
        }
        guard let pages, let postCopy else {
            return CheckpointResult(bytesSent: wire ?? raw, images: images)
        }
        return CheckpointResult(
            pageServer: PageServerAddress(host: advertiseHost, port: pages.port), localPageServer: PageServerAddress(host: agent.host, port: postCopy.port),
            relay: pages, bytesSent: wire ?? raw, images: images
        )
    }

    public func exportFiles(
        _ name: String, part: FilePart, checkpointDirectory: String, dumpFinished: @escaping @Sendable () async -> Bool,
        compression: ImageCompression?, consume: @Sendable (ByteBuffer) async throws -> Void
    ) async throws -> ExportedFiles {
        ExportedFiles(bytes: 0)
    }

    public func resume(_ name: String) async throws {
        let agent = try await self.agent(of: name)
        try await agent.send("RESUME", timeout: .seconds(10), operation: "resume \(name)")
    }

    /// The source container's agent, as `freeze` found it.
    func agent(of name: String) async throws -> AgentClient {
        if let agent = await agents.get(name) { return agent }
        return try AgentClient(for: try await orchestrator.inspect(name))
    }

    /// A random secret (agent tokens, the agents' one-time stream secret).
    public static func secret() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(generator.next(), radix: 16) }.joined()
    }
}

/// Agent clients by key (a container name on the source, a migration id on the destination).
actor AgentDirectory {
    var agents: [String: AgentClient] = [:]
    /// Source agents' protocol versions, as their STATUS said: 2 writes the image stream's
    /// version 2 (compression), 3 serves pages for post-copy.
    var versions: [String: Int64] = [:]

    func set(_ agent: AgentClient, for key: String, version: Int64) {
        agents[key] = agent
        versions[key] = version
    }

    func version(_ key: String) -> Int64 {
        versions[key] ?? 1
    }

    func set(_ agent: AgentClient, for key: String) {
        agents[key] = agent
    }

    /// Source containers whose next checkpoint carries their connections, with the tunnel.
    var tunnels: [String: MigrationTunnel] = [:]

    func setTunnel(_ tunnel: MigrationTunnel?, for key: String) {
        tunnels[key] = tunnel
    }

    func tunnel(_ key: String) -> MigrationTunnel? {
        tunnels[key]
    }

    func get(_ key: String) -> AgentClient? {
        agents[key]
    }

    func remove(_ key: String) {
        agents[key] = nil
    }
}
