import Foundation
import Testing
import UMSDecision
import UMSModel

@Suite("Approach decision")
struct ApproachDecisionTests {
    let spec = Specification(name: "c", image: .init(digest: "sha256:x"), command: ["/c"])
    func runc(_ criu: String? = "4.2.1", canCheckpoint: Bool = true, approaches: [Approach] = [.orchestrator]) -> SystemProfile {
        SystemProfile(capabilities: .init(orchestrator: .runc, runtimeVersion: "1.1.5", criuVersion: criu, canCheckpoint: canCheckpoint), approaches: approaches)
    }

    @Test("auto picks orchestrator-level between two checkpointing runc systems")
    func autoOrchestrator() throws {
        #expect(try ApproachDecision.choose(.auto, spec, source: runc(), destination: runc()) == .orchestrator)
    }

    @Test("orchestrator-level is infeasible across kinds, and says why")
    func acrossKinds() {
        var docker = runc()
        docker.orchestrator = .docker
        let error = #expect(throws: UMSError.self) { try ApproachDecision.choose(.specific(.orchestrator), spec, source: runc(), destination: docker) }
        #expect(error?.code == .unsupported)
        #expect(error?.message.contains("infeasible, because the orchestrators differ") == true)
    }

    @Test("orchestrator-level needs compatible CRIU and a checkpointing destination")
    func incompatible() {
        let verdicts = ApproachDecision.evaluate(spec, source: runc(), destination: runc("3.17"))
        #expect(verdicts.first { $0.approach == .orchestrator }?.feasible == false)
        let noCR = ApproachDecision.evaluate(spec, source: runc(), destination: runc(canCheckpoint: false))
        #expect(noCR.first { $0.approach == .orchestrator }?.reason.contains("cannot restore") == true)
    }

    @Test("a swarm neither checkpoints nor restores: orchestrator-level is infeasible from it and to it, and the reason names Swarm; container-level moves a nested service either way")
    func swarm() throws {
        let swarm = SystemProfile(
            capabilities: .init(orchestrator: .swarm, runtimeVersion: "20.10.24", criuVersion: "4.2.1", canCheckpoint: false, checkpointsAdopted: false, agentCapability: "CAP_SYS_ADMIN"),
            approaches: [.orchestrator, .service, .container]
        )
        let all = runc(approaches: [.orchestrator, .service, .container])
        for (source, destination) in [(swarm, all), (all, swarm), (swarm, swarm)] {
            let verdict = try #require(ApproachDecision.evaluate(spec, source: source, destination: destination).first { $0.approach == .orchestrator })
            #expect(!verdict.feasible)
            #expect(verdict.reason.contains("Docker Swarm has no checkpoint API"), "\(verdict.reason)")
        }
        var nested = spec
        nested.labels[SpecificationLabels.nested] = "7079"
        #expect(try ApproachDecision.choose(.auto, nested, source: swarm, destination: all) == .container)
        #expect(try ApproachDecision.choose(.auto, nested, source: all, destination: swarm) == .container)
        // A migratable image's agent runs with CAP_SYS_ADMIN under Swarm (Docker 20.10), with
        // CAP_CHECKPOINT_RESTORE under runc: service-level only between swarms (and Docker).
        var agent = spec
        agent.labels[SpecificationLabels.agent] = "7079"
        #expect(try ApproachDecision.choose(.auto, agent, source: swarm, destination: swarm) == .service)
        #expect(throws: UMSError.self) { try ApproachDecision.choose(.specific(.service), agent, source: swarm, destination: all) }
    }

    @Test("service-level needs the agent label, container-level the nested label")
    func labels() {
        let all: [Approach] = [.orchestrator, .service, .container]
        var agent = spec
        agent.labels[SpecificationLabels.agent] = "1"
        var nested = spec
        nested.labels[SpecificationLabels.nested] = "1"
        let plain = ApproachDecision.evaluate(spec, source: runc(approaches: all), destination: runc(approaches: all))
        #expect(plain.filter(\.feasible).map(\.approach) == [.orchestrator])
        let withAgent = ApproachDecision.evaluate(agent, source: runc(approaches: all), destination: runc(approaches: all))
        #expect(withAgent.filter(\.feasible).map(\.approach) == [.service, .orchestrator])
        let isNested = ApproachDecision.evaluate(nested, source: runc(approaches: all), destination: runc(approaches: all))
        #expect(isNested.filter(\.feasible).map(\.approach) == [.container])
    }

