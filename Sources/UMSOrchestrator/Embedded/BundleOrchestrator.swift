import Foundation
import Logging
import NIOCore
import UMSModel
import UMSOS

/// What runs a container from a bundle UMS prepared: runc itself (`RuncRuntime`), or
/// containerd through `ctr` (`ContainerdRuntime`).
public protocol BundleRuntime: Sendable {
    static var kind: OrchestratorKind { get }
    /// Whether the OCI root path must be absolute (`ctr run --config` does not know the bundle).
    static var absoluteRoot: Bool { get }
    /// The approaches whose established connections it restores (`ConnectionCarrying`): its
    /// own checkpoint's (orchestrator-level) where that is wired, and always a container-level
    /// outer container's, whose network UMS makes.
    static var carriedApproaches: Set<Approach> { get }
    /// The runtime's version; fails with what to do when it is missing or unreachable.
    func version(runner: any CommandRunner) async throws -> String
    func start(_ name: String, bundle: String, log: String, runner: any CommandRunner) async throws
    /// Kills (first, so it never runs a moment longer than meant) and deletes; idempotent.
    func killAndDelete(_ name: String, runner: any CommandRunner) async
    /// The container's state and first process, or nil if the runtime has no such container.
    func state(_ name: String, runner: any CommandRunner) async -> (ContainerInfo.State, pid: Int?)?
    /// Processes in the container now, or nil if the runtime cannot tell.
    func processCount(_ name: String, runner: any CommandRunner) async -> Int?
}

