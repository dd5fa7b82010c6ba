import Foundation
import UMSModel
import UMSOS

/// A migratable image (service-level approach): an ordinary root filesystem plus, under `/.ums`,
/// the checkpoint agent and the CRIU it runs, with the agent as the entrypoint. This type builds
/// one (`ums image migratable`), recognises one, and turns a Specification into the one a
/// migratable container runs with.
public enum MigratableImage {
    /// The port the agent listens on inside its container unless its label says otherwise.
    public static let defaultAgentPort = 7079
    /// Everything UMS adds lives under this directory of the image.
    public static let directory = "/.ums"
    public static let agentPath = "/.ums/ums-agent"
    public static let criuDirectory = "/.ums/criu"
    /// The image's manifest: the entrypoint prefix and the agent's port.
    public static let manifestPath = "/.ums/image.json"
    /// The environment variable carrying the agent's control token.
    public static let tokenVariable = "UMS_AGENT_TOKEN"
    /// Test hook honoured by the agent: corrupt the received images so CRIU's restore fails.
    public static let corruptImagesFaultVariable = "UMS_AGENT_FAIL_RESTORE_FOR_TESTING"
    /// What the agent needs from an unmodified orchestrator, and nothing more: CRIU's
    /// `--unprivileged` mode needs CAP_CHECKPOINT_RESTORE (to read other processes' memory maps
    /// and to restore PIDs with `set_tid`), and a process under any seccomp filter cannot be
    /// dumped (CRIU must suspend the filter, which needs CAP_SYS_ADMIN in the host).
    public static let security = SecurityOptions(addCapabilities: ["CAP_CHECKPOINT_RESTORE"], seccompUnconfined: true)

    public struct Manifest: Codable, Sendable, Equatable {
        public var entrypoint: [String]
        public var agentPort: Int
        public var agentVersion: String

        public init(entrypoint: [String], agentPort: Int, agentVersion: String) {
            self.entrypoint = entrypoint
            self.agentPort = agentPort
            self.agentVersion = agentVersion
        }
    }

    /// True if `rootfs` carries the agent (and so was made by `make`).
    public static func isMigratable(rootfs: String) -> Bool {
        FileManager.default.isExecutableFile(atPath: rootfs + agentPath)
    }

    public static func manifest(rootfs: String) -> Manifest? {
        guard let data = FileManager.default.contents(atPath: rootfs + manifestPath) else { return nil }
        return try? JSONDecoder().decode(Manifest.self, from: data)
    }

    /// Copies the root filesystem `source` to `destination` and adds the agent (a static
    /// executable) and the CRIU tree (`criu` holds `usr/sbin/criu`, its libraries and loader).
    /// `destination` must not exist, unless `replace`.
    public static func make(
        from source: String, to destination: String, agent: String, criu: String, replace: Bool, runner: any CommandRunner
    ) async throws -> Manifest {
        let files = FileManager.default
        var isDirectory: ObjCBool = false
        guard files.fileExists(atPath: source, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw UMSError(.notFound, "failed to make a migratable image: \(source) is not a directory")
        }
        guard files.isExecutableFile(atPath: agent) else {
            throw UMSError(.notFound, "failed to make a migratable image: no agent at \(agent); build it with scripts/build-agent or pass --agent")
        }
        guard files.isExecutableFile(atPath: criu + "/usr/sbin/criu"),
              files.fileExists(atPath: criu + "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        else {
            throw UMSError(.notFound, "failed to make a migratable image: \(criu) is not a CRIU tree (usr/sbin/criu with its loader and libraries); scripts/setup installs one at /opt/ums/criu")
        }
        if files.fileExists(atPath: destination) {
            guard replace else {
                throw UMSError(.exists, "failed to make a migratable image: \(destination) exists (use --force to replace it)")
            }
        }
        if isMigratable(rootfs: source), let manifest = manifest(rootfs: source), source == destination {
            return manifest
        }
        let staging = destination + ".tmp-\(UUID().uuidString.prefix(8))"
        FileSystem.remove(staging)
        do {
            try FileSystem.makeDirectory(staging)
            try await runner.execute("cp", ["-a", source + "/.", staging + "/"])
            FileSystem.remove(staging + directory)
            try FileSystem.makeDirectory(staging + directory)
            try await runner.execute("cp", [agent, staging + agentPath])
            try await runner.execute("cp", ["-a", criu, staging + criuDirectory])
            let manifest = Manifest(entrypoint: [agentPath, "run", "--"], agentPort: MigratableImage.defaultAgentPort, agentVersion: "1")
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try FileSystem.writeAtomically(try encoder.encode(manifest), to: staging + manifestPath)
            FileSystem.remove(destination)
            try FileManager.default.moveItem(atPath: staging, toPath: destination)
            return manifest
        } catch {
            FileSystem.remove(staging)
            throw UMSError.wrap(error, .internalError, "failed to make a migratable image from \(source)")
        }
    }

