import Foundation
import Synchronization
import UMSModel

/// Where a Frontman sends what it lets through: the service itself (its container's address and
/// ports), or its new home (the destination system's address and published ports).
public struct FrontmanTarget: Sendable, Equatable, Codable, CustomStringConvertible {
    public var host: String
    /// The published (host) port a client used → the port to connect to at `host`.
    public var ports: [Int: Int]
    /// Whether connections to it may be kept for later requests. Not for another system's
    /// published ports: the kernel keeps a connection on whichever Frontman the port was
    /// redirected to when it opened, which may have gone since.
    public var reuseConnections: Bool

    public init(host: String, ports: [Int: Int], reuseConnections: Bool = true) {
        self.host = host
        self.ports = ports
        self.reuseConnections = reuseConnections
    }

    /// `host:port` for what came in on published port `hostPort`.
    public func endpoint(forPublished hostPort: Int) -> (host: String, port: Int)? {
        ports[hostPort].map { (host, $0) }
    }

    public var description: String {
        "\(host) (" + ports.keys.sorted().map { "\($0)→\(ports[$0]!)" }.joined(separator: ", ") + ")"
    }
}

/// How much a Frontman may hold while its service is frozen. Beyond any bound it answers
/// `503 Retry-After` (HTTP) or closes the connection at once (TCP) instead of waiting.
public struct HoldLimits: Sendable, Equatable, Codable {
    /// Requests and connections held at once.
    public var count: Int
    /// Request body bytes held at once (HTTP; TCP holds its bytes in the kernel's buffers).
    public var bytes: Int
    /// The longest anything waits; then HTTP gets 503 and TCP a clean close.
    public var seconds: Double
    /// Requests and connections served at once, in every mode (forwarding too); beyond: 503 / close.
    public var concurrent: Int
    /// Request body bytes buffered at once across all requests (each at most the per-request
    /// bound), reserved before a body is read; beyond: 503.
    public var bufferedBytes: Int
    /// When the hold ends, how many of the held requests and connections go on at once; each
    /// next one goes when one of those reached its target (its connection opened, its answer's
    /// head came back, or it failed). Hundreds of connections opened at one instant overrun a
    /// service's accept queue (a listen backlog of 64 is common), and each connection the kernel
    /// drops there waits for a retransmission — longer than the rest of the release takes.
    public var releaseAtOnce: Int
    /// When the hold starts, the longest the freeze waits for the answers to what the service was
    /// already sent: a request that reached the service's socket a moment before the freeze is
    /// otherwise in flight inside the frozen copy — sent again where that is safe (idempotent
    /// HTTP), but a TCP connection can only be closed. Usually a millisecond or two; never more
    /// than this (a connection whose client talks without answers just uses it up).
    public var quiesceSeconds: Double

    public init(
        count: Int = 1024, bytes: Int = 64 << 20, seconds: Double = 30, concurrent: Int = 4096, bufferedBytes: Int = 256 << 20,
        releaseAtOnce: Int = 32, quiesceSeconds: Double = 0.05
    ) {
        self.count = count
        self.bytes = bytes
        self.seconds = seconds
        self.concurrent = concurrent
        self.bufferedBytes = bufferedBytes
        self.releaseAtOnce = releaseAtOnce
        self.quiesceSeconds = quiesceSeconds
    }
}

/// Why a Frontman did not let something through.
public enum FrontmanRefusal: Error, Sendable, Equatable {
    /// The hold was full (count or bytes).
    case overloaded
    /// It waited as long as the limits allow.
    case holdTimedOut
    /// The Frontman is going away.
    case closed
    /// It serves as many requests and connections (or buffers as many body bytes) as it may.
    case busy
}

/// What `FrontmanGate.admit` lets through: the route, and — when it was held and the release
/// paces what it held — the release it belongs to, handed back with `settle` once it reached its
/// target (or failed to), so that the next held one may go.
public struct FrontmanAdmission: Sendable, Equatable {
    public let route: FrontmanRoute
    /// The paced release's epoch and this one's place in it.
    let paced: (release: Int, id: Int)?

    init(_ route: FrontmanRoute, paced: (release: Int, id: Int)? = nil) {
        self.route = route
        self.paced = paced
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.route == rhs.route && lhs.paced?.release == rhs.paced?.release && lhs.paced?.id == rhs.paced?.id
    }
}

/// What the gate tells a request or connection to do.
public enum FrontmanRoute: Sendable, Equatable {
    case forward(FrontmanTarget, epoch: Int)
    /// HTTP only: answer `307` to the new location.
    case redirect(FrontmanTarget, epoch: Int)

    public var target: FrontmanTarget {
        switch self {
        case .forward(let target, _), .redirect(let target, _): target
        }
    }

    public var epoch: Int {
        switch self {
        case .forward(_, let epoch), .redirect(_, let epoch): epoch
        }
    }
}

