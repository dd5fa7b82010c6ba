import Foundation
import Testing
import UMSMigration
import UMSImage
import UMSModel
import UMSOS
import Logging

@Suite("Service-level pieces: migratable images, the agent's replies, endpoints")
struct ServiceLevelUnitTests {
    let manifest = MigratableImage.Manifest(entrypoint: ["/.ums/ums-agent", "run", "--"], agentPort: 7079, agentVersion: "1")
    let plain = Specification(
        name: "c", image: .init(digest: "sha256:x"), command: ["/bin/counter", "--port", "8080"],
        environment: ["A=1", "UMS_AGENT_TOKEN=old"], ports: [PortMapping(hostPort: 8080, containerPort: 8080)]
    )

    @Test("a migratable container runs its command behind the agent, labelled, with the agent's privileges and a new token")
    func wrap() {
        let spec = MigratableImage.specification(plain, manifest: manifest, token: "t0k")
        #expect(spec.command == ["/.ums/ums-agent", "run", "--", "/bin/counter", "--port", "8080"])
        #expect(spec.labels[SpecificationLabels.agent] == "7079")
        #expect(spec.security == SecurityOptions(addCapabilities: ["CAP_CHECKPOINT_RESTORE"], seccompUnconfined: true))
        #expect(spec.environmentValue("UMS_AGENT_TOKEN") == "t0k")
        #expect(spec.environment.filter { $0.hasPrefix("UMS_AGENT_TOKEN=") }.count == 1)
        // Wrapping twice changes nothing but the token.
        #expect(MigratableImage.specification(spec, manifest: manifest, token: "t0k") == spec)
    }

    @Test("the destination's copy starts its agent in restore mode with the agent's port published, replacing an earlier one")
    func destination() {
        let source = MigratableImage.specification(plain, manifest: manifest, token: "t")
        let first = MigratableImage.destinationSpecification(source, agentHostPort: 27001)
        #expect(first.command.prefix(3) == ["/.ums/ums-agent", "restore", "--"])
        #expect(first.ports == [PortMapping(hostPort: 8080, containerPort: 8080), PortMapping(hostPort: 27001, containerPort: 7079)])
        let onward = MigratableImage.destinationSpecification(first, agentHostPort: 27002)
        #expect(onward.ports == [PortMapping(hostPort: 8080, containerPort: 8080), PortMapping(hostPort: 27002, containerPort: 7079)])
        #expect(first.environmentValue(MigratableImage.corruptImagesFaultVariable) == nil, "faults come only through the fault seam")
    }

    @Test("a nested service's outer container: agent in host mode, labelled nested, runtime privileges; its destination restores in host mode")
    func nested() {
        let manifest = NestedImage.Manifest(entrypoint: ["/.ums/ums-agent", "host", "--"], agentPort: 7079, nestedRoot: "/.ums/nested/rootfs")
        let outer = NestedImage.specification(plain, manifest: manifest, token: "t")
        #expect(outer.command == ["/.ums/ums-agent", "host", "--", "/bin/counter", "--port", "8080"])
        #expect(outer.labels[SpecificationLabels.nested] == "7079")
        #expect(outer.labels[SpecificationLabels.agent] == nil)
        #expect(outer.security?.runsContainers == true)
        #expect(outer.security?.seccompUnconfined == true)
        #expect(outer.security?.addCapabilities.contains("CAP_SYS_ADMIN") == true)
        let destination = MigratableImage.destinationSpecification(outer, agentHostPort: 27005)
        #expect(destination.command.prefix(3) == ["/.ums/ums-agent", "host-restore", "--"])
        #expect(destination.ports.last == PortMapping(hostPort: 27005, containerPort: 7079))
        let info = ContainerInfo(name: "c", state: .running, specification: destination, endpoints: ["h:8080", "h:27005"], orchestrator: .runc)
        #expect(ServiceEndpoints.of(info) == ["h:8080"])
    }

