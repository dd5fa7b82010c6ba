import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import Testing
@testable import UMSCoordination
import Yams

@Suite("OpenAPI document")
struct OpenAPITests {
    /// `docs/openapi.yaml`, found from this file's place in the repository.
    static var documentPath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/openapi.yaml").path
    }

    @Test("documents exactly the routes the Coordinator serves")
    func routesMatch() async throws {
        let text = try String(contentsOfFile: Self.documentPath, encoding: .utf8)
        let document = try #require(try Yams.load(yaml: text) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: Any])
        var documented = Set<String>()
        for (path, item) in paths {
            let operations = (item as? [String: Any])?.keys.filter { ["get", "put", "post", "delete", "patch", "head"].contains($0) } ?? []
            // Hummingbird describes captured path parameters as OpenAPI does: `{name}`.
            for method in operations { documented.insert("\(method.uppercased()) \(path)") }
        }

        let state = FileManager.default.temporaryDirectory.appendingPathComponent("ums-openapi-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let coordinator = try Coordinator(
            name: "a", url: "http://127.0.0.1:1", orchestrator: InMemoryOrchestrator(), approaches: [], stateDirectory: state,
            advertiseHost: "127.0.0.1", http: HTTPClient.shared, peerTokens: [:], logger: Logger(label: "test")
        )
        let served = Set(buildRouter(coordinator: coordinator, token: "t").routes.map { "\($0.method) \($0.path)" })
        #expect(served.subtracting(documented).isEmpty, "served but not documented")
        #expect(documented.subtracting(served).isEmpty, "documented but not served")
        #expect(served.count >= 15)
    }
}
