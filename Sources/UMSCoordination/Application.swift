import AsyncHTTPClient
import Foundation
import Hummingbird
import UMSTrust
import HummingbirdTLS
import Logging
import Prometheus
import ServiceLifecycle
import UMSCheckpoint
import UMSMigration
import UMSModel
import UMSOrchestrator
import UMSOS

/// Shuts the shared HTTP client down with the rest of the service group.
struct HTTPClientService: Service {
    let client: HTTPClient

    func run() async throws {
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}

/// Wires a Coordinator from its configuration: probes CRIU and the runtime (refusing to start
/// without them), builds the orchestrator adapter and the approaches, and returns the HTTP
/// application with everything long-lived as a service of one group.
public func buildApplication(
    configuration: CoordinatorConfiguration, logger: Logger, faults: any FaultInjector = NoFaults(), metrics: PrometheusCollectorRegistry? = nil
) async throws -> some ApplicationProtocol {
    try configuration.validate()
    guard let tokenFile = configuration.tokenFile else {
        throw UMSError(.invalidArgument, "failed to start: no credentials; give --token-file FILE (a random token, mode 600) so that only its holders can use this Coordinator")
    }
    let token = try TokenFile.read(tokenFile)
    let readerTokens = try (configuration.readerTokenFiles ?? []).map(TokenFile.read)
    // Mutual TLS unless explicitly insecure (loopback only, checked above).
    let tls: TLSSettings? = configuration.insecure == true ? nil : try TLSSettings(directory: TrustDirectory(configuration.resolvedTLSDir), extraPeers: configuration.trustedPeers ?? [:])
    let serverTLS = try tls?.server()
    let clientTLS = try tls?.client()
    if tls == nil { logger.warning("plain HTTP (--insecure): nothing this Coordinator sends or receives is encrypted") }
    if let tls, tls.peers.isEmpty { logger.warning("no pinned peers: no system can migrate here or be migrated to (ums trust add-peer)") }
    let runner = SubprocessRunner(logger: logger)
    let criu = try await CRIUProbe.probe(explicitPath: configuration.criuPath, runner: runner, logger: logger)
    let stateDirectory = configuration.stateDir
    // Tokens, records with agent tokens and memory images live here: its owner only.
    try FileSystem.makePrivateDirectory(stateDirectory)
    let advertiseHost = try configuration.advertiseHost()
    let url = try configuration.resolvedAdvertiseURL()

    let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPClient.Configuration(tlsConfiguration: clientTLS))
    let orchestrator: any Orchestrator
    do {
        orchestrator = try await makeOrchestrator(configuration, http: http, advertiseHost: advertiseHost, criu: criu, runner: runner, logger: logger)
    } catch {
        // The client must be shut down before it goes away, even when start-up fails.
        try? await http.shutdown()
        throw error
    }
    let approaches: [any MigrationApproach] = [
        OrchestratorLevelApproach(orchestrator: orchestrator, criu: criu, tls: tls, advertiseHost: advertiseHost, faults: faults, logger: logger),
        AgentApproach.serviceLevel(orchestrator: orchestrator, advertiseHost: advertiseHost, tls: tls, faults: faults, logger: logger),
        AgentApproach.containerLevel(orchestrator: orchestrator, advertiseHost: advertiseHost, tls: tls, faults: faults, logger: logger),
    ]

