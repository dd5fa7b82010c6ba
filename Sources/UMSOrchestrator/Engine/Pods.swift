import Foundation
import NIOCore
import UMSModel
import UMSOS

extension LibpodAPI {
    /// `GET /libpod/pods/{name}/json`, the part UMS reads.
    public struct PodInspect: Codable, Sendable, Equatable {
        public var id: String
        public var name: String
        public var state: String?
        public var hostname: String?
        public var sharedNamespaces: [String]?
        public var infraContainerID: String?
        public var infraConfig: InfraConfig?
        public var containers: [PodContainer]?

        public struct InfraConfig: Codable, Sendable, Equatable {
            public var portBindings: [String: [DockerAPI.PortBinding]?]?
            enum CodingKeys: String, CodingKey { case portBindings = "PortBindings" }
        }

        public struct PodContainer: Codable, Sendable, Equatable {
            public var id: String
            public var name: String
            public var state: String?
            enum CodingKeys: String, CodingKey { case id = "Id", name = "Name", state = "State" }
        }

        enum CodingKeys: String, CodingKey {
            case id = "Id", name = "Name", state = "State", hostname = "Hostname", sharedNamespaces = "SharedNamespaces"
            case infraContainerID = "InfraContainerID", infraConfig = "InfraConfig", containers = "Containers"
        }
    }

    /// A row of `GET /libpod/pods/json`.
    public struct PodSummary: Codable, Sendable, Equatable {
        public var name: String
        public var containers: [Member]?

        public struct Member: Codable, Sendable, Equatable {
            public var names: String?
            enum CodingKeys: String, CodingKey { case names = "Names" }
        }

        enum CodingKeys: String, CodingKey { case name = "Name", containers = "Containers" }
    }

    /// `POST /libpod/pods/create` (libpod's PodSpecGenerator, the part UMS sets).
    public struct PodCreateBody: Codable, Sendable, Equatable {
        public var name: String
        public var hostname: String?
        public var portmappings: [PortMapping]
        public var sharedNamespaces: [String]?

        enum CodingKeys: String, CodingKey { case name, hostname, portmappings, sharedNamespaces = "shared_namespaces" }
    }

    public struct Created: Codable, Sendable, Equatable {
        public var id: String
        enum CodingKeys: String, CodingKey { case id = "Id" }
    }
}

/// Podman pods (`podman pod create`, `podman kube play`): listed as one entry, and migrated as one
/// unit — every container checkpointed (with the TCP connections between them), the pod made
/// anew at the destination with the same published ports and shared namespaces, and each
/// container restored into it, so they share one network namespace there as here. The pod's
/// infra container is Podman's own and is never moved.
extension EngineOrchestrator {
    /// The pods of a Podman engine (none for Docker), with the names of their containers.
    func pods() async -> [LibpodAPI.PodSummary] {
        guard dialect == .podman,
              let response = try? await api.request(.GET, "/libpod/pods/json", operation: "list pods"),
              let rows = try? response.decode([LibpodAPI.PodSummary].self, operation: "list pods")
        else { return [] }
        return rows.filter { (try? ContainerName.validate($0.name)) != nil }
    }

    func podInspect(_ name: String) async throws -> LibpodAPI.PodInspect {
        try ContainerName.validate(name)
        let response = try await api.request(.GET, "/libpod/pods/\(name)/json", operation: "inspect pod \(name)")
        return try response.decode(LibpodAPI.PodInspect.self, operation: "inspect pod \(name)")
    }

