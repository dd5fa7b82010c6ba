import Foundation
import Testing
import UMSCheckpoint
import UMSModel
import UMSOS
@testable import UMSOrchestrator

@Suite("runc and CRIU command lines")
struct RuncArgumentsTests {
    let runc = Runc(root: "/s/runc", criuPath: "/usr/local/sbin/criu")

    @Test("checkpoint keeps the frozen source and streams pages to the page-server")
    func checkpoint() {
        let options = Runc.CheckpointOptions(imagePath: "/w/images", workPath: "/w/images.work", pageServer: "198.18.0.2:27100")
        #expect(runc.checkpointArguments(id: "counter", options: options) == [
            "--root", "/s/runc", "--criu", "/usr/local/sbin/criu",
            "checkpoint", "--image-path", "/w/images", "--work-path", "/w/images.work",
            "--leave-running", "--page-server", "198.18.0.2:27100", "counter",
        ])
    }

    @Test("checkpoint without a page-server writes everything locally and may kill the source")
    func checkpointLocal() {
        let options = Runc.CheckpointOptions(imagePath: "/i", workPath: "/w", leaveRunning: false, tcpEstablished: true)
        #expect(runc.checkpointArguments(id: "c", options: options) == [
            "--root", "/s/runc", "--criu", "/usr/local/sbin/criu",
            "checkpoint", "--image-path", "/i", "--work-path", "/w", "--tcp-established", "c",
        ])
    }

    @Test("restore is detached and logs where UMS can read the reason of a failure")
    func restore() {
        let options = Runc.RestoreOptions(imagePath: "/in/images", workPath: "/in/images.work", bundle: "/s/containers/c/bundle")
        #expect(runc.restoreArguments(id: "c", options: options, log: "/s/containers/c/runc.log") == [
            "--root", "/s/runc", "--criu", "/usr/local/sbin/criu", "--log", "/s/containers/c/runc.log", "--log-format", "json",
            "restore", "--detach", "--image-path", "/in/images", "--work-path", "/in/images.work",
            "--bundle", "/s/containers/c/bundle", "c",
        ])
    }

    @Test("run, pause, resume, delete")
    func lifecycle() {
        let global = ["--root", "/s/runc", "--criu", "/usr/local/sbin/criu"]
        #expect(runc.runArguments(id: "c", bundle: "/b", log: "/l") == global + ["--log", "/l", "--log-format", "json", "run", "--detach", "--bundle", "/b", "c"])
        #expect(runc.pauseArguments(id: "c") == global + ["pause", "c"])
        #expect(runc.resumeArguments(id: "c") == global + ["resume", "c"])
        #expect(runc.deleteArguments(id: "c") == global + ["delete", "--force", "c"])
        #expect(runc.killArguments(id: "c", signal: "KILL") == global + ["kill", "c", "KILL"])
        #expect(runc.command(runc.runArguments(id: "c", bundle: "/b", log: "/l"), discardOutput: true).discardOutput)
    }

    @Test("CRIU versions are read and compared numerically")
    func criuVersions() {
        #expect(CRIUProbe.parseVersion("Version: 4.2.1\nGitID: v4.2.1\n") == "4.2.1")
        #expect(CRIUProbe.parseVersion("criu 3") == nil)
        #expect(CRIUProbe.isAtLeast("4.2.1", "4.2"))
        #expect(CRIUProbe.isAtLeast("4.10", "4.2"))
        #expect(!CRIUProbe.isAtLeast("4.1.1", "4.2"))
        #expect(!CRIUProbe.isAtLeast("3.17.1", "4.2"))
    }

    @Test("the probe refuses a CRIU that is too old, saying how to fix it")
    func probeRefusesOldCRIU() async throws {
        let runner = ScriptedRunner(outputs: ["--version": "Version: 4.1.1\n"])
        let error = await #expect(throws: UMSError.self) {
            try await CRIUProbe.probe(explicitPath: "criu", runner: runner, logger: .init(label: "test"))
        }
        #expect(error?.code == .unsupported)
        #expect(error?.description.contains("scripts/setup") == true)
        #expect(error?.description.contains("4.1.1 is older than 4.2") == true)
    }

    @Test("the probe accepts CRIU 4.2 that passes criu check")
    func probeAccepts() async throws {
        let runner = ScriptedRunner(outputs: ["--version": "Version: 4.2.1\n", "check": "Looks good.\n"])
        let info = try await CRIUProbe.probe(explicitPath: "criu", runner: runner, logger: .init(label: "test"))
        #expect(info == CRIUInfo(path: "criu", version: "4.2.1"))
        #expect(runner.commands.map(\.arguments) == [["--version"], ["check"]])
    }
}

@Suite("Container network and OCI config")
struct ContainerNetworkTests {
    @Test("slots get distinct /30s in 198.19.0.0/16")
    func slots() {
        let first = ContainerNetwork.forSlot(0, system: "a", container: "web")
        #expect(first.namespace == "ums-a-web")
        #expect(first.hostAddress == "198.19.0.1")
        #expect(first.containerAddress == "198.19.0.2")
        let later = ContainerNetwork.forSlot(70, system: "a", container: "db")
        #expect(later.hostAddress == "198.19.1.25")
        #expect(later.containerAddress == "198.19.1.26")
        #expect(later.hostInterface == "umsv70")
    }

