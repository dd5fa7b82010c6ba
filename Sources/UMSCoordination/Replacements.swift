import UMSImage
import UMSMigration
import UMSModel
import UMSOrchestrator

extension Coordinator {
    /// Follows containers a cluster orchestrator replaced (`ReplacingOrchestrator`): part of the
    /// background sweep. A service restored here runs from a specification whose agent waits for a
    /// checkpoint (`ums-agent restore`); the orchestrator's replacement of its task would wait for
    /// one that never comes, so its agent is told `START`: the service starts afresh from its
    /// image, its in-memory state lost — what the orchestrator's restart means for any service. A
    /// container a migration holds is never touched (a destination's agent waits for its
    /// checkpoint then), nor an agent a checkpoint was announced to (it refuses START).
    func followReplacements() async {
        guard system.orchestrator is any ReplacingOrchestrator else { return }
        for info in (try? await system.orchestrator.list()) ?? [] where info.migratingIn == nil && info.state == .running {
            if MigratableImage.startsInRestoreMode(info.specification), let agent = try? AgentClient(for: info),
               let status = try? await agent.send("STATUS", timeout: .seconds(2), operation: "reach the agent of \(info.name)"),
               status.fields["mode"] == "restore"
            {
                do {
                    let reply = try await agent.send("START", timeout: .seconds(30), operation: "start \(info.name) afresh")
                    logger.notice("the orchestrator replaced a restored service's container: started it afresh from its image", metadata: [
                        "container": "\(info.name)", "pid": "\(reply.fields["pid"] ?? "?")",
                    ])
                } catch {
                    logger.warning("cannot start a replaced container's service", metadata: ["container": "\(info.name)", "error": "\(error)"])
                }
            }
            // Its Frontman forwards to where the container is now.
            await frontmen?.follow(info)
        }
    }
}
