import Foundation
import Testing
import UMSAPI
import UMSModel

/// Runs on a testbed whose systems have different orchestrators (`scripts/testbed up --a KIND
/// --b KIND`; scripts/test brings up Podman → Docker, Docker → containerd and containerd → runc):
/// the engines are real,
/// started by the testbed inside each system's namespace.
@Suite("Migration through the engine adapters (real Podman, Docker, containerd)", .serialized, .enabled(if: Testbed.isUp && Testbed.kinds != nil && !Testbed.hasSwarm, "needs scripts/testbed up --a KIND --b KIND"))
struct EngineTests {
    @Test("the unchanged counter, nested, moves A → B → A between different engines under auto (container-level), its state continuing")
    func nestedAcrossEngines() async throws {
        let testbed = try Testbed()
        let (kindA, kindB) = try #require(Testbed.kinds)
        let name = "counter-engines"
        await testbed.cleanUp(name)
        let view = try await testbed.runCounter(name, port: 18100, arguments: ["--children", "2"], nested: true)
        #expect(view.container.orchestrator == kindA)
        #expect(try await testbed.a.system().profile.orchestrator == kindA)
        #expect(try await testbed.b.system().profile.orchestrator == kindB)
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18100", atLeast: 10)

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL, approach: .auto), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.approach == .container)
        let after = try await testbed.count(at: "\(testbed.bHost):18100")
        #expect(after >= before, "\(kindA) → \(kindB): the counter continued instead of restarting")
        #expect(try await testbed.waitForCount(at: "\(testbed.bHost):18100", atLeast: after + 5) > after)
        #expect(try await testbed.count(at: "\(testbed.bHost):18100", path: "/children") == 2)
        let atB = try await testbed.b.container(name).container
        #expect(atB.orchestrator == kindB)
        #expect(atB.state == .running)
        #expect(try await testbed.names(on: testbed.a).contains(name) == false)

        let back = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.aURL), by: testbed.b)
        #expect(back.status == .completed, "\(back.error?.description ?? "")")
        let returned = try await testbed.waitForCount(at: "\(testbed.aHost):18100", atLeast: after + 5)
        #expect(returned > after)
        // The source engine removed its outer container, nested processes included.
        #expect(try await testbed.names(on: testbed.b).contains(name) == false)
        #expect(try await testbed.onlyForwards(testbed.b, service: name, to: testbed.aHost))
        try await testbed.a.remove(name)
        #expect((try? await testbed.count(at: "\(testbed.aHost):18100")) == nil)
    }

    @Test("between two Podman or two Docker systems the engine's own checkpoint/restore moves a plain counter A → B → A (orchestrator-level, under auto)")
    func orchestratorLevelSameEngine() async throws {
        let testbed = try Testbed()
        let (kindA, kindB) = try #require(Testbed.kinds)
        guard kindA == kindB, [.podman, .docker].contains(kindA) else { return }
        let name = "counter-native"
        await testbed.cleanUp(name)
        _ = try await testbed.runCounter(name, port: 18102, arguments: ["--children", "2"])
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18102", atLeast: 10)
        let plan = try await testbed.a.plan(MigrateRequest(container: name, destination: testbed.bURL))
        #expect(plan.approach == .orchestrator, "\(plan.verdicts)")

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.approach == .orchestrator)
        let after = try await testbed.count(at: "\(testbed.bHost):18102")
        #expect(after >= before, "the counter continued instead of restarting")
        #expect(try await testbed.count(at: "\(testbed.bHost):18102", path: "/children") == 2)
        #expect(try await testbed.names(on: testbed.a).contains(name) == false)
        let back = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.aURL), by: testbed.b)
        #expect(back.status == .completed, "\(back.error?.description ?? "")")
        #expect(try await testbed.waitForCount(at: "\(testbed.aHost):18102", atLeast: after + 3) > after)
        await testbed.cleanUp(name)
    }

    @Test("between two Podman or two Docker systems, a restore that fails at B rolls back: A's engine starts the counter again from the checkpoint it kept, its count continuing")
    func orchestratorLevelRollback() async throws {
        let testbed = try Testbed()
        let (kindA, kindB) = try #require(Testbed.kinds)
        guard kindA == kindB, [.podman, .docker].contains(kindA) else { return }
        let name = "counter-native-rollback"
        await testbed.cleanUp(name)
        _ = try await testbed.runCounter(name, port: 18128, arguments: ["--children", "2"])
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18128", atLeast: 10)
        try await Testbed.restartB(faults: ["incoming.restore=fail"])
        let record: MigrationRecord
        do {
            record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL, approach: .specific(.orchestrator)), by: testbed.a)
        } catch {
            try? await Testbed.restartB(faults: [])
            throw error
        }
        try await Testbed.restartB(faults: [])
        #expect(record.status == .rolledBack, "\(record.error?.description ?? "")")
        #expect(record.step == .restoring)
        // Docker: checkpointed through its containerd (the testbed gives umsd --docker-containerd)
        // and started again through Docker's API from the container's own checkpoint directory.
        let resumed = try await testbed.count(at: "\(testbed.aHost):18128")
        #expect(resumed >= before, "the counter continued instead of restarting from 0")
        #expect(try await testbed.waitForCount(at: "\(testbed.aHost):18128", atLeast: resumed + 3) > resumed)
        #expect(try await testbed.count(at: "\(testbed.aHost):18128", path: "/children") == 2)
        #expect(try await testbed.names(on: testbed.b).contains(name) == false)
        await testbed.cleanUp(name)
    }

    @Test("across engine kinds the decision explains what is infeasible: orchestrator-level always, service-level where the agent's capabilities differ")
    func decisionAcrossEngines() async throws {
        let testbed = try Testbed()
        let (kindA, kindB) = try #require(Testbed.kinds)
        let name = "counter-engines-plan"
        await testbed.cleanUp(name)
        _ = try await testbed.runCounter(name, port: 18101, rootfs: try Testbed.migratableRootfs())
        let plan = try await testbed.a.plan(MigrateRequest(container: name, destination: testbed.bURL))
        let orchestrator = try #require(plan.verdicts.first { $0.approach == .orchestrator })
        // Orchestrator-level is wired for runc, Podman and Docker, and only between two of a kind.
        #expect(orchestrator.feasible == (kindA == kindB && [.runc, .podman, .docker].contains(kindA)), "\(orchestrator.reason)")
        if kindA != kindB {
            #expect(orchestrator.reason.contains("cannot checkpoint") || orchestrator.reason.contains("cannot restore") || orchestrator.reason.contains("orchestrators differ"), "\(orchestrator.reason)")
        }
        let service = try #require(plan.verdicts.first { $0.approach == .service })
        // Docker 20.10 cannot give an agent CAP_CHECKPOINT_RESTORE (it gives CAP_SYS_ADMIN).
        let sameCapability = (kindA == .docker) == (kindB == .docker)
        #expect(service.feasible == sameCapability, "\(service.reason)")
        if !sameCapability {
            #expect(service.reason.contains("capabilities it had"))
            #expect(plan.approach == nil)
            #expect(plan.infeasible?.contains("no approach is feasible") == true)
        }
        await testbed.cleanUp(name)
    }

    @Test("a container started with docker/podman run, not through UMS, is listed as made by its engine and moves to B with its image, state and restart policy; A's Docker does not restart it")
    func adoptsDockerRun() async throws {
        let testbed = try Testbed()
        guard let (cliA, cliB) = try EngineCLI.sameKind() else { return }
        let name = "adopted"
        _ = try? await cliA.run(["rm", "-f", name])
        _ = try? await cliB.run(["rm", "-f", name])
        // The user's own image and container, made with Docker's CLI against A's engine.
        try await cliA.importRootfs(testbed.rootfs, as: "localhost/adopt:test")
        _ = try await cliA.run([
            "run", "-d", "--name", name, "--restart", "always", "-p", "18110:8080", "-e", "GREETING=hi",
            "localhost/adopt:test", "/bin/counter", "--port", "8080",
        ])
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18110", atLeast: 10)
        let listed = try #require(try await testbed.a.containers().first { $0.container.name == name })
        #expect(listed.container.specification.engine?.madeBy == cliA.kind)
        #expect(listed.container.specification.engine?.restartPolicy == .always)
        #expect(listed.container.specification.image.format == .engine)
        #expect(listed.container.specification.environmentValue("GREETING") == "hi")

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.approach == .orchestrator)
        let after = try await testbed.count(at: "\(testbed.bHost):18110")
        #expect(after >= before, "the counter continued at B")
        // B's Docker runs it, from the same image (by ID), with the same restart policy.
        let policy = try await cliB.run(["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}} {{.Image}}", name])
        let words = policy.split(separator: " ").map(String.init)
        #expect(words.first == "always", "\(policy)")
        #expect(words.count == 2 && listed.container.specification.image.digest.hasSuffix(words[1].replacingOccurrences(of: "sha256:", with: "")), "the same image, by ID: \(policy)")
        // A's Docker no longer has it, and does not bring it back.
        try await Task.sleep(for: .seconds(2))
        let left = try await cliA.run(["ps", "-a", "--format", "{{.Names}}"])
        #expect(!left.split(separator: "\n").contains(Substring(name)), "A's engine still has \(name)")
        _ = try? await cliB.run(["rm", "-f", name])
    }

    @Test("a docker/podman run container with a named volume moves with the volume's files (owners and modes kept) and the file it writes there; A keeps no stale copy")
    func adoptsNamedVolume() async throws {
        let testbed = try Testbed()
        guard let (cliA, cliB) = try EngineCLI.sameKind() else { return }
        let (name, volume) = ("cache", "cachedata")
        await EngineCLI.clear([cliA, cliB], container: name, volume: volume)
        try await cliA.importRootfs(testbed.rootfs, as: "localhost/adopt:test")
        // Data already in the volume, owned by someone else than root, with a mode of its own.
        _ = try await cliA.run([
            "run", "--rm", "-v", "\(volume):/data", "localhost/adopt:test", "/bin/sh", "-c",
            "echo kept > /data/keep && chown 999:998 /data/keep && chmod 640 /data/keep",
        ])
        // The service keeps a file open in the volume and appends its count to it every second.
        _ = try await cliA.run([
            "run", "-d", "--name", name, "-v", "\(volume):/data", "-p", "18111:8080",
            "localhost/adopt:test", "/bin/counter", "--port", "8080", "--state-file", "/data/count.log",
        ])
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18111", atLeast: 25)
        let listed = try #require(try await testbed.a.containers().first { $0.container.name == name })
        #expect(listed.container.specification.volumes == [VolumeMount(name: volume, destination: "/data")])

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        // The bulk while it ran, what changed after the freeze.
        #expect(record.events.contains { $0.message.contains("volume \(volume) sent, while the service runs") })
        #expect(record.events.contains { $0.message.contains("volume \(volume) sent, changes after the freeze") })
        let after = try await testbed.waitForCount(at: "\(testbed.bHost):18111", atLeast: before + 2)
        #expect(after > before)
        let check = try await cliB.run([
            "exec", name, "/bin/sh", "-c", "stat -c '%u:%g %a' /data/keep; cat /data/keep; wc -l < /data/count.log",
        ])
        let lines = check.split(separator: "\n").map(String.init)
        #expect(lines.first == "999:998 640", "\(check)")
        #expect(lines.dropFirst().first == "kept")
        #expect((lines.last.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? 0) >= 2, "the state file moved and grows at B: \(check)")
        let stale = try await cliA.run(["volume", "ls", "--format", "{{.Name}}"])
        #expect(!stale.split(separator: "\n").contains(Substring(volume)), "A keeps no stale copy of the volume")
        _ = try? await cliB.run(["rm", "-f", name])
        _ = try? await cliB.run(["volume", "rm", "-f", volume])
    }

    @Test("a container UMS cannot carry (a host file mounted) is refused before it freezes, with the reason; a host directory is refused by a destination that allows none, and the source runs on")
    func refusesWhatCannotMove() async throws {
        let testbed = try Testbed()
        let (kindA, kindB) = try #require(Testbed.kinds)
        guard kindA == kindB, [.docker, .podman].contains(kindA) else { return }
        let cliA = EngineCLI(kind: kindA, system: "a")
        let name = "unmovable"
        _ = try? await cliA.run(["rm", "-f", name])
        try await cliA.importRootfs(testbed.rootfs, as: "localhost/adopt:test")
        // A host file bind-mounted: refused at the source, before anything freezes.
        _ = try await cliA.run(["run", "-d", "--name", name, "-v", "/etc/hostname:/host-name", "localhost/adopt:test", "/bin/counter", "--port", "8080"])
        let refused = await #expect(throws: UMSError.self) {
            try await testbed.a.migrate(MigrateRequest(container: name, destination: testbed.bURL))
        }
        #expect(refused?.message.contains("mounts a host file at /host-name") == true, "\(refused?.message ?? "")")
        let state = try await cliA.run(["inspect", "-f", "{{.State.Status}}", name])
        #expect(state.hasPrefix("running"), "untouched: \(state)")
        #expect(try await testbed.a.container(name).container.migratingIn == nil)
        _ = try? await cliA.run(["rm", "-f", name])

        // A host directory: carried only where the destination allows it; B allows none, so its
        // admission refuses at prepare and the source keeps running, as it was.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ums-bind-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = try await cliA.run(["run", "-d", "--name", name, "-v", "\(directory):/srv", "localhost/adopt:test", "/bin/counter", "--port", "8080"])
        let listed = try #require(try await testbed.a.containers().first { $0.container.name == name })
        #expect(listed.container.specification.binds == [BindMount(hostPath: directory, destination: "/srv")])
        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .rolledBack)
        #expect(record.error?.message.contains("rule allowedBindPaths") == true, "\(record.error?.message ?? "")")
        #expect(try await cliA.run(["inspect", "-f", "{{.State.Status}}", name]).hasPrefix("running"))
        #expect(try await testbed.a.container(name).container.migratingIn == nil, "given back to its engine")
        _ = try? await cliA.run(["rm", "-f", name])
    }
}

