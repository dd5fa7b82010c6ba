import Foundation
import Testing
import UMSAPI
import UMSModel

@Suite("Container-level migration: the unchanged service nested in an outer container", .serialized, .enabled(if: Testbed.isUp && !Testbed.restoreFailsOnB && Testbed.kinds == nil, "needs scripts/testbed up"))
struct ContainerLevelTests {
    @Test("auto picks container-level for a nested counter; it moves A → B → A with its count and open file; B's orchestrator lists and stops the outer container")
    func migrateNestedCounter() async throws {
        let testbed = try Testbed()
        let name = "counter-nested"
        await testbed.cleanUp(name)
        // The plain counter image, unchanged: `--nested` puts it into the outer host image.
        let view = try await testbed.runCounter(name, port: 18095, arguments: ["--children", "2", "--state-file", "/tmp/count.log"], nested: true)
        #expect(view.container.specification.command.prefix(3) == ["/.ums/ums-agent", "host", "--"])
        #expect(view.container.approaches.first == .container)
        #expect(view.container.endpoints == ["\(testbed.aHost):18095"], "the service is reached through the outer container's published port")
        // Accounted to the outer container: the nested processes live in cgroups below its own.
        #expect(testbed.processes(inCgroupBelow: "/ums/tba/\(name)/ums-nested/").count == 3)
        let before = try await testbed.waitForCount(at: "\(testbed.aHost):18095", atLeast: 12)
        let fileBefore = try #require(testbed.containerFile(system: "a", container: name, path: "/.ums/nested/rootfs/tmp/count.log"))

        let record = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.bURL, approach: .auto), by: testbed.a)
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.approach == .container)
        #expect(record.endpoints == ["\(testbed.bHost):18095"])
        let after = try await testbed.count(at: "\(testbed.bHost):18095")
        #expect(after >= before, "the counter continued instead of restarting from 0")
        #expect(try await testbed.waitForCount(at: "\(testbed.bHost):18095", atLeast: after + 5) > after)
        #expect(try await testbed.count(at: "\(testbed.bHost):18095", path: "/children") == 2)
        let fileAfter = try #require(testbed.containerFile(system: "b", container: name, path: "/.ums/nested/rootfs/tmp/count.log"))
        #expect(fileAfter.hasPrefix(fileBefore), "the open file crossed with the service")
        // B's agent had CRIU learn the kernel's facts when it started (on the tmpfs it mounts on
        // the outer container's /run): the nested restore read them from the cache.
        let restoreLog = try #require(testbed.containerFile(system: "b", container: name, path: "/.ums/work/restore.log"))
        #expect(restoreLog.contains("Loaded kdat cache"), "\(restoreLog.split(separator: "\n").prefix(8).joined(separator: "\n"))")
        #expect(testbed.processes(inCgroupBelow: "/ums/tbb/\(name)/ums-nested/").count == 3)
        // The source is gone, nested processes and cgroups included.
        #expect(try await testbed.names(on: testbed.a).contains(name) == false)
        #expect(testbed.processes(inCgroupBelow: "/ums/tba/\(name)/").isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/ums/tba/\(name)"))

        // And back, from the restored outer container.
        let back = try await testbed.migrated(MigrateRequest(container: name, destination: testbed.aURL), by: testbed.b)
        #expect(back.status == .completed, "\(back.error?.description ?? "")")
        #expect(back.approach == .container)
        let returned = try await testbed.waitForCount(at: "\(testbed.aHost):18095", atLeast: after + 5)
        #expect(returned > after)

        // The orchestrator manages the outer container as any other: it lists it and stops it,
        // and nothing of the nested one survives.
        let listed = try await testbed.a.containers().first { $0.container.name == name }
        #expect(listed?.container.state == .running)
        try await testbed.a.remove(name)
        #expect(try await testbed.names(on: testbed.a).contains(name) == false)
        #expect(testbed.processes(inCgroupBelow: "/ums/tba/\(name)/").isEmpty)
        #expect((try? await testbed.count(at: "\(testbed.aHost):18095")) == nil)
    }

    @Test("post-copy: the nested memhog restores before its pages cross (fetched from inside A's outer container), and its 32 MiB arrive intact")
    func postCopy() async throws {
        let testbed = try Testbed()
        let rootfs = try #require(Testbed.environment["UMS_MEMHOG_ROOTFS"], "scripts/test sets UMS_MEMHOG_ROOTFS")
        let name = "memhog-nested-post"
        await testbed.cleanUp(name)
        _ = try await testbed.a.run(RunRequest(
            name: name, rootfs: rootfs, command: ["/bin/memhog", "--mib", "32", "--port", "8080"], publish: ["18127:8080"], nested: true
        ))
        let endpointA = "\(testbed.aHost):18127"
        _ = try await testbed.waitForCount(at: endpointA, atLeast: 10)
        let checksumA = try await testbed.checksum(at: endpointA)

        let record = try await testbed.migrated(
            MigrateRequest(container: name, destination: testbed.bURL, approach: .specific(.container), mode: .postCopy), by: testbed.a
        )
        #expect(record.status == .completed, "\(record.error?.description ?? "")")
        #expect(record.approach == .container)
        #expect(record.mode == .postCopy)
        // The agents' stream carried all but the pages; the pages crossed after the restore.
        #expect((record.images?.rawBytes ?? .max) < 4 << 20, "the images before the restore hold no pages: \(String(describing: record.images))")
        #expect((record.pageBytes ?? 0) >= 32 << 20, "the lazy-pages daemon fetched the pages: \(String(describing: record.pageBytes))")

        let endpointB = "\(testbed.bHost):18127"
        let checksumB = try await testbed.checksum(at: endpointB)
        #expect(checksumB.initial == checksumA.initial)
        #expect(checksumB.now == checksumA.initial, "every page arrived with its contents")
        #expect(try await testbed.names(on: testbed.a).contains(name) == false)
        #expect(testbed.processes(inCgroupBelow: "/ums/tba/\(name)/").isEmpty)
        await testbed.cleanUp(name)
    }

    @Test("a plain run is not container-level, and the dry run says why")
    func plainIsNotNested() async throws {
        let testbed = try Testbed()
        let name = "counter-plain-decision"
        await testbed.cleanUp(name)
        let view = try await testbed.runCounter(name, port: 18096)
        #expect(!view.container.approaches.contains(.container))
        let plan = try await testbed.a.plan(MigrateRequest(container: name, destination: testbed.bURL, approach: .specific(.container)))
        #expect(plan.approach == nil)
        #expect(plan.infeasible?.contains("does not run nested") == true, "\(plan.infeasible ?? "")")
        await testbed.cleanUp(name)
    }
}
