import Foundation
import NIOCore
import UMSModel
import UMSOS

/// Containers the engine made without UMS (`docker run`, `podman run`): listed with the rest,
/// and adopted when a migration takes their control lock — their Specification read from the
/// engine's own description, their image the engine's own (moved with its save and load).
extension EngineOrchestrator {
    /// Names of the engine's containers UMS did not make (and whose names UMS can carry).
    func foreignNames() async -> [String] {
        guard let response = try? await api.request(.GET, "/containers/json?all=true", operation: "list \(kind)'s containers"),
              let rows = try? response.decode([DockerAPI.ContainerSummary].self, operation: "list \(kind)'s containers")
        else { return [] }
        let pods = await pods()
        let known = Set(registry.names).union(pods.flatMap { ($0.containers ?? []).compactMap(\.names) })
        let podNames = pods.map(\.name).filter { !registry.names.contains($0) }
        return podNames + rows.compactMap { row -> String? in
            // UMS's own (a destination's container between create and restore, say) are in the registry.
            guard row.labels?["ums.managed"] == nil, let first = row.names?.first else { return nil }
            let name = first.hasPrefix("/") ? String(first.dropFirst()) : first
            guard !known.contains(name), (try? ContainerName.validate(name)) != nil else { return nil }
            return name
        }.sorted()
    }

    /// The Specification of a container the engine made, from its inspect. With `strict`, what
    /// UMS cannot carry is refused with every reason (a migration asks this before it freezes).
    func adoptedSpecification(_ name: String, strict: Bool) async throws -> Specification {
        let response: EngineAPI.Response
        do {
            response = try await api.request(.GET, "/containers/\(name)/json", operation: "inspect \(name)")
        } catch let error as UMSError where error.code == .notFound && dialect == .podman {
            // Not a container: a pod of that name moves as one unit.
            guard (try? await podInspect(name)) != nil else { throw error }
            return try await adoptedPodSpecification(name, strict: strict)
        }
        let inspect = try response.decode(DockerAPI.ContainerInspect.self, operation: "inspect \(name)")
        return try Self.specification(adopting: inspect, name: name, kind: kind, strict: strict)
    }

    /// Pure: an engine's inspect → a Specification, or (strict) the reasons it cannot move.
    /// `podInfra`: the container is one of a pod's, whose infra container (that ID) holds the
    /// namespaces it shares: those move with the pod.
    public static func specification(
        adopting inspect: DockerAPI.ContainerInspect, name: String, kind: OrchestratorKind, strict: Bool, podInfra: String? = nil
    ) throws -> Specification {
        var refusals: [String] = []
        let config = inspect.config ?? DockerAPI.ContainerInspect.Config()
        let host = inspect.hostConfig ?? DockerAPI.ContainerInspect.InspectHostConfig()
        // The image, by the engine's ID (Podman gives it without the prefix).
        let id = inspect.image ?? ""
        let digest = id.hasPrefix("sha256:") ? id : "sha256:" + id
        let image = ImageReference(digest: digest, source: "\(kind) image", format: .engine)
        if (try? image.validate()) == nil { refusals.append("its image ID '\(String(id.prefix(80)))' is not a sha256 digest") }
        if host.privileged == true { refusals.append("it is privileged (every device and capability of its host)") }
        if let mode = host.networkMode, mode == "host" || (mode.hasPrefix("container:") && mode != podInfra.map { "container:\($0)" }) {
            refusals.append("it shares a network namespace (--network \(mode)), which cannot move to another system")
        }
        if host.pidMode == "host" || host.ipcMode == "host" { refusals.append("it shares its host's PID or IPC namespace") }
        if let devices = host.devices, !devices.isEmpty {
            refusals.append("it uses host devices (\(devices.compactMap(\.pathOnHost).joined(separator: ", ")))")
        }
        var volumes: [VolumeMount] = []
        var binds: [BindMount] = []
        // tmpfs mounts are made anew at the destination; the checkpoint carries their contents.
        var tmpfs: [TmpfsMount] = []
        for (destination, options) in (host.tmpfs ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard let mount = TmpfsMount.parse(destination: destination, options: options) else {
                refusals.append("its tmpfs at \(destination) has options UMS cannot read (\(String(options.prefix(64))))")
                continue
            }
            tmpfs.append(mount)
        }
        for mount in inspect.mounts ?? [] {
            if mount.type == "tmpfs", let destination = mount.destination {
                if !tmpfs.contains(where: { $0.destination == destination }) { tmpfs.append(TmpfsMount(destination: destination)) }
            } else if mount.type == "volume", let volume = mount.name, let destination = mount.destination {
                volumes.append(VolumeMount(name: volume, destination: destination, readOnly: mount.rw == false))
            } else if mount.type == "bind", let source = mount.source, let destination = mount.destination, FileSystem.isDirectory(source) {
                binds.append(BindMount(hostPath: source, destination: destination, readOnly: mount.rw == false))
            } else {
                refusals.append("it mounts \(mount.type == "bind" ? "a host file" : "a \(mount.type ?? "mount")") at \(mount.destination ?? "?"), which UMS does not carry (named volumes and host directories it does)")
            }
        }
        let ports = publishedPorts(host.portBindings, refusals: &refusals)
        var limits = ResourceLimits()
        if let memory = host.memory, memory > 0 { limits.memoryBytes = memory }
        if let nano = host.nanoCpus, nano > 0 { limits.cpus = Double(nano) / 1e9 }
        if let pids = host.pidsLimit, pids > 0, pids <= Int64(SpecificationBounds.maxPids) { limits.pids = Int(pids) }
        let capabilities = (host.capAdd ?? []).map { $0.uppercased().hasPrefix("CAP_") ? $0.uppercased() : "CAP_" + $0.uppercased() }
        let labels = Specification.carriableLabels(config.labels ?? [:])
        let policy = EngineConfiguration.RestartPolicy(rawValue: host.restartPolicy?.name ?? "") ?? .no
        let user = config.user.flatMap { $0.isEmpty ? nil : $0 }
        let hostname = config.hostname.flatMap { $0.isEmpty ? nil : $0 }
        var specification = Specification(
            name: name, image: image, command: config.cmd ?? [], environment: config.env ?? [],
            workingDirectory: config.workingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/", ports: ports, limits: limits,
            labels: labels, security: capabilities.isEmpty ? nil : SecurityOptions(addCapabilities: capabilities),
            engine: EngineConfiguration(
                madeBy: kind, entrypoint: config.entrypoint ?? [], user: user, hostname: hostname, restartPolicy: policy,
                imageName: config.image.flatMap { name in
                    // A name, not an ID (which the image reference carries already).
                    (try? EngineConfiguration.validateImageName(name)) != nil && !name.hasPrefix("sha256:") && !id.hasSuffix(name) ? name : nil
                }
            ),
            volumes: volumes.isEmpty ? nil : volumes, binds: binds.isEmpty ? nil : binds
        )
        specification.tmpfs = tmpfs.isEmpty ? nil : tmpfs
        do {
            try specification.validate()
        } catch {
            refusals.append(error.message)
        }
        if strict, !refusals.isEmpty {
            throw UMSError(.unsupported, "failed to adopt \(name), made by \(kind) outside UMS: " + refusals.joined(separator: "; "))
        }
        return specification
    }

