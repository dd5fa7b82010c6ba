import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
import UMSAPI
@testable import UMSCoordination
import UMSDecision
import UMSModel

/// What a peer holding a valid token sends, at its worst, through the real router: each request is
/// refused with its specific status and reason, the Coordinator still answers, nothing is created
/// (no container, no incoming migration, no directory), and a canary tree outside the state
/// directory is unchanged byte for byte.
@Suite("Hostile input from a peer or client")
struct HostileInputTests {
    static let token = "hostile-test-token"
    static let coordinatorPort = 7000

    /// A policy stricter than the standard one, for the rules the standard one does not set.
    static let strict: AdmissionPolicy = {
        var policy = AdmissionPolicy.standard
        policy.allowNested = false
        policy.allowSeccompUnconfined = false
        policy.maxMemoryBytes = 1 << 30
        policy.maxCheckpointBytes = 16
        return policy
    }()

    /// A valid prepare request as JSON, to be damaged by each case.
    static func prepare(id: String = "m-abc123", _ change: (inout [String: Any], inout [String: Any]) -> Void = { _, _ in }) -> Data {
        var specification: [String: Any] = [
            "name": "svc", "image": ["digest": "sha256:" + String(repeating: "a", count: 64)], "command": ["/bin/counter"],
            "environment": ["A=1"], "workingDirectory": "/", "ports": [["hostPort": 18080, "containerPort": 8080, "proto": "tcp"]],
            "limits": ["memoryBytes": 64 << 20], "processCount": 1, "labels": ["team": "x"],
        ]
        var request: [String: Any] = ["id": id, "approach": "orchestrator", "source": ["name": "a", "url": "http://198.18.0.1:7000"]]
        change(&request, &specification)
        request["specification"] = specification
        return (try? JSONSerialization.data(withJSONObject: request)) ?? Data()
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var method: HTTPRequest.Method = .post
        var path = "/v1/peer/migrations"
        var body: Data
        var status: HTTPResponse.Status
        var reason: String
        var policy: AdmissionPolicy = .standard
        var authorization: String? = "Bearer \(HostileInputTests.token)"
        var testDescription: String { name }
    }

    static func spec(_ name: String, _ status: HTTPResponse.Status, _ reason: String, policy: AdmissionPolicy = .standard, _ change: @escaping (inout [String: Any]) -> Void) -> Case {
        Case(name: name, body: prepare { _, specification in change(&specification) }, status: status, reason: reason, policy: policy)
    }

    static func id(_ name: String, _ id: String) -> Case {
        Case(name: name, body: prepare(id: id), status: .badRequest, reason: "invalid migration id")
    }