    /// The Specification of a container that runs from a migratable image: the command behind the
    /// agent's entrypoint (unless already there), the label that names it migratable, the
    /// privileges the agent needs, and a fresh control token.
    public static func specification(_ specification: Specification, manifest: Manifest, token: String) -> Specification {
        behindAgent(specification, entrypoint: manifest.entrypoint, label: SpecificationLabels.agent, port: manifest.agentPort, security: security, token: token)
    }

    /// The command behind the agent's entrypoint (unless already there), the label naming the
    /// agent's port, the privileges, and a fresh control token: what both agent-based
    /// approaches' containers share.
    static func behindAgent(
        _ specification: Specification, entrypoint: [String], label: String, port: Int, security needed: SecurityOptions, token: String
    ) -> Specification {
        var result = specification
        if result.command.first != agentPath {
            result.command = entrypoint + result.command
        }
        result.labels[SpecificationLabels.agent] = nil
        result.labels[SpecificationLabels.nested] = nil
        result.labels[label] = String(port)
        result.security = merged(result.security, needed)
        result.environment.removeAll { $0.hasPrefix("\(tokenVariable)=") }
        result.environment.append("\(tokenVariable)=\(token)")
        return result
    }

    /// The destination's copy of a container with an agent (migratable or nested): the agent
    /// starts in restore mode, and its port is published at `agentHostPort` so the source's agent
    /// can send the images there — or, with `nil` (mutual TLS: the Coordinator relays the stream
    /// to the container's own address), not published at all.
    public static func destinationSpecification(_ specification: Specification, agentHostPort: Int?) -> Specification {
        var result = specification
        let port = agentPort(of: specification)
        if result.command.first == agentPath, result.command.count > 1 {
            result.command[1] = ["run": "restore", "host": "host-restore"][result.command[1]] ?? result.command[1]
        }
        result.ports.removeAll { $0.containerPort == port }
        if let agentHostPort { result.ports.append(PortMapping(hostPort: agentHostPort, containerPort: port)) }
        return result
    }

    /// Whether the container's agent starts in restore mode (a destination's container, as made
    /// by `destinationSpecification`).
    public static func startsInRestoreMode(_ specification: Specification) -> Bool {
        specification.command.first == agentPath && specification.command.count > 1 && ["restore", "host-restore"].contains(specification.command[1])
    }

    /// The port the agent listens on inside the container (the value of its label).
    public static func agentPort(of specification: Specification) -> Int {
        (specification.labels[SpecificationLabels.agent] ?? specification.labels[SpecificationLabels.nested]).flatMap { Int($0) }
            ?? MigratableImage.defaultAgentPort
    }

    static func merged(_ current: SecurityOptions?, _ needed: SecurityOptions) -> SecurityOptions {
        var result = current ?? SecurityOptions()
        result.addCapabilities += needed.addCapabilities.filter { !result.addCapabilities.contains($0) }
        result.seccompUnconfined = result.seccompUnconfined || needed.seccompUnconfined
        result.runsContainers = result.runsContainers || needed.runsContainers
        return result
    }
}

/// The endpoints clients use, without the agent's own published port.
public enum ServiceEndpoints {
    public static func of(_ container: ContainerInfo) -> [String] {
        let labels = container.specification.labels
        guard labels[SpecificationLabels.agent] != nil || labels[SpecificationLabels.nested] != nil else { return container.endpoints }
        let port = MigratableImage.agentPort(of: container.specification)
        let agentHostPorts = Set(container.specification.ports.filter { $0.containerPort == port }.map(\.hostPort))
        return container.endpoints.filter { endpoint in
            guard let hostPort = endpoint.split(separator: ":").last.flatMap({ Int($0) }) else { return true }
            return !agentHostPorts.contains(hostPort)
        }
    }
}