/// The state every listener of one service's Frontman shares: forwarding to a target, or holding
/// (the service is frozen), bounded by `HoldLimits`. Each change of target starts a new epoch,
/// so that what was in flight to an old target can be told apart and cut once that target is gone.
public actor FrontmanGate {
    public enum Mode: Sendable, Equatable {
        case forwarding(FrontmanTarget)
        case redirecting(FrontmanTarget)
        case holding
        case closed
    }

    public private(set) var mode: Mode
    public private(set) var epoch = 0
    public private(set) var stats = FrontmanStats()
    public let limits: HoldLimits
    let metrics: FrontmanMetrics

    struct Waiter {
        let continuation: CheckedContinuation<FrontmanAdmission, any Error>
        let bytes: Int
        let since: ContinuousClock.Instant
        /// When its client sent it, as far as is known: the order of a paced release.
        let arrived: ContinuousClock.Instant
        let deadline: ContinuousClock.Instant
    }

    private var waiters: [Int: Waiter] = [:]
    /// Requests and connections being served, and the body bytes reserved for them.
    private var active = 0
    private var reservedBytes = 0
    private var heldBytes = 0
    private var nextID = 0
    /// In-flight work per epoch, with how to cut it (`true`: it never reached a service) and,
    /// for a connection, whether it waits for the service's answer.
    private var inFlight: [Int: (epoch: Int, retryable: Bool, answer: AnswerWatch?, cut: @Sendable (_ undelivered: Bool) -> Void)] = [:]
    /// Admissions not yet settled, per epoch: requests whose answer's head has not come back,
    /// connections not yet open (see `quiesce`).
    private var unsettled: [Int: Int] = [:]
    /// Whether the last hold started while forwarding (to the service): only then can something
    /// be waiting inside it for an answer.
    private var heldWhileForwarding = false

    /// A release that lets what was held go on `limits.releaseAtOnce` at a time, oldest first.
    struct PacedRelease {
        let epoch: Int
        let route: FrontmanRoute
        /// The held ones still to go, longest-waiting first (one expired or refused meanwhile is skipped).
        var queue: [Int]
        var next = 0
        /// Released and not yet settled.
        var outstanding: Set<Int> = []
    }

    private var pacing: PacedRelease?

    /// Wakes `expireHeld` when the first request is held.
    private let held: AsyncStream<Void>.Continuation
    private let heldSignal: AsyncStream<Void>

    public init(target: FrontmanTarget?, limits: HoldLimits = HoldLimits(), metrics: FrontmanMetrics) {
        self.mode = target.map(Mode.forwarding) ?? .holding
        self.limits = limits
        self.metrics = metrics
        (heldSignal, held) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Refuses what was held longer than the bound, as each deadline comes; runs until
    /// cancelled (the Frontman owns the task). Every hold has the same bound, so the earliest
    /// deadline is always the oldest waiter's.
    public func expireHeld() async {
        var signals = heldSignal.makeAsyncIterator()
        while !Task.isCancelled {
            if let next = waiters.values.map(\.deadline).min() {
                try? await Task.sleep(until: next)
                let now = ContinuousClock.now
                for (id, waiter) in waiters where waiter.deadline <= now { expire(id) }
            } else if await signals.next() == nil {
                return
            }
        }
    }

    /// Waits for a route. Immediate while forwarding; while holding it waits until `release` or
    /// the limits say no. The caller hands the admission back with `settle` once what it let
    /// through reached its target or failed to.
    ///
    /// `waited`: how long it already waited before it reached this gate (another system's
    /// Frontman held it, or the frozen copy it was in flight to); a paced release lets the
    /// longest-waiting go first. The caller bounds it.
    public func admit(bytes: Int = 0, waited: Duration = .zero) async throws -> FrontmanAdmission {
        switch mode {
        case .forwarding(let target):
            return admission(.forward(target, epoch: epoch))
        case .redirecting(let target):
            return admission(.redirect(target, epoch: epoch))
        case .closed:
            throw FrontmanRefusal.closed
        case .holding:
            break
        }
        guard waiters.count < limits.count, heldBytes + bytes <= limits.bytes else {
            reject()
            throw FrontmanRefusal.overloaded
        }
        let id = nextID
        nextID += 1
        stats.held += 1
        metrics.held.increment()
        heldBytes += bytes
        let deadline = ContinuousClock.now + .milliseconds(Int64(limits.seconds * 1000))
        return try await withCheckedThrowingContinuation { continuation in
            waiters[id] = Waiter(continuation: continuation, bytes: bytes, since: .now, arrived: .now - max(waited, .zero), deadline: deadline)
            stats.holdingNow = waiters.count
            held.yield()
        }
    }

    /// Takes a place for one request or connection (and `bytes` of body buffer) before anything
    /// is read, whatever the mode: memory and file descriptors stay bounded under any load.
    public func enter(reserving bytes: Int = 0) throws(FrontmanRefusal) {
        guard active < limits.concurrent, reservedBytes + bytes <= limits.bufferedBytes else {
            reject()
            throw .busy
        }
        active += 1
        reservedBytes += bytes
    }

    public func leave(releasing bytes: Int = 0) {
        active -= 1
        reservedBytes -= bytes
    }

    /// `enter` and `admit` in one hop to the gate, for a request with no body to read between
    /// the two (every hop is a switch of thread, and a held burst is hundreds of them at once).
    /// A refused admission leaves again before it throws.
    public func enterAndAdmit(reserving bytes: Int = 0, waited: Duration = .zero) async throws -> FrontmanAdmission {
        try enter(reserving: bytes)
        do {
            return try await admit(waited: waited)
        } catch {
            leave(releasing: bytes)
            throw error
        }
    }

    /// `leave`, counting what became of the request, in one hop.
    public func leave(releasing bytes: Int, counting event: FrontmanEvent?) {
        leave(releasing: bytes)
        if let event { count(event) }
    }

    private func expire(_ id: Int) {
        guard let waiter = take(id) else { return }
        reject()
        waiter.continuation.resume(throwing: FrontmanRefusal.holdTimedOut)
    }

    private func reject() {
        stats.rejected += 1
        metrics.rejected.increment()
    }

    private func take(_ id: Int) -> Waiter? {
        guard let waiter = waiters.removeValue(forKey: id) else { return nil }
        heldBytes -= waiter.bytes
        stats.holdingNow = waiters.count
        let seconds = (ContinuousClock.now - waiter.since).seconds
        stats.longestHoldSeconds = max(stats.longestHoldSeconds, seconds)
        metrics.holdTime.recordSeconds(seconds)
        return waiter
    }

    /// From now on, hold (the service is about to freeze). What a paced release had not let go
    /// yet stays held, for the next release.
    public func hold() {
        guard mode != .closed else { return }
        if case .forwarding = mode { heldWhileForwarding = true } else { heldWhileForwarding = false }
        mode = .holding
        epoch += 1
        pacing = nil
    }

    /// Waits, at most `bound`, until nothing that went to the service before the hold still waits
    /// for its answer: every request's answer head came back, every connection opened, and no
    /// connection has sent bytes the service has not answered yet (or, since it opened, has
    /// heard nothing back). Called between `hold` and the freeze; returns at once when the
    /// gate no longer holds. Says how long it waited and how many were still unanswered.
    public func quiesce(upTo bound: Duration) async -> (waited: Duration, unanswered: Int) {
        let start = ContinuousClock.now
        while true {
            let waiting = heldWhileForwarding ? unanswered(before: epoch) : 0
            let waited = ContinuousClock.now - start
            guard waiting > 0, waited < bound, mode == .holding else { return (waited, waiting) }
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    /// What went out before the hold (a kept connection may be from any earlier epoch that
    /// forwarded to the service) and still waits for an answer.
    private func unanswered(before epoch: Int) -> Int {
        let requests = unsettled.reduce(0) { $0 + ($1.key < epoch ? $1.value : 0) }
        let connections = inFlight.values.count { $0.epoch < epoch && $0.answer?.awaiting == true }
        return requests + connections
    }

    /// Sends everything held, and everything after, to `target` (or redirects there). `paced`:
    /// what was held goes oldest first, `limits.releaseAtOnce` at a time — for a target that
    /// answers (the service); not for another Frontman that holds what it gets, nor for a
    /// redirect, which opens nothing here. Returns the epoch it started (what goes out in it is
    /// told apart by that), nil when closed.
    @discardableResult
    public func release(to target: FrontmanTarget, redirect: Bool = false, paced: Bool = true) -> Int? {
        guard mode != .closed else { return nil }
        epoch += 1
        mode = redirect ? .redirecting(target) : .forwarding(target)
        let route: FrontmanRoute = redirect ? .redirect(target, epoch: epoch) : .forward(target, epoch: epoch)
        let held = Array(waiters.keys).sorted()
        if redirect || !paced {
            pacing = nil
            for id in held {
                guard let waiter = take(id) else { continue }
                stats.released += 1
                waiter.continuation.resume(returning: admission(route))
            }
        } else {
            // The longest-waiting first (ids break ties: the order they came here).
            let order = held.compactMap { id in waiters[id].map { (arrived: $0.arrived, id: id) } }
                .sorted { ($0.arrived, $0.id) < ($1.arrived, $1.id) }
                .map(\.id)
            pacing = PacedRelease(epoch: epoch, route: route, queue: order)
            pump()
        }
        return epoch
    }

    /// Every admission goes out through here: it counts as unsettled (see `quiesce`) until `settle`.
    private func admission(_ route: FrontmanRoute, paced: (release: Int, id: Int)? = nil) -> FrontmanAdmission {
        unsettled[route.epoch, default: 0] += 1
        return FrontmanAdmission(route, paced: paced)
    }

    /// What a request or connection `admit` let through hands back once it reached its target
    /// (or failed to): under a paced release, the next held one goes.
    public func settle(_ admission: FrontmanAdmission) {
        let epoch = admission.route.epoch
        if let count = unsettled[epoch] {
            unsettled[epoch] = count > 1 ? count - 1 : nil
        }
        guard let paced = admission.paced, paced.release == pacing?.epoch, pacing?.outstanding.remove(paced.id) != nil else { return }
        pump()
    }

    /// Lets held ones go until `releaseAtOnce` are out; forgets the release once all went.
    private func pump() {
        guard var release = pacing else { return }
        while release.outstanding.count < max(1, limits.releaseAtOnce), release.next < release.queue.count {
            let id = release.queue[release.next]
            release.next += 1
            guard let waiter = take(id) else { continue }
            release.outstanding.insert(id)
            stats.released += 1
            waiter.continuation.resume(returning: admission(release.route, paced: (release.epoch, id)))
        }
        pacing = release.next < release.queue.count ? release : nil
    }

    /// Cuts what is still in flight to targets before the current one: their service is gone
    /// (the migrated source was deleted), so nothing will ever answer them. `sparing`: an earlier
    /// epoch that went to where the service now runs (sent ahead before its restore).
    /// `onlyRetryable`: only what may be sent again (idempotent) — once the service runs at its
    /// new location, before the old one is gone: the frozen copy would answer only after a
    /// rollback, and what it was asked is asked again where the service now runs instead of
    /// waiting for the old copy's deletion.
    public func cutStale(sparing spared: Int? = nil, onlyRetryable: Bool = false) {
        for (id, entry) in inFlight where entry.epoch < epoch && entry.epoch != spared && (entry.retryable || !onlyRetryable) {
            inFlight[id] = nil
            entry.cut(false)
        }
    }

    /// Cuts what is still in flight to `epoch`'s target, which is known never to have passed it
    /// to a service (another Frontman held it and has gone): it is sent again to the current
    /// target whatever its method — the same request, still delivered once.
    public func resendUndelivered(epoch undelivered: Int) {
        for (id, entry) in inFlight where entry.epoch == undelivered {
            inFlight[id] = nil
            entry.cut(true)
        }
    }

    /// Refuses everything held and everything after; what is in flight goes on.
    public func close() {
        mode = .closed
        pacing = nil
        for id in Array(waiters.keys) {
            guard let waiter = take(id) else { continue }
            waiter.continuation.resume(throwing: FrontmanRefusal.closed)
        }
    }

    /// Cuts everything in flight.
    public func cutAll() {
        for entry in inFlight.values { entry.cut(false) }
        inFlight = [:]
    }

    /// Registers in-flight work (`retryable`: it may be sent again, see `cutStale`; `answer`: a
    /// connection's, whose state `quiesce` reads); returns its key for `finished`.
    public func started(epoch: Int, retryable: Bool = false, answer: AnswerWatch? = nil, cut: @escaping @Sendable (_ undelivered: Bool) -> Void) -> Int {
        let id = nextID
        nextID += 1
        inFlight[id] = (epoch, retryable, answer, cut)
        return id
    }

    public func finished(_ id: Int) {
        inFlight[id] = nil
    }

    /// `finished` and `settle` in one hop: a request's answer head came back (or it failed).
    public func finished(_ id: Int, settling admission: FrontmanAdmission) {
        inFlight[id] = nil
        settle(admission)
    }

    public func count(_ event: FrontmanEvent) {
        switch event {
        case .forwarded: stats.forwarded += 1; metrics.forwarded.increment()
        case .retried: stats.retried += 1; metrics.retried.increment()
        case .redirected: stats.redirected += 1; metrics.redirected.increment()
        case .failedInFlight: stats.failedInFlight += 1; metrics.failedInFlight.increment()
        }
    }
}

public enum FrontmanEvent: Sendable {
    case forwarded, retried, redirected, failedInFlight
}

/// Whether a spliced connection waits for its service's answer: from when it opens until the
/// service's first bytes, and from each of the client's bytes until the service's next. Set from
/// the splice's two directions without a hop to the gate.
public final class AnswerWatch: Sendable {
    private let state = Atomic<Bool>(true)

    public init() {}

    /// The client's bytes went to the service.
    public func asked() { state.store(true, ordering: .relaxed) }
    /// The service's bytes went to the client.
    public func answered() { state.store(false, ordering: .relaxed) }

    public var awaiting: Bool { state.load(ordering: .relaxed) }
}
