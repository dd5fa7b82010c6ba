import Foundation
import Testing
import UMSAPI
import UMSModel

extension Testbed {
    /// Whether a system of the testbed is a Docker Swarm (`scripts/testbed up --a swarm …`).
    static var hasSwarm: Bool { environment["UMS_TESTBED_A_NODES"] != nil || environment["UMS_TESTBED_B_NODES"] != nil }

    /// The engine sockets of system `system`'s swarm nodes, node 1 (the manager) first.
    static func swarmNodes(_ system: String) -> [String] {
        (environment["UMS_TESTBED_\(system.uppercased())_NODES"] ?? "").split(separator: ",").map(String.init)
    }

    /// `docker -H SOCKET ARGS…` (the engine's own CLI, as a swarm's operator would use it).
    static func docker(_ socket: String, _ arguments: [String]) async throws -> String {
        try await command("/usr/bin/docker", ["-H", socket] + arguments)
    }

    /// The swarm's services (names) on system `system`.
    static func swarmServices(_ system: String) async throws -> [String] {
        let manager = try #require(swarmNodes(system).first)
        return try await docker(manager, ["service", "ls", "--format", "{{.Name}}"]).split(separator: "\n").map(String.init)
    }

    /// The running task of a service: its ID, the hostname of its node, its container.
    static func swarmTask(_ system: String, service: String) async throws -> (id: String, node: String, container: String) {
        let manager = try #require(swarmNodes(system).first)
        // Swarm may still be placing it (a service just created): up to 30 s.
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            let line = try await docker(manager, ["service", "ps", service, "--no-trunc", "--filter", "desired-state=running", "--format", "{{.ID}} {{.Node}} {{.CurrentState}}"])
            let words = line.split(separator: "\n").first.map { $0.split(separator: " ").map(String.init) } ?? []
            if words.count >= 3, words[2] == "Running" {
                let container = try await docker(manager, ["inspect", "--type", "task", words[0], "--format", "{{.Status.ContainerStatus.ContainerID}}"])
                return (words[0], words[1], container)
            }
            try #require(ContinuousClock.now < deadline, "no running task of \(service) on swarm \(system): \(line)")
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// The engine socket of the node with this hostname (`tb<system>-n<K>`: the K-th node).
    static func swarmNodeSocket(_ system: String, hostname: String) throws -> String {
        let index = try #require(hostname.split(separator: "n").last.flatMap { Int($0) }, "node \(hostname)")
        let nodes = swarmNodes(system)
        try #require((1...nodes.count).contains(index))
        return nodes[index - 1]
    }

    /// Waits until memhog at `endpoint` answers with a count below `below` (it started afresh).
    func waitForRestart(at endpoint: String, below: Int, timeout: Duration = .seconds(60)) async throws -> Int {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let count = try? await count(at: endpoint, timeout: .seconds(2)), count < below { return count }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw UMSError(.timeout, "the service at \(endpoint) did not start afresh within \(timeout)")
    }

    /// Lines of every swarm node's dockerd log that tell of an image pull (none may: each node has
    /// what it runs, and DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 keeps a worker from pulling first).
    func pullAttempts() -> [String] {
        let logs = ["a", "b"].flatMap { system in
            ["\(directory)/\(system)/engine/log"] + ((try? FileManager.default.contentsOfDirectory(atPath: "\(directory)/\(system)/nodes")) ?? []).map { "\(directory)/\(system)/nodes/\($0)/log" }
        }
        return logs.flatMap { path in
            ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").filter { line in
                let text = line.lowercased()
                return text.contains("pulling image") || text.contains("endpoint for pull") || text.contains("pull access") || text.contains("registry-1.docker.io") || text.contains("error pulling")
            }.map(String.init)
        }
    }
}

/// Docker Swarm systems (issue 18): `scripts/testbed up --a swarm --b swarm` (2 nodes each).
@Suite("Swarm → Swarm: a one-replica service moves between two clusters", .serialized, .enabled(if: Testbed.isUp && Testbed.kinds.map { $0 == (.swarm, .swarm) } == true && !Testbed.restoreFailsOnB, "needs scripts/testbed up --a swarm --b swarm"))
struct SwarmTests {
    static func memhogMigratable() throws -> String {
        try #require(Testbed.environment["UMS_MEMHOG_MIGRATABLE_ROOTFS"], "scripts/test sets UMS_MEMHOG_MIGRATABLE_ROOTFS")
    }

