import Foundation
import UMSDNS
import UMSDecision
import UMSFrontman
import UMSModel
import UMSOS
import Yams

/// How one Coordinator is set up: from `umsd` flags or a YAML file with the same keys.
///
/// ```yaml
/// name: edge
/// listen: 198.18.0.1:7000
/// stateDir: /var/lib/ums/edge
/// orchestrator: runc
/// tokenFile: /etc/ums/edge.token
/// peers:
///   - url: http://198.18.0.2:7000
///     tokenFile: /etc/ums/cloud.token
/// ```
public struct CoordinatorConfiguration: Codable, Sendable, Equatable {
    public struct Peer: Codable, Sendable, Equatable {
        public var url: String
        public var tokenFile: String

        public init(url: String, tokenFile: String) {
            self.url = url
            self.tokenFile = tokenFile
        }
    }

    public var name: String
    /// `HOST:PORT` to listen on.
    public var listen: String
    public var stateDir: String
    public var orchestrator: String
    /// What peers may ask for here (YAML `admission:`; absent: `AdmissionPolicy.standard`).
    public var admission: AdmissionPolicy?
    /// The system's identity and pinned peers (`ums trust init`; default `STATE/tls`).
    public var tlsDir: String?
    /// Plain HTTP instead of mutual TLS: only on a loopback address.
    public var insecure: Bool?
    /// Tokens that may only read (ps, records, endpoints, metrics).
    public var readerTokenFiles: [String]?
    /// Peers pinned here rather than with `ums trust add-peer`: name → certificate (PEM) file.
    public var trustedPeers: [String: String]?

    /// Where the identity is.
    public var resolvedTLSDir: String { tlsDir ?? "\(stateDir)/tls" }
    /// The bearer token clients and peers must present. Without it the API is open (a warning
    /// is logged): fine on loopback for a demo, never across systems.
    public var tokenFile: String?
    /// The URL other systems use to reach this Coordinator; derived from `listen` when absent.
    public var advertiseURL: String?
    /// Tokens of the Coordinators this one may migrate to.
    public var peers: [Peer]?
    /// An explicit CRIU binary; otherwise the probe looks in the usual places.
    public var criuPath: String?
    public var logLevel: String?
    /// The outer image for nested services (container-level; `scripts/build-host-image`).
    public var hostImage: String?
    /// The engine's API socket, for `podman`, `docker` and `containerd` (default: the engine's usual one).
    public var engineSocket: String?
    /// `orchestrator: swarm`: the engine sockets of the swarm's other nodes (`engineSocket` is its
    /// manager's), where UMS finds the containers of the tasks Swarm placed there.
    public var swarmNodes: [String]?
    /// `orchestrator: docker`: the socket of the containerd Docker runs its containers on. Given,
    /// UMS checkpoints a Docker container with containerd's task checkpoint into its own
    /// directory, streamed while CRIU writes it, instead of Docker's checkpoint API (which passes
    /// the whole checkpoint through containerd's content store before UMS can send a byte).
    public var dockerContainerd: String?
    /// The endpoint record in hosts format (default: `<stateDir>/endpoints.hosts`).
    public var endpointsFile: String?
    /// A program run after every change of the endpoint record (UMS_SERVICE, UMS_ADDRESS,
    /// UMS_ENDPOINTS, UMS_SYSTEM, UMS_EVENT, UMS_HOSTS_FILE in its environment).
    public var endpointHook: String?
    /// The authoritative DNS server the endpoint record also updates (`IP[:PORT]`, port 53 by
    /// default; RFC 2136 signed with TSIG), its zone, and a file holding the key
    /// (`hmac-sha256:NAME:BASE64`, not readable by others). All three or none.
    public var dnsServer: String?
    public var dnsZone: String?
    public var dnsKeyFile: String?
    /// The TTL of the records it writes (seconds, default 5).
    public var dnsTTL: Int?
    /// The addresses this system gives its containers (runc, containerd): an aligned block inside
    /// 198.19.0.0/16, default all of it. Systems that carry each other's connections take
    /// disjoint blocks.
    public var containerNetwork: String?
    /// Whether services get Frontmen (default true).
    public var frontman: Bool?
    /// How much a Frontman holds while its service is frozen: requests/connections, body bytes, seconds.
    public var frontmanHoldCount: Int?
    public var frontmanHoldBytes: Int?
    public var frontmanHoldSeconds: Double?
    /// How many held requests/connections a Frontman sends on at once when the hold ends (default 32).
    public var frontmanReleaseAtOnce: Int?
    /// The longest the freeze waits for the answers to what the service was already sent
    /// (milliseconds, default 50; 0: it does not wait).
    public var frontmanQuiesceMs: Int?
    /// How long a Frontman stays after its service left and the endpoint record was updated (seconds).
    public var frontmanLinger: Double?
    /// Seconds an incoming migration may wait for the source's restore before this system removes
    /// what it prepared (default 600).
    public var incomingTimeout: Double?
    /// Seconds a graceful shutdown (SIGTERM) lets migrations past their restore finish before it
    /// cancels them (default 30; the journal lets the next start go on with them).
    public var shutdownGrace: Double?
    /// Whether this system shares a migration network with its peers (issue 16); sets the
    /// admission policy's `migrationNetwork`.
    public var migrationNetwork: Bool?
    /// Seconds the source keeps a moved service's carried connections routed to it (default 300).
    public var connectionLinger: Double?

