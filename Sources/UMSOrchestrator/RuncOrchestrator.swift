import Foundation
import Logging
import NIOCore
import UMSCheckpoint
import UMSModel
import UMSOS

/// The embedded default orchestrator: UMS drives runc itself, keeps the bundles and a registry of
/// its containers under its state directory. runc's own checkpoint/restore (through CRIU) makes
/// the orchestrator-level approach possible between two such systems.
///
/// Layout under `stateDirectory`:
/// `images/<hex>/rootfs` (read-only lower layers), `containers/<name>/` (record, bundle with an
/// overlay root, upper and work dirs, runc log), `runc/` (runc's `--root`).
public actor RuncOrchestrator: Orchestrator, ImageStoreBacked {
    /// What UMS remembers about one container beyond what runc knows.
    struct Record: RegisteredContainer {
        var specification: Specification
        var network: ContainerNetwork
        var slot: Int
        var lockedBy: String?
        /// False between a destination's `create(start: false)` and its restore.
        var started: Bool
        var createdAt: Date
    }

    public nonisolated let kind: String
    /// With containerd: containerd (through `ctr`) runs the containers; UMS still prepares their
    /// bundles, overlays and networks. Its own checkpoint/restore is not wired.
    let containerd: Ctr?
    let systemName: String
    let stateDirectory: String
    /// The address clients use to reach this system's published ports.
    let advertiseHost: String
    nonisolated let runner: any CommandRunner
    let runc: Runc
    let criu: CRIUInfo
    nonisolated let images: ImageStore
    let network: NetworkManager
    let logger: Logger
    var registry: ContainerRegistry<Record>
    var runcVersion = "unknown"
    var template: Data?

    public init(
        systemName: String, stateDirectory: String, advertiseHost: String, criu: CRIUInfo,
        runner: any CommandRunner, logger: Logger, containerd: Ctr? = nil
    ) throws {
        self.containerd = containerd
        self.kind = containerd == nil ? "runc" : "containerd"
        self.systemName = systemName
        self.stateDirectory = stateDirectory
        self.advertiseHost = advertiseHost
        self.runner = runner
        self.criu = criu
        self.logger = logger
        self.runc = Runc(root: "\(stateDirectory)/runc", criuPath: criu.path)
        self.images = try ImageStore(root: "\(stateDirectory)/images")
        self.registry = try ContainerRegistry(systemName: systemName, directory: "\(stateDirectory)/containers-index")
        self.network = NetworkManager(runner: runner)
    }

    /// Checks runc is there and reads its version; call once at start-up.
    public func prepare() async throws {
        do {
            let text = try await runner.output(runc.binary, ["--version"])
            runcVersion = text.split(separator: "\n").first.map { String($0.split(separator: " ").last ?? "") } ?? "unknown"
        } catch {
            throw UMSError(.unsupported, "failed to find runc; run scripts/setup as root to install it", cause: error)
        }
        try FileSystem.makeDirectory(runc.root)
        if let containerd {
            do {
                runcVersion = Ctr.parseServerVersion(try await runner.output(containerd.binary, containerd.versionArguments()))
            } catch {
                throw UMSError(.unavailable, "failed to reach containerd at \(containerd.address); start it (scripts/testbed does) or give --engine-socket", cause: error)
            }
        }
    }

    public func capabilities() async -> OrchestratorCapabilities {
        OrchestratorCapabilities(kind: kind, runtimeVersion: runcVersion, criuVersion: criu.version, canCheckpoint: containerd == nil)
    }

    // MARK: Paths

    func containerDirectory(_ name: String) -> String { "\(stateDirectory)/containers/\(name)" }
    func bundle(_ name: String) -> String { "\(containerDirectory(name))/bundle" }
    func runcLog(_ name: String) -> String { "\(containerDirectory(name))/runc.log" }
    /// Unique per system, so two systems on one host never share a cgroup.
    func cgroupPath(_ name: String) -> String { "/ums/\(systemName)/\(name)" }

    // MARK: Images

    // hasImage, importImage, exportImage, importDirectory: ImageStoreBacked.

    // MARK: Containers

    func record(_ name: String) throws -> Record { try registry.record(name) }
    func save(_ record: Record) throws { try registry.save(record) }
    func forget(_ name: String) { registry.forget(name) }

    public func list() async throws -> [ContainerInfo] {
        var result: [ContainerInfo] = []
        for name in registry.names {
            if let info = try? await inspect(name) { result.append(info) }
        }
        return result
    }

    public func inspect(_ name: String) async throws -> ContainerInfo {
        let record = try record(name)
        var state = ContainerInfo.State.created
        var pid: Int?
        if record.started, let containerd {
            let tasks = (try? await runner.output(containerd.binary, containerd.tasksArguments())) ?? ""
            (state, pid) = Ctr.parseTasks(tasks, id: name) ?? (.stopped, nil)
        } else if record.started {
            if let text = try? await runner.output(runc.binary, runc.stateArguments(id: name)),
               let json = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] {
                state = ContainerInfo.State(rawValue: (json["status"] as? String) ?? "") ?? .unknown
                pid = (json["pid"] as? Int).flatMap { $0 > 0 ? $0 : nil }
            } else {
                state = .stopped
            }
        }
        var specification = record.specification
        if state == .running || state == .paused, let count = await processCount(name) {
            specification.processCount = count
        }
        return ContainerInfo(
            name: name, state: state, specification: specification, pid: pid,
            endpoints: record.started ? record.specification.ports.map { "\(advertiseHost):\($0.hostPort)" } : [],
            migratingIn: record.lockedBy, orchestrator: kind, address: record.network.containerAddress
        )
    }

    public func specification(of name: String) async throws -> Specification {
        var specification = try record(name).specification
        if let count = await processCount(name) { specification.processCount = count }
        return specification
    }

    /// Processes in the container now (`runc ps`), or nil if runc cannot tell.
    func processCount(_ name: String) async -> Int? {
        if let containerd {
            return (try? await runner.output(containerd.binary, containerd.processesArguments(id: name))).map(Ctr.parseProcessCount)
        }
        guard let text = try? await runner.output(runc.binary, runc.processesArguments(id: name)),
              let pids = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [Int]
        else { return nil }
        return pids.count
    }

    public func create(_ specification: Specification, start: Bool, migration: String?) async throws -> ContainerInfo {
        try ContainerName.validate(specification.name)
        guard !specification.command.isEmpty else {
            throw UMSError(.invalidArgument, "failed to create container \(specification.name): no command given")
        }
        guard !registry.contains(specification.name) else {
            throw UMSError(.exists, "failed to create container: '\(specification.name)' already exists on system \(systemName)")
        }
        guard images.contains(specification.image) else {
            throw UMSError(.notFound, "failed to create container \(specification.name): image \(specification.image.digest) is not on system \(systemName)")
        }
        let taken = registry.publishedPorts
        if let clash = specification.ports.first(where: { taken.contains($0.hostPort) }) {
            throw UMSError(.exists, "failed to create container \(specification.name): port \(clash.hostPort) is already published on system \(systemName)")
        }
        // Reserve the name and slot before the first suspension point, so that concurrent creates
        // cannot take the same ones.
        let slots = Set(registry.records.values.map(\.slot))
        let slot = (0...).first { !slots.contains($0) } ?? 0
        let record = Record(
            specification: specification,
            network: .forSlot(slot, system: systemName, container: specification.name),
            slot: slot, lockedBy: migration, started: false, createdAt: Date()
        )
        try save(record)
        do {
            let directory = containerDirectory(specification.name)
            FileSystem.remove(directory)
            for sub in ["bundle/rootfs", "upper", "work"] { try FileSystem.makeDirectory("\(directory)/\(sub)") }
            let criuConfig = "\(directory)/criu.conf"
            try FileSystem.writeAtomically(Data((Self.criuOptions.joined(separator: "\n") + "\n").utf8), to: criuConfig)
            let config = try OCIConfig.make(
                template: try await ociTemplate(), specification: specification,
                placement: .init(
                    networkNamespacePath: record.network.namespacePath, cgroupsPath: cgroupPath(specification.name),
                    criuConfigPath: criuConfig, rootPath: containerd == nil ? "rootfs" : "\(bundle(specification.name))/rootfs"
                )
            )
            try FileSystem.writeAtomically(config, to: "\(bundle(specification.name))/config.json")
            try await network.create(record.network, ports: specification.ports)
            if start {
                try await mountRoot(specification.name, image: specification.image)
                try await startContainer(specification.name)
                try await publish(specification.name)
                var started = record
                started.started = true
                try save(started)
            }
        } catch {
            await removeEverything(specification.name, record: record)
            throw UMSError.wrap(error, .internalError, "failed to create container \(specification.name)")
                .withDetail(LogFile.tail(runcLog(specification.name), lines: 3))
        }
        logger.info("container created", metadata: ["container": "\(specification.name)", "started": "\(start)"])
        return try await inspect(specification.name)
    }

    /// CRIU options for every checkpoint and restore of a UMS container. A network service has
    /// clients: a connection still in the accept queue when the service freezes would fail the
    /// dump (`skip-in-flight` drops it; the client retries), and established connections cannot
    /// follow the service to another host's address (`tcp-close` restores them closed, so their
    /// clients see a reset instead of a hang).
    static let criuOptions = ["tcp-close", "skip-in-flight"]

    func ociTemplate() async throws -> Data {
        if let template { return template }
        // Its own directory: two first containers created at once both get here (the actor
        // is re-entered while `runc spec` runs).
        let directory = "\(stateDirectory)/.template-\(UUID().uuidString.prefix(8))"
        try FileSystem.makeDirectory(directory)
        defer { FileSystem.remove(directory) }
        _ = try await runner.run(Command(runc.binary, ["spec"], workingDirectory: directory))
        let data = try FileSystem.read("\(directory)/config.json")
        template = data
        return data
    }

    /// Starts the container from its prepared bundle: `runc run -d`, or containerd's `ctr run`.
    func startContainer(_ name: String) async throws {
        if let containerd {
            _ = try await runner.run(Command(containerd.binary, containerd.runArguments(id: name, config: "\(bundle(name))/config.json"), discardOutput: true))
        } else {
            _ = try await runner.run(runc.command(runc.runArguments(id: name, bundle: bundle(name), log: runcLog(name)), discardOutput: true))
        }
    }

    /// Kills (killed first, so it never runs a moment longer than meant) and deletes the
    /// container's runtime state; idempotent.
    func killAndDelete(_ name: String) async {
        if let containerd {
            _ = try? await runner.run(Command(containerd.binary, containerd.killArguments(id: name)))
            _ = try? await runner.run(Command(containerd.binary, containerd.deleteTaskArguments(id: name)))
            _ = try? await runner.run(Command(containerd.binary, containerd.deleteContainerArguments(id: name)))
        } else {
            _ = try? await runner.run(runc.command(runc.killArguments(id: name, signal: "KILL")))
            _ = try? await runner.run(runc.command(runc.deleteArguments(id: name)))
        }
    }

    func requireRunc(_ operation: String) throws {
        if containerd != nil {
            throw UMSError(.unsupported, "failed to \(operation): the containerd adapter does not implement containerd's own checkpoint/restore yet; use the service- or container-level approach")
        }
    }

    func mountRoot(_ name: String, image: ImageReference) async throws {
        let directory = containerDirectory(name)
        let target = "\(directory)/bundle/rootfs"
        if let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8), mounts.contains(" \(target) ") { return }
        try await runner.execute("mount", [
            "-t", "overlay", "overlay",
            "-o", "lowerdir=\(try images.rootfs(image)),upperdir=\(directory)/upper,workdir=\(directory)/work",
            target,
        ])
    }

    func publish(_ name: String) async throws {
        let record = try record(name)
        try await network.publish(record.network, ports: record.specification.ports)
    }

    func checkUnlocked(_ name: String, migration: String?, operation: String) throws {
        try registry.checkUnlocked(name, migration: migration, operation: operation)
    }

    public func restart(_ name: String, migration: String?) async throws {
        try checkUnlocked(name, migration: migration, operation: "restart")
        let record = try record(name)
        await network.unpublish(record.network, ports: record.specification.ports)
        await killAndDelete(name)
        try await mountRoot(name, image: record.specification.image)
        try await startContainer(name)
        try await publish(name)
    }

    public func delete(_ name: String, migration: String?) async throws {
        try checkUnlocked(name, migration: migration, operation: "remove")
        let record = try record(name)
        await removeEverything(name, record: record)
        logger.info("container deleted", metadata: ["container": "\(name)"])
    }

    /// Kills and removes everything a container has, whatever state it is in. Idempotent.
    func removeEverything(_ name: String, record: Record) async {
        // Killed first, so the service never runs a moment longer than the caller meant. SIGKILL
        // ends even a frozen container's processes without their running again; `delete --force`
        // alone would do the same but polls for the exit (~0.1 s).
        // A container that runs containers (container-level) may hold frozen nested ones: they
        // die only once thawed (killed first, so they never run again), and their cgroups keep
        // runc from removing the container's own.
        let cgroup = cgroupPath(name)
        Cgroups.killAndThawDescendants(of: cgroup)
        await killAndDelete(name)
        await Cgroups.removeTree(cgroup)
        let root = "\(containerDirectory(name))/bundle/rootfs"
        _ = try? await runner.run(Command("umount", [root]))
        await network.remove(record.network, ports: record.specification.ports)
        FileSystem.remove(containerDirectory(name))
        forget(name)
    }

    public func lock(_ name: String, migration: String) async throws {
        try registry.lock(name, migration: migration)
    }

    public func unlock(_ name: String, migration: String) async throws {
        try registry.unlock(name, migration: migration)
    }

    // MARK: Checkpoint/restore

    public func freeze(_ name: String) async throws {
        try requireRunc("freeze \(name)")
        _ = try record(name)
        try await runner.execute(runc.binary, runc.pauseArguments(id: name))
    }

    /// Thaws a frozen container; one that already runs (e.g. released by a failed post-copy
    /// dump) is left as it is.
    public func resume(_ name: String) async throws {
        guard try await inspect(name).state != .running else { return }
        try await runner.execute(runc.binary, runc.resumeArguments(id: name))
    }

    public func checkpoint(_ name: String, request: CheckpointRequest) async throws -> BackgroundProcess? {
        try requireRunc("checkpoint \(name)")
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
                try await process.waitUntilReady(timeout: .seconds(60)) {
                    (try? String(contentsOfFile: log, encoding: .utf8))?.contains("Running status-ready scripts") ?? false
                }
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
        return try await Archive.extract(chunks, into: "\(containerDirectory(name))/upper")
    }

    public func restore(_ name: String, request: RestoreRequest) async throws -> ContainerInfo {
        try requireRunc("restore \(name)")
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
            try await publish(name)
        } catch {
            throw UMSError.wrap(error, .internalError, "failed to restore \(name)")
                .withDetail(LogFile.tail("\(work)/restore.log"))
        }
        record.started = true
        try save(record)
        let info = try await inspect(name)
        guard info.state == .running else {
            throw UMSError(.internalError, "failed to restore \(name): it is \(info.state.rawValue) after restore")
                .withDetail(LogFile.tail("\(work)/restore.log"))
        }
        return info
    }
}

extension UMSError {
    /// Appends a log excerpt to the cause, for errors from runc/CRIU whose reason is in a log file.
    func withDetail(_ detail: String) -> UMSError {
        var copy = self
        copy.cause = [cause, detail].compactMap { $0 }.joined(separator: "\n")
        return copy
    }

}
