import Foundation
import Testing
import UMSCoordination
import UMSModel

@Suite("Coordinator configuration")
struct ConfigurationTests {
    @Test("a YAML file gives the same settings as the flags")
    func yaml() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ums-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try """
            name: edge
            listen: 198.18.0.1:7000
            stateDir: /var/lib/ums/edge
            tokenFile: /etc/ums/edge.token
            peers:
              - url: http://198.18.0.2:7000
                tokenFile: /etc/ums/cloud.token
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let configuration = try CoordinatorConfiguration.load(yamlFile: path)
        #expect(configuration.name == "edge")
        #expect(configuration.orchestrator == "runc")
        #expect(configuration.peers == [.init(url: "http://198.18.0.2:7000", tokenFile: "/etc/ums/cloud.token")])
        try configuration.validate()
        #expect(try configuration.resolvedAdvertiseURL() == "http://198.18.0.1:7000")
        #expect(try configuration.advertiseHost() == "198.18.0.1")
    }

    @Test("bad settings are refused with the reason", arguments: [
        CoordinatorConfiguration(name: "edge", listen: "nohost", stateDir: "/s"),
        CoordinatorConfiguration(name: "Edge!", stateDir: "/s"),
        CoordinatorConfiguration(name: "edge", stateDir: "/s", orchestrator: "kubernetes"),
    ])
    func invalid(configuration: CoordinatorConfiguration) {
        #expect(throws: UMSError.self) { try configuration.validate() }
    }
}