    /// A pod's Specification, from Podman's description of the pod and of each of its containers.
    /// With `strict`, what UMS cannot carry in any of them is refused with every reason.
    func adoptedPodSpecification(_ name: String, strict: Bool) async throws -> Specification {
        let pod = try await podInspect(name)
        let infra = pod.infraContainerID
        var members: [Specification] = []
        var refusals: [String] = []
        for container in (pod.containers ?? []).prefix(SpecificationBounds.maxPodMembers + 1) where container.id != infra {
            do {
                let response = try await api.request(.GET, "/containers/\(container.id)/json", operation: "inspect \(container.name)")
                let inspect = try response.decode(DockerAPI.ContainerInspect.self, operation: "inspect \(container.name)")
                var member = try Self.specification(adopting: inspect, name: container.name, kind: kind, strict: strict, podInfra: infra)
                // The pod publishes the ports; its containers share them.
                member.ports = []
                members.append(member)
            } catch let error as UMSError {
                refusals.append("its container \(container.name): \(error.message)")
            }
        }
        let ports = Self.publishedPorts(pod.infraConfig?.portBindings, refusals: &refusals)
        if members.isEmpty, refusals.isEmpty { refusals.append("it has no container besides its infra container") }
        if members.count > SpecificationBounds.maxPodMembers { refusals.append("it has more than \(SpecificationBounds.maxPodMembers) containers") }
        if strict, !refusals.isEmpty {
            throw UMSError(.unsupported, "failed to adopt pod \(name), made by \(kind) outside UMS: " + refusals.joined(separator: "; "))
        }
        guard let first = members.first else {
            throw UMSError(.unsupported, "failed to adopt pod \(name): " + refusals.joined(separator: "; "))
        }
        var volumes: [VolumeMount] = []
        var binds: [BindMount] = []
        for member in members {
            for volume in member.volumes ?? [] where !volumes.contains(where: { $0.name == volume.name }) { volumes.append(volume) }
            for bind in member.binds ?? [] where !binds.contains(where: { $0.hostPath == bind.hostPath }) { binds.append(bind) }
        }
        var specification = Specification(
            name: name, image: first.image, command: first.command, ports: ports, processCount: members.count,
            engine: EngineConfiguration(
                madeBy: kind, entrypoint: first.engine?.entrypoint ?? [],
                hostname: pod.hostname.flatMap { $0.isEmpty ? nil : $0 }, restartPolicy: .no
            ),
            volumes: volumes.isEmpty ? nil : volumes, binds: binds.isEmpty ? nil : binds
        )
        specification.pod = PodSpecification(members: members, sharedNamespaces: (pod.sharedNamespaces ?? []).filter(PodSpecification.sharable.contains))
        try specification.validate()
        return specification
    }

    /// A pod's state: running when Podman says so and every container of it runs; its address is
    /// its infra container's.
    func podState(_ specification: Specification) async -> EngineState {
        guard let pod = specification.pod, let inspect = try? await podInspect(specification.name) else { return EngineState(state: .stopped) }
        var pid: Int?
        var running = inspect.state?.lowercased() == "running"
        for member in pod.members {
            let state = await engineState(member.name)
            pid = pid ?? state.pid
            running = running && state.state == .running
        }
        // The pod's address is its infra container's (the network namespace its containers share).
        var address: String?
        if let infra = inspect.infraContainerID { address = await engineState(infra).address }
        return EngineState(state: running ? .running : .stopped, pid: pid, address: address)
    }

    /// Makes the pod at the destination (its containers come with the restore).
    func createPod(_ specification: Specification) async throws {
        let shared = specification.pod?.sharedNamespaces ?? []
        let body = LibpodAPI.PodCreateBody(
            name: specification.name, hostname: specification.engine?.hostname,
            portmappings: specification.ports.map { LibpodAPI.PortMapping(hostPort: $0.hostPort, containerPort: $0.containerPort, protocol: $0.proto) },
            sharedNamespaces: shared.isEmpty ? nil : shared
        )
        try await api.request(.POST, "/libpod/pods/create", json: body, operation: "create pod \(specification.name)")
    }

    static func podArchive(_ member: String) -> String { "pod-\(member).tar" }

    /// Every container's checkpoint export, the sidecars (the later ones) first, one at a time:
    /// each container's exit makes its conmon run `podman container cleanup`, which in a pod
    /// locks the pod (and, for a pod made by `kube play`, whose exit policy is `stop`, stops it
    /// once the last container exited); a checkpoint of the next container while that runs
    /// deadlocked Podman 4.3 (tried: one run in four). So each checkpoint waits for the cleanup of
    /// the one before.
    func checkpointPod(_ specification: Specification, into directory: String) async throws {
        for member in (specification.pod?.members ?? []).reversed() {
            let id = try await containerID(member.name)
            let checkpoint = {
                try await self.api.download(
                    .POST, "/libpod/containers/\(member.name)/checkpoint?export=true&keep=true&tcpEstablished=true"
                        + ((member.volumes ?? []).isEmpty ? "" : "&ignoreVolumes=true"),
                    to: "\(directory)/\(Self.podArchive(member.name))", operation: "checkpoint \(member.name) of pod \(specification.name)"
                )
            }
            do {
                try await checkpoint()
            } catch let error as UMSError where error.message.contains("tcp-established") {
                // CRIU keeps the pod's connections (tcp-established) but can refuse one caught in
                // flight — the containers of a pod call each other over localhost all the time —
                // and Podman's API (4.3) cannot ask it to skip those (CI once saw this dump fail
                // with nothing more than runc's exit status). A failed dump leaves the container
                // running: once more, a moment later.
                logger.warning("the engine's checkpoint of a pod member failed; trying once more", metadata: ["container": "\(member.name)", "error": "\(error)"])
                try await Task.sleep(for: .milliseconds(300))
                try await checkpoint()
            }
            await awaitCleanup(id)
            // Kept for a rollback (the migration's directory goes with the migration).
            let kept = keptCheckpoints(specification.name)
            try FileSystem.makeDirectory(kept)
            try await linkOrCopy(file: "\(directory)/\(Self.podArchive(member.name))", into: kept)
        }
    }

