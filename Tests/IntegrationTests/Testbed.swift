import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import Testing
import UMSAPI
import Synchronization
import UMSModel
import UMSTrust

/// The two-system testbed that `scripts/testbed up` made (scripts/test brings it up and sets the
/// environment). These tests run real umsd Coordinators, real runc and CRIU, and move bytes over
/// the namespaced link; without a testbed they are skipped, and scripts/test never skips them.
struct Testbed {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }
    static var isUp: Bool { environment["UMS_TESTBED_A"] != nil && environment["UMS_TESTBED_B"] != nil }
    /// The orchestrators of A and B when the testbed was brought up with different ones
    /// (`UMS_TESTBED_KINDS=podman,docker`).
    static var kinds: (OrchestratorKind, OrchestratorKind)? {
        let parts = (environment["UMS_TESTBED_KINDS"] ?? "").split(separator: ",").compactMap { OrchestratorKind(rawValue: String($0)) }
        return parts.count == 2 ? (parts[0], parts[1]) : nil
    }
    /// The testbed's B corrupts what it receives, so every restore there fails (rollback tests).
    static var restoreFailsOnB: Bool { environment["UMS_TESTBED_FAILING_B"] == "1" }

    let a: CoordinatorClient
    let b: CoordinatorClient
    let aURL: String
    let bURL: String
    let directory: String
    let rootfs: String

    init() throws {
        let environment = Self.environment
        aURL = try #require(environment["UMS_TESTBED_A"])
        bURL = try #require(environment["UMS_TESTBED_B"])
        directory = environment["UMS_TESTBED_DIR"] ?? "/run/ums-testbed"
        rootfs = try #require(environment["UMS_COUNTER_ROOTFS"], "scripts/test sets UMS_COUNTER_ROOTFS")
        a = CoordinatorClient(baseURL: aURL, token: try Self.token("\(directory)/a/token"), http: try Self.coordinatorHTTP())
        b = CoordinatorClient(baseURL: bURL, token: try Self.token("\(directory)/b/token"), http: try Self.coordinatorHTTP())
    }

    /// The client that speaks to the Coordinators: TLS, trusting the testbed's certificates
    /// (`UMS_TESTBED_CA`), optionally presenting an identity (a peer's).
    static func coordinatorHTTP(certificate: String? = nil, key: String? = nil) throws -> HTTPClient {
        let ca = try #require(environment["UMS_TESTBED_CA"], "scripts/testbed up prints CA=")
        let name = "\(ca)|\(certificate ?? "-")"
        return try clients.withLock { clients in
            if let client = clients[name] { return client }
            let tls = try TLSSettings.client(trusting: ca, certificate: certificate, key: key)
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPClient.Configuration(tlsConfiguration: tls))
            clients[name] = client
            return client
        }
    }

    /// One client per identity for the whole run (they live as long as the test process).
    static let clients = Mutex<[String: HTTPClient]>([:])

    static func token(_ path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The counter's root filesystem made migratable (`ums image migratable`), for the
    /// service-level approach.
    static func migratableRootfs() throws -> String {
        try #require(environment["UMS_COUNTER_MIGRATABLE_ROOTFS"], "scripts/test sets UMS_COUNTER_MIGRATABLE_ROOTFS")
    }

    /// Starts the counter service on A, published on `port`, and waits until it answers.
    func runCounter(_ name: String, port: Int, arguments: [String] = [], rootfs: String? = nil, nested: Bool = false) async throws -> ContainerView {
        let view = try await a.run(RunRequest(
            name: name, rootfs: rootfs ?? self.rootfs, command: ["/bin/counter", "--port", "8080"] + arguments, publish: ["\(port):8080"],
            nested: nested ? true : nil
        ))
        _ = try await waitForCount(at: "\(aHost):\(port)", atLeast: 1)
        return view
    }

    var aHost: String { URL(string: aURL)?.host ?? "" }
    var bHost: String { URL(string: bURL)?.host ?? "" }

    /// The counter's value at `endpoint` (host:port).
    func count(at endpoint: String, path: String = "/count", timeout: TimeAmount = .seconds(10)) async throws -> Int {
        // A new connection each time: a kept one stays on whichever Frontman the port was
        // redirected to when it opened, and tests remove and re-create services on the same ports.
        var request = HTTPClientRequest(url: "http://\(endpoint)\(path)")
        request.headers.add(name: "Connection", value: "close")
        let response = try await HTTPClient.shared.execute(request, timeout: timeout)
        let body = try await response.body.collect(upTo: 1024)
        guard response.status == .ok, let value = Int(String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw UMSError(.internalError, "counter at \(endpoint) answered \(response.status)")
        }
        return value
    }

    /// memhog's checksum of its memory now, and the one it computed when it filled it.
    func checksum(at endpoint: String) async throws -> (now: String, initial: String) {
        var request = HTTPClientRequest(url: "http://\(endpoint)/checksum")
        request.headers.add(name: "Connection", value: "close")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let words = String(buffer: try await response.body.collect(upTo: 1024)).split(whereSeparator: \.isWhitespace).map(String.init)
        guard response.status == .ok, words.count == 2 else {
            throw UMSError(.internalError, "memhog at \(endpoint) answered \(response.status)")
        }
        return (words[0], words[1])
    }

    func waitForCount(at endpoint: String, atLeast minimum: Int, timeout: Duration = .seconds(10)) async throws -> Int {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let value = try? await count(at: endpoint), value >= minimum { return value }
            guard ContinuousClock.now < deadline else {
                throw UMSError(.timeout, "counter at \(endpoint) did not reach \(minimum) in \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Asks `client` (the source) to migrate and waits for the migration to end.
    func migrated(_ request: MigrateRequest, by client: CoordinatorClient) async throws -> MigrationRecord {
        let accepted = try await client.migrate(request)
        return try await waitForMigration(accepted.id, on: client)
    }

    func waitForMigration(_ id: String, on client: CoordinatorClient, timeout: Duration = .seconds(60)) async throws -> MigrationRecord {
        let deadline = ContinuousClock.now + timeout
        while true {
            let record = try await client.migration(id)
            if [.completed, .rolledBack, .failed].contains(record.status) { return record }
            guard ContinuousClock.now < deadline else { throw UMSError(.timeout, "migration \(id) did not finish") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// After a migration the source runs nothing: its Frontman only forwards the service's
    /// clients to the destination (until the endpoint record settles).
    func onlyForwards(_ client: CoordinatorClient, service: String, to host: String) async throws -> Bool {
        guard try await !names(on: client).contains(service) else { return false }
        let view = try await client.frontmen().first { $0.service == service }
        return view?.role == .forwarding && view?.target == host
    }

    func names(on client: CoordinatorClient) async throws -> [String] {
        try await client.containers().map(\.container.name)
    }

    /// Network namespaces a system made for containers (`ums-<system>-<name>`).
    func namespaces(system: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []).filter { $0.hasPrefix("ums-\(system)-") }.sorted()
    }

    /// A file the container wrote into its own root filesystem, read on the host.
    func containerFile(system: String, container: String, path: String) -> String? {
        try? String(contentsOfFile: "\(directory)/\(system)/state/containers/\(container)/upper\(path)", encoding: .utf8)
    }

    /// The entries of a directory the container made in its own root filesystem, read on the host.
    func containerDirectory(system: String, container: String, path: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(directory)/\(system)/state/containers/\(container)/upper\(path)")) ?? []).sorted()
    }

    /// Processes whose cgroup lies below `path` (e.g. `/ums/tbb/NAME/`), in the memory hierarchy.
    func processes(inCgroupBelow path: String) -> [Int] {
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int.init)
        return pids.filter { pid in
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return false }
            return text.split(separator: "\n").contains { $0.contains(":memory:") && $0.contains(path) }
        }
    }

    func cleanUp(_ name: String) async {
        try? await a.remove(name)
        try? await b.remove(name)
    }
}

/// Runs a command (an engine's own CLI, as a user would) on a thread of its own, so the test's
/// cooperative threads stay free; returns its standard output, or throws with its error output.
func command(_ executable: String, _ arguments: [String], input: String? = nil) async throws -> String {
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            let output = Pipe(), errors = Pipe()
            process.standardOutput = output
            process.standardError = errors
            if let input {
                process.standardInput = FileHandle(forReadingAtPath: input)
            }
            do {
                try process.run()
                let out = output.fileHandleForReading.readDataToEndOfFile()
                let err = errors.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                guard process.terminationStatus == 0 else {
                    continuation.resume(throwing: UMSError(.internalError, "\(executable) \(arguments.joined(separator: " ")): \(String(decoding: err, as: UTF8.self))"))
                    return
                }
                continuation.resume(returning: String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            } catch {
                continuation.resume(throwing: error)
            }
        }.start()
    }
}

extension Testbed {
    /// Starts B's umsd again (same state, flags and namespace), with these faults for this run.
    static func restartB(faults: [String]) async throws {
        try await restart("b", faults.flatMap { ["--fault", $0] })
    }

    /// Starts a system's umsd again with `flags` added for this run (`scripts/testbed start`).
    /// The restarted umsd must not keep any descriptor of this process's (Foundation waits for
    /// them to close): the script runs with every descriptor above 2 closed and its output to
    /// /dev/null. (`flags` are the tests' own constants and paths.)
    static func restart(_ system: String, _ flags: [String]) async throws {
        let closeAll = #"for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done 2>/dev/null; "#
        _ = try? await command("/bin/bash", ["-c", closeAll + "exec scripts/testbed kill \(system) >/dev/null 2>&1"])
        _ = try await command("/bin/bash", ["-c", closeAll + "exec scripts/testbed start \(system) " + flags.joined(separator: " ") + " >/dev/null 2>&1"])
    }
}
