import AsyncHTTPClient
import Foundation
import Synchronization
import UMSDNS
import UMSModel
import NIOCore

/// A bounded, open-loop HTTP load: `count` GET requests at `rate` per second, each sent on time
/// whatever the ones before are doing (a held request does not slow the next), each timed. With a
/// hosts file (UMS's endpoint record) the URL's host name is looked up there before every request,
/// the way a client following DNS would see a migrated service move; with a DNS server, the name
/// is resolved there (each answer kept for its TTL), as a client following DNS does.
public struct LoadGenerator: Sendable {
    public var url: String
    public var rate: Double
    public var count: Int
    public var hostsFile: String?
    /// `IP[:PORT]` of a DNS server to resolve the URL's host name through.
    public var dnsServer: String?
    public var timeout: TimeAmount

    public init(url: String, rate: Double, count: Int, hostsFile: String? = nil, dnsServer: String? = nil, timeout: TimeAmount = .seconds(30)) {
        self.url = url
        self.rate = rate
        self.count = count
        self.hostsFile = hostsFile
        self.dnsServer = dnsServer
        self.timeout = timeout
    }

    /// One request's outcome.
    public struct Sample: Sendable, Codable {
        /// Seconds after the load started that it was sent.
        public var sentAt: Double
        public var latency: Double
        /// The HTTP status, or nil when no response came.
        public var status: Int?
        public var address: String
        public var error: String?
        public var body: String?

        public var succeeded: Bool { status.map { (200..<300).contains($0) } ?? false }
    }

    public struct Report: Sendable, Codable {
        public var samples: [Sample]
        public var seconds: Double
        /// When the load started (seconds since 1970, this machine's clock): with `sentAt` and
        /// `latency`, a sample's place next to a migration record's events.
        public var startedAt: Double?

        public var sent: Int { samples.count }
        public var failed: [Sample] { samples.filter { !$0.succeeded } }
        public var maxLatency: Double { samples.map(\.latency).max() ?? 0 }
        public var achievedRate: Double { seconds > 0 ? Double(sent) / seconds : 0 }

        public func percentile(_ p: Double) -> Double {
            let sorted = samples.map(\.latency).sorted()
            guard !sorted.isEmpty else { return 0 }
            return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p))]
        }

        /// Requests per address the name resolved to.
        public var perAddress: [String: Int] {
            samples.reduce(into: [:]) { $0[$1.address, default: 0] += 1 }
        }
    }

    /// A client whose pool does not queue requests: each request gets a connection when it is
    /// due (up to `connections`), so a request held by the Frontman never delays the next.
    public static func makeClient(connections: Int = 2048) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func run(http: HTTPClient) async throws -> Report {
        guard let parsed = URLComponents(string: url), let host = parsed.host else {
            throw LoadError("invalid URL '\(url)'")
        }
        guard rate > 0, count > 0 else { throw LoadError("rate and count must be positive") }
        let resolver = HostsResolver(file: hostsFile)
        let dns = try dnsServer.map { try DNSResolver(server: $0) }
        let clock = ContinuousClock()
        let start = clock.now
        let startedAt = Date().timeIntervalSince1970
        let interval = 1.0 / rate
        let samples = try await withThrowingTaskGroup(of: Sample.self) { group in
            for index in 0..<count {
                try await clock.sleep(until: start + .microseconds(Int64(Double(index) * interval * 1e6)))
                let address = try await dns?.resolve(host) ?? resolver.resolve(host)
                var components = parsed
                components.host = address
                let target = components.string ?? url
                group.addTask {
                    let sent = clock.now
                    var request = HTTPClientRequest(url: target)
                    request.headers.add(name: "Host", value: parsed.port.map { "\(host):\($0)" } ?? host)
                    var sample = Sample(sentAt: (sent - start).seconds, latency: 0, status: nil, address: address)
                    do {
                        let response = try await http.execute(request, timeout: timeout)
                        let body = try await response.body.collect(upTo: 1 << 20)
                        sample.status = Int(response.status.code)
                        sample.body = String(buffer: body)
                    } catch {
                        sample.error = "\(error)"
                    }
                    sample.latency = (clock.now - sent).seconds
                    return sample
                }
            }
            var all: [Sample] = []
            for try await sample in group { all.append(sample) }
            return all.sorted { $0.sentAt < $1.sentAt }
        }
        return Report(samples: samples, seconds: (clock.now - start).seconds, startedAt: startedAt)
    }
}

/// Looks names up in a hosts-format file (`ADDRESS NAME…` lines), re-reading it when it changes.
final class HostsResolver: Sendable {
    let file: String?
    /// The file's modification time and its table, as last read; requests resolve concurrently.
    private let cache = Mutex<(modified: Date?, table: [String: String])>((nil, [:]))

    init(file: String?) {
        self.file = file
    }

    func resolve(_ host: String) throws -> String {
        guard let file else { return host }
        let attributes = try? FileManager.default.attributesOfItem(atPath: file)
        let stamp = attributes?[.modificationDate] as? Date
        let address = cache.withLock { cache -> String? in
            if stamp != cache.modified || cache.table.isEmpty {
                cache = (stamp, Self.parse((try? String(contentsOfFile: file, encoding: .utf8)) ?? ""))
            }
            return cache.table[host]
        }
        guard let address else {
            throw LoadError("'\(host)' is not in \(file)")
        }
        return address
    }

    static func parse(_ text: String) -> [String: String] {
        var table: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let words = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0].split(whereSeparator: \.isWhitespace)
            guard words.count >= 2 else { continue }
            for name in words.dropFirst() { table[String(name)] = String(words[0]) }
        }
        return table
    }
}

public struct LoadError: Error, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
