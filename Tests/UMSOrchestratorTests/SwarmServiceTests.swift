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

    /// A service as `docker service create --name web --publish mode=host,target=8080,published=18207
    /// --env UMS_AGENT_TOKEN=t --container-label ums.agent=7079 --cap-add CAP_SYS_ADMIN IMAGE CMD…`
    /// describes it (the CLI puts the command in Args).
    static let created = #"{"Name":"web","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"localhost/memhog-migratable:1","Labels":{"ums.agent":"7079"},"Args":["/.ums/ums-agent","run","--","/bin/memhog"],"Env":["UMS_AGENT_TOKEN=t"],"CapabilityAdd":["CAP_SYS_ADMIN"]},"RestartPolicy":{"Condition":"any"},"Placement":{"Constraints":["node.role==worker"]}},"Mode":{"Replicated":{"Replicas":1}},"EndpointSpec":{"Mode":"dnsrr","Ports":[{"Protocol":"tcp","TargetPort":8080,"PublishedPort":18207,"PublishMode":"host"}]}}"#

    @Test("a service made with docker service create is read as a Specification: the image's ID on its node, Args after the image's entrypoint, host-mode ports, both label sets, its placement")
    func adopted() throws {
        let spec = try JSONDecoder().decode(SwarmAPI.ServiceSpec.self, from: Data(Self.created.utf8))
        let image = SwarmAPI.ImageInspect(id: "sha256:" + hex, config: .init(entrypoint: nil, cmd: ["/bin/sh"]))
        let specification = try SwarmOrchestrator.specification(adopting: spec, image: image, strict: true)
        #expect(specification.image == ImageReference(digest: "sha256:" + hex, source: "swarm image", format: .engine))
        #expect(specification.command == ["/.ums/ums-agent", "run", "--", "/bin/memhog"], "Args replace the image's Cmd")
        #expect(specification.labels[SpecificationLabels.agent] == "7079")
        #expect(specification.ports == [PortMapping(hostPort: 18207, containerPort: 8080)])
        #expect(specification.security?.addCapabilities == ["CAP_SYS_ADMIN"])
        #expect(specification.engine?.madeBy == .swarm && specification.engine?.imageName == "localhost/memhog-migratable:1")
        #expect(specification.placement == ["node.role==worker"])
        // At the destination the same service is asked for, by the image's ID (never pulled).
        let again = try SwarmOrchestrator.serviceSpec(specification, start: true, systemName: "tbb")
        #expect(again.taskTemplate.containerSpec.image == "sha256:" + hex)
        #expect(again.taskTemplate.containerSpec.command == specification.command)
        #expect(again.taskTemplate.containerSpec.capabilityAdd == ["CAP_SYS_ADMIN"] && again.taskTemplate.containerSpec.capabilityDrop == nil)
    }

    @Test("what UMS cannot carry through a swarm is refused with every reason: replicas, the routing mesh, a bind mount, dropped capabilities, an image not found")
    func adoptionRefusals() throws {
        var spec = try JSONDecoder().decode(SwarmAPI.ServiceSpec.self, from: Data(Self.created.utf8))
        spec.mode = SwarmAPI.Mode(replicated: SwarmAPI.Replicated(replicas: 3))
        spec.endpointSpec?.ports?[0].publishMode = "ingress"
        spec.taskTemplate.containerSpec.mounts = [SwarmAPI.Mount(type: "bind", source: "/etc", target: "/host-etc")]
        spec.taskTemplate.containerSpec.capabilityDrop = ["CAP_KILL"]
        let error = #expect(throws: UMSError.self) { try SwarmOrchestrator.specification(adopting: spec, image: nil, strict: true) }
        for reason in ["3 replicas", "routing mesh", "mounts a bind", "drops capabilities", "could not be found by ID"] {
            #expect(error?.message.contains(reason) == true, "\(reason): \(error?.message ?? "")")
        }
        #expect(error?.code == .unsupported)
        // Not strict (ps): it is listed all the same.
        #expect(try SwarmOrchestrator.specification(adopting: spec, image: nil, strict: false).name == "web")
    }

    @Test("a seccomp mode is read from /proc")
    func seccomp() {
        #expect(SwarmOrchestrator.seccompMode(ofProcess: Int(getpid())) != nil)
        #expect(SwarmOrchestrator.seccompMode(ofProcess: 0) == nil)
    }
}
