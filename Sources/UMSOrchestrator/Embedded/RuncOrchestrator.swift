import Foundation
import Logging
import NIOCore
import UMSModel
import UMSOS

/// The embedded default orchestrator: UMS drives runc itself.
public typealias RuncOrchestrator = BundleOrchestrator<RuncRuntime>

/// runc runs the bundles.
public struct RuncRuntime: BundleRuntime {
    public static let kind = OrchestratorKind.runc
    public static let absoluteRoot = false
    public static let carriedApproaches: Set<Approach> = [.orchestrator, .container]
    public let runc: Runc

    public init(runc: Runc) {
        self.runc = runc
    }


    public func version(runner: any CommandRunner) async throws -> String {
        let text = try await runner.output(runc.binary, ["--version"])
        return text.split(separator: "\n").first.map { String($0.split(separator: " ").last ?? "") } ?? "unknown"
    }

    public func start(_ name: String, bundle: String, log: String, runner: any CommandRunner) async throws {
        _ = try await runner.run(runc.command(runc.runArguments(id: name, bundle: bundle, log: log), discardOutput: true))
    }

    public func killAndDelete(_ name: String, runner: any CommandRunner) async {
        _ = try? await runner.run(runc.command(runc.killArguments(id: name, signal: "KILL")))
        _ = try? await runner.run(runc.command(runc.deleteArguments(id: name)))
    }

    /// `runc state`'s answer, the part UMS reads.
    struct State: Decodable {
        var status: String
        var pid: Int?
    }

    public func state(_ name: String, runner: any CommandRunner) async -> (ContainerInfo.State, pid: Int?)? {
        guard let text = try? await runner.output(runc.binary, runc.stateArguments(id: name)),
              let state = try? JSONDecoder().decode(State.self, from: Data(text.utf8))
        else { return nil }
        return (ContainerInfo.State(rawValue: state.status) ?? .unknown, state.pid.flatMap { $0 > 0 ? $0 : nil })
    }

    /// `runc ps --format json`: the PIDs.
    public func processCount(_ name: String, runner: any CommandRunner) async -> Int? {
        guard let text = try? await runner.output(runc.binary, runc.processesArguments(id: name)),
              let pids = try? JSONDecoder().decode([Int].self, from: Data(text.utf8))
        else { return nil }
        return pids.count
    }
}

extension BundleOrchestrator where Runtime == RuncRuntime {
    public init(
        systemName: String, stateDirectory: String, advertiseHost: String, criu: CRIUInfo, runner: any CommandRunner, logger: Logger,
        block: AddressBlock = .standard
    ) throws {
        try self.init(
            systemName: systemName, stateDirectory: stateDirectory, advertiseHost: advertiseHost, criu: criu,
            runner: runner, logger: logger, block: block, runtime: RuncRuntime.init(runc:)
        )
    }
}

/// runc's own checkpoint/restore, through CRIU: the orchestrator-level approach.
extension BundleOrchestrator: CheckpointingOrchestrator where Runtime == RuncRuntime {

    /// The kernel's freezer on the container's cgroup, directly (runc sees it paused, as after
    /// `runc pause`, which is the fallback where there is no freezer to write).
    public func freeze(_ name: String) async throws {
        _ = try record(name)
        let freezing = await Cgroups.freeze(cgroupPath(name))
        guard freezing != .frozen else { return }
        logger.notice("froze the container through runc: its cgroup freezer did not", metadata: ["container": "\(name)", "freezer": "\(freezing)"])
        try await runner.execute(runc.binary, runc.pauseArguments(id: name))
    }

    /// Thaws a frozen container; one that already runs (e.g. released by a failed post-copy
    /// dump) is left as it is.
    public func resume(_ name: String) async throws {
        guard try await inspect(name).state != .running else { return }
        try await runner.execute(runc.binary, runc.resumeArguments(id: name))
    }