extension EngineTests {
    /// A real service image from scripts/build-image (`UMS_IMAGES_DIR`, which scripts/test sets).
    static func serviceImage(_ name: String) throws -> String {
        let directory = try #require(Testbed.environment["UMS_IMAGES_DIR"], "scripts/test builds the service images and sets UMS_IMAGES_DIR")
        let archive = "\(directory)/\(name).tar"
        try #require(FileManager.default.fileExists(atPath: archive), "scripts/build-image \(name) makes \(archive)")
        return archive
    }

    @Test("redis started with docker/podman run --restart always and a named volume, 10,000 keys saved there and 100 more only in memory, moves to B: every key in memory, the saved file in the volume; A's engine neither keeps nor restarts it")
    func movesRedisWithItsKeys() async throws {
        let testbed = try Testbed()
        guard let (cliA, cliB) = try EngineCLI.sameKind() else { return }
        let (name, volume) = ("cache", "cachedata")
        await EngineCLI.clear([cliA, cliB], container: name, volume: volume)
        _ = try await cliA.run(["load", "-i", try Self.serviceImage("redis")])
        _ = try await cliA.run([
            "run", "-d", "--name", name, "--restart", "always", "-v", "\(volume):/data", "-p", "16379:6379", "localhost/ums/redis:latest",
        ])
        var pong = ""
        for _ in 0..<50 where pong != "PONG" {
            pong = (try? await cliA.run(["exec", name, "redis-cli", "PING"])) ?? ""
            if pong != "PONG" { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(pong == "PONG", "redis answers at A")
        // 10,000 keys through redis-cli's pipe mode, saved into the volume; then 100 that only
        // the memory holds.
        let commands = FileManager.default.temporaryDirectory.appendingPathComponent("ums-redis-\(UUID().uuidString).txt").path
        defer { try? FileManager.default.removeItem(atPath: commands) }
        try (1...10_000).map { "SET key\($0) value\($0)\r\n" }.joined().write(toFile: commands, atomically: true, encoding: .utf8)
        let piped = try await cliA.run(["exec", "-i", name, "redis-cli", "--pipe"], input: commands)
        #expect(piped.contains("errors: 0, replies: 10000"), "\(piped)")
        #expect(try await cliA.run(["exec", name, "redis-cli", "SAVE"]) == "OK")
        for key in 10_001...10_100 { _ = try await cliA.run(["exec", name, "redis-cli", "SET", "key\(key)", "value\(key)"]) }
        #expect(try await cliA.run(["exec", name, "redis-cli", "DBSIZE"]) == "10100")

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.events.contains { $0.message.contains("volume \(volume)") })
        // Every key, including those only the memory had, at B; the saved file in B's volume.
        #expect(try await cliB.run(["exec", name, "redis-cli", "DBSIZE"]) == "10100")
        #expect(try await cliB.run(["exec", name, "redis-cli", "GET", "key10100"]) == "value10100")
        #expect(try await cliB.run(["exec", name, "redis-cli", "GET", "key1"]) == "value1")
        let saved = try await cliB.run(["exec", name, "sh", "-c", "stat -c %s /data/dump.rdb"])
        #expect((Int(saved) ?? 0) > 100_000, "the saved database is in B's volume: \(saved) bytes")
        #expect(try await cliB.run(["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", name]) == "always")
        // And it keeps working there.
        #expect(try await cliB.run(["exec", name, "redis-cli", "SET", "atB", "yes"]) == "OK")
        try await Task.sleep(for: .seconds(2))
        let left = try await cliA.run(["ps", "-a", "--format", "{{.Names}}"])
        #expect(!left.split(separator: "\n").contains(Substring(name)), "A's engine still has \(name)")
        _ = try? await cliB.run(["rm", "-f", name])
        _ = try? await cliB.run(["volume", "rm", "-f", volume])
    }
}

extension EngineTests {
    /// Whether this machine's root holds CAP_SYS_RESOURCE (without it CRIU cannot dump another
    /// user's process: ../shared/ENVIRONMENT.md).
    static var rootHoldsSysResource: Bool {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("CapEff:") }
        let mask = line.flatMap { UInt64($0.split(separator: "\t").last ?? "", radix: 16) } ?? 0
        return mask & (1 << 24) != 0
    }

