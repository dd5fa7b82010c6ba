import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing
@testable import UMSFrontman
import UMSModel

/// The Frontman against real servers on loopback: a Hummingbird service (two instances, "A" and
/// "B", standing for the service before and after its migration) and a line-protocol TCP service.
/// Clients talk to the Frontman's own listener, as the system's redirect would send them.
@Suite struct FrontmanTests {
    static let logger: Logger = {
        var logger = Logger(label: "frontman-tests")
        logger.logLevel = .critical
        return logger
    }()

    /// An HTTP service answering `/who` with its name, `/slow` after `delay`.
    static func service(_ name: String, delay: Duration = .zero, concurrency: Concurrency? = nil) async throws -> (port: Int, task: Task<Void, Never>) {
        let router = Router()
        router.get("who") { _, _ in name }
        router.get("waited") { request, _ in request.headers[HTTPFrontmanResponder.waitedHeader] ?? "none" }
        router.get("slow") { _, _ in
            await concurrency?.enter()
            try await Task.sleep(for: delay)
            await concurrency?.leave()
            return name
        }
        router.post("slow") { _, _ in try await Task.sleep(for: delay); return name }
        let (stream, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), onServerRunning: {
            continuation.yield($0.localAddress?.port ?? 0)
        }, logger: logger)
        let task = Task<Void, Never> { try? await app.runService(gracefulShutdownSignals: []) }
        var iterator = stream.makeAsyncIterator()
        return (await iterator.next() ?? 0, task)
    }

    static func frontman(to port: Int, kind: FrontmanProtocol = .http, limits: HoldLimits = HoldLimits()) async throws -> Frontman {
        try await Frontman.start(
            service: "svc", ports: [(published: 80, kind: kind)], target: FrontmanTarget(host: "127.0.0.1", ports: [80: port]),
            limits: limits, http: .shared, host: "127.0.0.1", logger: logger
        )
    }

    static func get(_ frontman: Frontman, _ path: String, method: HTTPMethod = .GET) async throws -> (status: Int, body: String, headers: HTTPHeaders) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(frontman.ports[0].listening)\(path)")
        request.method = method
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(20))
        let body = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), String(buffer: body), response.headers)
    }

    @Test func forwardsWhileTheServiceRuns() async throws {
        let a = try await Self.service("A")
        defer { a.task.cancel() }
        let frontman = try await Self.frontman(to: a.port)
        defer { Task { await frontman.stop() } }
        let answer = try await Self.get(frontman, "/who")
        #expect(answer.status == 200 && answer.body == "A")
        #expect(await frontman.gate.stats.forwarded == 1)
    }

    @Test func holdsUntilReleasedThenSendsToTheNewLocation() async throws {
        let (a, b) = (try await Self.service("A"), try await Self.service("B"))
        defer { a.task.cancel(); b.task.cancel() }
        let frontman = try await Self.frontman(to: a.port)
        defer { Task { await frontman.stop() } }
        await frontman.gate.hold()
        let answers = Task {
            try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<5 { group.addTask { try await Self.get(frontman, "/who").body } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
        }
        // All five arrive (a loaded machine may take a while), then are held a little longer.
        let deadline = ContinuousClock.now + .seconds(10)
        while await frontman.gate.stats.holdingNow < 5, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(await frontman.gate.stats.holdingNow == 5)
        try await Task.sleep(for: .milliseconds(300))
        await frontman.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: b.port]))
        #expect(try await answers.value == Array(repeating: "B", count: 5))
        let stats = await frontman.gate.stats
        #expect(stats.held == 5 && stats.released == 5 && stats.rejected == 0 && stats.longestHoldSeconds >= 0.25)
    }

    /// The most requests an HTTP service had in hand at once, answering `/slow` after `delay`.
    actor Concurrency {
        var now = 0
        var most = 0
        func enter() { now += 1; most = max(most, now) }
        func leave() { now -= 1 }
    }

    @Test("a release sends what was held oldest first, at most releaseAtOnce at a time, each next one when one settles; a hold keeps the rest for the next release")
    func releaseIsPaced() async throws {
        let gate = FrontmanGate(target: nil, limits: HoldLimits(releaseAtOnce: 2), metrics: FrontmanMetrics(service: "paced"))
        let admitted = AsyncStream.makeStream(of: (Int, FrontmanAdmission).self)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<5 {
                while await gate.stats.holdingNow < index { await Task.yield() }
                group.addTask { admitted.continuation.yield((index, try await gate.admit())) }
            }
            while await gate.stats.holdingNow < 5 { await Task.yield() }
            var order = admitted.stream.makeAsyncIterator()
            let target = FrontmanTarget(host: "127.0.0.1", ports: [80: 1])
            await gate.release(to: target)
            let first = [await order.next()!, await order.next()!]
            #expect(first.map(\.0) == [0, 1])
            let stats23 = await gate.stats
            #expect(stats23.released == 2 && stats23.holdingNow == 3)
            // New arrivals are not held back while the release paces.
            let arrival = try await gate.admit().route
            #expect(arrival == .forward(target, epoch: await gate.epoch))
            // Settling one lets one more go; settling it again lets nothing more go.
            await gate.settle(first[0].1)
            await gate.settle(first[0].1)
            #expect(await order.next()!.0 == 2)
            let stats32 = await gate.stats
            #expect(stats32.released == 3 && stats32.holdingNow == 2)
            // The service is about to freeze again: what was not let go stays held, and what the
            // paced release had out settles without letting anything go.
            await gate.hold()
            await gate.settle(first[1].1)
            let afterHold = await gate.stats
            #expect(afterHold.released == 3 && afterHold.holdingNow == 2)
            // A redirect opens nothing here: the rest go at once.
            await gate.release(to: target, redirect: true)
            #expect([await order.next()!.0, await order.next()!.0] == [3, 4])
            let stats50 = await gate.stats
            #expect(stats50.released == 5 && stats50.holdingNow == 0)
            admitted.continuation.finish()
            try await group.waitForAll()
        }
    }

    @Test("a release to another Frontman (which holds what it gets) is not paced: everything held goes at once")
    func releaseAheadIsNotPaced() async throws {
        let gate = FrontmanGate(target: nil, limits: HoldLimits(releaseAtOnce: 2), metrics: FrontmanMetrics(service: "ahead"))
        await withTaskGroup(of: FrontmanAdmission?.self) { group in
            for _ in 0..<5 { group.addTask { try? await gate.admit() } }
            while await gate.stats.holdingNow < 5 { await Task.yield() }
            await gate.release(to: FrontmanTarget(host: "198.18.0.2", ports: [80: 18300], reuseConnections: false), paced: false)
            let stats = await gate.stats
            #expect(stats.released == 5 && stats.holdingNow == 0)
            await gate.close()  // (refuses what a paced release would still hold)
            var admitted = 0
            for await admission in group where admission != nil { admitted += 1 }
            #expect(admitted == 5)
        }
    }

    @Test("once the service runs at its new location only what may be sent again is cut from the frozen copy; the rest when the copy is gone")
    func retryableStaleWorkIsCutFirst() async throws {
        let gate = FrontmanGate(target: FrontmanTarget(host: "127.0.0.1", ports: [80: 1]), metrics: FrontmanMetrics(service: "stale"))
        let cuts = Mutex<[String]>([])
        let epoch = await gate.epoch
        _ = await gate.started(epoch: epoch, retryable: true) { _ in cuts.withLock { $0.append("GET") } }
        _ = await gate.started(epoch: epoch) { _ in cuts.withLock { $0.append("POST") } }
        await gate.hold()
        await gate.release(to: FrontmanTarget(host: "198.18.0.2", ports: [80: 18300], reuseConnections: false))
        await gate.cutStale(onlyRetryable: true)
        #expect(cuts.withLock { $0 } == ["GET"])
        await gate.cutStale()
        #expect(cuts.withLock { $0 } == ["GET", "POST"])
    }

    @Test("a paced release lets the longest-waiting go first, counting what they waited before they came here")
    func pacedReleaseOrdersByWaiting() async throws {
        let gate = FrontmanGate(target: nil, limits: HoldLimits(releaseAtOnce: 1), metrics: FrontmanMetrics(service: "order"))
        let admitted = AsyncStream.makeStream(of: (String, FrontmanAdmission).self)
        await withThrowingTaskGroup(of: Void.self) { group in
            // Came here in this order; "retried" had waited 5 s elsewhere, "ahead" 2 s.
            let arrivals: [(String, Duration)] = [("first", .zero), ("ahead", .seconds(2)), ("second", .zero), ("retried", .seconds(5))]
            for (index, (name, waited)) in arrivals.enumerated() {
                while await gate.stats.holdingNow < index { await Task.yield() }
                group.addTask { admitted.continuation.yield((name, try await gate.admit(waited: waited))) }
            }
            while await gate.stats.holdingNow < 4 { await Task.yield() }
            await gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: 1]))
            var order: [String] = []
            for await (name, admission) in admitted.stream {
                order.append(name)
                await gate.settle(admission)
                if order.count == 4 { break }
            }
            #expect(order == ["retried", "ahead", "first", "second"])
        }
    }

    @Test("what an earlier Frontman says a request waited is a bounded number of milliseconds, or nothing; it goes on to another system's Frontman, never to the service", arguments: [
        (["1500"], 1500), (["0"], 0), (["99999999"], 30_000), (["-5"], 0), (["1e3"], 0), (["abc"], 0), ([" 12"], 12), (["12", "13"], 0),
        (["1234567890123"], 0), ([String](), 0),
    ])
    func waitedHeader(values: [String], milliseconds: Int) async throws {
        let gate = FrontmanGate(target: nil, metrics: FrontmanMetrics(service: "hostile"))
        let responder = HTTPFrontmanResponder(service: "svc", publishedPort: 80, gate: gate, http: .shared, maxBodyBytes: 1 << 20, logger: Self.logger)
        var headers = HTTPFields()
        for value in values { headers.append(HTTPField(name: HTTPFrontmanResponder.waitedHeader, value: value)) }
        #expect(responder.waited(headers) == .milliseconds(milliseconds))
    }

    @Test func theWaitedHeaderIsNotForwardedToTheService() async throws {
        let a = try await Self.service("A")
        defer { a.task.cancel() }
        let frontman = try await Self.frontman(to: a.port)
        defer { Task { await frontman.stop() } }
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(frontman.ports[0].listening)/waited")
        request.headers.add(name: "X-UMS-Waited-Ms", value: "200")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(20))
        #expect(String(buffer: try await response.body.collect(upTo: 1 << 10)) == "none")
    }

    @Test("held requests reach the service at most releaseAtOnce at a time, and every one is answered")
    func heldRequestsReachTheServicePaced() async throws {
        let concurrency = Concurrency()
        let b = try await Self.service("B", delay: .milliseconds(50), concurrency: concurrency)
        defer { b.task.cancel() }
        let frontman = try await Self.frontman(to: b.port, limits: HoldLimits(releaseAtOnce: 3))
        defer { Task { await frontman.stop() } }
        await frontman.gate.hold()
        let answers = Task {
            try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<8 { group.addTask { try await Self.get(frontman, "/slow").body } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while await frontman.gate.stats.holdingNow < 8, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        // (The shared HTTP client opens at most 8 connections to one host.)
        #expect(await frontman.gate.stats.holdingNow == 8)
        await frontman.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: b.port]))
        #expect(try await answers.value == Array(repeating: "B", count: 8))
        let most = await concurrency.most
        #expect(most <= 3 && most >= 2, "the service had \(most) at once")
    }

    @Test("while forwarding, requests beyond the concurrency bound get 503 at once; those within are served")
    func concurrencyBoundWhileForwarding() async throws {
        let a = try await Self.service("A", delay: .milliseconds(800))
        defer { a.task.cancel() }
        let frontman = try await Self.frontman(to: a.port, limits: HoldLimits(concurrent: 2))
        defer { Task { await frontman.stop() } }
        let slow = Task {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<2 { group.addTask { try await Self.get(frontman, "/slow").status } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
        }
        try await Task.sleep(for: .milliseconds(300))
        let third = try await Self.get(frontman, "/who")
        #expect(third.status == 503)
        #expect(third.body.contains("serves as many requests as it may"))
        #expect(try await slow.value == [200, 200])
        #expect(try await Self.get(frontman, "/who").status == 200, "places come back when requests end")
    }

    @Test("a body is reserved before it is read: a declared size over the bound is 413 without reading it, and the buffer budget gives 503")
    func bodyReservedBeforeReading() async throws {
        let a = try await Self.service("A")
        defer { a.task.cancel() }
        let frontman = try await Self.frontman(to: a.port, limits: HoldLimits(bufferedBytes: 1000))
        defer { Task { await frontman.stop() } }
        var big = HTTPClientRequest(url: "http://127.0.0.1:\(frontman.ports[0].listening)/slow")
        big.method = .POST
        big.body = .bytes(ByteBuffer(repeating: 1, count: 2000))
        let refused = try await HTTPClient.shared.execute(big, timeout: .seconds(10))
        #expect(refused.status == .serviceUnavailable, "2000 bytes do not fit a 1000-byte budget")
        var small = big
        small.body = .bytes(ByteBuffer(repeating: 1, count: 500))
        #expect(try await HTTPClient.shared.execute(small, timeout: .seconds(10)).status == .ok)
    }

    @Test func beyondTheHoldBoundAnswers503WithRetryAfter() async throws {
        let a = try await Self.service("A")
        defer { a.task.cancel() }
        let frontman = try await Self.frontman(to: a.port, limits: HoldLimits(count: 2, bytes: 1 << 20, seconds: 10))
        defer { Task { await frontman.stop() } }
        await frontman.gate.hold()
        let held = (0..<2).map { _ in Task { try await Self.get(frontman, "/who") } }
        try await Task.sleep(for: .milliseconds(200))
        let started = ContinuousClock.now
        for _ in 0..<3 {
            let answer = try await Self.get(frontman, "/who")
            #expect(answer.status == 503)
            #expect(answer.headers["Retry-After"].first == "1")
        }
        #expect(ContinuousClock.now - started < .seconds(2), "refusals come at once, not after the hold")
        await frontman.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: a.port]))
        for task in held { #expect(try await task.value.status == 200) }
        #expect(await frontman.gate.stats.rejected == 3)
    }

    @Test("a request refused while held — the hold full, or held too long — gives its place back: afterwards as many are served at once as the bound allows")
    func refusedWhileHeldGivesItsPlaceBack() async throws {
        let a = try await Self.service("A", delay: .milliseconds(500))
        defer { a.task.cancel() }
        let frontman = try await Self.frontman(to: a.port, limits: HoldLimits(count: 1, bytes: 1 << 20, seconds: 0.3, concurrent: 2))
        defer { Task { await frontman.stop() } }
        await frontman.gate.hold()
        let held = Task { try await Self.get(frontman, "/who") }
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await Self.get(frontman, "/who").status == 503, "the hold is full")
        #expect(try await held.value.status == 503, "held longer than 0.3 s")
        await frontman.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: a.port]))
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<2 { group.addTask { try await Self.get(frontman, "/slow").status } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(statuses == [200, 200], "both places came back")
        #expect(await frontman.gate.stats.forwarded == 2)
    }

    @Test func aHoldThatLastsTooLongAnswers503() async throws {
        let a = try await Self.service("A")
        defer { a.task.cancel() }
        let frontman = try await Self.frontman(to: a.port, limits: HoldLimits(count: 10, bytes: 1 << 20, seconds: 0.3))
        defer { Task { await frontman.stop() } }
        await frontman.gate.hold()
        let answer = try await Self.get(frontman, "/who")
        #expect(answer.status == 503 && answer.headers["Retry-After"].first == "1")
    }

    @Test func whatWasSentAheadAndNeverDeliveredIsSentAgainWhateverItsMethod() async throws {
        // "B" stands for the destination's Frontman holding what was sent ahead: it never answers.
        let a = try await Self.service("A")
        let b = try await Self.service("B", delay: .seconds(30))
        defer { a.task.cancel(); b.task.cancel() }
        let frontman = try await Self.frontman(to: a.port)
        defer { Task { await frontman.stop() } }
        let local = FrontmanTarget(host: "127.0.0.1", ports: [80: a.port])
        await frontman.gate.hold()
        let post = Task { try await Self.get(frontman, "/slow", method: .POST) }
        try await Task.sleep(for: .milliseconds(200))
        await frontman.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: b.port]))
        let ahead = await frontman.gate.epoch
        try await Task.sleep(for: .milliseconds(300))
        // The restore failed: hold, then back to the source; what went ahead is sent here again.
        await frontman.gate.hold()
        await frontman.gate.release(to: local)
        await frontman.gate.cutStale(sparing: ahead)
        try await Task.sleep(for: .milliseconds(200))
        #expect(await frontman.gate.stats.retried == 0, "cutStale spares what was sent ahead")
        await frontman.gate.resendUndelivered(epoch: ahead)
        let answered = try await post.value
        #expect(answered.status == 200 && answered.body == "A", "\(answered)")
        let stats = await frontman.gate.stats
        #expect(stats.retried == 1 && stats.failedInFlight == 0)
    }

    @Test func inFlightRequestsCutByTheMigrationAreRetriedOnlyWhenIdempotent() async throws {
        let a = try await Self.service("A", delay: .seconds(30))
        let b = try await Self.service("B")
        defer { a.task.cancel(); b.task.cancel() }
        let frontman = try await Self.frontman(to: a.port)
        defer { Task { await frontman.stop() } }
        let get = Task { try await Self.get(frontman, "/slow") }
        let post = Task { try await Self.get(frontman, "/slow", method: .POST) }
        try await Task.sleep(for: .milliseconds(300))
        // The service freezes, moves, and its old instance goes away with the requests inside.
        await frontman.gate.hold()
        await frontman.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: b.port]))
        await frontman.gate.cutStale()
        let retried = try await get.value
        #expect(retried.status == 200 && retried.body == "B")
        let refused = try await post.value
        #expect(refused.status == 502)
        #expect(refused.headers["X-UMS-Frontman"].first == "in-flight-not-retried")
        #expect(refused.body.contains("not idempotent"))
        let stats = await frontman.gate.stats
        #expect(stats.retried == 1 && stats.failedInFlight == 1)
    }

    @Test func whatTheDestinationsFrontmanRefusesWhenItClosesComesBack() async throws {
        // A's Frontman sends to B's (holding, as a destination's does until its commit); the
        // migration rolls back: A holds again, B's closes, and the request ends at the source.
        let service = try await Self.service("A")
        defer { service.task.cancel() }
        let b = try await Self.frontman(to: service.port)
        await b.gate.hold()
        let a = try await Self.frontman(to: service.port)
        defer { Task { await a.stop() } }
        await a.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: b.ports[0].listening]))
        let answer = Task { try await Self.get(a, "/who") }
        try await Task.sleep(for: .milliseconds(300))
        #expect(await b.gate.stats.holdingNow == 1)
        await a.gate.hold()
        await b.stop()
        try await Task.sleep(for: .milliseconds(200))
        await a.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: service.port]))
        let result = try await answer.value
        #expect(result.status == 200 && result.body == "A")
        #expect(await a.gate.stats.retried >= 1)
    }

    @Test func redirectsWhenAskedTo() async throws {
        let a = try await Self.service("A")
        defer { a.task.cancel() }
        let frontman = try await Self.frontman(to: a.port)
        defer { Task { await frontman.stop() } }
        await frontman.gate.hold()
        await frontman.gate.release(to: FrontmanTarget(host: "198.18.0.2", ports: [80: 8080]), redirect: true)
        let client = HTTPClient(configuration: .init(redirectConfiguration: .disallow))
        let response = try await client.execute(HTTPClientRequest(url: "http://127.0.0.1:\(frontman.ports[0].listening)/who?x=1"), timeout: .seconds(5))
        try await client.shutdown()
        #expect(response.status == .temporaryRedirect)
        #expect(response.headers["Location"].first == "http://198.18.0.2:8080/who?x=1")
    }

    // MARK: TCP

    typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>

    /// A line service: answers each line with `NAME LINE`, `delay` after it came (counted in
    /// `received` meanwhile).
    static func lineService(_ name: String, delay: Duration = .zero, received: Concurrency? = nil) async throws -> (port: Int, task: Task<Void, Never>) {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0) { channel in
            channel.eventLoop.makeCompletedFuture { try Connection(wrappingChannelSynchronously: channel) }
        }
        let port = server.channel.localAddress?.port ?? 0
        let task = Task<Void, Never> {
            try? await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        group.addTask {
                            try? await connection.executeThenClose { input, output in
                                for try await chunk in input {
                                    await received?.enter()
                                    if delay > .zero { try await Task.sleep(for: delay) }
                                    try await output.write(ByteBuffer(string: "\(name) \(String(buffer: chunk))"))
                                    await received?.leave()
                                }
                            }
                        }
                    }
                }
            }
        }
        return (port, task)
    }

    static func connect(_ port: Int) async throws -> Connection {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try Connection(wrappingChannelSynchronously: channel) }
        }
    }

    /// Sends a line, returns the first answer (nil: closed without one).
    static func ask(_ port: Int, _ line: String) async throws -> String? {
        let connection = try await connect(port)
        return try await connection.executeThenClose { input, output in
            try await output.write(ByteBuffer(string: line))
            var iterator = input.makeAsyncIterator()
            return try await iterator.next().map { String(buffer: $0) }
        }
    }

    @Test func heldConnectionsAreSplicedToTheNewLocation() async throws {
        let (a, b) = (try await Self.lineService("A"), try await Self.lineService("B"))
        defer { a.task.cancel(); b.task.cancel() }
        let frontman = try await Self.frontman(to: a.port, kind: .tcp)
        defer { Task { await frontman.stop() } }
        let port = frontman.ports[0].listening
        #expect(try await Self.ask(port, "count\n") == "A count\n")
        await frontman.gate.hold()
        let held = (0..<3).map { _ in Task { try await Self.ask(port, "count\n") } }
        try await Task.sleep(for: .milliseconds(300))
        #expect(await frontman.gate.stats.holdingNow == 3)
        await frontman.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: b.port]))
        for task in held { #expect(try await task.value == "B count\n") }
    }

    @Test func tcpBeyondTheHoldBoundIsClosedAtOnce() async throws {
        let a = try await Self.lineService("A")
        defer { a.task.cancel() }
        let frontman = try await Self.frontman(to: a.port, kind: .tcp, limits: HoldLimits(count: 1, bytes: 1 << 20, seconds: 10))
        defer { Task { await frontman.stop() } }
        let port = frontman.ports[0].listening
        await frontman.gate.hold()
        let held = Task { try await Self.ask(port, "count\n") }
        try await Task.sleep(for: .milliseconds(200))
        let started = ContinuousClock.now
        #expect(try await Self.ask(port, "count\n") == nil)
        #expect(ContinuousClock.now - started < .seconds(2))
        await frontman.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: a.port]))
        #expect(try await held.value == "A count\n")
    }

    // MARK: Quiescing before the freeze

    /// Until the service has `count` requests in hand.
    static func until(_ concurrency: Concurrency, has count: Int) async throws {
        for _ in 0..<500 where await concurrency.now < count {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(await concurrency.now == count, "the service got what was sent")
    }

    @Test("between the hold and the freeze the gate waits for the answer to what a TCP connection already sent the service — not for an idle kept connection — and says what a too-short bound left unanswered")
    func quiesceWaitsForTCPAnswers() async throws {
        let received = Concurrency()
        let a = try await Self.lineService("A", delay: .milliseconds(150), received: received)
        defer { a.task.cancel() }
        let frontman = try await Self.frontman(to: a.port, kind: .tcp)
        defer { Task { await frontman.stop() } }
        let port = frontman.ports[0].listening
        // A kept connection, answered and idle since.
        let idle = try await Self.connect(port)
        try await idle.executeThenClose { input, output in
            var answers = input.makeAsyncIterator()
            try await output.write(ByteBuffer(string: "first\n"))
            #expect(try await answers.next().map { String(buffer: $0) } == "A first\n")
            // Nothing asked: the hold does not wait for anything.
            await frontman.gate.hold()
            let nothing = await frontman.gate.quiesce(upTo: .seconds(2))
            #expect(nothing.unanswered == 0 && nothing.waited < .milliseconds(50), "\(nothing)")
            await frontman.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: a.port]))

            // Asked a moment before the hold: the gate waits for its answer.
            try await output.write(ByteBuffer(string: "second\n"))
            try await Self.until(received, has: 1)
            await frontman.gate.hold()
            let quiet = await frontman.gate.quiesce(upTo: .seconds(2))
            #expect(quiet.unanswered == 0, "\(quiet)")
            #expect(quiet.waited >= .milliseconds(50) && quiet.waited < .seconds(1), "\(quiet)")
            #expect(try await answers.next().map { String(buffer: $0) } == "A second\n")
            await frontman.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: a.port]))

            // A bound shorter than the answer: it says one is still unanswered.
            try await output.write(ByteBuffer(string: "third\n"))
            try await Self.until(received, has: 1)
            await frontman.gate.hold()
            let short = await frontman.gate.quiesce(upTo: .milliseconds(20))
            #expect(short.unanswered == 1 && short.waited >= .milliseconds(20), "\(short)")
            await frontman.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: a.port]))
            #expect(try await answers.next().map { String(buffer: $0) } == "A third\n")
        }
    }

    @Test("a new TCP connection counts as waiting for the service from the moment it opens, before its client's bytes are read")
    func quiesceCountsANewConnection() async throws {
        let a = try await Self.lineService("A")
        defer { a.task.cancel() }
        let frontman = try await Self.frontman(to: a.port, kind: .tcp)
        defer { Task { await frontman.stop() } }
        // Opened, nothing sent: it waits (the client may be about to speak) — up to the bound.
        let silent = try await Self.connect(frontman.ports[0].listening)
        try await Task.sleep(for: .milliseconds(100))
        await frontman.gate.hold()
        let quiet = await frontman.gate.quiesce(upTo: .milliseconds(40))
        #expect(quiet.unanswered == 1 && quiet.waited >= .milliseconds(40), "\(quiet)")
        try await silent.channel.close()
    }

    @Test("between the hold and the freeze the gate waits for the answer's head of an HTTP request the service already has")
    func quiesceWaitsForHTTPAnswers() async throws {
        let received = Concurrency()
        let a = try await Self.service("A", delay: .milliseconds(150), concurrency: received)
        defer { a.task.cancel() }
        let frontman = try await Self.frontman(to: a.port)
        defer { Task { await frontman.stop() } }
        let slow = Task { try await Self.get(frontman, "/slow") }
        try await Self.until(received, has: 1)
        await frontman.gate.hold()
        let quiet = await frontman.gate.quiesce(upTo: .seconds(2))
        #expect(quiet.unanswered == 0 && quiet.waited >= .milliseconds(50) && quiet.waited < .seconds(1), "\(quiet)")
        await frontman.gate.release(to: FrontmanTarget(host: "127.0.0.1", ports: [80: a.port]))
        let answer = try await slow.value
        #expect(answer.status == 200 && answer.body == "A")
    }
}
