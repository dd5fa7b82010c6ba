import AsyncHTTPClient
import Foundation
import UMSDNS
import Logging
import ServiceLifecycle
import UMSAPI
import UMSDecision
import UMSFrontman
import UMSMigration
import UMSModel
import UMSOrchestrator
import UMSOS

/// What every part of a Coordinator knows about its own system.
struct SystemContext: Sendable {
    let name: String
    let url: String
    /// The address clients use to reach this system's published ports.
    let advertiseHost: String
    let stateDirectory: String
    let orchestrator: any Orchestrator
    let approaches: [Approach: any MigrationApproach]
    /// What this system publishes when it shares a migration network (issue 16): its admission
    /// policy agrees, its orchestrator restores established connections, and it has an IPv4
    /// address for the tunnel. Nil otherwise.
    var migrationNetwork: MigrationNetworkInfo? = nil
    /// How long the source keeps routing a moved service's carried connections to it.
    var connectionLinger: Duration = .seconds(300)

    func profile() async -> SystemProfile {
        SystemProfile(capabilities: await orchestrator.capabilities(), approaches: approaches.keys.sorted())
    }

    var ref: SystemRef { SystemRef(name: name, url: url) }
}

/// Makes the client for a peer Coordinator (its URL, and the token to present if the request
/// named one).
public typealias PeerConnector = @Sendable (_ url: String, _ token: String?) -> any PeerCoordinator

/// The Coordinator of one system (paper Fig. 1), as four focused parts the HTTP layer calls:
/// `containers` (the system's view of its containers), `outgoing` (drives migrations as the
/// source), `incoming` (the destination side of migrations), `endpoints` (where each service is
/// reached) — plus the system's Frontmen. Everything they start and do not wait for runs as
/// child tasks of `service`, which belongs to the application's service group.
public struct Coordinator: Sendable {
    let system: SystemContext
    public let containers: ContainerService
    public let outgoing: OutgoingMigrations
    public let incoming: IncomingMigrations
    public let endpoints: Endpoints
    /// The Frontmen in front of this system's services (nil: none, e.g. in unit tests).
    let frontmen: Frontmen?
    let background: BackgroundTasks
    let logger: Logger
    /// How long a graceful shutdown lets migrations past their restore run.
    let shutdownGrace: Duration

    public var name: String { system.name }
    public var url: String { system.url }

    public init(
        name: String, url: String, orchestrator: any Orchestrator, approaches: [any MigrationApproach],
        stateDirectory: String, advertiseHost: String, http: HTTPClient, peerTokens: [String: String],
        logger: Logger, faults: any FaultInjector = NoFaults(), peers: PeerConnector? = nil,
        incomingTimeout: Duration = .seconds(600), admission: AdmissionPolicy = .standard, reservedPorts: Set<Int> = [], hostImage: String? = nil,
        frontman: FrontmanSettings? = nil, frontmanHTTP: HTTPClient? = nil, endpointsFile: String? = nil, endpointHook: String? = nil,
        dns: DNSPublisher? = nil, shutdownGrace: Duration = .seconds(30), connectionLinger: Duration = .seconds(300)
    ) throws {
        self.shutdownGrace = shutdownGrace
        var system = SystemContext(
            name: name, url: url, advertiseHost: advertiseHost, stateDirectory: stateDirectory, orchestrator: orchestrator,
            approaches: Dictionary(uniqueKeysWithValues: approaches.map { ($0.approach, $0) })
        )
        system.connectionLinger = connectionLinger
        if admission.migrationNetwork, let carrier = orchestrator as? any ConnectionCarrying, IPv4.value(advertiseHost) != nil {
            system.migrationNetwork = MigrationNetworkInfo(
                tunnelAddress: advertiseHost, containerNetwork: carrier.containerNetwork, approaches: carrier.carriedApproaches.sorted()
            )
        }
        let runner = SubprocessRunner(logger: logger)
        let background = BackgroundTasks()
        let frontmen = frontman.map { Frontmen(runner: runner, http: frontmanHTTP ?? http, limits: $0.limits, linger: $0.linger, logger: logger) }
        let endpoints = Endpoints(
            system: name,
            record: try EndpointRecord(stateDirectory: stateDirectory, hostsFile: endpointsFile, hook: endpointHook, dns: dns, system: name, runner: runner, logger: logger)
        )
        let connect: PeerConnector = peers ?? { url, token in
            CoordinatorClient(baseURL: url, token: token ?? peerTokens[url], http: http)
        }
        self.system = system
        self.logger = logger
        self.background = background
        self.frontmen = frontmen
        self.endpoints = endpoints
        self.containers = ContainerService(system: system, frontmen: frontmen, endpoints: endpoints, hostImage: hostImage, runner: runner)
        self.outgoing = try OutgoingMigrations(
            system: system, frontmen: frontmen, endpoints: endpoints, connect: connect, faults: faults, background: background, logger: logger
        )
        self.incoming = try IncomingMigrations(
            system: system, frontmen: frontmen, endpoints: endpoints, faults: faults, timeout: incomingTimeout,
            admission: admission, reservedPorts: reservedPorts.union(Self.umsPorts), background: background, logger: logger
        )
    }