    @Test("PostgreSQL, running as its own user with its data directory in a named volume and a table of 5,000 rows: where CRIU may dump another user's process it moves with every row and takes writes at B; where it may not (this machine) it is refused before it freezes, with the reason, and keeps serving at A")
    func postgresqlAsItsOwnUser() async throws {
        let testbed = try Testbed()
        guard let (cliA, cliB) = try EngineCLI.sameKind() else { return }
        let (name, volume) = ("db", "pgdata")
        await EngineCLI.clear([cliA, cliB], container: name, volume: volume)
        _ = try await cliA.run(["load", "-i", try Self.serviceImage("postgresql")])
        _ = try await cliA.run(["run", "-d", "--name", name, "-v", "\(volume):/var/lib/postgresql/data", "-p", "15432:5432", "localhost/ums/postgresql:latest"])
        func sql(_ cli: EngineCLI, _ statement: String) async throws -> String {
            try await cli.run(["exec", name, "psql", "-U", "postgres", "-tAc", statement])
        }
        var ready = false
        for _ in 0..<60 where !ready {
            ready = (try? await sql(cliA, "select 1")) == "1"
            if !ready { try await Task.sleep(for: .milliseconds(250)) }
        }
        #expect(ready, "PostgreSQL answers at A")
        _ = try await sql(cliA, "create table rows (id int primary key, v text); insert into rows select g, 'row ' || g from generate_series(1, 5000) g")
        #expect(try await cliA.run(["exec", name, "whoami"]) == "postgres", "it runs as its own user")

        if Self.rootHoldsSysResource {
            let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
            #expect(record.status == .completed, "\(record.error?.description ?? "")")
            #expect(try await sql(cliB, "select count(*) from rows") == "5000")
            _ = try await sql(cliB, "insert into rows values (5001, 'written at B')")
            #expect(try await sql(cliB, "select v from rows where id = 5001") == "written at B")
            _ = try? await cliB.run(["rm", "-f", name])
            _ = try? await cliB.run(["volume", "rm", "-f", volume])
        } else {
            let refused = await #expect(throws: UMSError.self) {
                try await testbed.a.migrate(MigrateRequest(container: name, destination: testbed.bURL))
            }
            #expect(refused?.message.contains("runs as uid") == true, "\(refused?.message ?? "")")
            #expect(refused?.message.contains("CAP_SYS_RESOURCE") == true)
            #expect(refused?.message.contains("nothing was frozen") == true)
            // Untouched: it answers and takes writes at A, and B got nothing.
            _ = try await sql(cliA, "insert into rows values (5001, 'written at A')")
            #expect(try await sql(cliA, "select count(*) from rows") == "5001")
            #expect(try await cliB.run(["ps", "-a", "--format", "{{.Names}}"]).split(separator: "\n").contains(Substring(name)) == false)
        }
        _ = try? await cliA.run(["rm", "-f", name])
        _ = try? await cliA.run(["volume", "rm", "-f", volume])
    }
}

