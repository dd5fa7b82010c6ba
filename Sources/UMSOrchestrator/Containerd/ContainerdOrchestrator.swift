import Logging
import UMSModel
import UMSOS

/// The containerd adapter: the embedded orchestrator's bundles, overlays and network namespaces,
/// with containerd (and its runc shim) running the containers through `ctr`, on its own socket
/// and in a namespace of its own. containerd's own checkpoint/restore is not wired, so it does
/// not conform to `CheckpointingOrchestrator` (the decision says so and falls back to the
/// service- or container-level approach).
public typealias ContainerdOrchestrator = BundleOrchestrator<ContainerdRuntime>

extension BundleOrchestrator where Runtime == ContainerdRuntime {
    public init(
        systemName: String, stateDirectory: String, advertiseHost: String, criu: CRIUInfo, runner: any CommandRunner, logger: Logger, ctr: Ctr
    ) throws {
        try self.init(
            systemName: systemName, stateDirectory: stateDirectory, advertiseHost: advertiseHost, criu: criu,
            runner: runner, logger: logger, runtime: { _ in ContainerdRuntime(ctr: ctr) }
        )
    }
}

/// containerd runs the bundles.
public struct ContainerdRuntime: BundleRuntime {
    public static let kind = OrchestratorKind.containerd
    public static let absoluteRoot = true
    public let ctr: Ctr

    public init(ctr: Ctr) {
        self.ctr = ctr
    }

    public func version(runner: any CommandRunner) async throws -> String {
        do {
            return Ctr.parseServerVersion(try await runner.output(ctr.binary, ctr.versionArguments()))
        } catch {
            throw UMSError(.unavailable, "failed to reach containerd at \(ctr.address); start it (scripts/testbed does) or give --engine-socket", cause: error)
        }
    }

    public func start(_ name: String, bundle: String, log: String, runner: any CommandRunner) async throws {
        _ = try await runner.run(Command(ctr.binary, ctr.runArguments(id: name, config: "\(bundle)/config.json"), discardOutput: true))
    }

    public func killAndDelete(_ name: String, runner: any CommandRunner) async {
        _ = try? await runner.run(Command(ctr.binary, ctr.killArguments(id: name)))
        _ = try? await runner.run(Command(ctr.binary, ctr.deleteTaskArguments(id: name)))
        _ = try? await runner.run(Command(ctr.binary, ctr.deleteContainerArguments(id: name)))
    }

    public func state(_ name: String, runner: any CommandRunner) async -> (ContainerInfo.State, pid: Int?)? {
        let tasks = (try? await runner.output(ctr.binary, ctr.tasksArguments())) ?? ""
        return Ctr.parseTasks(tasks, id: name).map { ($0.0, $0.1) }
    }

    public func processCount(_ name: String, runner: any CommandRunner) async -> Int? {
        (try? await runner.output(ctr.binary, ctr.processesArguments(id: name))).map(Ctr.parseProcessCount)
    }
}
