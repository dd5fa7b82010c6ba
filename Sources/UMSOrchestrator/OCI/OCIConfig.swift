import Foundation
import UMSModel

/// Builds a container's OCI `config.json` from the installed runc's own default (`runc spec`) and
/// a Specification. Starting from runc's template keeps its mounts, masked paths and capability
/// defaults in step with the runc that will run it.
public enum OCIConfig {
    public struct Placement: Sendable, Equatable {
        /// The network namespace the system prepared for the container.
        public var networkNamespacePath: String
        /// The cgroup path, unique per system so that two systems on one host never share one.
        public var cgroupsPath: String
        /// A CRIU configuration file for this container's checkpoints and restores; runc hands
        /// it to CRIU through the `org.criu.config` annotation.
        public var criuConfigPath: String?
        /// The root filesystem, relative to the bundle (runc) or absolute (containerd's `ctr
        /// run --config` does not know the bundle).
        public var rootPath: String

        public init(networkNamespacePath: String, cgroupsPath: String, criuConfigPath: String? = nil, rootPath: String = "rootfs") {
            self.networkNamespacePath = networkNamespacePath
            self.cgroupsPath = cgroupsPath
            self.criuConfigPath = criuConfigPath
            self.rootPath = rootPath
        }
    }

    public static func make(template: Data, specification: Specification, placement: Placement) throws -> Data {
        var config: OCI.Spec
        do {
            config = try JSONDecoder().decode(OCI.Spec.self, from: template)
        } catch {
            throw UMSError(.internalError, "failed to build OCI config: runc's template is not an OCI spec", cause: error)
        }
        guard var process = config.process, var linux = config.linux else {
            throw UMSError(.internalError, "failed to build OCI config: runc's template has no process or linux section")
        }
        process.terminal = false
        process.args = specification.command
        process.env = (process.env ?? []) + specification.environment
        process.cwd = specification.workingDirectory
        if let security = specification.security, !security.addCapabilities.isEmpty, var capabilities = process.capabilities {
            for set in [\OCI.Capabilities.bounding, \.effective, \.permitted] {
                let current = capabilities.known[keyPath: set] ?? []
                capabilities.known[keyPath: set] = current + security.addCapabilities.filter { !current.contains($0) }
            }
            process.capabilities = capabilities
        }
        config.process = process
        config.root = Open(OCI.Root(path: placement.rootPath, readonly: false))
        config.hostname = specification.name
        if let criuConfigPath = placement.criuConfigPath {
            config.annotations = (config.annotations ?? [:]).merging(["org.criu.config": criuConfigPath]) { $1 }
        }

        linux.namespaces = (linux.namespaces ?? []).filter { $0.type != "network" } + [OCI.Namespace(type: "network", path: placement.networkNamespacePath)]
        linux.cgroupsPath = placement.cgroupsPath
        if specification.security?.seccompUnconfined == true {
            linux.seccomp = nil
        }
        if specification.security?.runsContainers == true {
            // A runtime inside needs to create cgroups (below this container's: its limits
            // apply to what runs nested) and to write sysctls.
            linux.readonlyPaths = (linux.readonlyPaths ?? []).filter { $0 != "/proc/sys" }
            config.mounts = config.mounts?.map { mount in
                guard mount.type == "cgroup" else { return mount }
                var writable = mount
                writable.options = (mount.options ?? []).filter { $0 != "ro" } + ["rw"]
                return writable
            }
        }

        var resources = linux.resources ?? Open(OCI.Resources())
        if let memory = specification.limits.memoryBytes {
            resources.memory = OCI.Memory(limit: memory)
        }
        if let cpus = specification.limits.cpus {
            let period: UInt64 = 100_000
            guard cpus > 0, let quota = Int64(exactly: (cpus * Double(period)).rounded()) else {
                throw UMSError(.invalidArgument, "failed to build OCI config: invalid CPU limit \(cpus)")
            }
            resources.cpu = OCI.CPU(quota: quota, period: period)
        }
        if let pids = specification.limits.pids {
            resources.pids = OCI.Pids(limit: Int64(pids))
        }
        linux.resources = resources
        config.linux = linux
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(config)
    }
}
