import Foundation
import Testing
import UMSImage
import UMSModel
@testable import UMSOrchestrator

@Suite("Swarm adapter: the service it asks a manager for, and what it reads back")
struct SwarmServiceTests {
    let hex = String(repeating: "cd", count: 32)
    var plain: Specification {
        var specification = Specification(
            name: "web", image: .init(digest: "sha256:" + hex), command: ["/bin/counter", "--port", "8080"], environment: ["A=1"],
            ports: [PortMapping(hostPort: 18080, containerPort: 8080)], limits: .init(memoryBytes: 64 << 20, cpus: 0.5, pids: 10),
            labels: ["team": "x"]
        )
        specification.placement = ["node.hostname==tbb-n2"]
        return specification
    }

    @Test("one replica (none when not started), host-mode ports and DNS round robin (no IPVS here), UMS's image tag, limits, placement, restart on any exit")
    func plainService() throws {
        let spec = try SwarmOrchestrator.serviceSpec(plain, start: true, systemName: "tba")
        #expect(spec.name == "web")
        #expect(spec.mode?.replicated?.replicas == 1)
        #expect(try SwarmOrchestrator.serviceSpec(plain, start: false, systemName: "tba").mode?.replicated?.replicas == 0)
        #expect(spec.endpointSpec == SwarmAPI.EndpointSpec(mode: "dnsrr", ports: [SwarmAPI.PortConfig(protocol: "tcp", targetPort: 8080, publishedPort: 18080, publishMode: "host")]))
        let container = spec.taskTemplate.containerSpec
        #expect(container.image == "localhost/ums:\(hex)")
        #expect(container.command == ["/bin/counter", "--port", "8080"])
        #expect(container.env == ["A=1"])
        #expect(container.labels?["ums.managed"] == "tba")
        #expect(spec.labels?["team"] == "x")
        #expect(container.capabilityAdd == nil && container.capabilityDrop == nil, "no security options: the engine's defaults")
        #expect(spec.taskTemplate.resources?.limits == SwarmAPI.Limits(nanoCPUs: 500_000_000, memoryBytes: 64 << 20, pids: 10))
        #expect(spec.taskTemplate.placement?.constraints == ["node.hostname==tbb-n2"])
        #expect(spec.taskTemplate.restartPolicy?.condition == "any")
        // On the wire: the Engine API's field names.
        let json = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(spec)) as? [String: Any])
        let template = try #require(json["TaskTemplate"] as? [String: Any])
        let wireContainer = try #require(template["ContainerSpec"] as? [String: Any])
        #expect(wireContainer["Image"] as? String == "localhost/ums:\(hex)")
        let ports = try #require((json["EndpointSpec"] as? [String: Any])?["Ports"] as? [[String: Any]])
        #expect(ports.first?["PublishMode"] as? String == "host")
    }

    @Test("an agent's container: exactly runc's capabilities plus CAP_SYS_ADMIN (Docker 20.10 predates CAP_CHECKPOINT_RESTORE); an outer container keeps Docker's set plus what runs containers needs")
    func agentContainers() throws {
        var agent = plain
        agent.security = MigratableImage.security
        let container = try SwarmOrchestrator.serviceSpec(agent, start: true, systemName: "tba").taskTemplate.containerSpec
        #expect(container.capabilityDrop == ["ALL"])
        #expect(container.capabilityAdd == EngineOrchestrator.baseCapabilities + ["CAP_SYS_ADMIN"])
        var outer = plain
        outer.security = NestedImage.security
        let outerContainer = try SwarmOrchestrator.serviceSpec(outer, start: true, systemName: "tba").taskTemplate.containerSpec
        #expect(outerContainer.capabilityDrop == nil)
        #expect(outerContainer.capabilityAdd?.contains("CAP_SYS_ADMIN") == true)
        #expect(outerContainer.capabilityAdd?.contains("CAP_CHECKPOINT_RESTORE") == false)
    }

    @Test("a task's state maps to a container's; what a manager sends decodes into types")
    func tasks() throws {
        #expect(SwarmOrchestrator.state(ofTask: "running") == .running)
        #expect(SwarmOrchestrator.state(ofTask: "preparing") == .created)
        #expect(SwarmOrchestrator.state(ofTask: "failed") == .stopped)
        #expect(SwarmOrchestrator.state(ofTask: "what") == .unknown)
        #expect(SwarmOrchestrator.state(ofTask: nil) == .unknown)
        let answer = #"[{"ID":"t1","NodeID":"n1","Slot":1,"DesiredState":"running","CreatedAt":"2026-12-02T04:00:00Z","Status":{"State":"running","ContainerStatus":{"ContainerID":"abc","PID":42}}},{"ID":"t0"}]"#
        let decoded = try JSONDecoder().decode([SwarmAPI.Task].self, from: Data(answer.utf8))
        #expect(decoded.first?.status?.containerStatus?.containerID == "abc")
        #expect(decoded.last?.status == nil, "a task without a status decodes; the adapter treats it as not running")
        // Hostile: a PID that is not a number is refused, not trapped on.
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([SwarmAPI.Task].self, from: Data(#"[{"ID":"t","Status":{"ContainerStatus":{"PID":"x"}}}]"#.utf8)) }
    }

    @Test("placement constraints are checked where a Specification is decoded: KEY==VALUE or KEY!=VALUE, bounded")
    func placement() throws {
        for good in ["node.hostname==tbb-n2", "node.labels.zone!=edge", "node.role==manager"] {
            try PlacementConstraint.validate(good)
        }
        let hostile = [
            "node.hostname", "==x", "node.hostname==", "node hostname==x", "node.hostname==a b", "node.hostname==x\n",
            "node.hostname==a==b", String(repeating: "k", count: 300) + "==v", "nöde==x",
        ]
        for constraint in hostile {
            #expect(throws: UMSError.self, "\(constraint.prefix(20))") { try PlacementConstraint.validate(constraint) }
        }
        var specification = plain
        specification.placement = Array(repeating: "node.role==worker", count: SpecificationBounds.maxPlacementConstraints + 1)
        let data = try JSONEncoder().encode(specification)
        #expect(throws: UMSError.self) { try JSONDecoder().decode(Specification.self, from: data) }
        specification.placement = ["node.hostname==$(reboot)"]
        #expect(throws: UMSError.self) { try JSONDecoder().decode(Specification.self, from: JSONEncoder().encode(specification)) }
    }

    @Test("a seccomp mode is read from /proc")
    func seccomp() {
        #expect(SwarmOrchestrator.seccompMode(ofProcess: Int(getpid())) != nil)
        #expect(SwarmOrchestrator.seccompMode(ofProcess: 0) == nil)
    }
}
