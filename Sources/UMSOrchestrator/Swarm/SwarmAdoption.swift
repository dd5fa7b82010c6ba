import Foundation
import NIOCore
import UMSModel
import UMSOS

/// Swarm services made without UMS (`docker service create`): listed with UMS's own, and adopted
/// when a migration takes their control lock — their Specification read from the manager's
/// description of the service, their image the nodes' own (moved by ID with `docker save` and
/// `docker load`, loaded onto every node at the destination; a task whose image is given by ID is
/// never pulled).
extension SwarmOrchestrator {
    /// Services of the swarm UMS did not make (and whose names UMS can carry).
    func foreignNames() async -> [String] {
        guard let services = try? await manager.request(.GET, "/services", operation: "list the swarm's services").decode([SwarmAPI.Service].self, operation: "list the swarm's services")
        else { return [] }
        return services.compactMap { service in
            let name = service.spec.name
            guard service.spec.labels?["ums.managed"] == nil, !registry.contains(name), (try? ContainerName.validate(name)) != nil else { return nil }
            return name
        }.sorted()
    }

    /// The Specification of a service the swarm made, from the manager's description and the
    /// image its task runs. With `strict`, what UMS cannot carry is refused with every reason.
    func adoptedSpecification(_ name: String, placed: Placed?, strict: Bool) async throws -> Specification {
        let service = try await service(name)
        // The image its task runs, by the node's ID for it, with the image's own command.
        var image: SwarmAPI.ImageInspect?
        if let node = placed?.node {
            let reference = service.spec.taskTemplate.containerSpec.image
            image = try? await node.api.request(.GET, "/images/\(reference)/json", operation: "inspect image \(reference)")
                .decode(SwarmAPI.ImageInspect.self, operation: "inspect image \(reference)")
        }
        return try Self.specification(adopting: service.spec, image: image, strict: strict)
    }

    /// Pure: a Swarm service's spec → a Specification, or (strict) the reasons it cannot move.
    public static func specification(adopting spec: SwarmAPI.ServiceSpec, image found: SwarmAPI.ImageInspect?, strict: Bool) throws -> Specification {
        var refusals: [String] = []
        let name = spec.name
        let container = spec.taskTemplate.containerSpec
        let replicas = spec.mode?.replicated?.replicas
        if replicas != 1 {
            refusals.append(replicas.map { "it has \($0) replicas; UMS moves a service of one" } ?? "it is a global service; UMS moves a replicated service of one replica")
        }
        let image = ImageReference(digest: found?.id ?? "", source: "swarm image", format: .engine)
        if (try? image.validate()) == nil { refusals.append("its task's image could not be found by ID on its node (is the task running?)") }
        // What its task runs: Swarm's Command replaces the image's entrypoint, its Args the
        // image's command. The destination is given the whole as its command.
        let entrypoint = container.command ?? found?.config?.entrypoint ?? []
        let arguments = container.args ?? (container.command == nil ? found?.config?.cmd ?? [] : [])
        if entrypoint.isEmpty && arguments.isEmpty { refusals.append("it has no command, and its image none either") }
        var ports: [PortMapping] = []
        for port in spec.endpointSpec?.ports ?? [] {
            guard port.publishMode == "host", let published = port.publishedPort, let target = port.targetPort else {
                refusals.append("port \(port.targetPort.map(String.init) ?? "?") is published through the routing mesh (ingress); publish it in host mode (--publish mode=host,…)")
                continue
            }
            ports.append(PortMapping(hostPort: published, containerPort: target, proto: port.protocol ?? "tcp"))
        }
        var tmpfs: [TmpfsMount] = []
        for mount in container.mounts ?? [] {
            if mount.type == "tmpfs" {
                tmpfs.append(TmpfsMount(destination: mount.target, sizeBytes: mount.tmpfsOptions?.sizeBytes, mode: mount.tmpfsOptions?.mode.map { Int($0) }))
            } else {
                refusals.append("it mounts a \(mount.type) at \(mount.target), which UMS does not carry through a swarm yet (tmpfs it does)")
            }
        }
        var limits = ResourceLimits()
        if let memory = spec.taskTemplate.resources?.limits?.memoryBytes, memory > 0 { limits.memoryBytes = memory }
        if let nano = spec.taskTemplate.resources?.limits?.nanoCPUs, nano > 0 { limits.cpus = Double(nano) / 1e9 }
        if let pids = spec.taskTemplate.resources?.limits?.pids, pids > 0, pids <= Int64(SpecificationBounds.maxPids) { limits.pids = Int(pids) }
        if !(container.capabilityDrop ?? []).isEmpty {
            refusals.append("it drops capabilities (--cap-drop), which UMS does not carry through a swarm yet")
        }
        let capabilities = (container.capabilityAdd ?? []).map { $0.uppercased().hasPrefix("CAP_") ? $0.uppercased() : "CAP_" + $0.uppercased() }
        // The service's and its containers' labels (a migratable image's agent label may be on
        // either); those UMS cannot carry stay behind.
        let labels = Specification.carriableLabels((spec.labels ?? [:]).merging(container.labels ?? [:], uniquingKeysWith: { _, container in container }))
        let user = container.user.flatMap { $0.isEmpty ? nil : $0 }
        let hostname = container.hostname.flatMap { $0.isEmpty ? nil : $0 }
        let restart: EngineConfiguration.RestartPolicy = switch spec.taskTemplate.restartPolicy?.condition ?? "any" {
        case "none": .no
        case "on-failure": .onFailure
        default: .always
        }
        var specification = Specification(
            name: name, image: image, command: entrypoint + arguments, environment: container.env ?? [],
            workingDirectory: container.dir.flatMap { $0.isEmpty ? nil : $0 } ?? "/", ports: ports, limits: limits,
            labels: labels, security: capabilities.isEmpty ? nil : SecurityOptions(addCapabilities: capabilities),
            engine: EngineConfiguration(
                madeBy: .swarm, entrypoint: [], user: user, hostname: hostname, restartPolicy: restart,
                imageName: (try? EngineConfiguration.validateImageName(container.image)) != nil && !container.image.contains("@") ? container.image : nil
            )
        )
        specification.tmpfs = tmpfs.isEmpty ? nil : tmpfs
        specification.placement = spec.taskTemplate.placement?.constraints.flatMap { $0.isEmpty ? nil : $0 }
        do {
            try specification.validate()
        } catch {
            refusals.append(error.message)
        }
        if strict, !refusals.isEmpty {
            throw UMSError(.unsupported, "failed to adopt \(name), made with docker service create outside UMS: " + refusals.joined(separator: "; "))
        }
        return specification
    }