    static let cases: [Case] = [
        // Traversal and hostile names in ids and names.
        id("id with ../", "../../../../tmp/victim"),
        id("id m-../", "m-../../x"),
        id("id with an encoded traversal", "m-%2e%2e%2fx"),
        id("id with NUL", "m-a\u{0}b"),
        id("id very long", "m-" + String(repeating: "a", count: 1000)),
        id("id in upper case", "M-1"),
        id("id with a slash", "m-a/b"),
        spec("name with ../", .badRequest, "invalid container name") { $0["name"] = "../x" },
        spec("name absolute", .badRequest, "invalid container name") { $0["name"] = "/etc" },
        spec("name with NUL", .badRequest, "invalid container name") { $0["name"] = "a\u{0}b" },
        spec("name very long", .badRequest, "invalid container name") { $0["name"] = String(repeating: "a", count: 300) },
        spec("digest with a path", .badRequest, "invalid image digest") { $0["image"] = ["digest": "sha256:../../x"] },
        // Admission rules.
        spec("capability not allowed", .forbidden, "rule allowedCapabilities") { $0["security"] = ["addCapabilities": ["CAP_SYS_MODULE"]] },
        spec("capability that is not a name", .badRequest, "invalid capability") { $0["security"] = ["addCapabilities": ["CAP_SYS_ADMIN; reboot"]] },
        spec("too many capabilities", .badRequest, "capabilities") { $0["security"] = ["addCapabilities": Array(repeating: "CAP_KILL", count: 60)] },
        spec("nested where not allowed", .forbidden, "rule allowNested", policy: strict) { $0["security"] = ["runsContainers": true] },
        spec("no seccomp where not allowed", .forbidden, "rule allowSeccompUnconfined", policy: strict) { $0["security"] = ["seccompUnconfined": true] },
        spec("memory beyond the policy", .forbidden, "rule maxMemoryBytes", policy: strict) { $0["limits"] = ["memoryBytes": 2 << 30] },
        spec("no memory limit where one is required", .forbidden, "rule maxMemoryBytes", policy: strict) { $0["limits"] = [String: Any]() },
        Case(name: "concurrent incoming beyond the policy", body: prepare(), status: .forbidden, reason: "rule maxConcurrentIncoming",
             policy: { var p = AdmissionPolicy.standard; p.maxConcurrentIncoming = 0; return p }()),
        // Ports.
        spec("host port 22", .forbidden, "outside 1024-65535") { $0["ports"] = [["hostPort": 22, "containerPort": 22, "proto": "tcp"]] },
        spec("the Coordinator's own port", .forbidden, "reserved") { $0["ports"] = [["hostPort": coordinatorPort, "containerPort": 80, "proto": "tcp"]] },
        spec("a port of UMS's agent range", .forbidden, "reserved") { $0["ports"] = [["hostPort": 27050, "containerPort": 80, "proto": "tcp"]] },
        spec("port 0", .badRequest, "1-65535") { $0["ports"] = [["hostPort": 0, "containerPort": 80, "proto": "tcp"]] },
        spec("port 70000", .badRequest, "1-65535") { $0["ports"] = [["hostPort": 70000, "containerPort": 80, "proto": "tcp"]] },
        spec("iptables injection through the protocol", .badRequest, "only tcp") { $0["ports"] = [["hostPort": 18080, "containerPort": 80, "proto": "tcp -j ACCEPT\n-A INPUT"]] },
        spec("udp", .badRequest, "only tcp") { $0["ports"] = [["hostPort": 18080, "containerPort": 80, "proto": "udp"]] },
        spec("an unknown application", .badRequest, "application") { $0["ports"] = [["hostPort": 18080, "containerPort": 80, "proto": "tcp", "application": "ftp"]] },
        spec("one host port twice", .badRequest, "published twice") { $0["ports"] = [["hostPort": 18080, "containerPort": 80, "proto": "tcp"], ["hostPort": 18080, "containerPort": 81, "proto": "tcp"]] },
        // Numbers at their extremes.
        spec("cpus 1e300", .badRequest, "invalid CPU limit") { $0["limits"] = ["cpus": 1e300] },
        spec("negative cpus", .badRequest, "invalid CPU limit") { $0["limits"] = ["cpus": -1] },
        spec("negative memory", .badRequest, "invalid memory limit") { $0["limits"] = ["memoryBytes": -5] },
        spec("memory of 2^62", .badRequest, "invalid memory limit") { $0["limits"] = ["memoryBytes": Int64(1) << 62] },
        spec("negative pids", .badRequest, "invalid PID limit") { $0["limits"] = ["pids": -1] },
        spec("negative process count", .badRequest, "invalid process count") { $0["processCount"] = -1 },
        // Environment, command, paths, labels.
        spec("an empty environment entry", .badRequest, "invalid environment entry") { $0["environment"] = [""] },
        spec("an environment entry without a name", .badRequest, "invalid environment entry") { $0["environment"] = ["=x"] },
        spec("an environment name with a space", .badRequest, "invalid environment entry") { $0["environment"] = ["A B=1"] },
        spec("an environment entry with NUL", .badRequest, "invalid environment entry") { $0["environment"] = ["A=\u{0}"] },
        spec("a relative working directory", .badRequest, "invalid working directory") { $0["workingDirectory"] = "tmp" },
        spec("a working directory with ..", .badRequest, "invalid working directory") { $0["workingDirectory"] = "/a/../../etc" },
        spec("no command", .badRequest, "invalid command") { $0["command"] = [String]() },
        spec("a label key with a newline", .badRequest, "invalid label") { $0["labels"] = ["a\nb": "x"] },
        spec("a label value with a newline", .badRequest, "invalid label") { $0["labels"] = ["a": "x\n1.2.3.4 evil"] },
        // Bodies and credentials.
        Case(name: "a body over 1 MiB", body: Data(repeating: 0x20, count: 2 << 20), status: .badRequest, reason: "larger than 1 MiB"),
        Case(name: "not JSON", body: Data("{{{".utf8), status: .badRequest, reason: "malformed request body"),
        Case(name: "an image digest with a path, in the route", method: .put, path: "/v1/peer/images/..%2F..%2Fetc", body: Data("x".utf8), status: .badRequest, reason: "invalid image digest"),
        Case(name: "files for a migration that does not exist", method: .put, path: "/v1/peer/migrations/m-nope/files/images", body: Data("x".utf8), status: .notFound, reason: "no incoming migration"),
        Case(name: "an image format that is not one", method: .get, path: "/v1/peer/images/sha256:" + String(repeating: "a", count: 64) + "?format=../x", body: Data(), status: .badRequest, reason: "invalid image format"),
        Case(name: "an engine image with a path for a digest", method: .put, path: "/v1/peer/images/..%2Fx?format=engine", body: Data("x".utf8), status: .badRequest, reason: "invalid image digest"),
        spec("a bind mount where none is allowed", .forbidden, "rule allowedBindPaths") { $0["binds"] = [["hostPath": "/etc", "destination": "/x", "readOnly": false]] },
        spec("a bind mount host path with ..", .badRequest, "invalid bind mount host path") { $0["binds"] = [["hostPath": "/srv/../etc", "destination": "/x", "readOnly": false]] },
        spec("a bind mount point with a colon", .badRequest, "invalid bind mount point") { $0["binds"] = [["hostPath": "/srv/a", "destination": "/x:/etc", "readOnly": false]] },
        spec("a volume with a traversal name", .badRequest, "invalid volume name") { $0["volumes"] = [["name": "../x", "destination": "/x", "readOnly": false]] },
        Case(name: "negative volume bytes", body: prepare { request, specification in
            request["volumeBytes"] = -1
            specification["volumes"] = [["name": "data", "destination": "/data", "readOnly": false]]
        }, status: .badRequest, reason: "invalid volume bytes"),
        Case(name: "volumes larger than allowed", body: prepare { request, specification in
            request["volumeBytes"] = 2 << 20
            specification["volumes"] = [["name": "data", "destination": "/data", "readOnly": false]]
        }, status: .forbidden, reason: "rule maxVolumeBytes", policy: { var p = AdmissionPolicy.standard; p.maxVolumeBytes = 1 << 20; return p }()),
        spec("a pod inside a pod", .badRequest, "a pod inside a pod") { specification in
            var member = specification
            member["name"] = "inner"
            member["pod"] = ["members": [specification], "sharedNamespaces": ["net"]]
            specification["pod"] = ["members": [member], "sharedNamespaces": ["net"]]
        },
        spec("a pod sharing a namespace that is not one", .badRequest, "shared namespaces") { specification in
            specification["pod"] = ["members": [specification], "sharedNamespaces": ["net", "../x"]]
        },
        spec("an image name with a traversal", .badRequest, "invalid image name") { $0["engine"] = ["madeBy": "docker", "entrypoint": [], "restartPolicy": "no", "imageName": "../../etc/x"] },
        spec("an image name that is an option", .badRequest, "invalid image name") { $0["engine"] = ["madeBy": "docker", "entrypoint": [], "restartPolicy": "no", "imageName": "-rm"] },
        spec("a tmpfs mount point with ..", .badRequest, "invalid tmpfs mount point") { $0["tmpfs"] = [["destination": "/a/../../etc"]] },
        spec("a tmpfs of negative size", .badRequest, "invalid tmpfs mount") { $0["tmpfs"] = [["destination": "/scratch", "sizeBytes": -1]] },
        spec("a pod of no containers", .badRequest, "invalid pod") { $0["pod"] = ["members": [], "sharedNamespaces": []] },
        Case(name: "a volume handling that is not one", body: prepare { request, _ in request["volumes"] = "../x" }, status: .badRequest, reason: "malformed request body"),
        Case(name: "a transfer mode that is not one", body: prepare { request, _ in request["mode"] = "sideways" }, status: .badRequest, reason: "malformed request body"),
        // Carried connections (issue 16): the address and the tunnel's end are checked as decoded.
        Case(name: "a carried address with an ip argument in it", body: prepare { request, _ in request["carry"] = ["address": "198.19.0.2 table 5", "tunnelAddress": "198.18.0.1"] }, status: .badRequest, reason: "invalid carried service address"),
        Case(name: "a carried address outside UMS's container range", body: prepare { request, _ in request["carry"] = ["address": "10.0.0.2", "tunnelAddress": "198.18.0.1"] }, status: .badRequest, reason: "invalid carried service address"),
        Case(name: "a tunnel ending on loopback", body: prepare { request, _ in request["carry"] = ["address": "198.19.0.2", "tunnelAddress": "127.0.0.1"] }, status: .badRequest, reason: "invalid tunnel address"),
        Case(name: "a carry refused by an operator who shares no migration network", body: prepare { request, _ in request["carry"] = ["address": "198.19.0.2", "tunnelAddress": "198.18.0.1"] }, status: .forbidden, reason: "rule migrationNetwork"),
        Case(name: "a connection handling that is not one", path: "/v1/migrations", body: Data(#"{"container":"x","destination":"https://198.18.0.2:7000","connections":"sometimes"}"#.utf8), status: .badRequest, reason: "malformed request body"),
        // Compression (issue 17): a policy that is not one, or not a string.
        Case(name: "a compression that is not one", path: "/v1/migrations", body: Data(#"{"container":"x","destination":"https://198.18.0.2:7000","compress":"brotli"}"#.utf8), status: .badRequest, reason: "malformed request body"),
        Case(name: "a compression that is a number", path: "/v1/migrations", body: Data(#"{"container":"x","destination":"https://198.18.0.2:7000","compress":9}"#.utf8), status: .badRequest, reason: "malformed request body"),
        // Placement (issue 18): constraints for a destination's cluster, checked as decoded.
        spec("a placement constraint that is no constraint", .badRequest, "invalid placement constraint") { $0["placement"] = ["node.hostname"] },
        spec("a placement constraint with a command in it", .badRequest, "invalid placement constraint") { $0["placement"] = ["node.hostname==$(reboot)"] },
        spec("too many placement constraints", .badRequest, "invalid placement") { $0["placement"] = Array(repeating: "node.role==worker", count: 17) },
        Case(name: "a migration's placement with a newline", path: "/v1/migrations", body: Data(#"{"container":"running","destination":"https://198.18.0.9:7000","placement":["node.hostname==a\nb"]}"#.utf8), status: .badRequest, reason: "invalid placement constraint"),
        Case(name: "a migration's placement that is a string", path: "/v1/migrations", body: Data(#"{"container":"x","destination":"https://198.18.0.2:7000","placement":"node.role==worker"}"#.utf8), status: .badRequest, reason: "malformed request body"),
        Case(name: "a volume route with a traversal name", method: .put, path: "/v1/peer/migrations/m-nope/volumes/..%2F..%2Fetc", body: Data("x".utf8), status: .badRequest, reason: "invalid volume name"),
        Case(name: "a host directory index that is not one", method: .put, path: "/v1/peer/migrations/m-nope/binds/-1", body: Data("x".utf8), status: .notFound, reason: "no incoming migration"),
        // Recovery and resolution routes.
        Case(name: "status of a traversal id", method: .get, path: "/v1/peer/migrations/..%2F..%2Fetc", body: Data(), status: .notFound, reason: "no incoming migration"),
        Case(name: "status of an unknown migration", method: .get, path: "/v1/peer/migrations/m-nope", body: Data(), status: .notFound, reason: "no incoming migration"),
        Case(name: "abort of an unknown migration", method: .delete, path: "/v1/peer/migrations/m-nope", body: Data(), status: .notFound, reason: "no incoming migration"),
        Case(name: "resolve a traversal id", path: "/v1/migrations/..%2Fx/resolve", body: Data(#"{"keep":"source"}"#.utf8), status: .badRequest, reason: "invalid migration id"),
        Case(name: "resolve keeping neither", path: "/v1/migrations/m-nope/resolve", body: Data(#"{"keep":"both"}"#.utf8), status: .badRequest, reason: "malformed request body"),
        Case(name: "resolve without a body", path: "/v1/migrations/m-nope/resolve", body: Data(), status: .badRequest, reason: "malformed request body"),
        Case(name: "resolve an unknown migration", path: "/v1/migrations/m-nope/resolve", body: Data(#"{"keep":"source","dryRun":false}"#.utf8), status: .notFound, reason: "no incoming migration"),
        Case(name: "a wrong token", body: prepare(), status: .unauthorized, reason: "invalid bearer token", authorization: "Bearer wrong"),
        Case(name: "no token", body: prepare(), status: .unauthorized, reason: "missing bearer token", authorization: nil),
    ]

    /// A directory outside the state directory, as a path traversal would find it.
    func canary() throws -> (String, [String: Data]) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ums-canary-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path + "/inner", withIntermediateDirectories: true)
        let files = ["victim": Data("do not touch".utf8), "inner/secret": Data((0..<256).map { UInt8($0) })]
        for (name, data) in files { try data.write(to: URL(fileURLWithPath: "\(path)/\(name)")) }
        return (path, files)
    }

    func snapshot(_ path: String) -> [String: Data] {
        var result: [String: Data] = [:]
        for case let name as String in FileManager.default.enumerator(atPath: path) ?? NSEnumerator() {
            if let data = FileManager.default.contents(atPath: "\(path)/\(name)") { result[name] = data }
        }
        return result
    }

    @Test("refused with its status and reason; nothing created, the canary untouched, the Coordinator still answers", arguments: cases)
    func hostile(_ hostile: Case) async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("ums-hostile-\(UUID().uuidString)").path
        let (canary, canaryFiles) = try canary()
        defer { try? FileManager.default.removeItem(atPath: state); try? FileManager.default.removeItem(atPath: canary) }
        let orchestrator = InMemoryOrchestrator(["running"])
        let coordinator = try Coordinator(
            name: "b", url: "http://198.18.0.2:\(Self.coordinatorPort)", orchestrator: orchestrator,
            approaches: [InMemoryApproach(orchestrator: orchestrator)], stateDirectory: state, advertiseHost: "198.18.0.2",
            http: HTTPClient.shared, peerTokens: [:], logger: Logger(label: "test"), admission: hostile.policy, reservedPorts: [Self.coordinatorPort]
        )
        let app = Application(router: buildRouter(coordinator: coordinator, token: Self.token))
        let stateBefore = snapshot(state)
        try await app.test(.router) { client in
            var headers: HTTPFields = [.contentType: "application/json"]
            if let authorization = hostile.authorization { headers[.authorization] = authorization }
            try await client.execute(uri: hostile.path, method: hostile.method, headers: headers, body: ByteBuffer(bytes: hostile.body)) { response in
                #expect(response.status == hostile.status, "\(hostile.name): \(String(buffer: response.body))")
                let error = try? UMSJSON.decoder().decode(ErrorBody.self, from: Data(buffer: response.body)).error
                #expect(error?.message.contains(hostile.reason) == true, "\(hostile.name): \(error?.message ?? String(buffer: response.body))")
            }
            // Still answering.
            try await client.execute(uri: "/v1/system", method: .get, headers: [.authorization: "Bearer \(Self.token)"]) { response in
                #expect(response.status == .ok)
            }
        }
        #expect(try await orchestrator.list().map(\.name) == ["running"], "nothing created, the running service untouched")
        #expect(try await orchestrator.inspect("running").migratingIn == nil)
        #expect(await coordinator.incoming.entries.isEmpty)
        #expect(snapshot(state) == stateBefore, "nothing written in the state directory")
        #expect(snapshot(canary) == canaryFiles, "the canary tree is unchanged")
        #expect(!FileManager.default.fileExists(atPath: "/tmp/victim-created-by-ums"))
    }

    @Test("a peer's commit answer with a page count out of bounds is refused as it is decoded", arguments: [Int64(-1), Int64.max, Int64(1 << 50) + 1])
    func commitPageBytes(pageBytes: Int64) throws {
        let body = Data(#"{"pageBytes":\#(pageBytes)}"#.utf8)
        #expect(throws: UMSError.self) { try JSONDecoder().decode(CommitResponse.self, from: body) }
        #expect(try JSONDecoder().decode(CommitResponse.self, from: Data(#"{"pageBytes":4096}"#.utf8)).pageBytes == 4096)
    }

    @Test("checkpoint bytes beyond the policy are refused mid-stream with 403")
    func checkpointBytes() async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("ums-hostile-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let orchestrator = InMemoryOrchestrator()
        let coordinator = try Coordinator(
            name: "b", url: "http://198.18.0.2:7000", orchestrator: orchestrator, approaches: [InMemoryApproach(orchestrator: orchestrator)],
            stateDirectory: state, advertiseHost: "198.18.0.2", http: HTTPClient.shared, peerTokens: [:], logger: Logger(label: "test"),
            admission: Self.strict
        )
        let app = Application(router: buildRouter(coordinator: coordinator, token: Self.token))
        let auth: HTTPFields = [.authorization: "Bearer \(Self.token)", .contentType: "application/json"]
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/peer/migrations", method: .post, headers: auth, body: ByteBuffer(bytes: Self.prepare { _, spec in spec["limits"] = ["memoryBytes": 64 << 20] })) { response in
                #expect(response.status == .created, "\(String(buffer: response.body))")
            }
            try await client.execute(uri: "/v1/peer/migrations/m-abc123/files/images", method: .put, headers: auth, body: ByteBuffer(repeating: 1, count: 100)) { response in
                #expect(response.status == .forbidden)
                #expect(String(buffer: response.body).contains("rule maxCheckpointBytes"))
            }
        }
    }
}