    /// The admission policy, with `migrationNetwork` applied.
    public var resolvedAdmission: AdmissionPolicy {
        var policy = admission ?? .standard
        if let migrationNetwork { policy.migrationNetwork = migrationNetwork }
        return policy
    }

    /// The Frontmen's settings, or nil when they are switched off.
    public var frontmanSettings: FrontmanSettings? {
        guard frontman ?? true else { return nil }
        let defaults = HoldLimits()
        return FrontmanSettings(
            limits: HoldLimits(
                count: frontmanHoldCount ?? defaults.count, bytes: frontmanHoldBytes ?? defaults.bytes, seconds: frontmanHoldSeconds ?? defaults.seconds,
                releaseAtOnce: frontmanReleaseAtOnce ?? defaults.releaseAtOnce,
                quiesceSeconds: frontmanQuiesceMs.map { Double($0) / 1000 } ?? defaults.quiesceSeconds
            ),
            linger: .milliseconds(Int64((frontmanLinger ?? 10) * 1000))
        )
    }

    /// The orchestrators this build has adapters for.
    public static let orchestrators = OrchestratorKind.allCases.map(\.rawValue)

    /// The configured orchestrator, checked.
    public func orchestratorKind() throws(UMSError) -> OrchestratorKind {
        guard let kind = OrchestratorKind(rawValue: orchestrator) else {
            throw UMSError(.unsupported, "unsupported orchestrator '\(orchestrator)': use one of \(Self.orchestrators.joined(separator: ", "))")
        }
        return kind
    }

    /// The engine socket to use: the configured one, or the engine's usual path.
    public var resolvedEngineSocket: String {
        engineSocket ?? ["podman": "/run/podman/podman.sock", "containerd": "/run/containerd/containerd.sock"][orchestrator] ?? "/var/run/docker.sock"
    }

    public init(name: String, listen: String = "127.0.0.1:7000", stateDir: String, orchestrator: String = "runc",
                tokenFile: String? = nil, advertiseURL: String? = nil, peers: [Peer]? = nil, criuPath: String? = nil) {
        self.name = name
        self.listen = listen
        self.stateDir = stateDir
        self.orchestrator = orchestrator
        self.tokenFile = tokenFile
        self.advertiseURL = advertiseURL
        self.peers = peers
        self.criuPath = criuPath
    }

    enum CodingKeys: String, CodingKey {
        case name, listen, stateDir, orchestrator, tokenFile, advertiseURL, peers, criuPath, logLevel, hostImage, engineSocket, swarmNodes, dockerContainerd
        case containerNetwork, endpointsFile, endpointHook, dnsServer, dnsZone, dnsKeyFile, dnsTTL, frontman, frontmanHoldCount, frontmanHoldBytes, frontmanHoldSeconds, frontmanReleaseAtOnce, frontmanQuiesceMs, frontmanLinger
        case admission, tlsDir, insecure, readerTokenFiles, trustedPeers, incomingTimeout, shutdownGrace, migrationNetwork, connectionLinger
    }