    /// A memhog swarm service on A: migratable (service-level) or nested (container-level).
    func runMemhog(_ testbed: Testbed, _ name: String, port: Int, nested: Bool) async throws {
        let rootfs = nested ? try #require(Testbed.environment["UMS_MEMHOG_ROOTFS"]) : try Self.memhogMigratable()
        _ = try await testbed.a.run(RunRequest(
            name: name, rootfs: rootfs, command: ["/bin/memhog", "--mib", "32", "--port", "8080"], publish: ["\(port):8080"], nested: nested ? true : nil
        ))
        _ = try await testbed.waitForCount(at: "\(testbed.aHost):\(port)", atLeast: 1, timeout: .seconds(30))
    }

    @Test("a memhog service moves swarm A → swarm B with its memory, service- and container-level: A's service is removed (never restarted), B shows 1/1 on the node asked for; killing B's task makes Swarm start it afresh from its image", arguments: [Approach.service, .container])
    func moves(_ approach: Approach) async throws {
        let testbed = try Testbed()
        let name = "swarm-memhog-\(approach.rawValue)"
        let port = approach == .service ? 18200 : 18201
        await testbed.cleanUp(name)
        try await runMemhog(testbed, name, port: port, nested: approach == .container)
        let before = try await testbed.checksum(at: "\(testbed.aHost):\(port)")
        #expect(before.now == before.initial)
        let countBefore = try await testbed.waitForCount(at: "\(testbed.aHost):\(port)", atLeast: 50)
        let taskAtA = try await Testbed.swarmTask("a", service: name)

        let record = try await testbed.migrated(MigrateRequest(
            container: name, destination: testbed.bURL, approach: .specific(approach), placement: ["node.role==worker"]
        ), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.approach == approach)

        // Its memory crossed intact and it went on counting from where it was.
        let after = try await testbed.checksum(at: "\(testbed.bHost):\(port)")
        #expect(after.initial == before.initial && after.now == before.initial, "memory crossed intact")
        #expect(try await testbed.count(at: "\(testbed.bHost):\(port)") >= countBefore)
        // B: one service, 1/1, on a worker (the placement asked for). A: none, and it stays so.
        let replicas = try await Testbed.docker(try #require(Testbed.swarmNodes("b").first), ["service", "ls", "--filter", "name=\(name)", "--format", "{{.Replicas}}"])
        #expect(replicas == "1/1")
        let taskAtB = try await Testbed.swarmTask("b", service: name)
        #expect(taskAtB.node == "tbb-n2", "placed on B's worker as asked (node.role==worker)")
        #expect(try await testbed.b.container(name).container.node == "tbb-n2", "B's Coordinator says which node runs it")
        #expect(try await Testbed.swarmServices("a").contains(name) == false)
        #expect(try await testbed.names(on: testbed.a).contains(name) == false)
        try await Task.sleep(for: .seconds(2))
        #expect(try await Testbed.swarmServices("a").contains(name) == false, "swarm A did not restart it")
        let stillAtA = try? await Testbed.docker(try Testbed.swarmNodeSocket("a", hostname: taskAtA.node), ["ps", "-q", "--filter", "id=\(taskAtA.container)"])
        #expect((stillAtA ?? "").isEmpty, "the source's task container is gone")

        // Swarm's own restart: kill the task's container on its node; Swarm starts a new task from
        // the service's image, whose agent UMS tells to start the service afresh.
        let countAtB = try await testbed.count(at: "\(testbed.bHost):\(port)")
        _ = try await Testbed.docker(try Testbed.swarmNodeSocket("b", hostname: taskAtB.node), ["kill", taskAtB.container])
        let fresh = try await testbed.waitForRestart(at: "\(testbed.bHost):\(port)", below: countAtB)
        #expect(fresh < countAtB, "its in-memory state is lost, as with any Swarm restart")
        let replaced = try await Testbed.swarmTask("b", service: name)
        #expect(replaced.id != taskAtB.id)
        #expect(try await testbed.b.container(name).container.state == .running)
        #expect(testbed.pullAttempts().isEmpty, "\(testbed.pullAttempts().prefix(3))")
        await testbed.cleanUp(name)
        #expect(try await Testbed.swarmServices("b").contains(name) == false)
    }

    @Test("a service made with docker service create (a migratable image loaded on every node) is adopted and moves swarm A → swarm B with its memory; its image goes by ID onto every node of B")
    func adoptsDockerServiceCreate() async throws {
        let testbed = try Testbed()
        let name = "swarm-adopted"
        let port = 18207
        await testbed.cleanUp(name)
        let nodes = Testbed.swarmNodes("a")
        let manager = try #require(nodes.first)
        // The operator's own image, the same on every node (imported once, then saved and loaded).
        let image = "localhost/memhog-migratable:adopt"
        _ = try await command("/bin/sh", ["-c", "tar -C \"$0\" -c . | docker -H \"$1\" import - \"$2\" >/dev/null", try Self.memhogMigratable(), manager, image])
        for node in nodes.dropFirst() {
            _ = try await command("/bin/sh", ["-c", "docker -H \"$0\" save \"$2\" | docker -H \"$1\" load >/dev/null", manager, node, image])
        }
        _ = try await Testbed.docker(manager, [
            "service", "create", "--detach", "--no-resolve-image", "--name", name, "--replicas", "1", "--endpoint-mode", "dnsrr",
            "--publish", "mode=host,target=8080,published=\(port)", "--env", "UMS_AGENT_TOKEN=adopted-secret", "--container-label", "ums.agent=7079",
            "--cap-add", "CAP_SYS_ADMIN", image, "/.ums/ums-agent", "run", "--", "/bin/memhog", "--mib", "32", "--port", "8080",
        ])
        let task = try await Testbed.swarmTask("a", service: name)
        // The node's own address (the testbed's numbering: A's node K ≥ 2 is 198.18.0.1K).
        let index = try #require(task.node.split(separator: "n").last.flatMap { Int($0) })
        let nodeAddress = index == 1 ? testbed.aHost : "198.18.0.\(10 + index)"
        _ = try await testbed.waitForCount(at: "\(nodeAddress):\(port)", atLeast: 20, timeout: .seconds(30))
        let before = try await testbed.checksum(at: "\(nodeAddress):\(port)")
        // UMS lists it (not made by UMS) and offers service-level.
        let listed = try #require(try await testbed.a.containers().first { $0.container.name == name })
        #expect(listed.container.specification.engine?.madeBy == .swarm)
        #expect(listed.container.approaches.first == .service)

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.approach == .service)
        #expect(try await testbed.checksum(at: "\(testbed.bHost):\(port)").now == before.initial)
        #expect(try await Testbed.swarmServices("a").contains(name) == false, "A's service removed after the commit")
        let imageID = try #require(listed.container.specification.image.digest as String?)
        for node in Testbed.swarmNodes("b") {
            #expect(try await Testbed.docker(node, ["image", "inspect", imageID, "--format", "{{.Id}}"]) == imageID, "on every node of B")
        }
        #expect(testbed.pullAttempts().isEmpty, "\(testbed.pullAttempts().prefix(3))")
        await testbed.cleanUp(name)
    }

