import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
import UMSAPI
@testable import UMSCoordination
import UMSModel

/// Drives the real router with Hummingbird's test client: every bad request gets the right
/// status and a UMS error body, and changes nothing.
@Suite("Coordinator HTTP API validation")
struct APIValidationTests {
    static let token = "secret-token"

    func withApp(_ containers: [String] = ["counter"], _ body: @Sendable (any TestClientProtocol, Coordinator, InMemoryOrchestrator) async throws -> Void) async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("ums-api-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let orchestrator = InMemoryOrchestrator(containers)
        let coordinator = try Coordinator(
            name: "a", url: "http://127.0.0.1:1", orchestrator: orchestrator, approaches: [], stateDirectory: state,
            advertiseHost: "127.0.0.1", http: HTTPClient.shared, peerTokens: [:], logger: Logger(label: "test")
        )
        let app = Application(router: buildRouter(coordinator: coordinator, token: Self.token))
        try await withBackground(coordinator) {
            try await app.test(.router) { client in
                try await body(client, coordinator, orchestrator)
            }
            await coordinator.outgoing.drain()
        }
    }

    var auth: HTTPFields { [.authorization: "Bearer \(Self.token)", .contentType: "application/json"] }

    func error(_ response: TestResponse) -> UMSError? {
        try? UMSJSON.decoder().decode(ErrorBody.self, from: Data(buffer: response.body)).error
    }

    @Test("requests without or with a wrong token are refused with 401")
    func unauthenticated() async throws {
        try await withApp { client, _, orchestrator in
            try await client.execute(uri: "/v1/containers", method: .get) { response in
                #expect(response.status == .unauthorized)
                #expect(error(response)?.code == .unauthenticated)
            }
            try await client.execute(uri: "/v1/containers/counter", method: .delete, headers: [.authorization: "Bearer wrong"]) { response in
                #expect(response.status == .unauthorized)
            }
            #expect(try await orchestrator.list().map(\.name) == ["counter"])
        }
    }

    @Test("an unknown container is 404")
    func unknownContainer() async throws {
        try await withApp { client, coordinator, _ in
            try await client.execute(uri: "/v1/containers/nope", method: .get, headers: auth) { response in
                #expect(response.status == .notFound)
            }
            let body = ByteBuffer(string: #"{"container":"nope","destination":"http://198.18.0.2:7000"}"#)
            try await client.execute(uri: "/v1/migrations", method: .post, headers: auth, body: body) { response in
                #expect(response.status == .notFound)
                #expect(error(response)?.message.contains("nope") == true)
            }
            try await client.execute(uri: "/v1/migrations/plan", method: .post, headers: auth, body: body) { response in
                #expect(response.status == .notFound)
            }
            #expect(await coordinator.outgoing.all().isEmpty)
        }
    }

    @Test("malformed bodies are 400 and say what is wrong", arguments: [
        #"{"container": "counter""#,
        #"{"destination": "http://198.18.0.2:7000"}"#,
        #"{"container": "counter", "destination": "http://198.18.0.2:7000", "approach": "fastest"}"#,
        #"{"container": "counter", "destination": "not a url"}"#,
        #"{"container": "../etc", "destination": "http://198.18.0.2:7000"}"#,
        "",
    ])
    func malformed(body: String) async throws {
        try await withApp { client, coordinator, orchestrator in
            try await client.execute(uri: "/v1/migrations", method: .post, headers: auth, body: ByteBuffer(string: body)) { response in
                #expect(response.status == .badRequest)
                #expect(error(response)?.code == .invalidArgument)
            }
            #expect(await coordinator.outgoing.all().isEmpty)
            #expect(try await orchestrator.inspect("counter").migratingIn == nil)
        }
    }

    @Test("run requests are validated before anything is created", arguments: [
        #"{"name": "Bad Name", "rootfs": "/tmp", "command": ["/bin/true"]}"#,
        #"{"name": "x", "rootfs": "/tmp", "command": []}"#,
        #"{"name": "x", "rootfs": "/tmp", "command": ["/bin/true"], "publish": ["99999"]}"#,
    ])
    func badRun(body: String) async throws {
        try await withApp { client, _, orchestrator in
            try await client.execute(uri: "/v1/containers", method: .post, headers: auth, body: ByteBuffer(string: body)) { response in
                #expect(response.status == .badRequest)
            }
            #expect(try await orchestrator.list().map(\.name) == ["counter"])
        }
    }

    @Test("control operations on a migrating container are 409")
    func lockedContainer() async throws {
        try await withApp { client, _, orchestrator in
            try await orchestrator.lock("counter", migration: "m-other")
            let body = ByteBuffer(string: #"{"container":"counter","destination":"http://198.18.0.2:7000"}"#)
            try await client.execute(uri: "/v1/migrations", method: .post, headers: auth, body: body) { response in
                #expect(response.status == .conflict)
                #expect(error(response)?.message.contains("migrating") == true)
            }
            try await client.execute(uri: "/v1/containers/counter", method: .delete, headers: auth) { response in
                #expect(response.status == .conflict)
            }
            try await client.execute(uri: "/v1/containers/counter/restart", method: .post, headers: auth) { response in
                #expect(response.status == .conflict)
            }
            #expect(try await orchestrator.inspect("counter").migratingIn == "m-other")
        }
    }

    @Test("peer routes refuse unknown migrations and file parts")
    func peerRoutes() async throws {
        try await withApp { client, _, _ in
            try await client.execute(uri: "/v1/peer/migrations/m-x/restore", method: .post, headers: auth) { response in
                #expect(response.status == .notFound)
            }
            try await client.execute(uri: "/v1/peer/migrations/m-x/files/secrets", method: .put, headers: auth, body: ByteBuffer(string: "x")) { response in
                #expect(response.status == .badRequest)
            }
            try await client.execute(uri: "/v1/peer/images/sha256:zz", method: .get, headers: auth) { response in
                #expect(response.status == .notFound)
            }
        }
    }

    @Test("system info names the system and its approaches")
    func systemInfo() async throws {
        try await withApp { client, _, _ in
            try await client.execute(uri: "/v1/system", method: .get, headers: auth) { response in
                #expect(response.status == .ok)
                let info = try? UMSJSON.decoder().decode(SystemInfo.self, from: Data(buffer: response.body))
                #expect(info?.name == "a")
                #expect(info?.profile.orchestrator == .runc)
                #expect(info?.profile.canCheckpoint == true, "read from the adapter's conformance")
            }
        }
    }
}