    @Test("a system's own block: slots count from its first address, so two systems with disjoint blocks never give one address twice; blocks outside 198.19.0.0/16, unaligned or of another size are refused")
    func blocks() throws {
        let b = try AddressBlock(parsing: "198.19.128.0/17")
        #expect(b.slots == 8192)
        #expect(b.description == "198.19.128.0/17")
        let first = ContainerNetwork.forSlot(0, system: "b", container: "web", block: b)
        #expect(first.hostAddress == "198.19.128.1" && first.containerAddress == "198.19.128.2")
        #expect(ContainerNetwork.forSlot(8191, system: "b", container: "x", block: b).containerAddress == "198.19.255.254")
        #expect(AddressBlock.standard.slots == 16384)
        for bad in ["198.18.0.0/16", "10.0.0.0/16", "198.19.128.0/16", "198.19.1.0/25", "198.19.0.0/15", "198.19.0.0", "198.19.0.0/x", "", "198.19.0.0/17 x"] {
            #expect(throws: UMSError.self) { try AddressBlock(parsing: bad) }
        }
    }

    @Test("published ports are forwarded for other hosts and for the system itself")
    func forwarding() {
        let network = ContainerNetwork.forSlot(0, system: "a", container: "web")
        let rules = network.forwardingRules(for: PortMapping(hostPort: 8080, containerPort: 80))
        #expect(rules.count == 2)
        #expect(rules[0].starts(with: ["-t", "nat", "PREROUTING"]))
        #expect(rules[0].suffix(2) == ["--to-destination", "198.19.0.2:80"])
        #expect(rules[1].contains("OUTPUT"))
    }

