import Foundation
import Testing
import UMSAPI
import UMSModel

@Suite("Service-level migration: a migratable image carries ums-agent", .serialized, .enabled(if: Testbed.isUp && !Testbed.restoreFailsOnB && Testbed.kinds == nil, "needs scripts/testbed up"))
struct ServiceLevelTests {
    @Test("auto picks service-level for a migratable counter; it moves A → B → A with its count and open file, and the source is gone")
    func migrateMigratableCounter() async throws {
        let testbed = try Testbed()
        let name = "counter-agent"
        await testbed.cleanUp(name)
        let view = try await testbed.runCounter(name, port: 18090, arguments: ["--state-file", "/tmp/count.log"], rootfs: try Testbed.migratableRootfs())
        // Recognised from its Specification: the agent is the entrypoint, and `ps` offers service-level first.
        #expect(view.container.specification.command.prefix(3) == ["/.ums/ums-agent", "run", "--"])
        #expect(view.container.approaches.first == .service)
        #expect(view.container.endpoints == ["\(testbed.aHost):18090"])
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18090", atLeast: 12)
        let fileBefore = try #require(testbed.containerFile(system: "a", container: name, path: "/tmp/count.log"))

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL, approach: .auto), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.approach == .service)
        #expect(record.endpoints == ["\(testbed.bHost):18090"], "the agent's own port is not an endpoint")
        #expect(record.bytesMoved > 0)
        #expect((record.downtime ?? 0) > 0)
        // The agents spoke the stream's version 2 (compression auto by default) and said how.
        let images = try #require(record.images, "the record says how the agents' stream crossed")
        #expect(images.compression == .auto && images.rawBytes > 0 && images.wireBytes > 0, "\(images)")
        #expect(images.zeroBytes + images.compressedBytes > 0, "a counter's images have zero pages and compressible ones: \(images)")
        #expect(record.bytesMoved >= images.wireBytes, "what crossed counts (with the root filesystem's first copy)")

        let after = try await testbed.count(at: "\(testbed.bHost):18090")
        #expect(after >= before, "the counter continued instead of restarting from 0")
        #expect(try await testbed.waitForCount(at: "\(testbed.bHost):18090", atLeast: after + 5) > after)
        // The file the service holds open crossed with it, and it keeps appending to it at B.
        let fileAfter = try #require(testbed.containerFile(system: "b", container: name, path: "/tmp/count.log"))
        #expect(fileAfter.hasPrefix(fileBefore))
        // B's agent had CRIU learn the kernel's facts when it started, on its container's /dev/shm
        // (CRIU's cache, read first by every run): there before the restore began, so the restore
        // spent none of the downtime on them.
        let pidAtB = try #require(try await testbed.b.container(name).container.pid)
        let boot = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let cache = try FileManager.default.attributesOfItem(atPath: "/proc/\(pidAtB)/root/dev/shm/.ums-criu-\(boot)/criu.kdat")
        let restoring = try #require(record.events.first { $0.step == MigrationStep.restoring.rawValue }?.at)
        #expect(try #require(cache[.modificationDate] as? Date) < restoring, "the cache was made at B's start, before the restore")
        // The source container is gone: not listed, no namespace; A only forwards to B.
        #expect(try await testbed.names(on: testbed.a).contains(name) == false)
        #expect(testbed.namespaces(system: "tba").contains("ums-tba-\(name)") == false)
        #expect(try await testbed.onlyForwards(testbed.a, service: name, to: testbed.bHost))
        let atB = try await testbed.b.container(name).container
        #expect(atB.state == .running)
        #expect(atB.migratingIn == nil)

        // Onward from the restored container (its agent came up in restore mode): back to A.
        let back = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.aURL), by: testbed.b)
        #expect(back.status == .completed, "\(back.error?.description ?? "")")
        #expect(back.approach == .service)
        let returned = try await testbed.waitForCount(at: "\(testbed.aHost):18090", atLeast: after + 5)
        #expect(returned > after)
        #expect(try await testbed.names(on: testbed.b).contains(name) == false)
        await testbed.cleanUp(name)
    }

    @Test("a service with 4 children migrates with all of them alive at B")
    func multiProcess() async throws {
        let testbed = try Testbed()
        let name = "counter-agent-tree"
        await testbed.cleanUp(name)
        _ = try await testbed.runCounter(name, port: 18091, arguments: ["--children", "4"], rootfs: try Testbed.migratableRootfs())
        #expect(try await testbed.count(at: "\(testbed.aHost):18091", path: "/children") == 4)
        // The agent, the counter and its four children.
        #expect(try await testbed.a.container(name).container.specification.processCount == 6)
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18091", atLeast: 5)

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.approach == .service)
        #expect(try await testbed.count(at: "\(testbed.bHost):18091", path: "/children") == 4)
        #expect(try await testbed.b.container(name).container.specification.processCount >= 6)
        // B asks its orchestrator about the agent's container while the agent restores; the
        // answer it gave the source (and keeps) counts the processes after the restore.
        let restored = try await testbed.b.incoming().first { $0.id == record.id }?.restored
        #expect((restored?.specification.processCount ?? 0) >= 6, "\(String(describing: restored?.specification.processCount))")
        // The images it restored from are removed once it answered.
        var work = testbed.containerDirectory(system: "b", container: name, path: "/.ums/work")
        for _ in 0..<50 where work.contains(where: { $0 == "restore" || $0.hasPrefix("discard.") }) {
            try await Task.sleep(for: .milliseconds(100))
            work = testbed.containerDirectory(system: "b", container: name, path: "/.ums/work")
        }
        #expect(work.contains("restored"), "\(work)")
        #expect(!work.contains { $0 == "restore" || $0.hasPrefix("discard.") }, "\(work)")
        #expect(try await testbed.count(at: "\(testbed.bHost):18091") >= before)
        await testbed.cleanUp(name)
    }

    @Test("post-copy is refused for service-level before anything stops; the service keeps running at A")
    func postCopyRefused() async throws {
        let testbed = try Testbed()
        let name = "counter-agent-post"
        await testbed.cleanUp(name)
        _ = try await testbed.runCounter(name, port: 18092, rootfs: try Testbed.migratableRootfs())
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18092", atLeast: 3)
        let record = try await testbed.migrated(
            MigrateRequest(container: name, destination: testbed.bURL, approach: .specific(.service), mode: .postCopy), by: testbed.a
        )
        #expect(record.status == .rolledBack)
        #expect(record.error?.code == .unsupported)
        #expect(record.error?.message.contains("unprivileged mode") == true, "\(record.error?.description ?? "")")
        #expect(try await testbed.waitForCount(at: "\(testbed.aHost):18092", atLeast: before + 2) > before)
        #expect(try await testbed.names(on: testbed.b).contains(name) == false)
        await testbed.cleanUp(name)
    }
}