    /// Keys left out of a YAML file take the same defaults as the flags.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        // name and stateDir may come from umsd's flags instead (checked once both are merged).
        name = try container.decodeIfPresent(String.self, forKey: .name) ?? ""
        listen = try container.decodeIfPresent(String.self, forKey: .listen) ?? "127.0.0.1:7000"
        stateDir = try container.decodeIfPresent(String.self, forKey: .stateDir) ?? ""
        orchestrator = try container.decodeIfPresent(String.self, forKey: .orchestrator) ?? "runc"
        tokenFile = try container.decodeIfPresent(String.self, forKey: .tokenFile)
        advertiseURL = try container.decodeIfPresent(String.self, forKey: .advertiseURL)
        peers = try container.decodeIfPresent([Peer].self, forKey: .peers)
        criuPath = try container.decodeIfPresent(String.self, forKey: .criuPath)
        logLevel = try container.decodeIfPresent(String.self, forKey: .logLevel)
        hostImage = try container.decodeIfPresent(String.self, forKey: .hostImage)
        engineSocket = try container.decodeIfPresent(String.self, forKey: .engineSocket)
        swarmNodes = try container.decodeIfPresent([String].self, forKey: .swarmNodes)
        dockerContainerd = try container.decodeIfPresent(String.self, forKey: .dockerContainerd)
        endpointsFile = try container.decodeIfPresent(String.self, forKey: .endpointsFile)
        endpointHook = try container.decodeIfPresent(String.self, forKey: .endpointHook)
        containerNetwork = try container.decodeIfPresent(String.self, forKey: .containerNetwork)
        dnsServer = try container.decodeIfPresent(String.self, forKey: .dnsServer)
        dnsZone = try container.decodeIfPresent(String.self, forKey: .dnsZone)
        dnsKeyFile = try container.decodeIfPresent(String.self, forKey: .dnsKeyFile)
        dnsTTL = try container.decodeIfPresent(Int.self, forKey: .dnsTTL)
        frontman = try container.decodeIfPresent(Bool.self, forKey: .frontman)
        frontmanHoldCount = try container.decodeIfPresent(Int.self, forKey: .frontmanHoldCount)
        frontmanReleaseAtOnce = try container.decodeIfPresent(Int.self, forKey: .frontmanReleaseAtOnce)
        frontmanQuiesceMs = try container.decodeIfPresent(Int.self, forKey: .frontmanQuiesceMs)
        frontmanHoldBytes = try container.decodeIfPresent(Int.self, forKey: .frontmanHoldBytes)
        frontmanHoldSeconds = try container.decodeIfPresent(Double.self, forKey: .frontmanHoldSeconds)
        frontmanLinger = try container.decodeIfPresent(Double.self, forKey: .frontmanLinger)
        admission = try container.decodeIfPresent(AdmissionPolicy.self, forKey: .admission)
        tlsDir = try container.decodeIfPresent(String.self, forKey: .tlsDir)
        insecure = try container.decodeIfPresent(Bool.self, forKey: .insecure)
        readerTokenFiles = try container.decodeIfPresent([String].self, forKey: .readerTokenFiles)
        trustedPeers = try container.decodeIfPresent([String: String].self, forKey: .trustedPeers)
        incomingTimeout = try container.decodeIfPresent(Double.self, forKey: .incomingTimeout)
        shutdownGrace = try container.decodeIfPresent(Double.self, forKey: .shutdownGrace)
        migrationNetwork = try container.decodeIfPresent(Bool.self, forKey: .migrationNetwork)
        connectionLinger = try container.decodeIfPresent(Double.self, forKey: .connectionLinger)
    }

    public static func load(yamlFile path: String) throws -> CoordinatorConfiguration {
        do {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            return try YAMLDecoder().decode(CoordinatorConfiguration.self, from: text)
        } catch {
            throw UMSError(.invalidArgument, "failed to read configuration \(path)", cause: error)
        }
    }

    /// Splits `listen` into host and port, with a clear error.
    public func listenAddress() throws(UMSError) -> (host: String, port: Int) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
              (0...65535).contains(port)
        else {
            throw UMSError(.invalidArgument, "invalid listen address '\(listen)': expected HOST:PORT")
        }
        return (String(listen[..<colon]), port)
    }

    public func validate() throws(UMSError) {
        try ContainerName.validate(name)
        _ = try listenAddress()
        _ = try orchestratorKind()
        if insecure == true {
            let host = try listenAddress().host
            guard ["127.0.0.1", "::1", "localhost"].contains(host) || host.hasPrefix("127.") else {
                throw UMSError(.invalidArgument, "refusing plain HTTP on \(host): --insecure is for loopback only; between systems use mutual TLS (ums trust init)")
            }
        }
        if let count = frontmanHoldCount, count < 0 { throw UMSError(.invalidArgument, "invalid frontman hold count \(count): expected 0 or more") }
        if let count = frontmanReleaseAtOnce, !(1...4096).contains(count) {
            throw UMSError(.invalidArgument, "invalid frontman release-at-once \(count): expected 1 to 4096")
        }
        if let milliseconds = frontmanQuiesceMs, !(0...5000).contains(milliseconds) {
            throw UMSError(.invalidArgument, "invalid frontman quiesce time \(milliseconds) ms: expected 0 to 5000")
        }
        if let bytes = frontmanHoldBytes, bytes < 0 { throw UMSError(.invalidArgument, "invalid frontman hold bytes \(bytes): expected 0 or more") }
        if let seconds = frontmanHoldSeconds, !(seconds >= 0) { throw UMSError(.invalidArgument, "invalid frontman hold time \(seconds): expected 0 or more seconds") }
        if let seconds = frontmanLinger, !(seconds >= 0) { throw UMSError(.invalidArgument, "invalid frontman linger \(seconds): expected 0 or more seconds") }
        if let seconds = incomingTimeout, !(seconds >= 1 && seconds <= 86_400) { throw UMSError(.invalidArgument, "invalid incoming timeout \(seconds): expected 1 to 86400 seconds") }
        if let seconds = connectionLinger, !(seconds >= 0 && seconds <= 86_400) { throw UMSError(.invalidArgument, "invalid connection linger \(seconds): expected 0 to 86400 seconds") }
        if let seconds = shutdownGrace, !(seconds >= 0 && seconds <= 3600) { throw UMSError(.invalidArgument, "invalid shutdown grace \(seconds): expected 0 to 3600 seconds") }
    }

    /// The URL peers and clients use.
    public func resolvedAdvertiseURL() throws(UMSError) -> String {
        if let advertiseURL { return advertiseURL }
        let (host, port) = try listenAddress()
        return "\(insecure == true ? "http" : "https")://\(host == "0.0.0.0" ? "127.0.0.1" : host):\(port)"
    }

    /// The host part of the advertised URL: where published ports are reached.
    public func advertiseHost() throws(UMSError) -> String {
        let url = try resolvedAdvertiseURL()
        guard let host = URL(string: url)?.host else {
            throw UMSError(.invalidArgument, "invalid advertise URL '\(url)'")
        }
        return host
    }
}