    @Test("orchestrator-level is infeasible through Swarm, and --dry-run says why")
    func dryRun() async throws {
        let testbed = try Testbed()
        let name = "swarm-memhog-plan"
        await testbed.cleanUp(name)
        try await runMemhog(testbed, name, port: 18202, nested: false)
        let plan = try await testbed.a.plan(MigrateRequest(container: name, destination: testbed.bURL, approach: .specific(.orchestrator)))
        #expect(plan.approach == nil)
        let verdict = try #require(plan.verdicts.first { $0.approach == .orchestrator })
        #expect(!verdict.feasible && verdict.reason.contains("Docker Swarm has no checkpoint API"), "\(verdict.reason)")
        #expect(plan.verdicts.first { $0.approach == .service }?.feasible == true)
        await testbed.cleanUp(name)
    }
}

/// `scripts/testbed up --a swarm --b swarm --fault b:incoming.restore=corrupt-images`.
@Suite("Swarm rollback: the restore fails at swarm B", .serialized, .enabled(if: Testbed.isUp && Testbed.kinds.map { $0 == (.swarm, .swarm) } == true && Testbed.restoreFailsOnB, "needs a swarm testbed whose B corrupts what it receives"))
struct SwarmRollbackTests {
    @Test("swarm A's service goes on exactly as it was (same service, same task, its memory), swarm B has nothing", arguments: [Approach.service, .container])
    func rollsBack(_ approach: Approach) async throws {
        let testbed = try Testbed()
        let name = "swarm-rollback-\(approach.rawValue)"
        let port = approach == .service ? 18203 : 18204
        await testbed.cleanUp(name)
        try await SwarmTests().runMemhog(testbed, name, port: port, nested: approach == .container)
        let before = try await testbed.checksum(at: "\(testbed.aHost):\(port)")
        let task = try await Testbed.swarmTask("a", service: name)
        let manager = try #require(Testbed.swarmNodes("a").first)
        let version = try await Testbed.docker(manager, ["service", "inspect", name, "--format", "{{.ID}} {{.Version.Index}}"])
        let countBefore = try await testbed.count(at: "\(testbed.aHost):\(port)")

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL, approach: .specific(approach)), by: testbed.a)
        #expect(record.status == .rolledBack, "\(record.error?.description ?? "")")
        #expect(record.step == .restoring)

        let resumed = try await testbed.count(at: "\(testbed.aHost):\(port)")
        #expect(resumed >= countBefore, "it went on from where it was frozen")
        #expect(try await testbed.checksum(at: "\(testbed.aHost):\(port)").now == before.initial)
        #expect(try await Testbed.swarmTask("a", service: name).id == task.id, "the same task: Swarm restarted nothing")
        #expect(try await Testbed.docker(manager, ["service", "inspect", name, "--format", "{{.ID}} {{.Version.Index}}"]) == version, "the service as it was")
        #expect(try await Testbed.swarmServices("b").isEmpty, "swarm B has nothing")
        #expect(try await testbed.names(on: testbed.b).isEmpty)
        await testbed.cleanUp(name)
    }
}