extension EngineTests {
    @Test("a volume larger than the destination admits is refused before anything moves (the image neither), and the source runs on; with --volumes skip the service moves without it: B mounts a volume of its own, A keeps its volume and its files")
    func volumeTooLargeOrSkipped() async throws {
        let testbed = try Testbed()
        guard let (cliA, cliB) = try EngineCLI.sameKind() else { return }
        let limit = try #require(try await testbed.b.system().admission?.maxVolumeBytes)
        try #require(limit <= 64 << 20, "scripts/test starts B with admission maxVolumeBytes 16 MiB (testbed --config b=FILE)")
        let (name, volume) = ("bulky", "bulkdata")
        await EngineCLI.clear([cliA, cliB], container: name, volume: volume)
        let tar = FileManager.default.temporaryDirectory.appendingPathComponent("ums-adopt-\(UUID().uuidString).tar").path
        defer { try? FileManager.default.removeItem(atPath: tar) }
        _ = try await command("/bin/tar", ["-C", testbed.rootfs, "-cf", tar, "."])
        let image = "localhost/bulky:\(UUID().uuidString.prefix(8).lowercased())"
        _ = try await cliA.run(["import", tar, image])
        let megabytes = Int(limit >> 20) + 1
        _ = try await cliA.run([
            "run", "--rm", "-v", "\(volume):/data", image, "/bin/sh", "-c", "dd if=/dev/urandom of=/data/big bs=1M count=\(megabytes) 2>/dev/null && echo kept > /data/small",
        ])
        _ = try await cliA.run(["run", "-d", "--name", name, "-v", "\(volume):/data", "-p", "18112:8080", image, "/bin/counter", "--port", "8080"])
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18112", atLeast: 3)

        let refused = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(refused.status == .rolledBack)
        #expect(refused.error?.message.contains("rule maxVolumeBytes") == true, "\(refused.error?.message ?? "")")
        #expect(refused.bytesMoved == 0 && !refused.events.contains { $0.message.contains("rootfs") || $0.message.contains("volume \(volume) sent") },
                "nothing crossed: \(refused.events.map(\.message))")
        #expect(refused.error?.message.contains("nothing was sent") == true)
        #expect(try await cliB.run(["images", "-q", image]).isEmpty, "not even the image")
        #expect(try await testbed.waitForCount(at: "\(testbed.aHost):18112", atLeast: before + 1) > before, "the source runs on")