    /// An engine's `PortBindings` (`"8080/tcp": [{HostPort: "18110"}]`) as port mappings; a port
    /// the engine chose (no fixed host port) is a refusal.
    static func publishedPorts(_ bindings: [String: [DockerAPI.PortBinding]?]?, refusals: inout [String]) -> [PortMapping] {
        var ports: [PortMapping] = []
        for (key, bindings) in (bindings ?? [:]).sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: "/")
            guard let containerPort = parts.first.flatMap({ Int($0) }) else { continue }
            for binding in bindings ?? [] {
                guard let hostPort = Int(binding.hostPort), hostPort > 0 else {
                    refusals.append("port \(key) is published on a port its engine chose, which another system may not have free")
                    continue
                }
                ports.append(PortMapping(hostPort: hostPort, containerPort: containerPort, proto: parts.count > 1 ? String(parts[1]) : "tcp"))
            }
        }
        return ports
    }

    /// The control lock on a container the engine made: UMS adopts it (its Specification into the
    /// registry, checked strictly) and turns its restart policy off, so the engine does not restart
    /// it once the checkpoint stopped it.
    func adopt(_ name: String, migration: String) async throws {
        let specification = try await adoptedSpecification(name, strict: true)
        try save(Record(specification: specification, lockedBy: migration, createdAt: Date(), adopted: true))
        for container in specification.containers where container.engine?.restartPolicy != EngineConfiguration.RestartPolicy.no {
            do {
                try await setRestartPolicy(container.name, .no)
            } catch where dialect == .podman {
                // Podman restarts nothing by itself (its systemd units do): said, not fatal.
                logger.warning("could not turn the restart policy off for the migration", metadata: ["container": "\(container.name)", "error": "\(error)"])
            } catch {
                forget(name)
                throw error
            }
        }
        logger.info("container adopted for a migration", metadata: ["container": "\(name)", "madeBy": "\(kind)", "migration.id": "\(migration)"])
    }

    /// Gives an adopted container back to its engine as it was (a rollback): its restart policy,
    /// and no registry record.
    func release(_ record: Record) async {
        let name = record.specification.name
        for container in record.specification.containers {
            if let policy = container.engine?.restartPolicy, policy != .no { try? await setRestartPolicy(container.name, policy) }
        }
        forget(name)
    }

    func setRestartPolicy(_ name: String, _ policy: EngineConfiguration.RestartPolicy) async throws {
        try await api.request(
            .POST, "/containers/\(name)/update", json: DockerAPI.UpdateBody(restartPolicy: .init(name: policy.rawValue)),
            operation: "set the restart policy of \(name) to \(policy.rawValue)"
        )
    }

    // MARK: Engine images (adopted containers' own), by the engine's image ID

    func nameImage(_ image: ImageReference, as name: String?) async {
        await api.nameImage(image, as: name, logger: logger)
    }

    func hasEngineImage(_ image: ImageReference) async -> Bool {
        await api.hasImage(image)
    }

    func exportEngineImage(_ image: ImageReference, consume: @Sendable (ByteBuffer) async throws -> Void) async throws {
        try await api.saveImage(image, staging: images, consume: consume)
    }

    func importEngineImage<Chunks: AsyncSequence & Sendable>(_ chunks: Chunks, expected: ImageReference) async throws -> ImageReference
        where Chunks.Element == ByteBuffer
    {
        let (file, received) = try await EngineAPI.receive(chunks, expected: expected, staging: images)
        defer { FileSystem.remove(file) }
        try await api.loadImage(file: file, expected: expected)
        return received
    }
}
