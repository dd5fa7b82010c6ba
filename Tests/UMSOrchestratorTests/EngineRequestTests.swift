import Foundation
import Testing
import UMSModel
@testable import UMSOrchestrator

@Suite("Engine adapters' create requests (Docker Engine API, Podman's compatible one)")
struct EngineRequestTests {
    let hex = String(repeating: "ab", count: 32)
    var plain: Specification {
        Specification(
            name: "web", image: .init(digest: "sha256:" + hex), command: ["/bin/counter", "--port", "8080"], environment: ["A=1"],
            ports: [PortMapping(hostPort: 18080, containerPort: 8080)], limits: .init(memoryBytes: 64 << 20, cpus: 0.5, pids: 10),
            labels: ["team": "x"]
        )
    }

    @Test("a container ID from the engine goes into ctr's command line only as 64 lowercase hex digits", arguments: [
        String(repeating: "a", count: 63), String(repeating: "a", count: 65), String(repeating: "A", count: 64),
        "--address=/tmp/x" + String(repeating: "a", count: 48), String(repeating: "a", count: 63) + "\n", "",
    ])
    func containerIDChecked(id: String) throws {
        #expect(throws: UMSError.self) { try EngineOrchestrator.validateContainerID(id) }
        try EngineOrchestrator.validateContainerID(String(repeating: "0f", count: 32))
    }