        // Skipped, the volume stays: the service moves alone and B mounts its own (empty) one.
        let moved = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL, volumes: .skip), by: testbed.a)
        #expect(moved.status == .completed, "\(moved.error?.description ?? "")")
        #expect(!moved.events.contains { $0.message.contains("volume \(volume) sent") })
        #expect(try await testbed.waitForCount(at: "\(testbed.bHost):18112", atLeast: before + 1) > before)
        let atB = try await cliB.run(["exec", name, "/bin/sh", "-c", "ls /data"])
        #expect(atB.isEmpty, "B's own volume, empty: \(atB)")
        let keptAtA = try await cliA.run(["run", "--rm", "-v", "\(volume):/data", image, "/bin/sh", "-c", "cat /data/small"])
        #expect(keptAtA == "kept", "A keeps its volume")
        _ = try? await cliB.run(["rm", "-f", name])
        for cli in [cliA, cliB] { _ = try? await cli.run(["volume", "rm", "-f", volume]) }
    }
}

extension EngineTests {
    /// A Kubernetes Pod: the Flask app, and a sidecar that calls it over localhost twice a second
    /// (each call counts).
    static let podYAML = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
        spec:
          containers:
          - name: app
            image: localhost/ums/flask:latest
            imagePullPolicy: Never
            ports:
            - containerPort: 8080
              hostPort: 18300
          - name: sidecar
            image: localhost/ums/flask:latest
            imagePullPolicy: Never
            command: ["python3", "-c", "import time, urllib.request\\nwhile True:\\n    try: urllib.request.urlopen('http://localhost:8080/').read()\\n    except Exception as e: print(e, flush=True)\\n    time.sleep(0.5)"]
        """

    @Test("a Podman pod from Kubernetes YAML (a Flask app and a sidecar calling it over localhost) is listed as one entry and moves as one unit: at B both run in one pod, the app's count continues and the sidecar keeps calling it; podman kube generate gives the pod back as YAML; A has it no more")
    func movesPodFromKubernetesYAML() async throws {
        let testbed = try Testbed()
        let (kindA, kindB) = try #require(Testbed.kinds)
        guard kindA == .podman, kindB == .podman else { return }
        let (cliA, cliB) = (EngineCLI(kind: kindA, system: "a"), EngineCLI(kind: kindB, system: "b"))
        for cli in [cliA, cliB] { _ = try? await cli.run(["pod", "rm", "-f", "web"]) }
        _ = try await cliA.run(["load", "-i", try Self.serviceImage("flask")])
        let yaml = FileManager.default.temporaryDirectory.appendingPathComponent("ums-pod-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: yaml) }
        try Self.podYAML.write(toFile: yaml, atomically: true, encoding: .utf8)
        _ = try await cliA.run(["kube", "play", yaml])
        // The sidecar's calls alone make the count grow.
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18300", atLeast: 4, timeout: .seconds(30))
        let listed = try #require(try await testbed.a.containers().first { $0.container.name == "web" })
        #expect(listed.container.specification.pod?.members.count == 2, "one entry for the pod, with its two containers")
        #expect(try await testbed.a.containers().contains { $0.container.name.hasPrefix("web-") } == false, "its containers are not listed on their own")

        let record = try await testbed.migrated(MigrateRequest(container: "web", destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.approach == .orchestrator)
        let after = try await testbed.count(at: "\(testbed.bHost):18300")
        #expect(after >= before, "the app's count continued at B (\(before) → \(after))")
        // The sidecar still reaches the app over localhost at B: the count grows on its own.
        #expect(try await testbed.waitForCount(at: "\(testbed.bHost):18300", atLeast: after + 3, timeout: .seconds(20)) >= after + 3)
        let pods = try await cliB.run(["ps", "--pod", "--format", "{{.Names}} {{.PodName}}"])
        #expect(pods.split(separator: "\n").filter { $0.hasSuffix(" web") }.count == 3, "infra + two containers in one pod at B: \(pods)")
        let generated = try await cliB.run(["kube", "generate", "web"])
        #expect(generated.contains("kind: Pod") && generated.contains("name: web") && generated.contains("localhost/ums/flask"), "\(generated)")
        #expect(generated.contains("hostPort: 18300"))
        let left = try await cliA.run(["pod", "ps", "--format", "{{.Name}}"])
        #expect(!left.split(separator: "\n").contains("web"), "A's Podman has the pod no more")
        _ = try? await cliB.run(["pod", "rm", "-f", "web"])
    }
}

extension EngineTests {
    @Test("a docker/podman run container with a tmpfs (--tmpfs) moves with what it wrote there: B's engine mounts a tmpfs of the same size, the checkpoint carries its contents")
    func carriesTmpfs() async throws {
        let testbed = try Testbed()
        guard let (cliA, cliB) = try EngineCLI.sameKind() else { return }
        let name = "scratchy"
        await EngineCLI.clear([cliA, cliB], container: name)
        try await cliA.importRootfs(testbed.rootfs, as: "localhost/adopt:test")
        _ = try await cliA.run([
            "run", "-d", "--name", name, "--tmpfs", "/scratch:size=8m", "-p", "18113:8080", "localhost/adopt:test",
            "/bin/sh", "-c", "echo only-in-memory > /scratch/note && exec /bin/counter --port 8080",
        ])
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18113", atLeast: 3)
        let listed = try #require(try await testbed.a.containers().first { $0.container.name == name })
        #expect(listed.container.specification.tmpfs?.first?.destination == "/scratch")

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(try await testbed.waitForCount(at: "\(testbed.bHost):18113", atLeast: before + 1) > before)
        #expect(try await cliB.run(["exec", name, "cat", "/scratch/note"]) == "only-in-memory")
        let mounted = try await cliB.run(["exec", name, "/bin/sh", "-c", "grep ' /scratch ' /proc/mounts"])
        #expect(mounted.contains("tmpfs") && mounted.contains("size=8192k"), "\(mounted)")
        _ = try? await cliB.run(["rm", "-f", name])
    }
}

extension EngineTests {
    @Test("a container with a bind-mounted host directory moves with its files to the same path at B (which B's admission allows, and where B's filesystem is its own): owners, modes and the file it keeps writing, the bulk while it runs and the changes after the freeze; A's directory stays")
    func carriesHostDirectory() async throws {
        let testbed = try Testbed()
        guard let (cliA, cliB) = try EngineCLI.sameKind() else { return }
        let allowed = try #require(try await testbed.b.system().admission?.allowedBindPaths.first,
                                   "scripts/test gives B allowedBindPaths [/srv/ums-tb-binds] and a filesystem of its own there (testbed --private-dir)")
        let name = "binder"
        await EngineCLI.clear([cliA, cliB], container: name)
        let directory = "\(allowed)/app-\(UUID().uuidString.prefix(8).lowercased())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "kept\n".write(toFile: "\(directory)/keep", atomically: true, encoding: .utf8)
        _ = try await command("/bin/sh", ["-c", "chown 999:998 \(directory)/keep && chmod 640 \(directory)/keep"])
        try await cliA.importRootfs(testbed.rootfs, as: "localhost/adopt:test")
        _ = try await cliA.run([
            "run", "-d", "--name", name, "-v", "\(directory):/data", "-p", "18114:8080", "localhost/adopt:test",
            "/bin/counter", "--port", "8080", "--state-file", "/data/count.log",
        ])
        // Long enough for the counter to have appended to its state file (once a second).
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18114", atLeast: 25)

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.events.contains { $0.message.contains("host directory \(directory) sent, while the service runs") })
        #expect(record.events.contains { $0.message.contains("host directory \(directory) sent, changes after the freeze") })
        let after = try await testbed.waitForCount(at: "\(testbed.bHost):18114", atLeast: before + 15)
        #expect(after > before)
        let check = try await cliB.run(["exec", name, "/bin/sh", "-c", "stat -c '%u:%g %a' /data/keep; cat /data/keep; wc -l < /data/count.log"])
        let lines = check.split(separator: "\n").map(String.init)
        #expect(lines.first == "999:998 640", "\(check)")
        #expect(lines.dropFirst().first == "kept")
        #expect((lines.last.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? 0) >= 2, "the state file moved and grows at B: \(check)")
        // A's directory is the host's: left where it was.
        #expect(FileManager.default.fileExists(atPath: "\(directory)/keep"))
        _ = try? await cliB.run(["rm", "-f", name])
    }
}

/// An engine's own CLI against one testbed system's engine socket, as a user would run it.
struct EngineCLI {
    let kind: OrchestratorKind
    let system: String

    var socket: String { "unix://\(Testbed.environment["UMS_TESTBED_DIR"] ?? "/run/ums-testbed")/\(system)/engine.sock" }

    /// A's and B's CLIs when both systems run the same engine, Docker or Podman (what adopting
    /// containers needs); nil otherwise.
    static func sameKind() throws -> (EngineCLI, EngineCLI)? {
        let (kindA, kindB) = try #require(Testbed.kinds)
        guard kindA == kindB, [.docker, .podman].contains(kindA) else { return nil }
        return (EngineCLI(kind: kindA, system: "a"), EngineCLI(kind: kindB, system: "b"))
    }

    /// Removes what an earlier run may have left: the container, and its volume.
    static func clear(_ clis: [EngineCLI], container: String, volume: String? = nil) async {
        for cli in clis {
            _ = try? await cli.run(["rm", "-f", container])
            if let volume { _ = try? await cli.run(["volume", "rm", "-f", volume]) }
        }
    }

    /// The user's own image, imported from a root filesystem with the engine's CLI.
    func importRootfs(_ rootfs: String, as reference: String) async throws {
        let tar = FileManager.default.temporaryDirectory.appendingPathComponent("ums-adopt-\(UUID().uuidString).tar").path
        defer { try? FileManager.default.removeItem(atPath: tar) }
        _ = try await command("/bin/tar", ["-C", rootfs, "-cf", tar, "."])
        _ = try await run(["import", tar, reference])
    }

    func run(_ arguments: [String], input: String? = nil) async throws -> String {
        kind == .podman
            ? try await command("/usr/bin/podman", ["--url", socket] + arguments, input: input)
            : try await command("/usr/bin/docker", ["-H", socket] + arguments, input: input)
    }
}

