import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Synchronization
import UMSModel
import UMSOS

/// An orchestrator adapter for a container engine with an HTTP API on a Unix socket: Docker Engine
/// (`dockerd`), or Podman (`podman system service`, through the Docker-compatible part of its
/// REST API, plus its own `libpod` endpoints where they differ). The engine creates, starts, lists
/// and deletes the containers; UMS keeps what it needs beyond that (the Specification as given,
/// the control lock) in its own registry, and the root filesystems by content digest, imported
/// into the engine as `localhost/ums:<digest>` when a container needs one (never pulled).
///
/// The engine's own checkpoint/restore (orchestrator-level, between two systems of the same
/// engine): Podman's checkpoint export and import (libpod API); Docker's checkpoints API, whose
/// files UMS moves and places where the destination daemon looks for them.
public actor EngineOrchestrator: CheckpointingOrchestrator, EngineImageHolding {
    public enum Dialect: String, Sendable {
        case docker, podman
    }

    struct Record: RegisteredContainer {
        var specification: Specification
        var lockedBy: String?
        var createdAt: Date
        /// Made by the engine outside UMS and adopted for a migration (given back on rollback).
        var adopted: Bool?
    }

    public nonisolated let kind: OrchestratorKind
    nonisolated let dialect: Dialect
    let api: EngineAPI
    let systemName: String
    let advertiseHost: String
    nonisolated let criu: CRIUInfo
    nonisolated let images: ImageStore
    nonisolated let runner: any CommandRunner
    let logger: Logger
    /// Where a pod's checkpoint exports are kept until its migration ends (a rollback restores
    /// from them).
    nonisolated let podCheckpoints: String
    var registry: ContainerRegistry<Record>
    var engineVersion = "unknown"
    /// Docker: the containerd it runs its containers on (namespace `moby`), where given — the
    /// checkpoint then streams while CRIU writes it.
    nonisolated let dockerContainerd: Ctr?
    /// The containerd namespace Docker keeps its containers in.
    public static let dockerNamespace = "moby"

    public init(
        dialect: Dialect, socketPath: String, http: HTTPClient, systemName: String, stateDirectory: String,
        advertiseHost: String, criu: CRIUInfo, runner: any CommandRunner, logger: Logger, dockerContainerd: Ctr? = nil
    ) throws {
        self.dockerContainerd = dialect == .docker ? dockerContainerd : nil
        self.dialect = dialect
        self.kind = dialect == .podman ? .podman : .docker
        self.api = EngineAPI(socketPath: socketPath, versionPrefix: "/v1.41", http: http)
        self.systemName = systemName
        self.advertiseHost = advertiseHost
        self.criu = criu
        self.images = try ImageStore(root: "\(stateDirectory)/images")
        self.podCheckpoints = "\(stateDirectory)/pod-checkpoints"
        self.registry = try ContainerRegistry(systemName: systemName, directory: "\(stateDirectory)/engine-containers")
        self.runner = runner
        self.logger = logger
    }

    /// Checks the engine answers and reads its version; call once at start-up.
    public func prepare() async throws {
        let response: EngineAPI.Response
        do {
            response = try await api.request(.GET, "/version", operation: "reach \(kind)")
        } catch {
            throw UMSError(.unavailable, "failed to reach the \(kind) engine at \(api.socketPath); start it (scripts/testbed does) or give --engine-socket", cause: error)
        }
        engineVersion = (try? response.decode(DockerAPI.Version.self, operation: "read the engine's version"))?.version ?? "unknown"
        if let dockerContainerd {
            do {
                try await runner.execute(dockerContainerd.binary, dockerContainerd.versionArguments())
            } catch {
                throw UMSError(.unavailable, "failed to reach Docker's containerd at \(dockerContainerd.address) (--docker-containerd); give the socket dockerd's containerd listens on, or leave it out to checkpoint through Docker's API", cause: error)
            }
        }
    }

    public func runtimeVersion() async -> String { engineVersion }
    public nonisolated var criuVersion: String? { criu.version }
    /// Docker 20.10 predates CAP_CHECKPOINT_RESTORE; CAP_SYS_ADMIN includes what it grants.
    public nonisolated var agentCapability: String { dialect == .docker ? "CAP_SYS_ADMIN" : "CAP_CHECKPOINT_RESTORE" }

    // MARK: Images

    /// How the engine names an image: a UMS root filesystem as `localhost/ums:<hex>`, the
    /// engine's own by its ID.
    static func engineImage(_ image: ImageReference) throws -> String {
        if image.format == .engine {
            try image.validate()
            return image.digest
        }
        return "localhost/ums:\(try ImageStore.hexDigest(image))"
    }

    // hasImage, importImage, exportImage: EngineImageHolding (UMS's root filesystems from the
    // store, the engine's own images — adopted containers' — from the engine).

    /// Makes the engine hold `image` (imported from the local store as a tar stream, once).
    func ensureEngineImage(_ image: ImageReference) async throws {
        if image.format == .engine {
            guard await hasEngineImage(image) else {
                throw UMSError(.notFound, "failed to use image \(image.digest): the \(kind) engine does not hold it")
            }
            return
        }
        let name = try Self.engineImage(image)
        if (try? await api.request(.GET, "/images/\(name)/json", operation: "inspect image")) != nil { return }
        let collected = Mutex(ByteBuffer())
        try await images.export(image) { chunk in
            collected.withLock { buffer in
                var chunk = chunk
                buffer.writeBuffer(&chunk)
            }
        }
        let tar = collected.withLock { $0 }
        let hex = try ImageStore.hexDigest(image)
        let path = dialect == .podman
            ? "/libpod/images/import?reference=\(name)"
            : "/images/create?fromSrc=-&repo=localhost/ums&tag=\(hex)"
        try await api.request(.POST, path, body: .bytes(tar), contentType: "application/x-tar", timeout: .seconds(300), operation: "import image \(image.digest.prefix(19)) into \(kind)")
    }

    // MARK: Containers

    func record(_ name: String) throws -> Record { try registry.record(name) }
    func save(_ record: Record) throws { try registry.save(record) }
    func forget(_ name: String) { registry.forget(name) }

    /// Records of containers someone removed through the engine itself (`docker rm`): the engine
    /// is the truth, so their names and ports are free again. A container a migration holds is
    /// kept (Podman's restore makes it anew).
    func forgetVanished() async {
        for name in registry.names where (try? record(name))?.lockedBy == nil {
            do {
                let pod = (try? record(name))?.specification.pod != nil
                _ = try await api.request(.GET, pod ? "/libpod/pods/\(name)/json" : "/containers/\(name)/json", operation: "inspect \(name)")
            } catch let error as UMSError where error.code == .notFound {
                logger.info("forgetting a container removed through the engine", metadata: ["container": "\(name)"])
                registry.forget(name)
            } catch {
                continue
            }
        }
    }

    /// Every container of the engine: UMS's own and those the engine made without UMS.
    public func list() async throws -> [ContainerInfo] {
        await inspectAll(registry.names + foreignNames())
    }

    struct EngineState {
        var state: ContainerInfo.State
        var pid: Int?
        var address: String?
    }

    func engineState(_ name: String) async -> EngineState {
        guard let response = try? await api.request(.GET, "/containers/\(name)/json", operation: "inspect \(name)"),
              let inspect = try? response.decode(DockerAPI.ContainerInspect.self, operation: "inspect \(name)")
        else { return EngineState(state: .stopped) }
        let status = inspect.state?.status ?? ""
        let mapped: ContainerInfo.State = switch status {
        case "running": .running
        case "paused": .paused
        case "created", "configured": .created
        case "exited", "stopped", "dead": .stopped
        default: .unknown
        }
        let pid = inspect.state?.pid.flatMap { $0 > 0 ? $0 : nil }
        return EngineState(state: mapped, pid: pid, address: inspect.address)
    }

    public func inspect(_ name: String) async throws -> ContainerInfo {
        // One the engine made without UMS: read from the engine as it is now.
        let record = registry.contains(name)
            ? try record(name)
            : Record(specification: try await adoptedSpecification(name, strict: false), lockedBy: nil, createdAt: Date())
        let engine = record.specification.pod != nil ? await podState(record.specification) : await engineState(name)
        var specification = record.specification
        if specification.pod == nil, engine.state == .running, let count = await processCount(name) { specification.processCount = count }
        return ContainerInfo(
            name: name, state: engine.state, specification: specification, pid: engine.pid,
            endpoints: engine.state == .running ? record.specification.ports.map { "\(advertiseHost):\($0.hostPort)" } : [],
            migratingIn: record.lockedBy, orchestrator: kind, address: engine.address
        )
    }

    public func specification(of name: String) async throws -> Specification {
        var specification = registry.contains(name) ? try record(name).specification : try await adoptedSpecification(name, strict: true)
        if specification.pod == nil, let count = await processCount(name) { specification.processCount = count }
        return specification
    }

    func processCount(_ name: String) async -> Int? {
        guard let response = try? await api.request(.GET, "/containers/\(name)/top", operation: "list processes of \(name)"),
              let top = try? response.decode(DockerAPI.Top.self, operation: "list processes of \(name)")
        else { return nil }
        return top.processes?.count ?? 0
    }

    /// runc's default capabilities (`runc spec`), which the embedded orchestrator's containers have.
    public static let baseCapabilities = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

    /// The engine's create request for a Specification (Docker Engine API; Podman takes the same).
    public static func createBody(_ specification: Specification, dialect: Dialect, systemName: String) throws -> DockerAPI.CreateBody {
        var host = DockerAPI.HostConfig()
        var exposed: [String: DockerAPI.Empty] = [:]
        for port in specification.ports {
            exposed["\(port.containerPort)/\(port.proto)"] = DockerAPI.Empty()
            host.portBindings["\(port.containerPort)/\(port.proto)"] = [DockerAPI.PortBinding(hostIp: "", hostPort: String(port.hostPort))]
        }
        if specification.engine != nil {
            // Adopted: the engine's defaults, as the source's engine made it, plus what it added.
            host.capAdd = specification.security?.addCapabilities
        } else if let security = specification.security {
            if security.runsContainers && dialect == .podman {
                // A runtime inside: what --privileged gives (capabilities, writable cgroups and
                // /proc/sys, no seccomp filter) is what it needs.
                host.privileged = true
            } else if security.runsContainers {
                // Docker's --privileged asks for every capability it knows, CAP_SYS_RESOURCE
                // included, which root lacks on some hosts (this one): the runtime's needs,
                // explicitly; the agent remounts its cgroups writable itself.
                host.capAdd = security.addCapabilities.filter { $0 != "CAP_CHECKPOINT_RESTORE" }
                host.securityOpt = ["seccomp=unconfined", "apparmor=unconfined"]
                // `--security-opt systempaths=unconfined` in the API: /proc/sys writable.
                host.maskedPaths = []
                host.readonlyPaths = []
            } else {
                // Exactly the runtime's minimal set plus what is asked, the same on every engine:
                // CRIU restores a process only with the capabilities it had. Docker 20.10 predates
                // CAP_CHECKPOINT_RESTORE; CAP_SYS_ADMIN includes what it grants.
                host.capDrop = ["ALL"]
                host.capAdd = baseCapabilities + security.addCapabilities.map { capability in
                    dialect == .docker && capability == "CAP_CHECKPOINT_RESTORE" ? "CAP_SYS_ADMIN" : capability
                }
            }
            if security.seccompUnconfined && host.securityOpt == nil {
                // no-new-privileges as runc's default sets it: CRIU cannot restore a process
                // without the flag into a container whose processes have it, and back.
                host.securityOpt = ["seccomp=unconfined", "no-new-privileges"]
            }
        }
        host.memory = specification.limits.memoryBytes
        if let cpus = specification.limits.cpus { host.nanoCpus = try nanoCPUs(cpus) }
        host.pidsLimit = specification.limits.pids.map(Int64.init)
        let binds = (specification.volumes ?? []).map { "\($0.name):\($0.destination)" + ($0.readOnly ? ":ro" : "") }
            + (specification.binds ?? []).map { "\($0.hostPath):\($0.destination)" + ($0.readOnly ? ":ro" : "") }
        if !binds.isEmpty { host.binds = binds }
        if let tmpfs = specification.tmpfs, !tmpfs.isEmpty {
            host.tmpfs = Dictionary(tmpfs.map { ($0.destination, $0.options.joined(separator: ",")) }, uniquingKeysWith: { first, _ in first })
        }
        return DockerAPI.CreateBody(
            image: try Self.engineImage(specification.image), cmd: specification.command, entrypoint: specification.engine?.entrypoint ?? [],
            env: specification.environment, workingDir: specification.workingDirectory, labels: labels(specification, systemName: systemName),
            exposedPorts: exposed, hostConfig: host, hostname: specification.engine?.hostname ?? specification.name,
            user: specification.engine?.user
        )
    }

    static func labels(_ specification: Specification, systemName: String) -> [String: String] {
        var labels = specification.labels
        labels["ums.managed"] = systemName
        labels["ums.image"] = specification.image.digest
        return labels
    }

    static func nanoCPUs(_ cpus: Double) throws(UMSError) -> Int64 {
        guard cpus > 0, let nano = Int64(exactly: (cpus * 1e9).rounded()) else {
            throw UMSError(.invalidArgument, "invalid CPU limit \(cpus)")
        }
        return nano
    }

    /// Podman's own create request (libpod's SpecGenerator) for a Specification, with the same
    /// security rules as `createBody`.
    public static func libpodCreateBody(_ specification: Specification, systemName: String) throws -> LibpodAPI.CreateBody {
        var environment: [String: String] = [:]
        for entry in specification.environment {
            let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = parts.first, !key.isEmpty else {
                throw UMSError(.invalidArgument, "invalid environment entry '\(entry)': expected NAME=VALUE")
            }
            environment[String(key)] = parts.count > 1 ? String(parts[1]) : ""
        }
        var body = LibpodAPI.CreateBody(
            name: specification.name, image: try engineImage(specification.image), command: specification.command,
            entrypoint: specification.engine?.entrypoint ?? [], env: environment, workDir: specification.workingDirectory,
            hostname: specification.engine?.hostname ?? specification.name, labels: labels(specification, systemName: systemName),
            portmappings: specification.ports.map { LibpodAPI.PortMapping(hostPort: $0.hostPort, containerPort: $0.containerPort, protocol: $0.proto) }
        )
        if specification.engine != nil {
            body.capAdd = specification.security?.addCapabilities
        } else if let security = specification.security {
            if security.runsContainers {
                body.privileged = true
            } else {
                body.capDrop = ["ALL"]
                body.capAdd = baseCapabilities + security.addCapabilities
                body.noNewPrivileges = true
            }
            if security.seccompUnconfined { body.seccompProfilePath = "unconfined" }
        }
        var limits = OCI.Resources()
        limits.memory = specification.limits.memoryBytes.map { OCI.Memory(limit: $0) }
        if let cpus = specification.limits.cpus { limits.cpu = OCI.CPU(quota: try nanoCPUs(cpus) / 10_000, period: 100_000) }
        limits.pids = specification.limits.pids.map { OCI.Pids(limit: Int64($0)) }
        if limits != OCI.Resources() { body.resourceLimits = limits }
        if let volumes = specification.volumes, !volumes.isEmpty {
            body.volumes = volumes.map { LibpodAPI.NamedVolume(name: $0.name, dest: $0.destination, options: $0.readOnly ? ["ro"] : []) }
        }
        let tmpfs = (specification.tmpfs ?? []).map { LibpodAPI.BindMountSpec(destination: $0.destination, type: "tmpfs", source: "tmpfs", options: $0.options) }
        if !tmpfs.isEmpty { body.mounts = tmpfs }
        if let binds = specification.binds, !binds.isEmpty {
            body.mounts = tmpfs + binds.map { LibpodAPI.BindMountSpec(destination: $0.destination, type: "bind", source: $0.hostPath, options: ["rbind"] + ($0.readOnly ? ["ro"] : [])) }
        }
        return body
    }

    public func create(_ specification: Specification, start: Bool, migration: String?) async throws -> ContainerInfo {
        await forgetVanished()
        try registry.checkCreatable(specification, imageHeld: await hasImage(specification.image))
        try save(Record(specification: specification, lockedBy: migration, createdAt: Date()))
        do {
            for image in specification.images { try await ensureEngineImage(image) }
            // The names the source ran them by (moved by ID, they arrive nameless).
            for container in specification.containers { await nameImage(container.image, as: container.engine?.imageName) }
            if specification.pod != nil {
                // A pod: made now, with its ports and shared namespaces; its containers come with
                // the restore (Podman's import makes each into it).
                guard dialect == .podman, !start else {
                    throw UMSError(.unsupported, "failed to create pod \(specification.name): pods are made only to restore into, by Podman")
                }
                try await createPod(specification)
                return try await inspect(specification.name)
            }
            if !start && dialect == .podman {
                // Ready to be restored into: Podman's import creates the container itself from
                // the checkpoint (with this Specification's image, which is now here).
                return try await inspect(specification.name)
            }
            if dialect == .podman {
                // Podman's own endpoint: a container made through the compatible one records its
                // image by ID, which another Podman's checkpoint import cannot resolve.
                try await api.request(.POST, "/libpod/containers/create", json: try Self.libpodCreateBody(specification, systemName: systemName), operation: "create \(specification.name)")
            } else {
                try await api.request(.POST, "/containers/create?name=\(specification.name)", json: try Self.createBody(specification, dialect: dialect, systemName: systemName), operation: "create \(specification.name)")
            }
            if start {
                try await api.request(.POST, "/containers/\(specification.name)/start", operation: "start \(specification.name)")
            }
        } catch {
            await removeEverything(specification.name)
            throw UMSError.wrap(error, .internalError, "failed to create container \(specification.name) on \(kind)")
        }
        logger.info("container created", metadata: ["container": "\(specification.name)", "engine": "\(kind)", "started": "\(start)"])
        return try await inspect(specification.name)
    }

    public func restart(_ name: String, migration: String?) async throws {
        if registry.contains(name) { try registry.checkUnlocked(name, migration: migration, operation: "restart") }
        try await api.request(.POST, "/containers/\(name)/restart?t=1", operation: "restart \(name)")
    }

    public func delete(_ name: String, migration: String?) async throws {
        if registry.contains(name) {
            try registry.checkUnlocked(name, migration: migration, operation: "remove")
        } else {
            _ = try await adoptedSpecification(name, strict: false)  // 404 if the engine has none either
        }
        await removeEverything(name)
        logger.info("container deleted", metadata: ["container": "\(name)", "engine": "\(kind)"])
    }

    /// Kills and removes the container, and any cgroups a runtime inside it left below its own
    /// (a nested container, possibly frozen). Idempotent.
    func removeEverything(_ name: String) async {
        if (try? record(name))?.specification.pod != nil {
            await removePod(name)
            return
        }
        let cgroup = await engineState(name).pid.flatMap(Cgroups.path(ofProcess:))
        if let cgroup { Cgroups.killAndThawDescendants(of: cgroup) }
        _ = try? await api.request(.POST, "/containers/\(name)/kill?signal=KILL", operation: "kill \(name)")
        // Podman's compatible delete waits out a stop timeout first; its own endpoint takes 0.
        let remove = dialect == .podman ? "/libpod/containers/\(name)?force=true&timeout=0" : "/containers/\(name)?force=true"
        _ = try? await api.request(.DELETE, remove, operation: "remove \(name)")
        if let cgroup { await Cgroups.removeTree(cgroup) }
        forget(name)
    }

    public func lock(_ name: String, migration: String) async throws {
        guard registry.contains(name) else {
            try await adopt(name, migration: migration)
            return
        }
        try registry.lock(name, migration: migration)
    }

    public func unlock(_ name: String, migration: String) async throws {
        try registry.unlock(name, migration: migration)
        // An adopted container that stays (a rollback) goes back to its engine as it was.
        if let record = try? record(name), record.adopted == true, record.lockedBy == nil {
            await release(record)
        }
    }

    // MARK: Orchestrator-level checkpoint/restore (the engine's own, between two of a kind)

    static let checkpointName = "ums"

    /// Places a directory's files in another without copying their bytes where both are on one
    /// filesystem (hard links; the images are not changed afterwards), copying otherwise.
    func linkOrCopy(_ source: String, into target: String) async throws {
        if (try? await runner.execute("cp", ["-al", source + "/.", target + "/"])) != nil { return }
        try await runner.execute("cp", ["-a", source + "/.", target + "/"])
    }

    /// Docker keeps a container's checkpoints under its root directory.
    func dockerCheckpointDirectory(_ name: String) async throws -> String {
        try await dockerCheckpointDirectory(id: try await containerID(name))
    }

    /// The same for a container whose ID is known (checked first: the engine's ID becomes a path).
    func dockerCheckpointDirectory(id: String) async throws -> String {
        try Self.validateContainerID(id)
        let info = try await api.request(.GET, "/info", operation: "read docker's root")
        let root = try info.decode(DockerAPI.Info.self, operation: "read docker's root").dockerRootDir
        return "\(root)/containers/\(id)/checkpoints/\(Self.checkpointName)"
    }

    /// A checkpoint stops the container (its state kept for a local restore), so the freeze is
    /// the checkpoint itself.
    public func freeze(_ name: String) async throws {
        _ = try record(name)
    }

    /// Rollback: a checkpointed (exited) container is restored in place from the checkpoint it
    /// kept, with its state; one that runs is left alone.
    public func resume(_ name: String) async throws {
        if let record = try? record(name), record.specification.pod != nil {
            try await resumePod(record.specification)
            return
        }
        guard await engineState(name).state != .running else { return }
        if dialect == .podman {
            try await api.request(.POST, "/libpod/containers/\(name)/restore?keep=true", timeout: .seconds(120), operation: "restore \(name) in place")
        } else {
            try await api.request(.POST, "/containers/\(name)/start?checkpoint=\(Self.checkpointName)", timeout: .seconds(120), operation: "restore \(name) in place")
        }
    }

    /// Podman: writes its checkpoint export (CRIU's images, the container's config and its
    /// rootfs changes, one tar) into the images directory as it arrives, so it streams on
    /// meanwhile. Docker: checkpoints into a directory of ours, then moves the files into the
    /// images directory (the stream sends them) and keeps a copy where the daemon restores from
    /// on rollback.
    public func checkpoint(_ name: String, request: CheckpointRequest) async throws -> BackgroundProcess? {
        guard request.lazyPages == nil else {
            throw UMSError(.unsupported, "failed to checkpoint \(name): post-copy through \(kind) is not implemented; use stop-and-copy")
        }
        let specification = try record(name).specification
        try FileSystem.makeDirectory(request.imagesDirectory)
        if specification.pod != nil {
            try await checkpointPod(specification, into: request.imagesDirectory)
            return nil
        }
        if dialect == .podman {
            try await api.download(
                .POST, "/libpod/containers/\(name)/checkpoint?export=true&keep=true" + ((try record(name).specification.volumes ?? []).isEmpty ? "" : "&ignoreVolumes=true"), to: "\(request.imagesDirectory)/\(Self.exportName)",
                operation: "checkpoint \(name)"
            )
            return nil
        }
        let parent = request.workDirectory
        FileSystem.remove(parent)
        try FileSystem.makeDirectory(parent)
        if let dockerContainerd {
            try await checkpointThroughContainerd(name, dockerContainerd, request: request)
            return nil
        }
        let body = DockerAPI.CheckpointBody(checkpointID: Self.checkpointName, checkpointDir: parent, exit: true)
        try await api.request(.POST, "/containers/\(name)/checkpoints", json: body, timeout: .seconds(300), operation: "checkpoint \(name)")
        let written = "\(parent)/\(Self.checkpointName)"
        let kept = try await dockerCheckpointDirectory(name)
        FileSystem.remove(kept)
        try FileSystem.makeDirectory(kept)
        try await linkOrCopy(written, into: kept)
        for file in try FileSystem.contents(of: written) {
            try FileManager.default.moveItem(atPath: "\(written)/\(file)", toPath: "\(request.imagesDirectory)/\(file)")
        }
        return nil
    }

    /// Docker's checkpoint, one layer down: containerd's task checkpoint (what Docker's API asks
    /// for too) with CRIU's images written straight into the images directory, so the stream
    /// sends them while CRIU writes; the task exits with the dump and Docker sees its container
    /// exit. Docker's API would pass the whole checkpoint through containerd's content store as a
    /// tar and unpack it again before UMS could send a byte (2 s of a 2.5 s checkpoint at 128 MiB
    /// here). CRIU writes the images where Docker keeps the container's checkpoints, so that a
    /// rollback starts it from there through Docker as before, and the images directory the
    /// stream reads is a link to them: no copy (a copy's dirty pages slowed the destination's
    /// restore on a shared disk by 0.7 s).
    func checkpointThroughContainerd(_ name: String, _ containerd: Ctr, request: CheckpointRequest) async throws {
        let id = try await containerID(name)
        let kept = try await dockerCheckpointDirectory(id: id)
        FileSystem.remove(kept)
        try FileSystem.makeDirectory(kept)
        FileSystem.remove(request.imagesDirectory)
        try FileManager.default.createSymbolicLink(atPath: request.imagesDirectory, withDestinationPath: kept)
        do {
            try await runner.execute(containerd.binary, containerd.checkpointTaskArguments(id: id, imagePath: kept, workPath: request.workDirectory))
        } catch {
            throw UMSError.wrap(error, .internalError, "failed to checkpoint \(name) through Docker's containerd")
                .withDetail(LogFile.tail("\(request.workDirectory)/dump.log"))
        }
    }

    /// A container ID from the engine goes into a command line: 64 hex digits, nothing else.
    static func validateContainerID(_ id: String) throws(UMSError) {
        guard id.count == 64, id.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw UMSError(.internalError, "the engine gave a container ID that is not one: \(id.prefix(80))")
        }
    }

    static let exportName = "podman-checkpoint.tar"

    /// Podman's export carries the rootfs changes; Docker's checkpoint does not, and this adapter
    /// does not carry them yet: the part is an empty archive either way.
    public func exportChanges(_ name: String, consume: @Sendable (ByteBuffer) async throws -> Void) async throws -> Int64 {
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("ums-empty-\(UUID().uuidString)").path
        try FileSystem.makeDirectory(empty)
        defer { FileSystem.remove(empty) }
        return try await Archive.create(directory: empty, consume: consume).bytes
    }

    public func importChanges<Chunks: AsyncSequence & Sendable>(_ name: String, _ chunks: Chunks) async throws -> StreamSummary
        where Chunks.Element == ByteBuffer
    {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("ums-changes-\(UUID().uuidString)").path
        try FileSystem.makeDirectory(scratch)
        defer { FileSystem.remove(scratch) }
        return try await Archive.extract(chunks, into: scratch)
    }

    /// The export names the source's image by Podman's image ID, which differs on every system
    /// that imported the same root filesystem (it hashes the import time): point it at this
    /// system's copy of the same content-addressed image. Returns the archive to import: the
    /// export with its `config.dump` (and, with volumes, its `spec.dump`) rewritten, the rest
    /// passed through as it is sent (`TarRewrite`; unpacking and repacking the whole export
    /// cost ~0.3 s of the restore at 128 MiB).
    func retargetImage(
        _ directory: String, image: ImageReference, volumes: [VolumeMount] = [], archive exported: String = exportName, imageName: String? = nil
    ) async throws -> TarRewrite.Plan {
        let local = try await api.request(.GET, "/libpod/images/\(try Self.engineImage(image))/json", operation: "inspect image")
        let id = try local.decode(DockerAPI.ImageInspect.self, operation: "inspect image \(image.digest)").id
        let imageID = id.hasPrefix("sha256:") ? String(id.dropFirst(7)) : id
        // An adopted container's image: by the name it ran by at the source where this system
        // gave that name to this very image (`podman kube generate` shows it), else by its ID —
        // by a name that is not here Podman would try a registry.
        var engineImageName: String?
        if image.format == .engine {
            engineImageName = imageID
            if let imageName, let named = try? await api.request(.GET, "/libpod/images/\(imageName)/json", operation: "inspect image \(imageName)"),
               (try? named.decode(DockerAPI.ImageInspect.self, operation: "inspect image \(imageName)").id) == id
            {
                engineImageName = imageName
            }
        }
        var replacing: [String: TarRewrite.Transform] = [
            "config.dump": { [engineImageName] data in
                var config: Open<LibpodAPI.CheckpointConfig>
                do {
                    config = try JSONDecoder().decode(Open<LibpodAPI.CheckpointConfig>.self, from: data)
                } catch {
                    throw UMSError(.invalidArgument, "failed to restore: the checkpoint archive has no readable config.dump", cause: error)
                }
                config.rootfsImageID = imageID
                if let engineImageName { config.rootfsImageName = engineImageName }
                return try JSONEncoder().encode(config)
            },
        ]
        // The runtime spec names each volume by the source's host path: this system's instead.
        if !volumes.isEmpty {
            var hostPaths: [String: String] = [:]
            for volume in volumes {
                // Skipped volumes were not sent: this system's own, made empty when missing (as
                // Docker's create makes them).
                try await ensureVolume(volume.name)
                hostPaths[volume.destination] = try await mountpoint(volume.name)
            }
            replacing["spec.dump"] = { [hostPaths] data in
                var spec: OCI.Spec
                do {
                    spec = try JSONDecoder().decode(OCI.Spec.self, from: data)
                } catch {
                    throw UMSError(.invalidArgument, "failed to restore: the checkpoint archive has no readable spec.dump", cause: error)
                }
                var mounts = spec.mounts ?? []
                for index in mounts.indices {
                    if let here = hostPaths[mounts[index].destination] { mounts[index].source = here }
                }
                spec.mounts = mounts
                return try JSONEncoder().encode(spec)
            }
        }
        do {
            return try TarRewrite.plan(file: "\(directory)/\(exported)", replacing: replacing)
        } catch let error as UMSError where error.code == .invalidArgument {
            throw UMSError(.invalidArgument, "failed to restore: the checkpoint archive is not one Podman made", cause: error)
        }
    }

    /// Imports a checkpoint archive: Podman creates the container from it and restores it.
    func importCheckpoint(_ archive: TarRewrite.Plan, query: String, timeout: TimeAmount, operation: String) async throws {
        try await api.request(
            .POST, query, body: .stream(archive.chunks, length: .known(archive.length)), contentType: "application/x-tar", timeout: timeout,
            operation: operation
        )
    }

    /// Podman: imports the checkpoint (Podman creates the container from it and restores it).
    /// Docker: places the files where the daemon looks for the container's checkpoints and
    /// starts it from them.
    public func restore(_ name: String, request: RestoreRequest) async throws -> ContainerInfo {
        guard !request.lazyPages else {
            throw UMSError(.unsupported, "failed to restore \(name): post-copy through \(kind) is not implemented")
        }
        let record = try record(name)
        if record.specification.pod != nil {
            try await restorePod(record.specification, from: request.imagesDirectory)
        } else if dialect == .podman {
            try await ensureEngineImage(record.specification.image)
            let archive = try await retargetImage(
                request.imagesDirectory, image: record.specification.image, volumes: record.specification.volumes ?? [],
                imageName: record.specification.engine?.imageName
            )
            try await importCheckpoint(
                // Named volumes arrived on their own, into volumes of this system's.
                archive, query: "/libpod/containers/\(name)/restore?import=true&name=\(name)" + ((record.specification.volumes ?? []).isEmpty ? "" : "&ignoreVolumes=true"),
                timeout: .seconds(300), operation: "restore \(name) from its checkpoint"
            )
        } else {
            let target = try await dockerCheckpointDirectory(name)
            FileSystem.remove(target)
            try FileSystem.makeDirectory(target)
            try await linkOrCopy(request.imagesDirectory, into: target)
            try await api.request(.POST, "/containers/\(name)/start?checkpoint=\(Self.checkpointName)", timeout: .seconds(300), operation: "restore \(name) from its checkpoint")
        }
        let info = try await inspect(name)
        guard info.state == .running else {
            throw UMSError(.internalError, "failed to restore \(name): it is \(info.state.rawValue) after the restore")
        }
        // Its engine's own loop from now on, as at the source before the migration.
        for container in record.specification.containers {
            guard let policy = container.engine?.restartPolicy, policy != .no else { continue }
            do {
                try await setRestartPolicy(container.name, policy)
            } catch {
                logger.warning("failed to set the restart policy of a restored container", metadata: ["container": "\(container.name)", "error": "\(error)"])
            }
        }
        return info
    }
}