    func keptCheckpoints(_ pod: String) -> String { "\(podCheckpoints)/\(pod)" }

    func linkOrCopy(file: String, into directory: String) async throws {
        if (try? await runner.execute("cp", ["-l", file, directory + "/"])) != nil { return }
        try await runner.execute("cp", [file, directory + "/"])
    }

    func containerID(_ name: String) async throws -> String {
        let response = try await api.request(.GET, "/containers/\(name)/json", operation: "inspect \(name)")
        return try response.decode(DockerAPI.ContainerInspect.self, operation: "inspect \(name)").id
    }

    /// Waits (at most 30 s) until no `podman container cleanup ID` runs on this host — the
    /// engine's own exit handling of that container — then until the engine answers for it.
    func awaitCleanup(_ id: String) async {
        let deadline = ContinuousClock.now + .seconds(30)
        // conmon starts it when the container exits: give it a moment to appear.
        try? await Task.sleep(for: .milliseconds(200))
        while ContinuousClock.now < deadline, ProcessSweep.running(arguments: ["cleanup", id]) {
            try? await Task.sleep(for: .milliseconds(100))
        }
        _ = try? await api.request(.GET, "/containers/\(id)/json", operation: "inspect \(id)")
    }

    /// Each container restored into the pod made at prepare, with its TCP connections.
    func restorePod(_ specification: Specification, from directory: String) async throws {
        let pod = try await podInspect(specification.name)
        for member in specification.pod?.members ?? [] {
            try await ensureEngineImage(member.image)
            let archive = try await retargetImage(
                directory, image: member.image, volumes: member.volumes ?? [], archive: Self.podArchive(member.name), imageName: member.engine?.imageName
            )
            try await importCheckpoint(
                archive, query: "/libpod/containers/\(member.name)/restore?import=true&name=\(member.name)&pod=\(pod.id)&tcpEstablished=true"
                    + ((member.volumes ?? []).isEmpty ? "" : "&ignoreVolumes=true"),
                timeout: .seconds(300), operation: "restore \(member.name) into pod \(specification.name)"
            )
        }
    }

    /// Rollback at the source: each checkpointed container restored from the export kept for it,
    /// into the pod. Not in place: a pod whose exit policy is `stop` (kube play's) stopped its
    /// infra container once the last container exited, and its network namespace with it, which
    /// an in-place restore would look for; the infra container is started again, and the
    /// checkpoints are imported into the pod as at a destination.
    func resumePod(_ specification: Specification) async throws {
        let pod = try await podInspect(specification.name)
        if let infra = pod.infraContainerID, await engineState(infra).state != .running {
            try await api.request(.POST, "/containers/\(infra)/start", operation: "start the infra container of pod \(specification.name)")
        }
        let kept = keptCheckpoints(specification.name)
        for member in specification.pod?.members ?? [] where await engineState(member.name).state != .running {
            let archive = "\(kept)/\(Self.podArchive(member.name))"
            guard FileSystem.exists(archive) else {
                throw UMSError(.internalError, "failed to resume \(member.name) of pod \(specification.name): its checkpoint was not kept")
            }
            _ = try? await api.request(.DELETE, "/libpod/containers/\(member.name)?force=true&timeout=0", operation: "remove the stopped \(member.name)")
            try await importCheckpoint(
                try TarRewrite.plan(file: archive, replacing: [:]),
                query: "/libpod/containers/\(member.name)/restore?import=true&name=\(member.name)&pod=\(pod.id)&tcpEstablished=true"
                    + ((member.volumes ?? []).isEmpty ? "" : "&ignoreVolumes=true"),
                timeout: .seconds(120), operation: "restore \(member.name) of pod \(specification.name) from its checkpoint"
            )
        }
        FileSystem.remove(kept)
    }

    /// The pod and every container of it. Idempotent.
    func removePod(_ name: String) async {
        _ = try? await api.request(.DELETE, "/libpod/pods/\(name)?force=true&timeout=0", operation: "remove pod \(name)")
        FileSystem.remove(keptCheckpoints(name))
        forget(name)
    }
}
