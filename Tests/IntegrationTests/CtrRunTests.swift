import Foundation
import Testing
import UMSAPI
import UMSModel

/// Containers made with `ctr run` on containerd (not through UMS), between two containerd systems
/// (`scripts/testbed up --a containerd --b containerd`): containerd's own checkpoint/restore moves
/// them, image and root filesystem changes included.
@Suite("Containers made with ctr run (real containerd)", .serialized, .enabled(if: Testbed.isUp && CtrCLI.bothContainerd, "needs scripts/testbed up --a containerd --b containerd"))
struct CtrRunTests {
    @Test("redis started with ctr run on A, 10,000 keys in memory and a file written into its root filesystem, is listed as made by containerd and moves to B (orchestrator-level): every key, the file, the image under the name it ran by; A's containerd has it no more. One started with --net-host is refused before it freezes, with the reason, and runs on")
    func movesCtrRunRedis() async throws {
        let testbed = try Testbed()
        let (cliA, cliB) = (CtrCLI(system: "a"), CtrCLI(system: "b"))
        let name = "ctrcache"
        await CtrCLI.clear([cliA, cliB], container: name)
        await CtrCLI.clear([cliA], container: "ctrhostnet")
        try await cliA.startRedis(name)
        #expect(try await cliA.fill(name, keys: 10_000) == "OK")
        _ = try await cliA.exec(name, ["sh", "-c", "echo moved > /root/ctr-file"])

        let listed = try #require(try await testbed.a.containers().first { $0.container.name == name })
        #expect(listed.container.specification.engine?.madeBy == .containerd)
        #expect(listed.container.specification.image.format == .engine)
        #expect(listed.container.specification.command.first == "redis-server")

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.approach == .orchestrator)
        #expect(try await cliB.exec(name, ["redis-cli", "DBSIZE"]) == "10000")
        #expect(try await cliB.exec(name, ["redis-cli", "GET", "key:4242"]) == "value:4242")
        #expect(try await cliB.exec(name, ["cat", "/root/ctr-file"]) == "moved", "the root filesystem's changes moved")
        #expect(try await cliB.exec(name, ["redis-cli", "SET", "atB", "yes"]) == "OK", "it takes writes at B")
        #expect(try await cliB.ctr(["images", "list", "--quiet"]).split(separator: "\n").contains("localhost/ums/redis:latest"))
        #expect(!(try await cliA.ctr(["containers", "list", "--quiet"])).split(separator: "\n").contains(Substring(name)), "A's containerd still has \(name)")

        // Host networking cannot move: refused before anything freezes, and it runs on.
        _ = try await cliA.ctr(["run", "-d", "--null-io", "--net-host", "localhost/ums/redis:latest", "ctrhostnet", "redis-server", "--port", "16391"])
        do {
            let accepted = try await testbed.a.migrate(MigrateRequest(container: "ctrhostnet", destination: testbed.bURL))
            Issue.record("a --net-host container was accepted for migration (\(accepted.id))")
        } catch {
            #expect("\(error)".contains("--net-host"), "\(error)")
        }
        #expect(try await cliA.taskState("ctrhostnet") == "RUNNING")
        await CtrCLI.clear([cliA], container: "ctrhostnet")
        await CtrCLI.clear([cliB], container: name)
    }

    @Test("a ctr run container whose restore fails at B (B damages what it receives) rolls back: A's containerd restores it in place with every key and its file; B keeps nothing of it")
    func ctrRunRollback() async throws {
        let testbed = try Testbed()
        let (cliA, cliB) = (CtrCLI(system: "a"), CtrCLI(system: "b"))
        let name = "ctrrollback"
        await CtrCLI.clear([cliA, cliB], container: name)
        try await cliA.startRedis(name)
        #expect(try await cliA.fill(name, keys: 5_000) == "OK")
        _ = try await cliA.exec(name, ["sh", "-c", "echo stays > /root/ctr-file"])
        try await Testbed.restartB(faults: ["incoming.restore=corrupt-images"])
        let record: MigrationRecord
        do {
            record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        } catch {
            try await Testbed.restartB(faults: [])
            throw error
        }
        try await Testbed.restartB(faults: [])
        #expect(record.status == .rolledBack, "\(record.status) \(record.error?.description ?? "")")
        #expect(try await cliA.taskState(name) == "RUNNING")
        #expect(try await cliA.exec(name, ["redis-cli", "DBSIZE"]) == "5000")
        #expect(try await cliA.exec(name, ["cat", "/root/ctr-file"]) == "stays")
        #expect(!(try await cliB.ctr(["containers", "list", "--quiet"])).split(separator: "\n").contains(Substring(name)))
        #expect(!(try await cliB.ctr(["images", "list", "--quiet"])).contains("ums-checkpoint"), "B keeps no checkpoint")
        #expect(!(try await cliA.ctr(["images", "list", "--quiet"])).contains("ums-changes"), "A keeps no checkpoint once it runs again")
        await CtrCLI.clear([cliA], container: name)
    }
}

/// containerd's own CLI against one testbed system's containerd, in the namespace `ctr run` uses.
struct CtrCLI {
    let system: String

    static var bothContainerd: Bool {
        guard let (a, b) = Testbed.kinds else { return false }
        return a == .containerd && b == .containerd
    }

    var socket: String { "\(Testbed.environment["UMS_TESTBED_DIR"] ?? "/run/ums-testbed")/\(system)/engine.sock" }

    func ctr(_ arguments: [String]) async throws -> String {
        try await command("/usr/bin/ctr", ["--address", socket] + arguments)
    }

    func exec(_ container: String, _ arguments: [String]) async throws -> String {
        try await ctr(["tasks", "exec", "--exec-id", "t\(UUID().uuidString.prefix(8))", container] + arguments)
    }

    /// `keys` keys (`key:N` = `value:N`) written by one Lua script inside redis.
    func fill(_ container: String, keys: Int) async throws -> String {
        try await exec(container, ["redis-cli", "EVAL", "for i=1,\(keys) do redis.call('SET','key:'..i,'value:'..i) end return 'OK'", "0"])
    }

    func taskState(_ container: String) async throws -> String? {
        try await ctr(["tasks", "list"]).split(separator: "\n").map { $0.split(whereSeparator: \.isWhitespace).map(String.init) }
            .first { $0.first == container }.flatMap { $0.count >= 3 ? $0[2] : nil }
    }

    /// The redis image (scripts/build-image) loaded, and redis started from it with ctr run.
    func startRedis(_ name: String) async throws {
        _ = try await ctr(["images", "import", try EngineTests.serviceImage("redis")])
        _ = try await ctr(["run", "-d", "--null-io", "localhost/ums/redis:latest", name])
        var pong = ""
        for _ in 0..<50 where pong != "PONG" {
            pong = (try? await exec(name, ["redis-cli", "PING"])) ?? ""
            if pong != "PONG" { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(pong == "PONG", "redis answers at \(system)")
    }

    static func clear(_ clis: [CtrCLI], container: String) async {
        for cli in clis {
            _ = try? await cli.ctr(["tasks", "kill", "--signal", "SIGKILL", container])
            try? await Task.sleep(for: .milliseconds(200))
            _ = try? await cli.ctr(["tasks", "delete", "--force", container])
            _ = try? await cli.ctr(["containers", "delete", container])
        }
    }
}
