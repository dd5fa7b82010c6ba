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

    @Test("command, environment, ports, limits and labels map to the engine's fields; the image is UMS's own tag")
    func plainContainer() throws {
        let body = try EngineOrchestrator.createBody(plain, dialect: .docker, systemName: "tba")
        #expect(body["Image"] as? String == "localhost/ums:\(hex)")
        #expect(body["Cmd"] as? [String] == ["/bin/counter", "--port", "8080"])
        #expect(body["Entrypoint"] as? [String] == [])
        #expect(body["Env"] as? [String] == ["A=1"])
        let labels = try #require(body["Labels"] as? [String: String])
        #expect(labels["team"] == "x")
        #expect(labels["ums.managed"] == "tba")
        #expect(labels["ums.image"] == "sha256:" + hex)
        let host = try #require(body["HostConfig"] as? [String: Any])
        let bindings = try #require(host["PortBindings"] as? [String: [[String: String]]])
        #expect(bindings["8080/tcp"] == [["HostIp": "", "HostPort": "18080"]])
        #expect(host["Memory"] as? Int64 == 64 << 20)
        #expect(host["NanoCpus"] as? Int == 500_000_000)
        #expect(host["CapAdd"] == nil, "no security options: the engine's defaults")
        #expect(host["Privileged"] == nil)
    }

    @Test("an agent container gets exactly runc's minimal capabilities plus the agent's, on every engine; Docker 20.10 gets CAP_SYS_ADMIN for CAP_CHECKPOINT_RESTORE")
    func agentContainer() throws {
        var spec = plain
        spec.security = SecurityOptions(addCapabilities: ["CAP_CHECKPOINT_RESTORE"], seccompUnconfined: true)
        let podman = try #require(try EngineOrchestrator.createBody(spec, dialect: .podman, systemName: "a")["HostConfig"] as? [String: Any])
        #expect(podman["CapDrop"] as? [String] == ["ALL"])
        #expect(podman["CapAdd"] as? [String] == EngineOrchestrator.baseCapabilities + ["CAP_CHECKPOINT_RESTORE"])
        #expect(podman["SecurityOpt"] as? [String] == ["seccomp=unconfined", "no-new-privileges"])
        let docker = try #require(try EngineOrchestrator.createBody(spec, dialect: .docker, systemName: "a")["HostConfig"] as? [String: Any])
        #expect(docker["CapAdd"] as? [String] == EngineOrchestrator.baseCapabilities + ["CAP_SYS_ADMIN"])
    }

    @Test("an outer container (runs containers): privileged on Podman; on Docker the explicit list, no seccomp, no masked /proc paths")
    func outerContainer() throws {
        var spec = plain
        spec.security = SecurityOptions(addCapabilities: ["CAP_SYS_ADMIN", "CAP_CHECKPOINT_RESTORE", "CAP_MKNOD"], seccompUnconfined: true, runsContainers: true)
        let podman = try #require(try EngineOrchestrator.createBody(spec, dialect: .podman, systemName: "a")["HostConfig"] as? [String: Any])
        #expect(podman["Privileged"] as? Bool == true)
        let docker = try #require(try EngineOrchestrator.createBody(spec, dialect: .docker, systemName: "a")["HostConfig"] as? [String: Any])
        #expect(docker["Privileged"] == nil, "Docker's --privileged asks for CAP_SYS_RESOURCE, which root lacks here")
        #expect(docker["CapAdd"] as? [String] == ["CAP_SYS_ADMIN", "CAP_MKNOD"])
        #expect((docker["SecurityOpt"] as? [String])?.contains("seccomp=unconfined") == true)
        #expect(docker["MaskedPaths"] as? [String] == [])
        #expect(docker["ReadonlyPaths"] as? [String] == [])
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