    @Test("composing a nested container needs a host image, and puts the unchanged service under the nested root")
    func compose() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ums-nested-\(UUID().uuidString.prefix(8))").path
        defer { FileSystem.remove(root) }
        let host = "\(root)/host", service = "\(root)/svc", out = "\(root)/out"
        let runner = SubprocessRunner(logger: Logger(label: "test"))
        try FileSystem.makeDirectory("\(service)/bin")
        FileManager.default.createFile(atPath: "\(service)/bin/counter", contents: Data("prog".utf8))
        let missing = await #expect(throws: UMSError.self) {
            try await NestedImage.compose(hostImage: host, service: service, into: out, runner: runner)
        }
        #expect(missing?.message.contains("scripts/build-host-image") == true)
        #expect(!FileManager.default.fileExists(atPath: out))

        try FileSystem.makeDirectory("\(host)/.ums/nested/rootfs")
        FileManager.default.createFile(atPath: "\(host)/.ums/ums-agent", contents: Data("agent".utf8), attributes: [.posixPermissions: 0o755])
        try Data(#"{"entrypoint":["/.ums/ums-agent","host","--"],"agentPort":7079,"nestedRoot":"/.ums/nested/rootfs"}"#.utf8)
            .write(to: URL(fileURLWithPath: "\(host)/.ums/host-image.json"))
        let manifest = try await NestedImage.compose(hostImage: host, service: service, into: out, runner: runner)
        #expect(manifest.agentPort == 7079)
        #expect(FileManager.default.contents(atPath: "\(out)/.ums/nested/rootfs/bin/counter") == Data("prog".utf8))
        #expect(FileManager.default.isExecutableFile(atPath: "\(out)/.ums/ums-agent"))
    }

    @Test("endpoints leave out the agent's published port")
    func endpoints() {
        let spec = MigratableImage.destinationSpecification(MigratableImage.specification(plain, manifest: manifest, token: "t"), agentHostPort: 27001)
        let info = ContainerInfo(name: "c", state: .running, specification: spec, endpoints: ["198.18.0.2:8080", "198.18.0.2:27001"], orchestrator: .runc)
        #expect(ServiceEndpoints.of(info) == ["198.18.0.2:8080"])
        let ordinary = ContainerInfo(name: "c", state: .running, specification: plain, endpoints: ["h:8080"], orchestrator: .runc)
        #expect(ServiceEndpoints.of(ordinary) == ["h:8080"])
    }

    @Test("agent replies parse into ok, fields and message")
    func replies() {
        let ok = AgentClient.Reply(parsing: "OK bytes=1234 files=26 dump_ms=41\n")
        #expect(ok.ok)
        #expect(ok.int("bytes") == 1234)
        #expect(ok.fields["files"] == "26")
        let error = AgentClient.Reply(parsing: "ERR CRIU dump failed (status 256): Error (criu/cr-dump.c:1)")
        #expect(!error.ok)
        #expect(error.message == "CRIU dump failed (status 256): Error (criu/cr-dump.c:1)")
        #expect(error.fields.isEmpty)
        #expect(!AgentClient.Reply(parsing: "").ok)
        #expect(AgentClient.Reply(parsing: "OK").ok)
    }

    @Test("a container without an agent token or address cannot be controlled, and says why")
    func noAgent() {
        let info = ContainerInfo(name: "c", state: .running, specification: plain, orchestrator: .runc, address: nil)
        #expect(throws: UMSError.self) { try AgentClient(for: info) }
        var noToken = plain
        noToken.environment = []
        let error = #expect(throws: UMSError.self) {
            try AgentClient(for: ContainerInfo(name: "c", state: .running, specification: noToken, orchestrator: .runc, address: "198.19.0.2"))
        }
        #expect(error?.message.contains("UMS_AGENT_TOKEN") == true)
    }

    @Test("an unreachable agent is unavailable, quickly")
    func unreachable() async throws {
        let agent = AgentClient(host: "127.0.0.1", port: 1, token: "t")
        let error = await #expect(throws: UMSError.self) { try await agent.send("STATUS", timeout: .seconds(3), operation: "reach the agent") }
        #expect(error?.code == .unavailable)
    }

    @Test("making an image copies the rootfs and adds the agent, CRIU and the manifest; bad inputs change nothing")
    func makeImage() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ums-image-\(UUID().uuidString.prefix(8))").path
        defer { FileSystem.remove(root) }
        let source = "\(root)/src", output = "\(root)/out", criu = "\(root)/criu", agent = "\(root)/ums-agent"
        for directory in ["\(source)/bin", "\(criu)/usr/sbin", "\(criu)/usr/lib/x86_64-linux-gnu"] { try FileSystem.makeDirectory(directory) }
        FileManager.default.createFile(atPath: "\(source)/bin/counter", contents: Data("prog".utf8), attributes: [.posixPermissions: 0o755])
        FileManager.default.createFile(atPath: "\(criu)/usr/sbin/criu", contents: Data("criu".utf8), attributes: [.posixPermissions: 0o755])
        FileManager.default.createFile(atPath: "\(criu)/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", contents: Data())
        FileManager.default.createFile(atPath: agent, contents: Data("agent".utf8), attributes: [.posixPermissions: 0o755])
        let runner = SubprocessRunner(logger: Logger(label: "test"))

        let missingAgent = await #expect(throws: UMSError.self) {
            try await MigratableImage.make(from: source, to: output, agent: "\(root)/none", criu: criu, replace: false, runner: runner)
        }
        #expect(missingAgent?.message.contains("scripts/build-agent") == true)
        #expect(!FileManager.default.fileExists(atPath: output))

        let made = try await MigratableImage.make(from: source, to: output, agent: agent, criu: criu, replace: false, runner: runner)
        #expect(made == manifest)
        #expect(MigratableImage.isMigratable(rootfs: output))
        #expect(!MigratableImage.isMigratable(rootfs: source))
        #expect(MigratableImage.manifest(rootfs: output) == manifest)
        #expect(FileManager.default.contents(atPath: "\(output)/bin/counter") == Data("prog".utf8))
        #expect(FileManager.default.contents(atPath: "\(output)/.ums/criu/usr/sbin/criu") == Data("criu".utf8))

        let exists = await #expect(throws: UMSError.self) {
            try await MigratableImage.make(from: source, to: output, agent: agent, criu: criu, replace: false, runner: runner)
        }
        #expect(exists?.code == .exists)
        _ = try await MigratableImage.make(from: source, to: output, agent: agent, criu: criu, replace: true, runner: runner)
        #expect(MigratableImage.isMigratable(rootfs: output))
    }
}
