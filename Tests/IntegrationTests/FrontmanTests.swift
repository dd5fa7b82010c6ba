import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import UMSAPI
import UMSLoad
import UMSModel

/// The Frontman during real migrations on the testbed: clients of a service that moves from A to
/// B see a pause, not a failure. memhog answers HTTP (`/count`) and a line protocol (`count`).
@Suite(.serialized, .enabled(if: Testbed.isUp, "needs the two-system testbed (scripts/test brings it up)"))
struct FrontmanIntegrationTests {
    static let memoryMiB = "64"

    func runMemhog(_ testbed: Testbed, name: String, http: Int, line: Int) async throws {
        let rootfs = try #require(Testbed.environment["UMS_MEMHOG_ROOTFS"], "scripts/test sets UMS_MEMHOG_ROOTFS")
        _ = try await testbed.a.run(RunRequest(
            name: name, rootfs: rootfs, command: ["/bin/memhog", "--mib", Self.memoryMiB, "--port", "8080", "--line-port", "9090"],
            publish: ["\(http):8080/http", "\(line):9090"]
        ))
        _ = try await testbed.waitForCount(at: "\(testbed.aHost):\(http)", atLeast: 1)
    }

    /// Twice, on the same published port: the first service stays at B until the second one's
    /// migration starts and is removed just before, so the second migration's Frontmen replace
    /// the first's on both systems while requests flow. (It does not catch a kept connection
    /// pinned to a retired Frontman: the new container got the old one's address, so such a
    /// connection still reached a service; see docs/frontman.md for why requests to another system
    /// go on new connections.)
    @Test("bounded HTTP load through the endpoint while the service migrates: no request fails, later ones reach B", arguments: [1, 2])
    func httpLoadDuringMigration(round: Int) async throws {
        let testbed = try Testbed()
        let name = "fm-http-\(round)"
        await testbed.cleanUp(name)
        if round == 2 { try? await testbed.a.remove("fm-http-1") }
        defer { if round == 2 { Task { await testbed.cleanUp(name); await testbed.cleanUp("fm-http-1") } } }
        try await runMemhog(testbed, name: name, http: 18190, line: 18191)
        let hosts = "\(testbed.directory)/a/state/endpoints.hosts"
        let recorded = try String(contentsOfFile: hosts, encoding: .utf8)
        #expect(recorded.contains("\(testbed.aHost) \(name)\n"), "the record names A before the migration")

        // 1000 requests at 200/s (5 s); the migration starts after 1 s. The client resolves the
        // service's name in A's endpoint record before each request, as it would follow DNS.
        let client = LoadGenerator.makeClient()
        let load = Task {
            try await LoadGenerator(url: "http://\(name):18190/count", rate: 200, count: 1000, hostsFile: hosts).run(http: client)
        }
        try await Task.sleep(for: .seconds(1))
        if round == 2 { try await testbed.b.remove("fm-http-1") }
        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.message ?? "")")
        // A only forwards now (until the record settles, then its Frontman goes).
        #expect(try await testbed.onlyForwards(testbed.a, service: name, to: testbed.bHost))
        let report = try await load.value
        defer { Task { try? await client.shutdown() } }