    /// The control lock on a service the swarm made: UMS adopts it (its Specification into the
    /// registry, checked strictly). Nothing changes on the service: its task keeps running with
    /// the frozen tree, so Swarm restarts nothing.
    func adopt(_ name: String, migration: String) async throws {
        let specification = try await adoptedSpecification(name, placed: await current(name), strict: true)
        try registry.save(Record(specification: specification, lockedBy: migration, createdAt: Date(), adopted: true))
        logger.info("swarm service adopted for a migration", metadata: ["service": "\(name)", "migration.id": "\(migration)"])
    }

    // MARK: Engine images (adopted services' own), on every node

    /// Every node holds it (wherever Swarm places the task).
    func hasEngineImage(_ image: ImageReference) async -> Bool {
        for node in nodes.values where !(await node.api.hasImage(image)) { return false }
        return !nodes.isEmpty
    }

    /// `docker save` from a node that holds it.
    func exportEngineImage(_ image: ImageReference, consume: @Sendable (ByteBuffer) async throws -> Void) async throws {
        for node in nodes.values.sorted(by: { ($0.hostname ?? "") < ($1.hostname ?? "") }) where await node.api.hasImage(image) {
            try await node.api.saveImage(image, staging: images, consume: consume)
            return
        }
        throw UMSError(.notFound, "failed to send image \(image.digest): no node of this swarm holds it")
    }

    /// `docker load` on every node (each checks that it holds the announced ID afterwards).
    func importEngineImage<Chunks: AsyncSequence & Sendable>(_ chunks: Chunks, expected: ImageReference) async throws -> ImageReference
        where Chunks.Element == ByteBuffer
    {
        try expected.validate()
        let (file, received) = try await EngineAPI.receive(chunks, expected: expected, staging: images)
        defer { FileSystem.remove(file) }
        for node in nodes.values where !(await node.api.hasImage(expected)) {
            try await node.api.loadImage(file: file, expected: expected)
        }
        return received
    }
}
