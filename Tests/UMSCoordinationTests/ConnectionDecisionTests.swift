import AsyncHTTPClient
import Foundation
import Logging
import Testing
import UMSAPI
@testable import UMSCoordination
import UMSDecision
import UMSMigration
import UMSModel
import UMSOS

@Suite("Carried connections: the decision, and what a peer may ask for")
struct ConnectionDecisionTests {
    let a = ConnectionDecision.Side(name: "a", network: MigrationNetworkInfo(tunnelAddress: "198.18.0.1", containerNetwork: "198.19.0.0/17"))
    let b = ConnectionDecision.Side(name: "b", network: MigrationNetworkInfo(tunnelAddress: "198.18.0.2", containerNetwork: "198.19.128.0/17"))

    func decide(_ requested: ConnectionHandling = .auto, approach: Approach = .orchestrator, mode: TransferMode = .stopAndCopy,
                address: String? = "198.19.0.2", source: ConnectionDecision.Side? = nil, destination: ConnectionDecision.Side? = nil) throws -> (summary: ConnectionsSummary, carry: CarriedConnections?) {
        try ConnectionDecision.decide(requested, approach: approach, mode: mode, serviceAddress: address, source: source ?? a, destination: destination ?? b)
    }

    @Test("carried between two systems that share a migration network with disjoint blocks, orchestrator- or container-level, stop-and-copy: the destination is told the service's address and the source's tunnel end")
    func carried() throws {
        for approach in [Approach.orchestrator, .container] {
            let verdict = try decide(approach: approach)
            #expect(verdict.summary.mode == .carried)
            #expect(verdict.carry == (try CarriedConnections(address: "198.19.0.2", tunnelAddress: "198.18.0.1")))
        }
    }

    @Test("closed, each with its reason: asked to close, another approach, post-copy, either system without a migration network, overlapping blocks, an address not from the source's block")
    func closed() throws {
        let none = ConnectionDecision.Side(name: "b", network: nil)
        let overlapping = ConnectionDecision.Side(name: "b", network: MigrationNetworkInfo(tunnelAddress: "198.18.0.2", containerNetwork: "198.19.0.0/16"))
        let same = ConnectionDecision.Side(name: "b", network: MigrationNetworkInfo(tunnelAddress: "198.18.0.2", containerNetwork: "198.19.0.0/17"))
        let cases: [((summary: ConnectionsSummary, carry: CarriedConnections?), String)] = [
            (try decide(.close), "as asked"),
            (try decide(approach: .service), "cannot repair TCP sockets"),
            (try decide(mode: .postCopy), "stop-and-copy only"),
            (try decide(approach: .container, mode: .postCopy), "stop-and-copy only"),
            (try decide(source: ConnectionDecision.Side(name: "a", network: nil)), "a shares no migration network"),
            (try decide(destination: none), "b shares no migration network"),
            (try decide(destination: overlapping), "overlap"),
            (try decide(destination: same), "overlap"),
            (try decide(address: "198.19.200.2"), "not from a's container network"),
            (try decide(address: nil), "not from a's container network"),
            (try ConnectionDecision.decide(.auto, approach: .container, mode: .stopAndCopy, serviceAddress: "198.19.0.2", alsoHolds: "198.19.200.2", source: a, destination: b),
             "still holds 198.19.200.2"),
        ]
        for (verdict, reason) in cases {
            #expect(verdict.summary.mode == .closed && verdict.carry == nil)
            #expect(verdict.summary.reason.contains(reason), "\(verdict.summary.reason)")
        }
    }

