import Foundation
import Testing
import UMSDecision
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
            frontmanHoldCount: 10
            frontmanHoldSeconds: 2.5
            frontmanReleaseAtOnce: 8
            frontmanQuiesceMs: 20
            frontmanLinger: 60
            endpointHook: /usr/local/bin/update-dns
            admission:
              hostPorts: "2000-3000"
              allowNested: false
              maxConcurrentIncoming: 2
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let configuration = try CoordinatorConfiguration.load(yamlFile: path)
        #expect(configuration.name == "edge")
        #expect(configuration.admission?.hostPorts == 2000...3000)
        #expect(configuration.admission?.allowNested == false)
        #expect(configuration.admission?.maxConcurrentIncoming == 2)
        #expect(configuration.admission?.allowedCapabilities == AdmissionPolicy.standard.allowedCapabilities, "keys left out are the standard ones")
        #expect(configuration.orchestrator == "runc")
        #expect(configuration.peers == [.init(url: "http://198.18.0.2:7000", tokenFile: "/etc/ums/cloud.token")])
        try configuration.validate()
        #expect(try configuration.resolvedAdvertiseURL() == "https://198.18.0.1:7000", "mutual TLS unless insecure")
        #expect(try configuration.advertiseHost() == "198.18.0.1")
        let frontman = try #require(configuration.frontmanSettings)
        #expect(frontman.limits.count == 10 && frontman.limits.seconds == 2.5 && frontman.limits.bytes == 64 << 20 && frontman.limits.releaseAtOnce == 8)
        #expect(frontman.limits.quiesceSeconds == 0.02)
        #expect(frontman.linger == .seconds(60))
        #expect(configuration.endpointHook == "/usr/local/bin/update-dns")
    }

    @Test("Frontmen are on unless switched off")
    func frontmanSwitch() {
        var configuration = CoordinatorConfiguration(name: "edge", stateDir: "/s")
        #expect(configuration.frontmanSettings?.linger == .seconds(10))
        #expect(configuration.frontmanSettings?.limits.quiesceSeconds == 0.05)
        configuration.frontman = false
        #expect(configuration.frontmanSettings == nil)
    }

    @Test("bad settings are refused with the reason", arguments: [
        CoordinatorConfiguration(name: "edge", listen: "nohost", stateDir: "/s"),
        CoordinatorConfiguration(name: "Edge!", stateDir: "/s"),
        CoordinatorConfiguration(name: "edge", stateDir: "/s", orchestrator: "kubernetes"),
        { var c = CoordinatorConfiguration(name: "edge", stateDir: "/s"); c.frontmanHoldSeconds = -1; return c }(),
        { var c = CoordinatorConfiguration(name: "edge", stateDir: "/s"); c.frontmanHoldCount = -5; return c }(),
        { var c = CoordinatorConfiguration(name: "edge", stateDir: "/s"); c.frontmanReleaseAtOnce = 0; return c }(),
        { var c = CoordinatorConfiguration(name: "edge", stateDir: "/s"); c.frontmanReleaseAtOnce = Int.max; return c }(),
        { var c = CoordinatorConfiguration(name: "edge", stateDir: "/s"); c.frontmanQuiesceMs = -1; return c }(),
        { var c = CoordinatorConfiguration(name: "edge", stateDir: "/s"); c.frontmanQuiesceMs = Int.max; return c }(),
        { var c = CoordinatorConfiguration(name: "edge", listen: "198.18.0.1:7000", stateDir: "/s"); c.insecure = true; return c }(),
    ])
    func invalid(configuration: CoordinatorConfiguration) {
        #expect(throws: UMSError.self) { try configuration.validate() }
    }
}
