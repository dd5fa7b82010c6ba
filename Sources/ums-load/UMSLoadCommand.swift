import ArgumentParser
import AsyncHTTPClient
import Foundation
import UMSLoad

/// `ums-load`: a bounded HTTP load for the Frontman benchmark and tests. It only wires UMSLoad.
@main
struct UMSLoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ums-load",
        abstract: "Send a fixed number of GET requests at a fixed rate and report failures and latency.",
        discussion: """
            Open loop: each request leaves on schedule whatever the earlier ones are doing. With --hosts, the URL's host \
            name is looked up in that hosts-format file (UMS's endpoint record) before every request; with --dns-server, \
            through that DNS server (each answer kept for its TTL).
            """
    )

    @Argument(help: "The URL, e.g. http://198.18.0.1:8080/count or http://memhog:8080/count with --hosts.")
    var url: String

    @Option(help: "Requests per second.")
    var rate: Double = 200

    @Option(help: "How many requests in all (the load is bounded).")
    var count: Int = 1000

    @Option(help: "A hosts-format file to resolve the URL's host name in before each request.")
    var hosts: String?

    @Option(name: .customLong("dns-server"), help: "IP[:PORT] of a DNS server to resolve the URL's host name through (each answer kept for its TTL).")
    var dnsServer: String?

    @Option(help: "Seconds a request may take before it counts as failed.")
    var timeout: Int64 = 30

    @Flag(help: "Print the report as JSON (every sample).")
    var json = false

    func validate() throws {
        guard rate > 0, rate <= 5000 else { throw ValidationError("--rate must be in 1...5000") }
        guard count > 0, count <= 1_000_000 else { throw ValidationError("--count must be in 1...1000000") }
    }

    func run() async throws {
        let http = LoadGenerator.makeClient()
        let report: LoadGenerator.Report
        do {
            report = try await LoadGenerator(url: url, rate: rate, count: count, hostsFile: hosts, dnsServer: dnsServer, timeout: .seconds(timeout)).run(http: http)
        } catch {
            try? await http.shutdown()
            throw error
        }
        try await http.shutdown()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(String(format: "sent %d in %.2f s (%.0f/s); failed %d; latency p50 %.1f ms, p99 %.1f ms, max %.1f ms",
                         report.sent, report.seconds, report.achievedRate, report.failed.count,
                         report.percentile(0.5) * 1000, report.percentile(0.99) * 1000, report.maxLatency * 1000))
            print("by address: " + report.perAddress.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            for sample in report.failed.prefix(5) {
                print("failed at \(String(format: "%.3f", sample.sentAt)) s: \(sample.status.map(String.init) ?? "-") \(sample.error ?? sample.body ?? "")")
            }
        }
        if !report.failed.isEmpty { throw ExitCode(1) }
    }
}