    @Test("between orchestrators: each side says which approaches' connections it carries (UMS's containers on containerd: container-level only); a peer that says nothing carries orchestrator-level only, as before container-level carried them")
    func approachesEachSideCarries() throws {
        let containerd = ConnectionDecision.Side(name: "b", network: MigrationNetworkInfo(tunnelAddress: "198.18.0.2", containerNetwork: "198.19.128.0/17", approaches: [.container]))
        #expect(try decide(approach: .container, destination: containerd).summary.mode == .carried)
        let refused = try decide(approach: .orchestrator, destination: containerd).summary
        #expect(refused.mode == .closed && refused.reason.contains("b's orchestrator carries the connections of the container-level approach only"), "\(refused.reason)")
        let old = try JSONDecoder().decode(MigrationNetworkInfo.self, from: Data(#"{"tunnelAddress":"198.18.0.2","containerNetwork":"198.19.128.0/17"}"#.utf8))
        #expect(old.carries(.orchestrator) && !old.carries(.container))
        let before = try decide(approach: .container, destination: ConnectionDecision.Side(name: "b", network: old)).summary
        #expect(before.mode == .closed && before.reason.contains("orchestrator-level approach only"), "\(before.reason)")
        // Hostile: what a peer publishes is bounded and known.
        for json in [
            #"{"tunnelAddress":"198.18.0.2","containerNetwork":"198.19.128.0/17","approaches":["orchestrator","orchestrator"]}"#,
            #"{"tunnelAddress":"198.18.0.2","containerNetwork":"198.19.128.0/17","approaches":["teleport"]}"#,
            #"{"tunnelAddress":"198.18.0.2","containerNetwork":"198.19.128.0/17","approaches":["orchestrator","service","container","container"]}"#,
            #"{"tunnelAddress":"198.18.0.2","containerNetwork":"198.19.128.0/17","approaches":"container"}"#,
        ] {
            #expect(throws: DecodingError.self) { try JSONDecoder().decode(MigrationNetworkInfo.self, from: Data(json.utf8)) }
        }
    }

    @Test("asked to carry them where they cannot be, the migration is refused with the reason")
    func carryOrRefuse() throws {
        #expect(throws: UMSError.self) { try decide(.carry, destination: ConnectionDecision.Side(name: "b", network: nil)) }
        #expect(try decide(.carry).summary.mode == .carried)
    }

    @Test("hostile input: a peer's carried address and tunnel end are strict IPv4, the service's inside 198.19.0.0/16, the tunnel's unicast — anything else is refused as the prepare request is decoded")
    func hostileCarry() throws {
        let bad: [(String, String)] = [
            ("198.19.0.2/32", "198.18.0.1"), ("198.19.0.2 dev eth0", "198.18.0.1"), ("10.0.0.2", "198.18.0.1"), ("198.19.0.0", "198.18.0.1"),
            ("198.19.0.255", "198.18.0.1"), ("198.19.0.2", "127.0.0.1"), ("198.19.0.2", "224.0.0.1"), ("198.19.0.2", "0.0.0.0"),
            ("198.19.0.2", "255.255.255.255"), ("198.19.0.2", "example.com"), ("", ""), ("198.019.0.2", "198.18.0.1"),
        ]
        for (address, tunnel) in bad {
            let json = #"{"id":"m-1","approach":"orchestrator","source":{"name":"a","url":"https://a"},"specification":{"name":"s","image":{"digest":"sha256:\#(String(repeating: "1", count: 64))"},"command":["/x"]},"carry":{"address":"\#(address)","tunnelAddress":"\#(tunnel)"}}"#
            #expect(throws: (any Error).self, "\(address) \(tunnel)") { try JSONDecoder().decode(PrepareRequest.self, from: Data(json.utf8)) }
        }
        let wrongTypes = #"{"address":1,"tunnelAddress":["198.18.0.1"]}"#
        #expect(throws: (any Error).self) { try JSONDecoder().decode(CarriedConnections.self, from: Data(wrongTypes.utf8)) }
        #expect(throws: (any Error).self) { try JSONDecoder().decode(ConnectionHandling.self, from: Data(#""sometimes""#.utf8)) }
    }

    @Test("the destination keeps only an address that is not its own: one from its own block is refused; the kept network is held and silenced until the commit, and its replies are never masqueraded")
    func keptAddress() throws {
        let tunnel = try MigrationTunnel.between(local: "198.18.0.2", remote: "198.18.0.1")
        let block = try AddressBlock(parsing: "198.19.128.0/17")
        #expect(throws: UMSError.self) { try ContainerNetwork.keeping("198.19.128.6", through: tunnel, slot: 0, system: "b", container: "s", block: block) }
        #expect(throws: UMSError.self) { try ContainerNetwork.keeping("10.1.2.3", through: tunnel, slot: 0, system: "b", container: "s", block: block) }
        let network = try ContainerNetwork.keeping("198.19.0.2", through: tunnel, slot: 3, system: "b", container: "s", block: block)
        #expect(network.hostAddress == "169.254.1.1" && network.containerAddress == "198.19.0.2")
        #expect(network.hostSetUp.contains("route replace blackhole 198.19.0.2/32"))
        #expect(network.namespaceSetUp.contains("addr add 198.19.0.2/32 dev eth0"))
        #expect(network.carriedRules.contains(["-t", "raw", "PREROUTING", "-i", "umsv3", "-j", "DROP"]))
        #expect(network.egressRule.contains("connmark"))
        #expect(!ContainerNetwork.forSlot(0, system: "a", container: "s").egressRule.contains("connmark"))
    }

    @Test("a destination whose operator did not agree to a migration network refuses a prepare that carries connections (403, the rule named), before anything is created")
    func admissionRefuses() async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("ums-carry-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let orchestrator = InMemoryOrchestrator()
        let coordinator = try Coordinator(
            name: "b", url: "http://127.0.0.1:2", orchestrator: orchestrator, approaches: [InMemoryApproach(orchestrator: orchestrator)],
            stateDirectory: state, advertiseHost: "127.0.0.1", http: HTTPClient.shared, peerTokens: [:], logger: Logger(label: "test")
        )
        #expect(await coordinator.systemInfo().migrationNetwork == nil, "nothing published without the operator's consent")
        let request = PrepareRequest(
            id: "m-carry", approach: .orchestrator,
            specification: Specification(name: "svc", image: .init(digest: "sha256:" + String(repeating: "1", count: 64)), command: ["/x"]),
            source: SystemRef(name: "a", url: "http://127.0.0.1:1"), carry: try CarriedConnections(address: "198.19.0.2", tunnelAddress: "198.18.0.1")
        )
        await #expect(throws: UMSError.self) { _ = try await coordinator.incoming.prepare(request) }
        do {
            _ = try await coordinator.incoming.prepare(request)
        } catch let error as UMSError {
            #expect(error.code == .forbidden && error.message.contains("migrationNetwork"))
        }
        #expect(try await orchestrator.list().isEmpty)

        // With the operator's consent: the tunnel may only end where the request came from.
        var policy = AdmissionPolicy.standard
        policy.migrationNetwork = true
        let consenting = try Coordinator(
            name: "b", url: "http://127.0.0.1:2", orchestrator: orchestrator, approaches: [InMemoryApproach(orchestrator: orchestrator)],
            stateDirectory: state + "-2", advertiseHost: "127.0.0.1", http: HTTPClient.shared, peerTokens: [:], logger: Logger(label: "test"), admission: policy
        )
        defer { try? FileManager.default.removeItem(atPath: state + "-2") }
        do {
            _ = try await consenting.incoming.prepare(request, from: "198.18.0.9")
            Issue.record("a tunnel to a third host was accepted")
        } catch let error as UMSError {
            #expect(error.code == .forbidden && error.message.contains("tunnel must end at the peer's own address"), "\(error)")
        }
        #expect(try await orchestrator.list().isEmpty)
    }
}