    @Test("the OCI config joins the prepared namespace, runs the command and applies limits")
    func ociConfig() throws {
        let template = Data(#"""
            {"ociVersion":"1.0.2","process":{"terminal":true,"args":["sh"],"env":["PATH=/bin"],"cwd":"/"},
             "root":{"path":"rootfs","readonly":true},
             "linux":{"namespaces":[{"type":"pid"},{"type":"network"},{"type":"mount"}]}}
            """#.utf8)
        let specification = Specification(
            name: "web", image: .init(digest: "sha256:" + String(repeating: "a", count: 64)),
            command: ["/bin/counter", "--port", "8080"], environment: ["MODE=x"],
            limits: .init(memoryBytes: 64 << 20, cpus: 0.5, pids: 10)
        )
        let data = try OCIConfig.make(template: template, specification: specification,
                                      placement: .init(networkNamespacePath: "/run/netns/ums-a-web", cgroupsPath: "/ums/a/web",
                                                       criuConfigPath: "/s/containers/web/criu.conf"))
        let config = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let process = try #require(config["process"] as? [String: Any])
        #expect(process["args"] as? [String] == ["/bin/counter", "--port", "8080"])
        #expect(process["terminal"] as? Bool == false)
        #expect(process["env"] as? [String] == ["PATH=/bin", "MODE=x"])
        let linux = try #require(config["linux"] as? [String: Any])
        let namespaces = try #require(linux["namespaces"] as? [[String: String]])
        #expect(namespaces.filter { $0["type"] == "network" } == [["type": "network", "path": "/run/netns/ums-a-web"]])
        #expect(linux["cgroupsPath"] as? String == "/ums/a/web")
        let resources = try #require(linux["resources"] as? [String: Any])
        #expect((resources["memory"] as? [String: Int])?["limit"] == 64 << 20)
        #expect((resources["cpu"] as? [String: Int])?["quota"] == 50_000)
        #expect((resources["pids"] as? [String: Int])?["limit"] == 10)
        #expect((config["root"] as? [String: Any])?["readonly"] as? Bool == false)
        #expect((config["annotations"] as? [String: String])?["org.criu.config"] == "/s/containers/web/criu.conf")
    }

    @Test("security options add capabilities to every set once and drop the seccomp filter")
    func ociSecurity() throws {
        let template = Data(#"""
            {"ociVersion":"1.0.2","process":{"args":["sh"],"capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],
             "permitted":["CAP_KILL","CAP_CHECKPOINT_RESTORE"]}},
             "linux":{"namespaces":[],"seccomp":{"defaultAction":"SCMP_ACT_ERRNO"}}}
            """#.utf8)
        var specification = Specification(name: "web", image: .init(digest: "sha256:x"), command: ["/c"])
        let placement = OCIConfig.Placement(networkNamespacePath: "/run/netns/x", cgroupsPath: "/ums/a/web")
        let plain = try #require(try JSONSerialization.jsonObject(with: OCIConfig.make(template: template, specification: specification, placement: placement)) as? [String: Any])
        #expect((plain["linux"] as? [String: Any])?["seccomp"] != nil, "no security options: the runtime's defaults stay")

        specification.security = SecurityOptions(addCapabilities: ["CAP_CHECKPOINT_RESTORE"], seccompUnconfined: true)
        let config = try #require(try JSONSerialization.jsonObject(with: OCIConfig.make(template: template, specification: specification, placement: placement)) as? [String: Any])
        let capabilities = try #require((config["process"] as? [String: Any])?["capabilities"] as? [String: [String]])
        #expect(capabilities["bounding"] == ["CAP_KILL", "CAP_CHECKPOINT_RESTORE"])
        #expect(capabilities["effective"] == ["CAP_KILL", "CAP_CHECKPOINT_RESTORE"])
        #expect(capabilities["permitted"] == ["CAP_KILL", "CAP_CHECKPOINT_RESTORE"])
        #expect((config["linux"] as? [String: Any])?["seccomp"] == nil)
    }

    @Test("a container that runs containers gets writable cgroups and /proc/sys")
    func ociRunsContainers() throws {
        let template = Data(#"""
            {"ociVersion":"1.0.2","process":{"args":["sh"]},
             "mounts":[{"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["nosuid","ro"]}],
             "linux":{"namespaces":[],"readonlyPaths":["/proc/bus","/proc/sys"]}}
            """#.utf8)
        var specification = Specification(name: "outer", image: .init(digest: "sha256:x"), command: ["/c"])
        specification.security = SecurityOptions(runsContainers: true)
        let placement = OCIConfig.Placement(networkNamespacePath: "/run/netns/x", cgroupsPath: "/ums/a/outer")
        let config = try #require(try JSONSerialization.jsonObject(with: OCIConfig.make(template: template, specification: specification, placement: placement)) as? [String: Any])
        let mounts = try #require(config["mounts"] as? [[String: Any]])
        #expect(mounts.first?["options"] as? [String] == ["nosuid", "rw"])
        #expect((config["linux"] as? [String: Any])?["readonlyPaths"] as? [String] == ["/proc/bus"])
    }
}

/// A command runner that answers from a script instead of running programs: for argument tests.
final class ScriptedRunner: CommandRunner, @unchecked Sendable {
    let outputs: [String: String]
    private let lock = NSLock()
    private var recorded: [Command] = []

    init(outputs: [String: String]) {
        self.outputs = outputs
    }

    var commands: [Command] { lock.withLock { recorded } }

    func run(_ command: Command) async throws -> CommandResult {
        lock.withLock { recorded.append(command) }
        guard let output = command.arguments.first.flatMap({ outputs[$0] }) else {
            throw UMSError(.internalError, "failed to run '\(command)': exit 1")
        }
        return CommandResult(exitCode: 0, standardOutput: output, standardError: "")
    }
}

@Suite("Post-copy")
struct PostCopyTests {
    @Test("a post-copy dump serves pages from the source and keeps the frozen source")
    func lazyCheckpoint() {
        let runc = Runc(root: "/s/runc", criuPath: "criu")
        let options = Runc.CheckpointOptions(imagePath: "/i", workPath: "/w", pageServer: "198.18.0.1:27500", lazyPages: true)
        #expect(runc.checkpointArguments(id: "c", options: options) == [
            "--root", "/s/runc", "--criu", "criu", "checkpoint", "--image-path", "/i", "--work-path", "/w",
            "--leave-running", "--page-server", "198.18.0.1:27500", "--lazy-pages", "c",
        ])
        let restore = Runc.RestoreOptions(imagePath: "/i", workPath: "/w", bundle: "/b", lazyPages: true)
        #expect(runc.restoreArguments(id: "c", options: restore, log: "/l").suffix(3) == ["/b", "--lazy-pages", "c"])
    }

    @Test("the lazy-pages daemon fetches from the source and listens in the restore's work directory")
    func lazyPagesDaemon() throws {
        let options = LazyPagesOptions(imagesDirectory: "/in/images", workDirectory: "/in/images.work",
                                       source: try PageServerAddress(parsing: "198.18.0.1:27500"))
        #expect(options.arguments() == [
            "lazy-pages", "--page-server", "--address", "198.18.0.1", "--port", "27500",
            "--images-dir", "/in/images", "--work-dir", "/in/images.work", "--log-file", "/in/images.work/lazy-pages.log", "-v4",
        ])
        #expect(options.socket == "/in/images.work/lazy-pages.socket")
        #expect(throws: UMSError.self) { try PageServerAddress(parsing: "198.18.0.1") }
        #expect(throws: UMSError.self) { try PageServerAddress(parsing: ":80") }
    }

    @Test("bytes moved are read from the daemon's per-process counts")
    func transferredBytes() {
        let log = """
            (00.1) uffd: 1-12: UFFD transferred pages: (100/32777)
            (00.9) uffd: 1-12: UFFD transferred pages: (32777/32777)
            (00.9) uffd: 7-14: UFFD transferred pages: (3/3)
            (01.0) page-xfer: Disconnect from the page server
            """
        #expect(LazyPagesOptions.transferredBytes(log: log) == (32777 + 3) * 4096)
        #expect(LazyPagesOptions.transferredBytes(log: "") == 0)
    }
}