    public func checkpoint(_ name: String, request: CheckpointRequest) async throws -> BackgroundProcess? {
        _ = try record(name)
        let work = request.workDirectory
        try FileSystem.makeDirectory(request.imagesDirectory)
        try FileSystem.makeDirectory(work)
        let options = Runc.CheckpointOptions(
            imagePath: request.imagesDirectory, workPath: work, pageServer: request.lazyPages?.description,
            leaveRunning: request.leaveRunning, lazyPages: request.lazyPages != nil
        )
        if request.lazyPages != nil {
            // runc returns only when every page has been served; the dump is ready for the
            // destination once CRIU starts serving (its page-server runs its status-ready hooks).
            let log = "\(work)/dump.log"
            let process = BackgroundProcess(runc.command(runc.checkpointArguments(id: name, options: options)), logFile: log)
            do {
                let serving = LogWatch(path: log, for: "Running status-ready scripts")
                try await process.waitUntilReady(timeout: .seconds(60)) { serving.appeared() }
            } catch {
                throw UMSError.wrap(error, .internalError, "failed to checkpoint \(name)").withDetail(LogFile.tail(log))
            }
            return process
        }
        do {
            try await runner.execute(runc.binary, runc.checkpointArguments(id: name, options: options))
            return nil
        } catch {
            throw UMSError.wrap(error, .internalError, "failed to checkpoint \(name)")
                .withDetail(LogFile.tail("\(work)/dump.log"))
        }
    }

    public func exportChanges(_ name: String, consume: @Sendable (ByteBuffer) async throws -> Void) async throws -> Int64 {
        _ = try record(name)
        return try await Archive.create(directory: "\(containerDirectory(name))/upper", consume: consume).bytes
    }

    public func importChanges<Chunks: AsyncSequence & Sendable>(_ name: String, _ chunks: Chunks) async throws -> StreamSummary
        where Chunks.Element == ByteBuffer
    {
        let record = try record(name)
        guard !record.started else {
            throw UMSError(.invalidState, "failed to import rootfs changes into '\(name)': it already runs")
        }
        let upper = "\(containerDirectory(name))/upper"
        let summary = try await Archive.extract(chunks, into: upper, untrusted: true)
        // A peer's stream: checked before anything can run from it; refused, it leaves nothing.
        do {
            try TreeCheck.verify(upper)
        } catch {
            FileSystem.remove(upper)
            try? FileSystem.makeDirectory(upper)
            throw error
        }
        return summary
    }

    public func restore(_ name: String, request: RestoreRequest) async throws -> ContainerInfo {
        var record = try record(name)
        guard !record.started else {
            throw UMSError(.invalidState, "failed to restore '\(name)': it already runs")
        }
        let work = request.workDirectory
        try FileSystem.makeDirectory(work)
        do {
            try await mountRoot(name, image: record.specification.image)
            let options = Runc.RestoreOptions(imagePath: request.imagesDirectory, workPath: work, bundle: bundle(name), lazyPages: request.lazyPages)
            _ = try await runner.run(runc.command(runc.restoreArguments(id: name, options: options, log: runcLog(name)), discardOutput: true))
        } catch {
            throw UMSError.wrap(error, .internalError, "failed to restore \(name)")
                .withDetail(LogFile.tail("\(work)/restore.log"))
        }
        record.started = true
        try save(record)
        // Its published ports and runc's word that it runs, together: each starts processes, and
        // the service is already running (its clients wait on this answer).
        async let publishing: Void = publish(name)
        let info = try await inspect(name)
        do {
            try await publishing
        } catch {
            throw UMSError.wrap(error, .internalError, "failed to restore \(name): its ports could not be published")
        }
        guard info.state == .running else {
            throw UMSError(.internalError, "failed to restore \(name): it is \(info.state.rawValue) after restore")
                .withDetail(LogFile.tail("\(work)/restore.log"))
        }
        return info
    }
}

/// Carrying established connections (issue 16): runc's checkpoint/restore through CRIU with
/// `tcp-established` (orchestrator-level, runc only) or a container-level agent's nested runc,
/// the service's address kept, packets through the migration tunnel.
extension BundleOrchestrator: ConnectionCarrying {
    public nonisolated var containerNetwork: String { block.description }
    public nonisolated var carriedApproaches: Set<Approach> { Runtime.carriedApproaches }

