import AsyncHTTPClient
import Foundation
import Logging
import UMSAPI
import UMSFrontman
import UMSMigration
import UMSImage
import UMSModel
import UMSOS

/// The Frontmen of one system, one per service with published ports (paper §III-B, steps 8 and
/// 14). Each owns its service's published ports (the system redirects them to it) and forwards to
/// the container; during a migration it holds, then sends everything to the destination, and
/// stays until the endpoint record has been updated and clients had `linger` to follow it.
actor Frontmen {
    typealias Role = FrontmanRole

    struct Entry {
        let frontman: Frontman
        var role: Role
        /// The local container, where a rollback sends everything back.
        var local: FrontmanTarget?
        /// How long what is in flight may finish once it retires: its carried connections'
        /// linger when its service's connections were carried (issue 16).
        var inFlightGrace: Duration = .seconds(30)
        /// The epoch of a release to the destination before its restore: what went out in it
        /// waits in the destination's Frontman until the commit, so on a rollback none of it
        /// reached a service.
        var sentAhead: Int?
        var redirected: [(published: Int, listening: Int)] {
            frontman.ports.map { ($0.published, $0.listening) }
        }
    }

    private var entries: [String: Entry] = [:]
    /// Frontmen forwarding for a service that left, until the end of their linger.
    private var lingering: [String: (frontman: Frontman, until: ContinuousClock.Instant)] = [:]
    /// Retired Frontmen whose in-flight work may still finish, stopped at `at`.
    private var stopping: [(frontman: Frontman, at: ContinuousClock.Instant)] = []
    private var enabled = true
    let redirects: FrontmanRedirects
    let http: HTTPClient
    let limits: HoldLimits
    let linger: Duration
    let logger: Logger

    init(runner: any CommandRunner, http: HTTPClient, limits: HoldLimits, linger: Duration, logger: Logger) {
        self.redirects = FrontmanRedirects(runner: runner)
        self.http = http
        self.limits = limits
        self.linger = linger
        self.logger = logger
    }

    /// Empties what a previous run left; without the redirects, services stay reachable through
    /// the orchestrator's own publishing and migrations go on without a Frontman (logged).
    func prepare() async {
        do {
            try await redirects.prepare()
        } catch {
            enabled = false
            logger.error("frontmen disabled: cannot install their redirects", metadata: ["error": "\(error)"])
        }
    }

    /// The published ports a Frontman stands in front of: all but the checkpoint agent's own.
    static func ports(of specification: Specification) -> [(published: Int, kind: FrontmanProtocol)] {
        let labels = specification.labels
        let agentPort = labels[SpecificationLabels.agent] != nil || labels[SpecificationLabels.nested] != nil
            ? MigratableImage.agentPort(of: specification) : nil
        return specification.ports
            .filter { $0.proto == "tcp" && $0.containerPort != agentPort }
            .map { ($0.hostPort, $0.application == "http" ? .http : .tcp) }
    }

    /// Where a container here is reached from this system.
    static func target(of info: ContainerInfo) -> FrontmanTarget? {
        guard let address = info.address, info.state == .running else { return nil }
        return FrontmanTarget(host: address, ports: Dictionary(info.specification.ports.map { ($0.hostPort, $0.containerPort) }, uniquingKeysWith: { a, _ in a }))
    }

    /// Where a service is reached at another system: its address and the same published ports.
    static func target(host: String, specification: Specification) -> FrontmanTarget {
        FrontmanTarget(
            host: host, ports: Dictionary(specification.ports.map { ($0.hostPort, $0.hostPort) }, uniquingKeysWith: { a, _ in a }),
            reuseConnections: false
        )
    }

    /// Puts a Frontman in front of a service (replacing any it had, and any other holding one of
    /// its ports). `target` nil: it holds from the start (an incoming service).
    func install(_ specification: Specification, target: FrontmanTarget?, role: Role) async {
        let ports = Self.ports(of: specification)
        guard enabled, !ports.isEmpty else { return }
        let published = Set(ports.map(\.published))
        for (service, entry) in entries where service == specification.name || entry.frontman.ports.contains(where: { published.contains($0.published) }) {
            // Replaced: what it holds or forwards still goes where it was going.
            await retireNow(service, entry, refuseHeld: false)
        }
        do {
            let frontman = try await Frontman.start(service: specification.name, ports: ports, target: target, limits: limits, http: http, logger: logger)
            let entry = Entry(frontman: frontman, role: role, local: role == .incoming ? nil : target)
            do {
                try await redirects.add(entry.redirected)
                try await redirects.ensureFirst()
            } catch {
                await frontman.stop()
                throw error
            }
            entries[specification.name] = entry
            logger.debug("frontman installed", metadata: ["service": "\(specification.name)", "role": "\(role.rawValue)", "ports": "\(frontman.ports.map { "\($0.published)→\($0.listening)" })"])
        } catch {
            logger.warning("no frontman for this service: clients reach it through the orchestrator's own port publishing", metadata: ["service": "\(specification.name)", "error": "\(error)"])
        }
    }

    /// A running container here gets a Frontman forwarding to it.
    func serve(_ info: ContainerInfo) async {
        guard let target = Self.target(of: info) else { return }
        await install(info.specification, target: target, role: .serving)
    }

    /// A running container here whose Frontman serves it at another address (its orchestrator
    /// replaced it) gets one that forwards to where it is now.
    func follow(_ info: ContainerInfo) async {
        guard let entry = entries[info.specification.name], entry.role == .serving, let target = Self.target(of: info),
              let local = entry.local, local != target
        else { return }
        logger.info("frontman follows its service to a new address", metadata: ["service": "\(info.name)", "from": "\(local.host)", "to": "\(target.host)"])
        await install(info.specification, target: target, role: .serving)
    }

    /// The service is gone from here (removed, or an incoming one aborted): what its Frontman
    /// holds is refused as `closed` (a source's Frontman sends that elsewhere).
    func remove(_ service: String) async {
        guard let entry = entries[service] else { return }
        await retireNow(service, entry, refuseHeld: true)
    }

    private func retireNow(_ service: String, _ entry: Entry, refuseHeld: Bool) async {
        entries[service] = nil
        await redirects.remove(entry.redirected)
        // New connections go where the rules now send them. Idle kept-alive connections are
        // closed at once, or their next request would still come here; what is in flight
        // finishes (at most 30 s).
        let frontman = entry.frontman
        if refuseHeld { await frontman.gate.close() }
        await frontman.drain()
        stopping.append((frontman, .now + entry.inFlightGrace))
    }

    /// The service is about to freeze: hold from now on.
    func hold(_ service: String) async {
        guard var entry = entries[service] else { return }
        entry.role = .migrating
        entries[service] = entry
        await entry.frontman.gate.hold()
    }

    /// Between the hold and the freeze: waits (at most the limits' `quiesceSeconds`) for the
    /// answers to what the service was already sent, so that nothing is in flight inside the
    /// frozen copy. Nil when the service has no Frontman.
    func quiesce(_ service: String) async -> (waited: Duration, unanswered: Int)? {
        guard let gate = entries[service]?.frontman.gate else { return nil }
        return await gate.quiesce(upTo: .milliseconds(Int64(limits.quiesceSeconds * 1000)))
    }

    /// The destination confirmed: everything held and after goes there.
    func release(_ service: String, to target: FrontmanTarget, redirect: Bool, role: Role) async {
        guard var entry = entries[service] else { return }
        entry.role = role
        if role == .serving { entry.local = target }
        entries[service] = entry
        // Paced only into the service itself: another system's Frontman holds what it gets
        // until the commit, so waiting for its answers would hold the rest here.
        await entry.frontman.gate.release(to: target, redirect: redirect, paced: role == .serving)
    }

    /// Before the restore: what is held goes to the destination's Frontman, which holds it until
    /// the commit (HTTP only: on a rollback it comes back and is sent here again).
    func sendAhead(_ service: String, to target: FrontmanTarget) async {
        guard let frontman = entries[service]?.frontman else { return }
        // The epoch from the release itself: read afterwards, another release could come between.
        let epoch = await frontman.gate.release(to: target, paced: false)
        if entries[service]?.frontman === frontman { entries[service]?.sentAhead = epoch }
    }

    /// Rollback: back to the service here, which runs again. What was sent ahead to the
    /// destination's Frontman and is still unanswered (refusals come back by themselves; this is
    /// what the destination's kernel may have dropped with its listener) never reached a
    /// service, so it is sent here again whatever its method.
    func resume(_ service: String) async {
        guard var entry = entries[service], let local = entry.local else { return }
        entry.role = .serving
        let ahead = entry.sentAhead
        entry.sentAhead = nil
        entries[service] = entry
        await entry.frontman.gate.release(to: local)
        if let ahead { await entry.frontman.gate.resendUndelivered(epoch: ahead) }
    }

    /// The old instance is gone: what was in flight to it will never be answered.
    /// `onlyRetryable`: what may be sent again, as soon as the service runs at its new location.
    func cutStale(_ service: String, onlyRetryable: Bool = false) async {
        guard let entry = entries[service] else { return }
        await entry.frontman.gate.cutStale(sparing: entry.sentAhead, onlyRetryable: onlyRetryable)
    }

    /// After the endpoint record was updated: stay `linger` for clients still on the old
    /// address, then go.
    /// Lingers, then retires. `dnsTTL`: the name was moved in DNS with this TTL — once every
    /// cached copy of the old record has expired (the TTL and a second), clients come to the new
    /// place by themselves, so the Frontman stays no longer than that (nor longer than its linger).
    /// `carried`: its connections to the service were carried; they go on (through the tunnel)
    /// that long after it retires, not only the usual 30 s.
    func retire(_ service: String, dnsTTL: Duration? = nil, carried: Duration? = nil) {
        guard let frontman = entries[service]?.frontman else { return }
        if let carried { entries[service]?.inFlightGrace = max(carried, .seconds(30)) }
        let wait = dnsTTL.map { min($0 + .seconds(1), linger) } ?? linger
        lingering[service] = (frontman, .now + wait)
    }

    /// Retires Frontmen whose linger is over and stops retired ones whose in-flight work had
    /// its time; the Coordinator's background calls it every second.
    func sweep(now: ContinuousClock.Instant = .now) async {
        for (service, item) in lingering where item.until <= now {
            lingering[service] = nil
            await retireIfStill(service, item.frontman)
        }
        let due = stopping.filter { $0.at <= now }
        stopping.removeAll { $0.at <= now }
        for item in due { await item.frontman.stop() }
    }

    /// Shutdown, after the migrations ended: every Frontman steps aside (its redirects removed,
    /// so clients reach the services through the orchestrator's own publishing), lets what is in
    /// flight finish for at most `grace`, and stops.
    func stopAll(grace: Duration = .seconds(1)) async {
        for (service, entry) in entries {
            await retireNow(service, entry, refuseHeld: false)
        }
        lingering = [:]
        if !stopping.isEmpty { try? await Task.sleep(for: grace) }
        for item in stopping { await item.frontman.stop() }
        stopping = []
    }

    private func retireIfStill(_ service: String, _ frontman: Frontman) async {
        guard let entry = entries[service], entry.frontman === frontman, entry.role == .forwarding else { return }
        logger.info("frontman retired: the endpoint record has moved on", metadata: ["service": "\(service)"])
        await retireNow(service, entry, refuseHeld: false)
    }

    /// What the service's Frontman has done so far, if it has one.
    func stats(_ service: String) async -> FrontmanStats? {
        await entries[service]?.frontman.gate.stats
    }

    func views() async -> [FrontmanView] {
        var views: [FrontmanView] = []
        for (service, entry) in entries.sorted(by: { $0.key < $1.key }) {
            let gate = entry.frontman.gate
            let (mode, stats) = (await gate.mode, await gate.stats)
            let (state, target): (FrontmanState, FrontmanTarget?) = switch mode {
            case .forwarding(let target): (.forwarding, target)
            case .redirecting(let target): (.redirecting, target)
            case .holding: (.holding, nil)
            case .closed: (.closed, nil)
            }
            views.append(FrontmanView(
                service: service, role: entry.role, mode: state, target: target?.host,
                ports: entry.frontman.ports.map { .init(published: $0.published, listening: $0.listening, kind: $0.kind) },
                counts: stats
            ))
        }
        return views
    }
}
