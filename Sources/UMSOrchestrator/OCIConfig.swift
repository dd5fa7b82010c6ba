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
        guard var config = try JSONSerialization.jsonObject(with: template) as? [String: Any],
              var process = config["process"] as? [String: Any],
              var linux = config["linux"] as? [String: Any]
        else {
            throw UMSError(.internalError, "failed to build OCI config: runc's template is not an OCI spec")
        }
        process["terminal"] = false
        process["args"] = specification.command
        let baseEnvironment = (process["env"] as? [String]) ?? []
        process["env"] = baseEnvironment + specification.environment
        process["cwd"] = specification.workingDirectory
        if let security = specification.security, !security.addCapabilities.isEmpty,
           var capabilities = process["capabilities"] as? [String: Any] {
            for set in ["bounding", "effective", "permitted"] {
                let current = (capabilities[set] as? [String]) ?? []
                capabilities[set] = current + security.addCapabilities.filter { !current.contains($0) }
            }
            process["capabilities"] = capabilities
        }
        config["process"] = process
        config["root"] = ["path": placement.rootPath, "readonly": false]
        config["hostname"] = specification.name
        if let criuConfigPath = placement.criuConfigPath {
            var annotations = (config["annotations"] as? [String: String]) ?? [:]
            annotations["org.criu.config"] = criuConfigPath
            config["annotations"] = annotations
        }

        var namespaces = (linux["namespaces"] as? [[String: Any]]) ?? []
        namespaces.removeAll { ($0["type"] as? String) == "network" }
        namespaces.append(["type": "network", "path": placement.networkNamespacePath])
        linux["namespaces"] = namespaces
        linux["cgroupsPath"] = placement.cgroupsPath
        if specification.security?.seccompUnconfined == true {
            linux["seccomp"] = nil
        }
        if specification.security?.runsContainers == true {
            // A runtime inside needs to create cgroups (below this container's: its limits
            // apply to what runs nested) and to write sysctls.
            linux["readonlyPaths"] = ((linux["readonlyPaths"] as? [String]) ?? []).filter { $0 != "/proc/sys" }
            if var mounts = config["mounts"] as? [[String: Any]] {
                for index in mounts.indices where (mounts[index]["type"] as? String) == "cgroup" {
                    mounts[index]["options"] = ((mounts[index]["options"] as? [String]) ?? []).filter { $0 != "ro" } + ["rw"]
                }
                config["mounts"] = mounts
            }
        }

        var resources = (linux["resources"] as? [String: Any]) ?? [:]
        if let memory = specification.limits.memoryBytes {
            resources["memory"] = ["limit": memory]
        }
        if let cpus = specification.limits.cpus {
            let period = 100_000
            resources["cpu"] = ["quota": Int(cpus * Double(period)), "period": period]
        }
        if let pids = specification.limits.pids {
            resources["pids"] = ["limit": pids]
        }
        linux["resources"] = resources
        config["linux"] = linux
        return try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
    }
}