    @Test("post-copy: service-level is infeasible and says why; auto moves a migratable container orchestrator-level instead, a nested one container-level")
    func postCopy() throws {
        let all: [Approach] = [.orchestrator, .service, .container]
        var agent = spec
        agent.labels[SpecificationLabels.agent] = "7079"
        let verdicts = ApproachDecision.evaluate(agent, source: runc(approaches: all), destination: runc(approaches: all), mode: .postCopy)
        let service = try #require(verdicts.first { $0.approach == .service })
        #expect(!service.feasible)
        #expect(service.reason.contains("unprivileged mode"))
        #expect(try ApproachDecision.choose(.auto, agent, source: runc(approaches: all), destination: runc(approaches: all), mode: .postCopy) == .orchestrator)
        #expect(try ApproachDecision.choose(.auto, agent, source: runc(approaches: all), destination: runc(approaches: all)) == .service)
        var nested = spec
        nested.labels[SpecificationLabels.nested] = "7079"
        #expect(try ApproachDecision.choose(.auto, nested, source: runc(approaches: all), destination: runc(approaches: all), mode: .postCopy) == .container)
        #expect(throws: UMSError.self) {
            try ApproachDecision.choose(.specific(.service), agent, source: runc(approaches: all), destination: runc(approaches: all), mode: .postCopy)
        }
    }

    @Test("auto picks service-level for a container whose image carries the agent, even where orchestrator-level would work")
    func autoService() throws {
        var agent = spec
        agent.labels[SpecificationLabels.agent] = "7079"
        let all: [Approach] = [.orchestrator, .service]
        #expect(try ApproachDecision.choose(.auto, agent, source: runc(approaches: all), destination: runc(approaches: all)) == .service)
        // A destination without the service-level approach leaves orchestrator-level.
        #expect(try ApproachDecision.choose(.auto, agent, source: runc(approaches: all), destination: runc()) == .orchestrator)
        // Across kinds only the agent can move it.
        var docker = runc(approaches: all)
        docker.orchestrator = .docker
        #expect(try ApproachDecision.choose(.auto, agent, source: runc(approaches: all), destination: docker) == .service)
    }

    @Test("nothing feasible gives one error listing every reason")
    func nothingFits() {
        let error = #expect(throws: UMSError.self) {
            try ApproachDecision.choose(.auto, spec, source: runc(canCheckpoint: false), destination: runc())
        }
        #expect(error?.message.contains("no approach is feasible") == true)
        #expect(error?.message.contains("orchestrator:") == true)
    }
}

@Suite("Approach decision: containers the engine made (containerd)")
struct AdoptedDecisionTests {
    func containerd() -> SystemProfile {
        SystemProfile(
            capabilities: .init(orchestrator: .containerd, runtimeVersion: "1.6.20", criuVersion: "4.2.1", canCheckpoint: false, checkpointsAdopted: true),
            approaches: [.orchestrator, .service, .container]
        )
    }

    @Test("between two containerd systems a ctr run container moves orchestrator-level; UMS's own bundles cannot, and the reason says so")
    func adoptedOnly() throws {
        var adopted = Specification(name: "c", image: .init(digest: "sha256:x", format: .engine), command: ["/c"])
        adopted.engine = EngineConfiguration(madeBy: .containerd)
        #expect(try ApproachDecision.choose(.auto, adopted, source: containerd(), destination: containerd()) == .orchestrator)
        let own = Specification(name: "c", image: .init(digest: "sha256:x"), command: ["/c"])
        let verdict = ApproachDecision.evaluate(own, source: containerd(), destination: containerd()).first { $0.approach == .orchestrator }
        #expect(verdict?.feasible == false)
        #expect(verdict?.reason.contains("it did not make itself") == true, "\(verdict?.reason ?? "")")
    }

    @Test("a peer that does not publish checkpointsAdopted is read as its canCheckpoint")
    func olderPeer() throws {
        let json = #"{"orchestrator":"podman","runtimeVersion":"4.3.1","canCheckpoint":true,"agentCapability":"CAP_CHECKPOINT_RESTORE"}"#
        let capabilities = try JSONDecoder().decode(OrchestratorCapabilities.self, from: Data(json.utf8))
        #expect(capabilities.checkpointsAdopted)
        #expect(capabilities.criuVersion == nil)
    }
}