/// `scripts/testbed up --a swarm --b runc`: between a cluster and a single host.
@Suite("Swarm ↔ runc: a nested service between a cluster and a single host", .serialized, .enabled(if: Testbed.isUp && Testbed.kinds.map { $0 == (.swarm, .runc) } == true, "needs scripts/testbed up --a swarm --b runc"))
struct SwarmRuncTests {
    @Test("the swarm has every node the testbed made (scripts/test makes 3 here), each ready, one manager")
    func nodes() async throws {
        let sockets = Testbed.swarmNodes("a")
        #expect(sockets.count >= 2)
        let manager = try #require(sockets.first)
        let listed = try await Testbed.docker(manager, ["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"]).split(separator: "\n")
        #expect(listed.count == sockets.count, "\(listed)")
        #expect(listed.allSatisfy { $0.contains(" Ready") }, "\(listed)")
        #expect(listed.filter { $0.hasSuffix("Leader") }.count == 1, "\(listed)")
        #expect(Set(listed.compactMap { $0.split(separator: " ").first }).count == sockets.count, "each node its own hostname")
    }

    @Test("container-level: swarm → runc → swarm, with its memory each way; the decision explains why service-level is not offered")
    func roundTrip() async throws {
        let testbed = try Testbed()
        let name = "swarm-runc-memhog"
        let port = 18205
        await testbed.cleanUp(name)
        try await SwarmTests().runMemhog(testbed, name, port: port, nested: true)
        let before = try await testbed.checksum(at: "\(testbed.aHost):\(port)")
        let countBefore = try await testbed.waitForCount(at: "\(testbed.aHost):\(port)", atLeast: 20)

        let there = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(there.status == .completed, "\(there.error?.description ?? "")")
        #expect(there.approach == .container)
        #expect(try await testbed.checksum(at: "\(testbed.bHost):\(port)").now == before.initial)
        let countAtB = try await testbed.count(at: "\(testbed.bHost):\(port)")
        #expect(countAtB >= countBefore)
        #expect(try await Testbed.swarmServices("a").contains(name) == false)

        let back = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.aURL), by: testbed.b)
        #expect(back.status == .completed, "\(back.error?.description ?? "")")
        #expect(try await testbed.checksum(at: "\(testbed.aHost):\(port)").now == before.initial)
        #expect(try await testbed.count(at: "\(testbed.aHost):\(port)") >= countAtB)
        #expect(try await Testbed.swarmServices("a").contains(name))
        #expect(try await testbed.names(on: testbed.b).contains(name) == false)
        await testbed.cleanUp(name)
    }

    @Test("a service started on runc moves to the swarm with its memory; service-level is not offered back (the agent capability differs)")
    func fromRunc() async throws {
        let testbed = try Testbed()
        let name = "runc-swarm-memhog"
        let port = 18206
        await testbed.cleanUp(name)
        let rootfs = try #require(Testbed.environment["UMS_MEMHOG_ROOTFS"])
        _ = try await testbed.b.run(RunRequest(name: name, rootfs: rootfs, command: ["/bin/memhog", "--mib", "32", "--port", "8080"], publish: ["\(port):8080"], nested: true))
        _ = try await testbed.waitForCount(at: "\(testbed.bHost):\(port)", atLeast: 20, timeout: .seconds(30))
        let before = try await testbed.checksum(at: "\(testbed.bHost):\(port)")
        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.aURL), by: testbed.b)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(try await testbed.checksum(at: "\(testbed.aHost):\(port)").now == before.initial)
        #expect(try await Testbed.swarmServices("a").contains(name))
        let plan = try await testbed.a.plan(MigrateRequest(container: name, destination: testbed.bURL, approach: .specific(.service)))
        #expect(plan.approach == nil, "service-level needs the agent's image, and the same agent capability on both sides")
        await testbed.cleanUp(name)
    }
}