/// The embedded orchestrators: UMS prepares the bundles (an overlay root over the image, the
/// OCI config from runc's own template), the network namespaces and the published ports, and
/// keeps a registry of its containers under its state directory; `Runtime` runs them. With runc
/// (`RuncOrchestrator`) runc's own checkpoint/restore (through CRIU) makes the
/// orchestrator-level approach possible between two such systems; with containerd
/// (`ContainerdBundles`, part of `ContainerdOrchestrator`) it is not wired: containerd's own
/// checkpoint moves only the containers `ctr run` made.
///
/// Layout under `stateDirectory`:
/// `images/<hex>/rootfs` (read-only lower layers), `containers/<name>/` (record, bundle with an
/// overlay root, upper and work dirs, runc log), `runc/` (runc's `--root`).
public actor BundleOrchestrator<Runtime: BundleRuntime>: Orchestrator, ImageStoreBacked {
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

    public nonisolated var kind: OrchestratorKind { Runtime.kind }
    nonisolated let runtime: Runtime
    let systemName: String
    let stateDirectory: String
    /// The address clients use to reach this system's published ports.
    let advertiseHost: String
    nonisolated let runner: any CommandRunner
    /// runc's template (`runc spec`) for every bundle, and its checkpoint/restore.
    let runc: Runc
    nonisolated let criu: CRIUInfo
    nonisolated let images: ImageStore
    let network: NetworkManager
    /// The addresses this system gives its containers.
    let block: AddressBlock
    let logger: Logger
    var registry: ContainerRegistry<Record>
    var runtimeVersionText = "unknown"
    /// Networks kept after their container was deleted (carried connections), with their slots,
    /// by namespace: their slots are not given to new containers until released.
    var keptNetworks: [String: (slot: Int, kept: KeptNetwork)] = [:]
    var template: Data?

    public init(
        systemName: String, stateDirectory: String, advertiseHost: String, criu: CRIUInfo,
        runner: any CommandRunner, logger: Logger, block: AddressBlock = .standard, runtime makeRuntime: (Runc) -> Runtime
    ) throws {
        self.block = block
        self.systemName = systemName
        self.stateDirectory = stateDirectory
        self.advertiseHost = advertiseHost
        self.runner = runner
        self.criu = criu
        self.logger = logger
        self.runc = Runc(root: "\(stateDirectory)/runc", criuPath: criu.path)
        self.runtime = makeRuntime(runc)
        self.images = try ImageStore(root: "\(stateDirectory)/images")
        self.registry = try ContainerRegistry(systemName: systemName, directory: "\(stateDirectory)/containers-index")
        self.network = NetworkManager(runner: runner)
    }

    /// Checks runc (whose template every bundle starts from) and the runtime are there and reads
    /// the runtime's version; call once at start-up.
    public func prepare() async throws {
        do {
            _ = try await runner.output(runc.binary, ["--version"])
        } catch {
            throw UMSError(.unsupported, "failed to find runc; run scripts/setup as root to install it", cause: error)
        }
        try FileSystem.makeDirectory(runc.root)
        runtimeVersionText = try await runtime.version(runner: runner)
    }

    public func runtimeVersion() async -> String { runtimeVersionText }
    public nonisolated var criuVersion: String? { criu.version }

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
    /// Whether the container is one of this orchestrator's bundles.
    func owns(_ name: String) -> Bool { registry.contains(name) }
    func names() -> [String] { registry.names }
    func save(_ record: Record) throws { try registry.save(record) }
    func forget(_ name: String) { registry.forget(name) }

    public func list() async throws -> [ContainerInfo] {
        await inspectAll(registry.names)
    }

    public func inspect(_ name: String) async throws -> ContainerInfo {
        let record = try record(name)
        var state = ContainerInfo.State.created
        var pid: Int?
        if record.started {
            (state, pid) = await runtime.state(name, runner: runner) ?? (.stopped, nil)
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

    /// From the container's cgroup (every bundle names one), without starting the runtime; the
    /// runtime's answer where the cgroup cannot be read.
    func processCount(_ name: String) async -> Int? {
        if let count = Cgroups.processCount(cgroupPath(name)) { return count }
        return await runtime.processCount(name, runner: runner)
    }

    public func create(_ specification: Specification, start: Bool, migration: String?) async throws -> ContainerInfo {
        try await create(specification, start: start, migration: migration, keeping: nil)
    }

    /// Creates a container; `keeping`: with the address it had at another system, its
    /// connections through the tunnel (a carried migration's destination) — instead of an
    /// address of this system's, or, `alsoOwn` (container-level: its agent talks over it),
    /// besides one.
    func create(
        _ specification: Specification, start: Bool, migration: String?, keeping: (address: String, tunnel: MigrationTunnel)?, alsoOwn: Bool = false
    ) async throws -> ContainerInfo {
        try registry.checkCreatable(specification, imageHeld: images.contains(specification.image))
        // Reserve the name and slot before the first suspension point, so that concurrent creates
        // cannot take the same ones.
        let slots = Set(registry.records.values.map(\.slot)).union(keptNetworks.values.map(\.slot))
        guard let slot = (0..<block.slots).first(where: { !slots.contains($0) }) else {
            throw UMSError(.exists, "failed to create container \(specification.name): every address of \(block) is taken on system \(systemName)")
        }
        var assigned = ContainerNetwork.forSlot(slot, system: systemName, container: specification.name, block: block)
        if let keeping {
            assigned = alsoOwn
                ? try .alsoKeeping(keeping.address, through: keeping.tunnel, slot: slot, system: systemName, container: specification.name, block: block)
                : try .keeping(keeping.address, through: keeping.tunnel, slot: slot, system: systemName, container: specification.name, block: block)
            if registry.records.values.contains(where: { $0.network.containerAddress == keeping.address || $0.network.carried?.address == keeping.address }) {
                throw UMSError(.exists, "failed to keep the address \(keeping.address): a container on system \(systemName) has it already")
            }
        }
        let record = Record(specification: specification, network: assigned, slot: slot, lockedBy: migration, started: false, createdAt: Date())
        try save(record)
        do {
            let directory = containerDirectory(specification.name)
            FileSystem.remove(directory)
            for sub in ["bundle/rootfs", "upper", "work"] { try FileSystem.makeDirectory("\(directory)/\(sub)") }
            let criuConfig = "\(directory)/criu.conf"
            // (A container-level service's outer container is never checkpointed by runc here:
            // its agent dumps the nested one, with options of its own.)
            let restoresCarried = keeping != nil && !alsoOwn
            try FileSystem.writeAtomically(Data((Self.criuOptions(carrying: restoresCarried, restoring: restoresCarried).joined(separator: "\n") + "\n").utf8), to: criuConfig)
            let config = try OCIConfig.make(
                template: try await ociTemplate(), specification: specification,
                placement: .init(
                    networkNamespacePath: record.network.namespacePath, cgroupsPath: cgroupPath(specification.name),
                    criuConfigPath: criuConfig, rootPath: Runtime.absoluteRoot ? "\(bundle(specification.name))/rootfs" : "rootfs"
                )
            )
            try FileSystem.writeAtomically(config, to: "\(bundle(specification.name))/config.json")
            await endKeptNetwork(record.network.namespace)
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

    /// A network kept under `namespace` for carried connections goes now, as it was made (its
    /// routes, rules and namespace): a container of the same name is being made here — the
    /// service came back, or another of its name starts, within the connection linger. Its
    /// linger's own release later finds nothing of its own to remove.
    func endKeptNetwork(_ namespace: String) async {
        guard let old = keptNetworks.removeValue(forKey: namespace) else { return }
        await network.bringBack(old.kept.network)
        await network.remove(old.kept.network, ports: old.kept.ports)
        logger.info("a network kept for carried connections ended early: a container of its name is made", metadata: ["namespace": "\(namespace)"])
    }

    /// CRIU options for every checkpoint and restore of a UMS container. A network service has
    /// clients: a connection still in the accept queue when the service freezes would fail the
    /// dump (`skip-in-flight` drops it; the client retries), and established connections cannot
    /// follow the service to another host's address (`tcp-close` restores them closed, so their
    /// clients see a reset instead of a hang). Unless they are carried (issue 16): then CRIU
    /// dumps and restores them with their sequence numbers and buffers (`tcp-established`), and
    /// UMS, not CRIU, keeps packets from them while they move (`network-lock skip`: the source
    /// silences the frozen copy and routes its address away first, the destination holds the
    /// address until the commit).
    /// A carried migration's destination also restores the service stopped (`leave-stopped`) and
    /// lets it go on at the commit (`deliver`): a reply it would send before then is held back
    /// (its link silenced), and the restored socket would resend it only after its initial
    /// retransmission timeout (1 s) — sent after the commit, it goes out at once.
    static func criuOptions(carrying: Bool = false, restoring: Bool = false) -> [String] {
        guard carrying else { return ["tcp-close", "skip-in-flight"] }
        return ["tcp-established", "skip-in-flight", "network-lock skip"] + (restoring ? ["leave-stopped"] : [])
    }

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

    func startContainer(_ name: String) async throws {
        try await runtime.start(name, bundle: bundle(name), log: runcLog(name), runner: runner)
    }

    func killAndDelete(_ name: String) async {
        await runtime.killAndDelete(name, runner: runner)
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

    public func restart(_ name: String, migration: String?) async throws {
        try registry.checkUnlocked(name, migration: migration, operation: "restart")
        let record = try record(name)
        await network.unpublish(record.network, ports: record.specification.ports)
        await killAndDelete(name)
        try await mountRoot(name, image: record.specification.image)
        try await startContainer(name)
        try await publish(name)
    }

    public func delete(_ name: String, migration: String?) async throws {
        try registry.checkUnlocked(name, migration: migration, operation: "remove")
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
}

extension UMSError {
    /// Appends a log excerpt to the cause, for errors from runc/CRIU whose reason is in a log file.
    func withDetail(_ detail: String) -> UMSError {
        var copy = self
        copy.cause = [cause, detail].compactMap { $0 }.joined(separator: "\n")
        return copy
    }

}

extension BundleOrchestrator: LeftoverSweeping {
    /// At a Coordinator's start-up: network namespaces (`ums-<system>-<name>`) and cgroups
    /// (`/ums/<system>/<name>`) of containers this system no longer has — what a crash between
    /// creating and registering, or during a delete, left. Only names of this system's own.
    public func sweepLeftovers() async {
        let known = Set(registry.records.keys)
        await network.sweepCarried(
            knownAddresses: Set(registry.records.values.map(\.network.containerAddress)),
            knownInterfaces: Set(registry.records.values.map(\.network.hostInterface))
        )
        let prefix = "ums-\(systemName)-"
        for namespace in (try? FileSystem.contents(of: "/run/netns")) ?? [] where namespace.hasPrefix(prefix) {
            let name = String(namespace.dropFirst(prefix.count))
            guard !known.contains(name), (try? ContainerName.validate(name)) != nil else { continue }
            _ = try? await runner.run(Command("ip", ["netns", "del", namespace]))
            logger.notice("start-up sweep: removed the network namespace of a container that no longer exists", metadata: ["namespace": "\(namespace)"])
        }
        for hierarchy in Cgroups.hierarchies() {
            for name in (try? FileSystem.contents(of: "\(hierarchy)/ums/\(systemName)")) ?? [] where !known.contains(name) {
                guard (try? ContainerName.validate(name)) != nil, FileSystem.isDirectory("\(hierarchy)/ums/\(systemName)/\(name)") else { continue }
                await runtime.killAndDelete(name, runner: runner)
                Cgroups.killAndThawDescendants(of: cgroupPath(name))
                await Cgroups.removeTree(cgroupPath(name))
                logger.notice("start-up sweep: removed the cgroup of a container that no longer exists", metadata: ["cgroup": "\(cgroupPath(name))"])
            }
        }
    }
}