        let failures = report.failed.prefix(3).map { "\($0.sentAt)s: \($0.status.map(String.init) ?? "-") \($0.error ?? $0.body ?? "")" }
        #expect(report.failed.isEmpty, "failed requests: \(report.failed.count): \(failures)")
        #expect(report.sent == 1000)
        // After the migration the record says B, and the requests go there.
        #expect(try await testbed.a.endpoint(name).address == testbed.bHost)
        #expect(try String(contentsOfFile: hosts, encoding: .utf8).contains("\(testbed.bHost) \(name)\n"))
        // Requests after the migration, resolved the same way, reach B (a second bounded load:
        // how much of the first one came after the record moved depends on the machine's speed).
        let after = try await LoadGenerator(url: "http://\(name):18190/count", rate: 100, count: 100, hostsFile: hosts).run(http: client)
        #expect(after.failed.isEmpty && after.perAddress == [testbed.bHost: 100], "\(after.perAddress), \(after.failed.count) failed")
        // The counter went on: B's count now is above every count any request saw (a service
        // that lost its state, or ran twice, would have answered more than it has now).
        let counts = report.samples.compactMap { $0.body.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } }
        #expect(counts.count == 1000)
        let now = try await testbed.count(at: "\(testbed.bHost):18190")
        #expect(now >= counts.max() ?? .max)
        // What B answered afterwards continues what A answered before the migration began.
        let answeredBeforeMigration = report.samples.filter { $0.sentAt + $0.latency < 0.9 }.compactMap { $0.body.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } }
        let fromB = after.samples.compactMap { $0.body.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } }
        #expect((fromB.min() ?? 0) >= (answeredBeforeMigration.max() ?? .max), "B continued A's count")
        // A's Frontman held the requests that came during the freeze and refused none (the
        // migration record says so; the Frontman itself may have retired by now).
        let summary = try #require(record.events.first { $0.message.hasPrefix("frontman: held ") }?.message)
        let held = Int(summary.dropFirst("frontman: held ".count).prefix { $0.isNumber }) ?? 0
        #expect(held > 0 && summary.contains("refused 0"), "\(summary)")
        let downtime = try #require(record.downtime)
        print("frontman http: \(report.sent) requests, 0 failed, max latency \(report.maxLatency) s, downtime \(downtime) s, held \(held)")
    }

    @Test("requests in flight inside the service when it freezes: a GET is sent again at B, a POST gets 502 saying why")
    func inFlightRequests() async throws {
        let testbed = try Testbed()
        let name = "fm-flight"
        await testbed.cleanUp(name)
        defer { Task { await testbed.cleanUp(name) } }
        try await runMemhog(testbed, name: name, http: 18194, line: 18195)
        // memhog answers /slow 5 s after it was asked: these two are inside the service when it freezes.
        func slow(_ method: HTTPMethod) async throws -> (status: Int, frontman: String?, body: String) {
            var request = HTTPClientRequest(url: "http://\(testbed.aHost):18194/slow?ms=5000")
            request.method = method
            request.headers.add(name: "Connection", value: "close")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
            let body = try await response.body.collect(upTo: 1 << 16)
            return (Int(response.status.code), response.headers["X-UMS-Frontman"].first, String(buffer: body))
        }
        let get = Task { try await slow(.GET) }
        let post = Task { try await slow(.POST) }
        try await Task.sleep(for: .milliseconds(300))
        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.message ?? "")")
        let retried = try await get.value
        #expect(retried.status == 200, "the GET was sent again at B: \(retried)")
        let refused = try await post.value
        #expect(refused.status == 502 && refused.frontman == "in-flight-not-retried", "\(refused)")
        #expect(refused.body.contains("not idempotent"))
        let frontman = try #require(try await testbed.a.frontmen().first { $0.service == name })
        #expect(frontman.counts.retried >= 1 && frontman.counts.failedInFlight == 1, "\(frontman.counts)")
    }

    typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>

    static func connect(_ host: String, _ port: Int) async throws -> Connection {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: host, port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try Connection(wrappingChannelSynchronously: channel) }
        }
    }

    /// Sends `count` on a new connection and returns the number answered.
    static func askCount(_ host: String, _ port: Int) async throws -> Int? {
        let connection = try await connect(host, port)
        return try await connection.executeThenClose { input, output in
            try await output.write(ByteBuffer(string: "count\n"))
            var iterator = input.makeAsyncIterator()
            guard let answer = try await iterator.next() else { return nil }
            return Int(String(buffer: answer).split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "")
        }
    }

    @Test("TCP connections opened while the service is frozen are held, then served by B")
    func heldTCPConnectionsAreServedByB() async throws {
        let testbed = try Testbed()
        let name = "fm-tcp"
        await testbed.cleanUp(name)
        defer { Task { await testbed.cleanUp(name) } }
        try await runMemhog(testbed, name: name, http: 18192, line: 18193)
        let before = try #require(try await Self.askCount(testbed.aHost, 18193))

        let accepted = try await testbed.a.migrate(MigrateRequest(container: name, destination: testbed.bURL))
        // Wait for the freeze: A's Frontman holds from then on.
        let deadline = ContinuousClock.now + .seconds(30)
        while try await testbed.a.frontmen().first(where: { $0.service == name })?.mode != .holding {
            guard ContinuousClock.now < deadline else { Issue.record("the Frontman never held"); return }
            try await Task.sleep(for: .milliseconds(5))
        }
        let held = (0..<3).map { _ in Task { try await Self.askCount(testbed.aHost, 18193) } }
        let record = try await testbed.waitForMigration(accepted.id, on: testbed.a)
        #expect(record.status == .completed, "\(record.error?.message ?? "")")
        for connection in held {
            let answer = try await connection.value
            #expect((answer ?? -1) >= before, "a held connection is answered by the service, its count continued")
        }
        let frontman = try #require(try await testbed.a.frontmen().first { $0.service == name })
        #expect(frontman.counts.held >= 3 && frontman.counts.released >= 3, "\(frontman.counts)")
        // A no longer runs it: the answers came from B.
        #expect(try await !testbed.names(on: testbed.a).contains(name))
        #expect(try await testbed.names(on: testbed.b).contains(name))
        #expect(try await Self.askCount(testbed.bHost, 18193) ?? -1 >= before)
    }
}
