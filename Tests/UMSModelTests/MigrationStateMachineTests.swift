import Testing
import UMSModel

@Suite("Migration state machine")
struct MigrationStateMachineTests {
    let cause = UMSError(.unavailable, "failed to reach destination")

    @Test("walks every step of Fig. 2 in order and completes")
    func happyPath() throws {
        var machine = MigrationStateMachine()
        for step in MigrationStep.allCases {
            try machine.advance(to: step)
            #expect(machine.state == .running(step))
            #expect(machine.state.status == .running)
        }
        try machine.complete(endpoints: ["198.18.0.2:8080"])
        #expect(machine.state == .completed(endpoints: ["198.18.0.2:8080"]))
        #expect(machine.state.isTerminal)
    }

    @Test("refuses to go back or repeat a step")
    func noGoingBack() throws {
        var machine = MigrationStateMachine()
        try machine.advance(to: .checkpointing)
        #expect(throws: UMSError.self) { try machine.advance(to: .specification) }
        #expect(throws: UMSError.self) { try machine.advance(to: .checkpointing) }
        #expect(machine.state == .running(.checkpointing))
    }

    @Test("completes only once the destination is confirming")
    func completeTooEarly() throws {
        var machine = MigrationStateMachine()
        try machine.advance(to: .restoring)
        let error = #expect(throws: UMSError.self) { try machine.complete(endpoints: []) }
        #expect(error?.code == .invalidState)
    }

    @Test("rolls back from any step up to the destination's confirmation", arguments: MigrationStep.allCases.filter(\.canRollBack))
    func rollbackAllowed(step: MigrationStep) throws {
        var machine = MigrationStateMachine()
        try machine.advance(to: step)
        try machine.beginRollback(cause: cause)
        #expect(machine.state == .rollingBack(from: step, cause: cause))
        try machine.finishRollback()
        #expect(machine.state == .rolledBack(from: step, cause: cause))
        #expect(machine.state.status == .rolledBack)
        #expect(throws: UMSError.self) { try machine.advance(to: .deletingSource) }
    }

    @Test("never rolls back once the service runs at the destination", arguments: [MigrationStep.reportingEndpoint, .deletingSource])
    func rollbackRefusedAfterConfirmation(step: MigrationStep) throws {
        var machine = MigrationStateMachine()
        try machine.advance(to: step)
        #expect(throws: UMSError.self) { try machine.beginRollback(cause: cause) }
        try machine.fail(cause: cause)
        #expect(machine.state == .failed(from: step, cause: cause))
    }

    @Test("steps belong to the paper's three phases")
    func phases() {
        #expect(MigrationStep.specification.phase == .preMigration)
        #expect(MigrationStep.creatingDestination.phase == .preMigration)
        #expect(MigrationStep.checkpointing.phase == .migration)
        #expect(MigrationStep.restoring.phase == .migration)
        #expect(MigrationStep.deletingSource.phase == .postMigration)
    }

    @Test("the record mirrors the machine's state")
    func recordApply() throws {
        var record = MigrationRecord(id: "m-1", container: "c", requestedApproach: .auto,
                                     source: .init(name: "a", url: "http://a"), destination: .init(name: "b", url: "http://b"),
                                     startedAt: .init(timeIntervalSince1970: 0))
        var machine = MigrationStateMachine()
        try machine.advance(to: .transferring)
        record.apply(machine.state)
        #expect(record.status == .running)
        #expect(record.step == .transferring)
        #expect(record.phase == .migration)
        try machine.beginRollback(cause: cause)
        try machine.finishRollback()
        record.apply(machine.state)
        #expect(record.status == .rolledBack)
        #expect(record.error == cause)
    }
}
