import Foundation
import Testing
import UMSAPI
import UMSModel

/// Runs on a testbed whose systems have different orchestrators (`scripts/testbed up --a KIND
/// --b KIND`; scripts/test brings up Podman → Docker, Docker → containerd and containerd → runc):
/// the engines are real,
/// started by the testbed inside each system's namespace.
@Suite("Migration through the engine adapters (real Podman, Docker, containerd)", .serialized, .enabled(if: Testbed.isUp && Testbed.kinds != nil, "needs scripts/testbed up --a KIND --b KIND"))
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
}