    @Test("command, environment, ports, limits and labels map to the engine's fields; the image is UMS's own tag")
    func plainContainer() throws {
        let body = try EngineOrchestrator.createBody(plain, dialect: .docker, systemName: "tba")
        #expect(body.image == "localhost/ums:\(hex)")
        #expect(body.cmd == ["/bin/counter", "--port", "8080"])
        #expect(body.entrypoint == [])
        #expect(body.env == ["A=1"])
        #expect(body.labels["team"] == "x")
        #expect(body.labels["ums.managed"] == "tba")
        #expect(body.labels["ums.image"] == "sha256:" + hex)
        let host = body.hostConfig
        #expect(host.portBindings["8080/tcp"] == [DockerAPI.PortBinding(hostIp: "", hostPort: "18080")])
        #expect(host.memory == 64 << 20)
        #expect(host.nanoCpus == 500_000_000)
        #expect(host.capAdd == nil, "no security options: the engine's defaults")
        #expect(host.privileged == nil)
        // On the wire: Docker's field names.
        let json = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(body)) as? [String: Any])
        let wireHost = try #require(json["HostConfig"] as? [String: Any])
        #expect((wireHost["PortBindings"] as? [String: [[String: String]]])?["8080/tcp"] == [["HostIp": "", "HostPort": "18080"]])
        #expect((json["ExposedPorts"] as? [String: Any])?["8080/tcp"] != nil)
        #expect(wireHost["CapAdd"] == nil)
    }

    @Test("an agent container gets exactly runc's minimal capabilities plus the agent's, on every engine; Docker 20.10 gets CAP_SYS_ADMIN for CAP_CHECKPOINT_RESTORE")
    func agentContainer() throws {
        var spec = plain
        spec.security = SecurityOptions(addCapabilities: ["CAP_CHECKPOINT_RESTORE"], seccompUnconfined: true)
        let podman = try EngineOrchestrator.createBody(spec, dialect: .podman, systemName: "a").hostConfig
        #expect(podman.capDrop == ["ALL"])
        #expect(podman.capAdd == EngineOrchestrator.baseCapabilities + ["CAP_CHECKPOINT_RESTORE"])
        #expect(podman.securityOpt == ["seccomp=unconfined", "no-new-privileges"])
        let docker = try EngineOrchestrator.createBody(spec, dialect: .docker, systemName: "a").hostConfig
        #expect(docker.capAdd == EngineOrchestrator.baseCapabilities + ["CAP_SYS_ADMIN"])
    }

    @Test("an outer container (runs containers): privileged on Podman; on Docker the explicit list, no seccomp, no masked /proc paths")
    func outerContainer() throws {
        var spec = plain
        spec.security = SecurityOptions(addCapabilities: ["CAP_SYS_ADMIN", "CAP_CHECKPOINT_RESTORE", "CAP_MKNOD"], seccompUnconfined: true, runsContainers: true)
        let podman = try EngineOrchestrator.createBody(spec, dialect: .podman, systemName: "a").hostConfig
        #expect(podman.privileged == true)
        let docker = try EngineOrchestrator.createBody(spec, dialect: .docker, systemName: "a").hostConfig
        #expect(docker.privileged == nil, "Docker's --privileged asks for CAP_SYS_RESOURCE, which root lacks here")
        #expect(docker.capAdd == ["CAP_SYS_ADMIN", "CAP_MKNOD"])
        #expect(docker.securityOpt?.contains("seccomp=unconfined") == true)
        #expect(docker.maskedPaths == [])
        #expect(docker.readonlyPaths == [])
        let wire = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(EngineOrchestrator.createBody(spec, dialect: .docker, systemName: "a"))) as? [String: Any])
        #expect((wire["HostConfig"] as? [String: Any])?["MaskedPaths"] as? [String] == [], "an empty list is sent, not left out")
    }

    @Test("libpod's create body: environment as a map, ports, limits, the same security rules; an entry without a name is refused")
    func libpod() throws {
        var spec = plain
        spec.security = SecurityOptions(addCapabilities: ["CAP_CHECKPOINT_RESTORE"], seccompUnconfined: true)
        let body = try EngineOrchestrator.libpodCreateBody(spec, systemName: "a")
        #expect(body.env == ["A": "1"])
        #expect(body.portmappings == [LibpodAPI.PortMapping(hostPort: 18080, containerPort: 8080, protocol: "tcp")])
        #expect(body.resourceLimits?.cpu?.quota == 50_000)
        #expect(body.capAdd == EngineOrchestrator.baseCapabilities + ["CAP_CHECKPOINT_RESTORE"])
        #expect(body.noNewPrivileges == true)
        spec.environment = ["=x"]
        #expect(throws: UMSError.self) { try EngineOrchestrator.libpodCreateBody(spec, systemName: "a") }
        spec.environment = []
        spec.limits.cpus = 1e300
        #expect(throws: UMSError.self) { try EngineOrchestrator.libpodCreateBody(spec, systemName: "a") }
    }

    @Test("engine answers decode into types; one that is not what the API documents is an error, not a crash")
    func answers() throws {
        let inspect = try JSONDecoder().decode(DockerAPI.ContainerInspect.self, from: Data(#"{"Id":"abc","State":{"Status":"running","Pid":42},"NetworkSettings":{"IPAddress":"","Networks":{"podman":{"IPAddress":"10.88.0.5"}}}}"#.utf8))
        #expect(inspect.state?.pid == 42)
        #expect(inspect.address == "10.88.0.5")
        #expect(throws: (any Error).self) { try JSONDecoder().decode(DockerAPI.ContainerInspect.self, from: Data(#"{"Id":7}"#.utf8)) }
    }

    @Test("an image digest that is not sha256 is refused before anything reaches the engine")
    func badDigest() {
        var spec = plain
        spec.image = ImageReference(digest: "md5:1234")
        #expect(throws: UMSError.self) { try EngineOrchestrator.createBody(spec, dialect: .docker, systemName: "a") }
    }
}

@Suite("containerd's ctr command line and its output")
struct CtrTests {
    let ctr = Ctr(address: "/run/tb/a/engine.sock", namespace: "ums-tba")

    @Test("every command names the system's own socket and namespace; containers run from UMS's OCI config")
    func arguments() {
        #expect(ctr.runArguments(id: "web", config: "/s/web/bundle/config.json")
            == ["--address", "/run/tb/a/engine.sock", "--namespace", "ums-tba", "run", "--detach", "--null-io", "--config", "/s/web/bundle/config.json", "web"])
        #expect(ctr.killArguments(id: "web").suffix(5) == ["kill", "--signal", "SIGKILL", "--all", "web"])
        #expect(ctr.deleteTaskArguments(id: "web").suffix(3) == ["delete", "--force", "web"])
        #expect(ctr.versionArguments() == ["--address", "/run/tb/a/engine.sock", "version"])
    }

    @Test("task lists, process lists and versions parse; a container without a task is nil")
    func parsing() {
        let tasks = "TASK    PID      STATUS    \nweb     31337    RUNNING\nother   12       PAUSED\n"
        #expect(Ctr.parseTasks(tasks, id: "web")?.0 == .running)
        #expect(Ctr.parseTasks(tasks, id: "web")?.1 == 31337)
        #expect(Ctr.parseTasks(tasks, id: "other")?.0 == .paused)
        #expect(Ctr.parseTasks(tasks, id: "gone") == nil)
        #expect(Ctr.parseProcessCount("PID      INFO\n101      -\n102      -\n103      -\n") == 3)
        let version = "Client:\n  Version:  1.6.20~ds1\n\nServer:\n  Version:  1.6.20~ds1\n  UUID: x\n"
        #expect(Ctr.parseServerVersion(version) == "1.6.20~ds1")
    }
}
