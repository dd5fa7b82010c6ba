import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Synchronization
import UMSModel
import UMSOS

/// An orchestrator adapter for a Docker Swarm: a cluster of nodes, each a `dockerd`, whose
/// manager owns the containers through services. What UMS migrates is a Swarm service with one
/// replica; Swarm places its task on a node of its choice and restarts it when it stops. UMS asks
/// the manager for services (create, remove, force an update) and each node's engine for what
/// runs there (the task's container: its state, PID, address, processes), and loads its images
/// into every node's engine (never pulled: the nodes' `dockerd` prefer their own images,
/// `DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1`).
///
/// Swarm has no checkpoint API, so this adapter does not conform to `CheckpointingOrchestrator`:
/// the decision picks the service- or container-level approach, whose agent runs in the task.
/// Swarm 20.10's service API cannot ask for a seccomp profile or no-new-privileges per service;
/// agent containers need the nodes' `dockerd` to give every container an unconfined profile and
/// no-new-privileges (`prepare` reads whether they do). docs/adapters.md has the details and the
/// Kubernetes counterparts.
public actor SwarmOrchestrator: ContainerOrchestrator, EngineImageHolding, ReplacingOrchestrator {
    struct Record: RegisteredContainer {
        var specification: Specification
        var lockedBy: String?
        var createdAt: Date
        /// Made with `docker service create` outside UMS and adopted for a migration (given back
        /// on rollback).
        var adopted: Bool?
    }

    /// One node of the swarm: its engine's API, and where the node is reached.
    struct Node: Sendable {
        var api: EngineAPI
        var address: String?
        var hostname: String?
    }

    public nonisolated let kind = OrchestratorKind.swarm
    let manager: EngineAPI
    let nodeSockets: [String]
    let systemName: String
    let advertiseHost: String
    nonisolated let criu: CRIUInfo
    nonisolated let images: ImageStore
    nonisolated let runner: any CommandRunner
    let logger: Logger
    var registry: ContainerRegistry<Record>
    var engineVersion = "unknown"
    /// Nodes by Swarm node ID, as their engines said at `prepare`.
    var nodes: [String: Node] = [:]

    /// `managerSocket`: the manager's engine; `nodeSockets`: every other node's engine (the
    /// manager's may be listed again).
    public init(
        managerSocket: String, nodeSockets: [String], http: HTTPClient, systemName: String, stateDirectory: String,
        advertiseHost: String, criu: CRIUInfo, runner: any CommandRunner, logger: Logger
    ) throws {
        self.manager = EngineAPI(socketPath: managerSocket, versionPrefix: "/v1.41", http: http)
        self.nodeSockets = [managerSocket] + nodeSockets.filter { $0 != managerSocket }
        self.systemName = systemName
        self.advertiseHost = advertiseHost
        self.criu = criu
        self.images = try ImageStore(root: "\(stateDirectory)/images")
        self.registry = try ContainerRegistry(systemName: systemName, directory: "\(stateDirectory)/swarm-services")
        self.runner = runner
        self.logger = logger
    }

    /// Checks the manager is one (of an active swarm), learns which node each engine is; call
    /// once at start-up.
    public func prepare() async throws {
        let info: SwarmAPI.Info
        do {
            engineVersion = (try? await manager.request(.GET, "/version", operation: "reach swarm").decode(DockerAPI.Version.self, operation: "read the engine's version"))?.version ?? "unknown"
            info = try await manager.request(.GET, "/info", operation: "reach the swarm manager").decode(SwarmAPI.Info.self, operation: "read the manager's state")
        } catch {
            throw UMSError(.unavailable, "failed to reach the swarm manager's engine at \(manager.socketPath); start it (scripts/testbed does) or give --engine-socket", cause: error)
        }
        guard info.swarm?.localNodeState == "active", info.swarm?.controlAvailable == true else {
            throw UMSError(.unavailable, "the engine at \(manager.socketPath) is not a manager of an active swarm (state \(info.swarm?.localNodeState ?? "none")); run `docker swarm init` there, or give a manager's socket")
        }
        try await refreshNodes()
    }

    /// The nodes' engines by node ID, and their addresses and names from the manager.
    func refreshNodes() async throws {
        let listed = try await manager.request(.GET, "/nodes", operation: "list the swarm's nodes").decode([SwarmAPI.Node].self, operation: "list the swarm's nodes")
        var found: [String: Node] = [:]
        for socket in nodeSockets {
            let api = EngineAPI(socketPath: socket, versionPrefix: "/v1.41", http: manager.http)
            let response = try await api.request(.GET, "/info", operation: "reach the swarm node at \(socket)")
            let info = try response.decode(SwarmAPI.Info.self, operation: "read the node's state")
            guard let id = info.swarm?.nodeID, !id.isEmpty, listed.contains(where: { $0.id == id }) else {
                throw UMSError(.invalidArgument, "the engine at \(socket) is not a node of this swarm (--swarm-node)")
            }
            let node = listed.first { $0.id == id }
            found[id] = Node(api: api, address: node?.status?.addr, hostname: node?.description?.hostname)
        }
        nodes = found
        if listed.count > found.count {
            logger.warning("swarm nodes without an engine socket here: tasks placed there cannot be inspected or migrated", metadata: [
                "nodes": "\(listed.filter { found[$0.id] == nil }.map { $0.description?.hostname ?? $0.id })",
            ])
        }
    }

    /// The seccomp mode of a process (`Seccomp:` in /proc/PID/status: 0 none, 1 strict, 2 filter).
    static func seccompMode(ofProcess pid: Int) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        return status.split(separator: "\n").first { $0.hasPrefix("Seccomp:") }
            .flatMap { Int($0.dropFirst("Seccomp:".count).trimmingCharacters(in: .whitespaces)) }
    }

    public func runtimeVersion() async -> String { engineVersion }
    public nonisolated var criuVersion: String? { criu.version }
    /// Docker 20.10 predates CAP_CHECKPOINT_RESTORE; CAP_SYS_ADMIN includes what it grants.
    public nonisolated var agentCapability: String { "CAP_SYS_ADMIN" }

    // MARK: Images

    // hasImage, importImage, exportImage: EngineImageHolding (UMS's root filesystems from the
    // store, the nodes' own images — adopted services' — from the nodes).

    /// Makes every node's engine hold `image` (imported from the local store, once per node), so
    /// that wherever Swarm places the task its image is there.
    func ensureImageOnNodes(_ image: ImageReference) async throws {
        if image.format == .engine {
            guard await hasEngineImage(image) else {
                throw UMSError(.notFound, "failed to use image \(image.digest): not every node of the swarm holds it")
            }
            return
        }
        let name = try EngineOrchestrator.engineImage(image)
        let hex = try ImageStore.hexDigest(image)
        var tar: ByteBuffer?
        for (id, node) in nodes.sorted(by: { $0.key < $1.key }) {
            if (try? await node.api.request(.GET, "/images/\(name)/json", operation: "inspect image")) != nil { continue }
            if tar == nil {
                let collected = Mutex(ByteBuffer())
                try await images.export(image) { chunk in
                    collected.withLock { buffer in
                        var chunk = chunk
                        buffer.writeBuffer(&chunk)
                    }
                }
                tar = collected.withLock { $0 }
            }
            try await node.api.request(
                .POST, "/images/create?fromSrc=-&repo=localhost/ums&tag=\(hex)", body: .bytes(tar ?? ByteBuffer()), contentType: "application/x-tar",
                timeout: .seconds(300), operation: "import image \(image.digest.prefix(19)) into swarm node \(node.hostname ?? id)"
            )
        }
    }

    // MARK: Services

    /// The Swarm service for a Specification: one replica (none when not started), its ports
    /// published on the node that runs it (host mode: the routing mesh needs IPVS), DNS round
    /// robin instead of a virtual IP, the same capability rules as the Docker adapter.
    public static func serviceSpec(_ specification: Specification, start: Bool, systemName: String) throws -> SwarmAPI.ServiceSpec {
        let body = try EngineOrchestrator.createBody(specification, dialect: .docker, systemName: systemName)
        var mounts: [SwarmAPI.Mount] = (specification.tmpfs ?? []).map {
            SwarmAPI.Mount(type: "tmpfs", target: $0.destination, tmpfsOptions: SwarmAPI.TmpfsOptions(sizeBytes: $0.sizeBytes, mode: $0.mode.map { UInt32(truncatingIfNeeded: $0) }))
        }
        mounts += (specification.volumes ?? []).map { SwarmAPI.Mount(type: "volume", source: $0.name, target: $0.destination, readOnly: $0.readOnly) }
        mounts += (specification.binds ?? []).map { SwarmAPI.Mount(type: "bind", source: $0.hostPath, target: $0.destination, readOnly: $0.readOnly) }
        let limits = SwarmAPI.Limits(nanoCPUs: body.hostConfig.nanoCpus, memoryBytes: body.hostConfig.memory, pids: body.hostConfig.pidsLimit)
        let container = SwarmAPI.ContainerSpec(
            image: body.image, labels: body.labels, command: body.cmd.isEmpty ? nil : body.cmd, hostname: body.hostname, env: body.env,
            dir: body.workingDir.isEmpty ? nil : body.workingDir, user: body.user, mounts: mounts.isEmpty ? nil : mounts,
            capabilityAdd: body.hostConfig.capAdd, capabilityDrop: body.hostConfig.capDrop
        )
        return SwarmAPI.ServiceSpec(
            name: specification.name, labels: EngineOrchestrator.labels(specification, systemName: systemName),
            taskTemplate: SwarmAPI.TaskTemplate(
                containerSpec: container,
                resources: limits == SwarmAPI.Limits() ? nil : SwarmAPI.Resources(limits: limits),
                restartPolicy: SwarmAPI.RestartPolicy(condition: "any", delay: 1_000_000_000),
                placement: specification.placement.map { SwarmAPI.Placement(constraints: $0) }
            ),
            mode: SwarmAPI.Mode(replicated: SwarmAPI.Replicated(replicas: start ? 1 : 0)),
            endpointSpec: SwarmAPI.EndpointSpec(
                mode: "dnsrr",
                ports: specification.ports.map { SwarmAPI.PortConfig(protocol: $0.proto, targetPort: $0.containerPort, publishedPort: $0.hostPort, publishMode: "host") }
            )
        )
    }

    func service(_ name: String) async throws -> SwarmAPI.Service {
        try await manager.request(.GET, "/services/\(name)", operation: "inspect swarm service \(name)").decode(SwarmAPI.Service.self, operation: "inspect swarm service \(name)")
    }

    /// The service's tasks, newest first.
    func tasks(_ name: String) async throws -> [SwarmAPI.Task] {
        let filter = try JSONEncoder().encode(["service": [name]])
        guard let query = String(decoding: filter, as: UTF8.self).addingPercentEncoding(withAllowedCharacters: .alphanumerics) else {
            throw UMSError(.invalidArgument, "invalid service name \(name)")
        }
        let tasks = try await manager.request(.GET, "/tasks?filters=\(query)", operation: "list the tasks of \(name)").decode([SwarmAPI.Task].self, operation: "list the tasks of \(name)")
        return tasks.sorted { ($0.createdAt ?? "") > ($1.createdAt ?? "") }
    }

    /// The task Swarm wants running (the newest), with its container's node.
    struct Placed {
        var task: SwarmAPI.Task
        var node: Node?
        var containerID: String?
    }

    func current(_ name: String) async -> Placed? {
        guard let task = (try? await tasks(name))?.first(where: { $0.desiredState == "running" }) else { return nil }
        if let id = task.nodeID, nodes[id] == nil { try? await refreshNodes() }
        return Placed(task: task, node: task.nodeID.flatMap { nodes[$0] }, containerID: task.status?.containerStatus?.containerID)
    }

    /// Waits until the service's task runs; a task Swarm gave up on (rejected, failed) is an
    /// error with Swarm's reason.
    func waitRunning(_ name: String, timeout: Duration = .seconds(90)) async throws -> Placed {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var last = "no task yet"
        while clock.now < deadline {
            if let placed = await current(name) {
                let state = placed.task.status?.state ?? "unknown"
                if state == "running", placed.containerID != nil { return placed }
                if ["rejected", "failed"].contains(state) {
                    throw UMSError(.internalError, "swarm could not start \(name): task \(state): \(placed.task.status?.err ?? placed.task.status?.message ?? "no reason given")")
                }
                last = "task \(state)\(placed.task.status?.err.map { ": \($0)" } ?? "")"
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw UMSError(.timeout, "swarm did not start \(name) within \(timeout) (\(last))")
    }

    // MARK: Containers

    /// Every one-replica service of the swarm: UMS's own and those made with `docker service create`.
    public func list() async throws -> [ContainerInfo] {
        await inspectAll(registry.names + foreignNames())
    }

    public func inspect(_ name: String) async throws -> ContainerInfo {
        // The task is looked up once: everything below reads from it.
        let placed = await current(name)
        // One the swarm made without UMS: read from the manager as it is now.
        let record = registry.contains(name)
            ? try registry.record(name)
            : Record(specification: try await adoptedSpecification(name, placed: placed, strict: false), lockedBy: nil, createdAt: Date())
        var state = ContainerInfo.State.stopped
        var pid: Int?
        var address: String?
        var endpoints: [String] = []
        var node: String?
        if let placed {
            node = placed.node?.hostname ?? placed.task.nodeID
            state = Self.state(ofTask: placed.task.status?.state)
            if let node = placed.node, let id = placed.containerID,
               let response = try? await node.api.request(.GET, "/containers/\(id)/json", operation: "inspect \(name)"),
               let inspect = try? response.decode(DockerAPI.ContainerInspect.self, operation: "inspect \(name)")
            {
                if state == .running, inspect.state?.status != "running" { state = .stopped }
                pid = inspect.state?.pid.flatMap { $0 > 0 ? $0 : nil }
                address = inspect.address
            } else if state == .running {
                state = .unknown
            }
            if state == .running {
                // The system's entry point (where its Frontman stands), and the node's own.
                endpoints = record.specification.ports.map { "\(advertiseHost):\($0.hostPort)" }
            }
        }
        var specification = record.specification
        if state == .running, let count = await processCount(name, placed) { specification.processCount = count }
        return ContainerInfo(
            name: name, state: state, specification: specification, pid: pid, endpoints: endpoints,
            migratingIn: record.lockedBy, orchestrator: kind, address: address, node: node
        )
    }

    static func state(ofTask state: String?) -> ContainerInfo.State {
        switch state ?? "" {
        case "running": .running
        case "new", "pending", "assigned", "accepted", "preparing", "ready", "starting": .created
        case "complete", "shutdown", "failed", "rejected", "orphaned", "remove": .stopped
        default: .unknown
        }
    }

    func processCount(_ name: String, _ placed: Placed?) async -> Int? {
        guard let placed, let node = placed.node, let id = placed.containerID,
              let response = try? await node.api.request(.GET, "/containers/\(id)/top", operation: "list processes of \(name)"),
              let top = try? response.decode(DockerAPI.Top.self, operation: "list processes of \(name)")
        else { return nil }
        return top.processes?.count ?? 0
    }

    public func specification(of name: String) async throws -> Specification {
        let placed = await current(name)
        var specification = registry.contains(name)
            ? try registry.record(name).specification : try await adoptedSpecification(name, placed: placed, strict: true)
        if let count = await processCount(name, placed) { specification.processCount = count }
        return specification
    }

    public func create(_ specification: Specification, start: Bool, migration: String?) async throws -> ContainerInfo {
        try registry.checkCreatable(specification, imageHeld: await hasImage(specification.image))
        guard specification.pod == nil else {
            throw UMSError(.unsupported, "failed to create \(specification.name) on swarm: a pod is not made into a swarm service")
        }
        try registry.save(Record(specification: specification, lockedBy: migration, createdAt: Date()))
        do {
            for image in specification.images { try await ensureImageOnNodes(image) }
            let body = try Self.serviceSpec(specification, start: start, systemName: systemName)
            try await manager.request(.POST, "/services/create", json: body, operation: "create swarm service \(specification.name)")
            if start {
                let placed = try await waitRunning(specification.name)
                try await checkUnconfined(specification, placed)
            }
        } catch {
            await removeEverything(specification.name)
            throw UMSError.wrap(error, .internalError, "failed to create service \(specification.name) on swarm")
        }
        logger.info("swarm service created", metadata: ["service": "\(specification.name)", "started": "\(start)"])
        return try await inspect(specification.name)
    }

    /// A checkpoint agent's container must run without a seccomp filter (CRIU cannot suspend one
    /// from under a filter), which Swarm 20.10 cannot ask for per service: the node's runtime must
    /// give it (docs/adapters.md). Checked on the process itself, so the error comes now, not at
    /// the first checkpoint.
    func checkUnconfined(_ specification: Specification, _ placed: Placed) async throws {
        guard specification.security?.seccompUnconfined == true, let node = placed.node, let id = placed.containerID,
              let pid = (try? await node.api.request(.GET, "/containers/\(id)/json", operation: "inspect").decode(DockerAPI.ContainerInspect.self, operation: "inspect"))?.state?.pid,
              let mode = Self.seccompMode(ofProcess: pid), mode != 0
        else { return }
        throw UMSError(.unsupported, "swarm node \(node.hostname ?? "?") runs \(specification.name)'s checkpoint agent under a seccomp filter, which stops CRIU; its dockerd needs a runtime that runs agent containers unconfined (docs/adapters.md, Swarm)")
    }

    /// Swarm replaces the task (`docker service update --force`): the service starts afresh.
    public func restart(_ name: String, migration: String?) async throws {
        if registry.contains(name) { try registry.checkUnlocked(name, migration: migration, operation: "restart") }
        var service = try await service(name)
        service.spec.taskTemplate.forceUpdate = (service.spec.taskTemplate.forceUpdate ?? 0) + 1
        try await manager.request(.POST, "/services/\(service.id)/update?version=\(service.version.index)", json: service.spec, operation: "restart \(name)")
    }

    public func delete(_ name: String, migration: String?) async throws {
        if registry.contains(name) {
            try registry.checkUnlocked(name, migration: migration, operation: "remove")
        } else {
            _ = try await service(name)  // 404 if the swarm has none either
        }
        await removeEverything(name)
        logger.info("swarm service removed", metadata: ["service": "\(name)"])
    }

    /// Removes the service first (so that Swarm restarts nothing), then kills and removes its
    /// task's container on its node at once (and any frozen nested container inside it) instead
    /// of waiting out a stop grace period and Swarm's own clean-up. Idempotent.
    func removeEverything(_ name: String) async {
        let placed = await current(name)
        let containerPID: Int? = if let node = placed?.node, let id = placed?.containerID {
            (try? await node.api.request(.GET, "/containers/\(id)/json", operation: "inspect \(name)").decode(DockerAPI.ContainerInspect.self, operation: "inspect"))?.state?.pid
        } else { nil }
        let cgroup = containerPID.flatMap { $0 > 0 ? Cgroups.path(ofProcess: $0) : nil }
        _ = try? await manager.request(.DELETE, "/services/\(name)", operation: "remove swarm service \(name)")
        if let cgroup { Cgroups.killAndThawDescendants(of: cgroup) }
        if let node = placed?.node, let id = placed?.containerID {
            // Removed on its node at once: Swarm's worker would remove it only when it next
            // reconciles the deleted service's tasks (about a second later, measured).
            _ = try? await node.api.request(.DELETE, "/containers/\(id)?force=1", operation: "remove \(name)")
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(20)
            while clock.now < deadline, (try? await node.api.request(.GET, "/containers/\(id)/json", operation: "inspect")) != nil {
                try? await Task.sleep(for: .milliseconds(50))
                _ = try? await node.api.request(.DELETE, "/containers/\(id)?force=1", operation: "remove \(name)")
            }
        }
        if let cgroup { await Cgroups.removeTree(cgroup) }
        registry.forget(name)
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
        // An adopted service that stays (a rollback) goes back to the swarm as it was.
        if let record = try? registry.record(name), record.adopted == true, record.lockedBy == nil {
            registry.forget(name)
        }
    }
}