/// Reads a token file: the first line, trimmed.
enum TokenFile {
    static func read(_ path: String) throws -> String {
        try FileSystem.checkPrivate(path, what: "token file")
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw UMSError(.invalidArgument, "failed to read token file \(path)")
        }
        let token = text.split(separator: "\n").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard !token.isEmpty else { throw UMSError(.invalidArgument, "token file \(path) is empty") }
        return token
    }
}

extension CoordinatorConfiguration {
    /// The container network's block (`containerNetwork`, checked), or all of 198.19.0.0/16.
    public func addressBlock() throws(UMSError) -> AddressBlock {
        guard let containerNetwork else { return .standard }
        return try AddressBlock(parsing: containerNetwork)
    }

    /// The DNS updater the endpoint record calls, from `dnsServer`, `dnsZone` and `dnsKeyFile`
    /// (checked: all three or none; the key file not readable by others; a TTL of 1 s to a day).
    public func dnsPublisher() throws -> DNSPublisher? {
        guard dnsServer != nil || dnsZone != nil || dnsKeyFile != nil else { return nil }
        guard let dnsServer, let dnsZone, let dnsKeyFile else {
            throw UMSError(.invalidArgument, "invalid DNS settings: give --dns-server, --dns-zone and --dns-key together")
        }
        let parts = dnsServer.split(separator: ":", maxSplits: 1).map(String.init)
        guard let host = parts.first, let port = parts.count == 2 ? Int(parts[1]) : 53 else {
            throw UMSError(.invalidArgument, "invalid --dns-server '\(String(dnsServer.prefix(60)))': IP[:PORT] expected")
        }
        let ttl = dnsTTL ?? 5
        guard (1...86400).contains(ttl) else { throw UMSError(.invalidArgument, "invalid --dns-ttl \(ttl): 1 to 86400 seconds") }
        let attributes = try? FileManager.default.attributesOfItem(atPath: dnsKeyFile)
        guard let mode = (attributes?[.posixPermissions] as? NSNumber)?.intValue else {
            throw UMSError(.invalidArgument, "failed to read the DNS key file \(dnsKeyFile)")
        }
        guard mode & 0o077 == 0 else {
            throw UMSError(.invalidArgument, "the DNS key file \(dnsKeyFile) is readable by others (mode \(String(mode, radix: 8))); chmod 600 it")
        }
        let text = try String(contentsOfFile: dnsKeyFile, encoding: .utf8)
        guard text.utf8.count <= 4096 else { throw UMSError(.invalidArgument, "the DNS key file \(dnsKeyFile) is over 4 KiB") }
        let zone = try DNSName(dnsZone)
        return DNSPublisher(updater: try DNSUpdater(host: host, port: port, zone: zone, key: try TSIGKey(parsing: text)), ttl: UInt32(ttl))
    }
}