    /// Host ports UMS itself publishes: destination agents (27000-27099) and post-copy page
    /// servers (27100-27999). A peer's container never gets them.
    static let umsPorts = Set(27000...27999)

    public func systemInfo() async -> SystemInfo {
        SystemInfo(
            name: system.name, url: system.url, version: UMSVersion.current, profile: await system.profile(), admission: incoming.admission,
            migrationNetwork: system.migrationNetwork
        )
    }

    public func frontmanViews() async -> [FrontmanView] {
        await frontmen?.views() ?? []
    }

    /// At start-up, before serving: each side goes on with the migrations its journal says were
    /// unfinished (asking the peer where needed; see docs/reliability.md), then what they no
    /// longer need is swept, then what runs here is fronted and recorded.
    public func recover() async {
        await frontmen?.prepare()
        await incoming.recover()
        await outgoing.recover()
        await sweep()
        for info in (try? await system.orchestrator.list()) ?? [] where info.state == .running {
            await frontmen?.serve(info)
            await endpoints.record(info, at: system.advertiseHost)
        }
    }

    /// What a previous run left that no unfinished migration needs: incoming directories and
    /// outgoing image directories, CRIU and runc processes working in them, control locks of
    /// migrations that are over (a destination's aborted container is removed), and whatever the
    /// orchestrator itself tracks (network namespaces, cgroups of containers that are gone).
    func sweep() async {
        let live = await outgoing.unfinishedIDs().union(await incoming.unfinishedIDs())
        let state = system.stateDirectory
        let kept = live.sorted().map { "\(state)/incoming/\($0)/" }
        let killed = ProcessSweep.kill(referring: ["\(state)/incoming/", "\(state)/outgoing/"], except: kept)
        if !killed.isEmpty {
            logger.notice("start-up sweep: ended processes of migrations that are over", metadata: ["pids": "\(killed)"])
        }
        for directory in (try? FileSystem.contents(of: "\(state)/incoming")) ?? [] where !live.contains(directory) {
            FileSystem.remove("\(state)/incoming/\(directory)")
        }
        // No migration runs yet: every outgoing work directory is a leftover.
        FileSystem.remove("\(state)/outgoing")
        for info in (try? await system.orchestrator.list()) ?? [] {
            guard let holder = info.migratingIn, !live.contains(holder) else { continue }
            if await incoming.state(holder) == .aborted {
                try? await system.orchestrator.delete(info.name, migration: holder)
            } else {
                try? await system.orchestrator.unlock(info.name, migration: holder)
            }
            logger.notice("start-up sweep: released the lock of a migration that is over", metadata: ["container": "\(info.name)", "migration.id": "\(holder)"])
        }
        await (system.orchestrator as? any LeftoverSweeping)?.sweepLeftovers()
    }

    /// An operator decides an unfinished migration: this system's outgoing record if it was the
    /// source, else its incoming one.
    public func resolve(_ id: String, _ request: ResolveRequest) async throws -> ResolveResponse {
        try MigrationID.validate(id)
        if (try? await outgoing.record(id)) != nil {
            return try await outgoing.resolve(id, keep: request.keep, dryRun: request.dryRun)
        }
        return try await incoming.resolve(id, keep: request.keep, dryRun: request.dryRun)
    }

    /// The Coordinator's long-lived work as one service: the tasks its parts started, and the
    /// sweeps that expire incoming migrations a silent source abandoned and retire Frontmen
    /// whose linger is over. On graceful shutdown no new work starts and running migrations
    /// finish.
    public var service: some Service { CoordinatorService(coordinator: self) }

    /// Runs the background work until `finishBackground()` (tests; umsd runs `service`). Once
    /// finishing, migrations still before the restore roll back at their next step, those past
    /// it finish; after `grace` what still runs is cancelled (its journal lets the next start
    /// go on with it).
    public func runBackground(sweepEvery interval: Duration = .seconds(1), grace: Duration = .seconds(30)) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var sweeps = 0
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    if Task.isCancelled { break }
                    await incoming.expireStale()
                    await frontmen?.sweep()
                    sweeps += 1
                    if sweeps % 2 == 0 { await followReplacements() }
                }
            }
            group.addTask {
                await background.run()
            }
            group.addTask {
                // The bound on a graceful shutdown.
                while !background.isFinishing {
                    try? await Task.sleep(for: .milliseconds(100))
                    if Task.isCancelled { return }
                }
                try? await Task.sleep(for: grace)
                if !Task.isCancelled { logger.warning("shutdown: migrations still running after the grace period are cancelled") }
            }
            // Whichever ends first: the background (every migration ended) or the grace period.
            _ = await group.next()
            group.cancelAll()
        }
    }

    /// Lets running work end and stops the background.
    public func finishBackground() {
        background.finish()
    }

    /// After the migrations: the Frontmen step aside and stop.
    func stopFrontmen() async {
        await frontmen?.stopAll()
    }
}

struct CoordinatorService: Service {
    let coordinator: Coordinator

    func run() async throws {
        await withGracefulShutdownHandler {
            await coordinator.runBackground(grace: coordinator.shutdownGrace)
        } onGracefulShutdown: {
            coordinator.finishBackground()
        }
        // In order: migrations ended (above), then the Frontmen; the HTTP clients are shut down
        // after this service (they come before it in the group).
        await coordinator.stopFrontmen()
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
