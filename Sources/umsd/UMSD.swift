import ArgumentParser
import Hummingbird
import Logging
import Metrics
import Prometheus
import UMSCoordination
import UMSModel

/// `umsd`: the Coordinator of one system. It only parses flags and wires the application.
@main
struct UMSD: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "umsd",
        abstract: "The UMS Coordinator of one system: runs containers on its orchestrator and migrates them live to other systems.",
        discussion: """
            Flags override the same keys of --config (YAML: name, listen, stateDir, orchestrator, tokenFile, \
            advertiseURL, peers[{url, tokenFile}], criuPath, logLevel, hostImage, engineSocket, swarmNodes, dockerContainerd, containerNetwork, endpointsFile, endpointHook, dnsServer, dnsZone, dnsKeyFile, dnsTTL, \
            frontman, frontmanHoldCount, frontmanHoldBytes, frontmanHoldSeconds, frontmanReleaseAtOnce, frontmanQuiesceMs, frontmanLinger, incomingTimeout, shutdownGrace, migrationNetwork, connectionLinger, admission, tlsDir, insecure, \
            readerTokenFiles). Speaks mutual TLS 1.3: make the system's identity with `ums trust init --dir TLSDIR` and pin \
            each peer with `ums trust add-peer`. Needs root, runc and CRIU >= 4.2 (scripts/setup installs them).
            """
    )

    @Option(help: "A YAML configuration file.")
    var config: String?

    @Option(help: "This system's name (a-z, 0-9, '-', '_').")
    var name: String?

    @Option(help: "HOST:PORT to listen on.")
    var listen: String?

    @Option(name: .customLong("state-dir"), help: "Where containers, images and migration records are kept.")
    var stateDir: String?

    @Option(help: "The orchestrator this system runs: runc (embedded), podman, docker or containerd.")
    var orchestrator: String?

    @Option(name: .customLong("token-file"), help: "File holding the bearer token clients and peers must present.")
    var tokenFile: String?

    @Option(name: .customLong("advertise-url"), help: "The URL other systems reach this Coordinator at (default: from --listen).")
    var advertiseURL: String?

    @Option(name: .customLong("peer"), help: "URL=TOKENFILE: a token to present to a peer Coordinator, besides this system's certificate (repeatable; optional with mutual TLS).")
    var peers: [String] = []

    @Option(name: .customLong("tls-dir"), help: "This system's identity and pinned peers (default: STATE_DIR/tls; made by `ums trust init`).")
    var tlsDir: String?

    @Flag(help: "Plain HTTP instead of mutual TLS; refused on any address but loopback.")
    var insecure = false

    @Option(name: .customLong("reader-token-file"), help: "A token that may only read: ps, records, endpoints, metrics (repeatable).")
    var readerTokenFiles: [String] = []

    @Option(help: "The CRIU binary to use (default: /usr/local/sbin/criu, then criu on PATH).")
    var criu: String?

    @Option(name: .customLong("engine-socket"), help: "The podman/docker/containerd socket, or the swarm manager's (default: the engine's usual one).")
    var engineSocket: String?

    @Option(name: .customLong("swarm-node"), help: "--orchestrator swarm: the engine socket of another node of the swarm (repeat for each).")
    var swarmNodes: [String] = []

    @Option(
        name: .customLong("docker-containerd"),
        help: "--orchestrator docker: the socket of the containerd Docker runs on; checkpoints then stream while CRIU writes them (containerd's task checkpoint) instead of going through Docker's checkpoint API."
    )
    var dockerContainerd: String?

    @Option(name: .customLong("host-image"), help: "The outer image for nested services (container-level; built by scripts/build-host-image).")
    var hostImage: String?

    @Option(name: .customLong("endpoints-file"), help: "The endpoint record in hosts format (default: STATE_DIR/endpoints.hosts).")
    var endpointsFile: String?

    @Option(name: .customLong("endpoint-hook"), help: "A program to run after every change of the endpoint record (UMS_SERVICE, UMS_ADDRESS, UMS_ENDPOINTS, UMS_EVENT in its environment).")
    var endpointHook: String?

    @Option(name: .customLong("container-network"), help: "The addresses this system gives its containers (runc, containerd): an aligned block inside 198.19.0.0/16, e.g. 198.19.128.0/17 (default: all of it).")
    var containerNetwork: String?

    @Option(name: .customLong("dns-server"), help: "An authoritative DNS server (IP[:PORT]) the endpoint record updates: each service as SERVICE.ZONE (RFC 2136, TSIG-signed).")
    var dnsServer: String?

    @Option(name: .customLong("dns-zone"), help: "The zone the services are published in (with --dns-server).")
    var dnsZone: String?

    @Option(name: .customLong("dns-key"), help: "A file holding the TSIG key, hmac-sha256:NAME:BASE64 (mode 600; with --dns-server).")
    var dnsKey: String?

    @Option(name: .customLong("dns-ttl"), help: "The TTL of the published records, seconds (default 5).")
    var dnsTTL: Int?

    @Flag(name: .customLong("no-frontman"), help: "Do not put Frontmen in front of services (clients then see the migration's downtime as refusals).")
    var noFrontman = false

    @Option(name: .customLong("frontman-hold-count"), help: "Requests/connections a Frontman holds at once while its service is frozen (default 1024); beyond: 503 / closed.")
    var frontmanHoldCount: Int?

    @Option(name: .customLong("frontman-hold-bytes"), help: "Request body bytes a Frontman holds at once (default 64 MiB).")
    var frontmanHoldBytes: Int?

    @Option(name: .customLong("frontman-hold-seconds"), help: "The longest a Frontman holds anything (default 30); then 503 Retry-After / closed.")
    var frontmanHoldSeconds: Double?

    @Option(name: .customLong("frontman-release-at-once"), help: "Held requests/connections a Frontman sends on at once when the hold ends, each next one when one of those reached the service (default 32, 1–4096): hundreds at one instant overrun a service's accept queue.")
    var frontmanReleaseAtOnce: Int?

    @Option(name: .customLong("frontman-quiesce-ms"), help: "When a migration freezes a service, the longest it first waits for the answers to what the Frontman already sent the service (default 50, 0–5000; 0: no wait): a request in flight inside the frozen copy is sent again only when idempotent, a TCP connection carrying one is closed.")
    var frontmanQuiesceMs: Int?

    @Option(name: .customLong("frontman-linger"), help: "Seconds a Frontman keeps forwarding after its service left and the endpoint record was updated (default 10).")
    var frontmanLinger: Double?

    @Flag(name: .customLong("migration-network"), help: ArgumentHelp(
        "Share a migration network with peers that do too: established TCP connections are carried across migrations.",
        discussion: "A VXLAN tunnel to the peer, the service keeping its address (give each system its own --container-network), CRIU's tcp-established. Orchestrator- or container-level approach on runc, stop-and-copy. Same as admission: migrationNetwork: true."
    ))
    var migrationNetwork = false

    @Option(name: .customLong("connection-linger"), help: "Seconds the source keeps a moved service's carried connections routed to it (default 300); those still open then are closed and counted.")
    var connectionLinger: Double?

    @Option(name: .customLong("incoming-timeout"), help: "Seconds an incoming migration may wait for the source's restore before this system removes what it prepared (default 600).")
    var incomingTimeout: Double?

    @Option(name: .customLong("shutdown-grace"), help: "Seconds SIGTERM lets migrations past their restore finish before cancelling them (default 30); earlier ones roll back.")
    var shutdownGrace: Double?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.")
    var logLevel: String?

    @Option(name: .customLong("fault"), help: ArgumentHelp(
        "Plug a fault into every migration, for testing: POINT=ACTION, e.g. incoming.restore=corrupt-images, checkpointing=fail, incoming.receive=corrupt-stream, restoring=delay:5 (repeatable).",
        visibility: .hidden
    ))
    var faults: [String] = []

    func resolvedConfiguration() throws -> CoordinatorConfiguration {
        var configuration: CoordinatorConfiguration
        if let config {
            configuration = try CoordinatorConfiguration.load(yamlFile: config)
        } else {
            guard let name, let stateDir else {
                throw ValidationError("give --name and --state-dir, or --config FILE")
            }
            configuration = CoordinatorConfiguration(name: name, stateDir: stateDir)
        }
        if let name { configuration.name = name }
        if let listen { configuration.listen = listen }
        if let stateDir { configuration.stateDir = stateDir }
        guard !configuration.name.isEmpty, !configuration.stateDir.isEmpty else {
            throw ValidationError("give the system's name and state directory: --name and --state-dir, or name: and stateDir: in --config")
        }
        if let orchestrator { configuration.orchestrator = orchestrator }
        if let tokenFile { configuration.tokenFile = tokenFile }
        if let tlsDir { configuration.tlsDir = tlsDir }
        if insecure { configuration.insecure = true }
        if !readerTokenFiles.isEmpty { configuration.readerTokenFiles = readerTokenFiles }
        if let advertiseURL { configuration.advertiseURL = advertiseURL }
        if let criu { configuration.criuPath = criu }
        if let logLevel { configuration.logLevel = logLevel }
        if let hostImage { configuration.hostImage = hostImage }
        if let engineSocket { configuration.engineSocket = engineSocket }
        if !swarmNodes.isEmpty { configuration.swarmNodes = swarmNodes }
        if let dockerContainerd { configuration.dockerContainerd = dockerContainerd }
        if let endpointsFile { configuration.endpointsFile = endpointsFile }
        if let endpointHook { configuration.endpointHook = endpointHook }
        if let containerNetwork { configuration.containerNetwork = containerNetwork }
        if let dnsServer { configuration.dnsServer = dnsServer }
        if let dnsZone { configuration.dnsZone = dnsZone }
        if let dnsKey { configuration.dnsKeyFile = dnsKey }
        if let dnsTTL { configuration.dnsTTL = dnsTTL }
        if noFrontman { configuration.frontman = false }
        if let frontmanHoldCount { configuration.frontmanHoldCount = frontmanHoldCount }
        if let frontmanReleaseAtOnce { configuration.frontmanReleaseAtOnce = frontmanReleaseAtOnce }
        if let frontmanQuiesceMs { configuration.frontmanQuiesceMs = frontmanQuiesceMs }
        if let frontmanHoldBytes { configuration.frontmanHoldBytes = frontmanHoldBytes }
        if let frontmanHoldSeconds { configuration.frontmanHoldSeconds = frontmanHoldSeconds }
        if let frontmanLinger { configuration.frontmanLinger = frontmanLinger }
        if let incomingTimeout { configuration.incomingTimeout = incomingTimeout }
        if let shutdownGrace { configuration.shutdownGrace = shutdownGrace }
        if migrationNetwork { configuration.migrationNetwork = true }
        if let connectionLinger { configuration.connectionLinger = connectionLinger }
        for peer in peers {
            guard let equals = peer.firstIndex(of: "=") else { throw ValidationError("--peer expects URL=TOKENFILE, got '\(peer)'") }
            configuration.peers = (configuration.peers ?? []) + [.init(url: String(peer[..<equals]), tokenFile: String(peer[peer.index(after: equals)...]))]
        }
        try configuration.validate()
        return configuration
    }

    func run() async throws {
        let configuration = try resolvedConfiguration()
        var logger = Logger(label: "umsd")
        logger.logLevel = configuration.logLevel.flatMap(Logger.Level.init(rawValue:)) ?? .info
        logger[metadataKey: "system"] = "\(configuration.name)"
        // Metrics (the Frontmen's among them) are served at /metrics in Prometheus format.
        let metrics = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics))
        let faults = try ScheduledFaults(parsing: self.faults)
        if !faults.faults.isEmpty {
            logger.warning("faults plugged in: migrations will fail on purpose", metadata: ["faults": "\(self.faults.joined(separator: ", "))"])
        }
        let app = try await buildApplication(configuration: configuration, logger: logger, faults: faults, metrics: metrics)
        try await app.runService()
    }
}