    public func ensure(_ tunnel: MigrationTunnel) async throws {
        try await network.ensure(tunnel)
    }

    public func createKeeping(_ specification: Specification, address: String, tunnel: MigrationTunnel, migration: String) async throws -> ContainerInfo {
        guard Runtime.carriedApproaches.contains(.orchestrator) else {
            throw UMSError(.unsupported, "failed to create \(specification.name) keeping its connections: the \(Runtime.kind.rawValue) runtime's own checkpoint is not wired")
        }
        return try await create(specification, start: false, migration: migration, keeping: (address, tunnel))
    }

    public func createAlsoKeeping(_ specification: Specification, address: String, tunnel: MigrationTunnel, migration: String) async throws -> ContainerInfo {
        try await create(specification, start: true, migration: migration, keeping: (address, tunnel), alsoOwn: true)
    }

    public func deliver(_ name: String) async throws {
        try await network.deliver(try record(name).network)
        // CRIU left the restored service stopped (criuOptions): it goes on now, its replies
        // leaving at once.
        Cgroups.signal(SIGCONT, tree: cgroupPath(name))
    }

    public func carriedAddress(_ name: String) async -> String? {
        (try? record(name))?.network.carried?.address
    }

    public func establishedConnections(_ name: String) async -> Int? {
        guard let record = try? record(name),
              let text = try? await runner.output("nsenter", ["--net=\(record.network.namespacePath)", "ss", "-H", "-t", "-n", "state", "established"])
        else { return nil }
        return text.split(separator: "\n").filter { !$0.allSatisfy(\.isWhitespace) }.count
    }

    public func carryConnections(_ name: String, _ carry: Bool) async throws {
        _ = try record(name)
        let options = Self.criuOptions(carrying: carry).joined(separator: "\n") + "\n"
        try FileSystem.writeAtomically(Data(options.utf8), to: "\(containerDirectory(name))/criu.conf")
    }

    public func sendAway(_ name: String, through tunnel: MigrationTunnel) async throws {
        try await network.sendAway(try record(name).network, through: tunnel)
    }

    public func silence(_ name: String, allowing: [AllowedFlow]) async throws {
        try await network.silence(try record(name).network, allowing: allowing)
    }

    public func routeAway(_ name: String, through tunnel: MigrationTunnel) async throws {
        try await network.routeAway(try record(name).network, through: tunnel)
    }

    public func bringBack(_ name: String) async throws {
        await network.bringBack(try record(name).network)
    }

    public func deleteKeepingNetwork(_ name: String, migration: String) async throws -> KeptNetwork {
        try registry.checkUnlocked(name, migration: migration, operation: "remove")
        let record = try record(name)
        let cgroup = cgroupPath(name)
        Cgroups.killAndThawDescendants(of: cgroup)
        await killAndDelete(name)
        await Cgroups.removeTree(cgroup)
        _ = try? await runner.run(Command("umount", ["\(containerDirectory(name))/bundle/rootfs"]))
        // The published ports' rules go: new clients come through the Frontman (or to the
        // destination); connections already translated keep their conntrack entries.
        await network.unpublish(record.network, ports: record.specification.ports)
        FileSystem.remove(containerDirectory(name))
        forget(name)
        // Its slot (the host link's name) stays taken while the network is kept.
        let kept = KeptNetwork(network: record.network, ports: record.specification.ports)
        keptNetworks[record.network.namespace] = (record.slot, kept)
        logger.info("container deleted; its network kept for its carried connections", metadata: ["container": "\(name)"])
        return kept
    }

    public func release(_ kept: KeptNetwork) async {
        // Only the network this linger kept: one of the same name made since (the service came
        // back and left again) is another linger's, and this one was ended when that was made.
        guard let current = keptNetworks[kept.network.namespace], current.kept == kept else { return }
        keptNetworks[kept.network.namespace] = nil
        await network.bringBack(kept.network)
        // A container of the same name made here since has a namespace of that name: its own.
        guard !registry.records.values.contains(where: { $0.network.namespace == kept.network.namespace }) else { return }
        await network.remove(kept.network, ports: kept.ports)
    }
}