    var peerTokens: [String: String] = [:]
    for peer in configuration.peers ?? [] {
        peerTokens[peer.url.hasSuffix("/") ? String(peer.url.dropLast()) : peer.url] = try TokenFile.read(peer.tokenFile)
    }
    // The Frontmen's own client: when a migration releases what was held, every held request
    // goes out at once (a pool of a few connections per host would queue them behind each other).
    var frontmanClientConfiguration = HTTPClient.Configuration()
    frontmanClientConfiguration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 4096)
    let frontmanHTTP = HTTPClient(eventLoopGroupProvider: .singleton, configuration: frontmanClientConfiguration)
    let coordinator = try Coordinator(
        name: configuration.name, url: url, orchestrator: orchestrator, approaches: approaches,
        stateDirectory: stateDirectory, advertiseHost: advertiseHost, http: http, peerTokens: peerTokens,
        logger: logger, faults: faults, incomingTimeout: .milliseconds(Int64((configuration.incomingTimeout ?? 600) * 1000)),
        admission: configuration.resolvedAdmission,
        reservedPorts: [try configuration.listenAddress().port], hostImage: configuration.hostImage,
        frontman: configuration.frontmanSettings, frontmanHTTP: frontmanHTTP, endpointsFile: configuration.endpointsFile,
        endpointHook: configuration.endpointHook, dns: try configuration.dnsPublisher(),
        shutdownGrace: .milliseconds(Int64((configuration.shutdownGrace ?? 30) * 1000)),
        connectionLinger: .milliseconds(Int64((configuration.connectionLinger ?? 300) * 1000))
    )
    await coordinator.recover()
    let (host, port) = try configuration.listenAddress()
    let router = buildRouter(coordinator: coordinator, token: token, readerTokens: readerTokens, tls: tls, metrics: metrics)
    logger.info("coordinator ready", metadata: ["system": "\(configuration.name)", "url": "\(url)", "criu": "\(criu.version)"])
    return Application(
        router: router,
        server: try serverTLS.map { try .tls(.http1(), tlsConfiguration: $0) } ?? .http1(),
        configuration: .init(address: .hostname(host, port: port), serverName: "umsd"),
        // Shut down in reverse order (after the HTTP server): first the Coordinator's background,
        // which lets running migrations finish while the clients they use are still up, then
        // the clients.
        services: [HTTPClientService(client: http), HTTPClientService(client: frontmanHTTP), coordinator.service],
        logger: logger
    )
}

/// The adapter for the configured orchestrator, checked to answer.
func makeOrchestrator(
    _ configuration: CoordinatorConfiguration, http: HTTPClient, advertiseHost: String, criu: CRIUInfo,
    runner: any CommandRunner, logger: Logger
) async throws -> any Orchestrator {
    switch try configuration.orchestratorKind() {
    case .podman, .docker:
        let engine = try EngineOrchestrator(
            dialect: try configuration.orchestratorKind() == .podman ? .podman : .docker, socketPath: configuration.resolvedEngineSocket,
            http: http, systemName: configuration.name, stateDirectory: configuration.stateDir, advertiseHost: advertiseHost,
            criu: criu, runner: runner, logger: logger,
            dockerContainerd: configuration.dockerContainerd.map { Ctr(address: $0, namespace: EngineOrchestrator.dockerNamespace) }
        )
        try await engine.prepare()
        return engine
    case .swarm:
        let swarm = try SwarmOrchestrator(
            managerSocket: configuration.resolvedEngineSocket, nodeSockets: configuration.swarmNodes ?? [], http: http,
            systemName: configuration.name, stateDirectory: configuration.stateDir, advertiseHost: advertiseHost,
            criu: criu, runner: runner, logger: logger
        )
        try await swarm.prepare()
        return swarm
    case .containerd:
        let containerd = try ContainerdOrchestrator(
            systemName: configuration.name, stateDirectory: configuration.stateDir, advertiseHost: advertiseHost,
            criu: criu, runner: runner, logger: logger,
            ctr: Ctr(address: configuration.resolvedEngineSocket, namespace: "ums-\(configuration.name)"),
            block: try configuration.addressBlock()
        )
        try await containerd.prepare()
        return containerd
    case .runc:
        let runc = try RuncOrchestrator(
            systemName: configuration.name, stateDirectory: configuration.stateDir, advertiseHost: advertiseHost,
            criu: criu, runner: runner, logger: logger, block: try configuration.addressBlock()
        )
        try await runc.prepare()
        return runc
    }
}
