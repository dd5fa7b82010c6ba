import Foundation
import UMSModel
import UMSOS

/// The container-level approach's outer container: the host image (`scripts/build-host-image`:
/// busybox, runc, CRIU, tar, iptables and `ums-agent`, from the machine's own binaries) with the
/// service's **unchanged** root filesystem at `/.ums/nested/rootfs`. The orchestrator runs and
/// manages the outer container like any other; its agent (host mode) runs the service as a nested
/// runc container and moves it.
public enum NestedImage {
    /// The host image's manifest.
    public static let manifestPath = "/.ums/host-image.json"
    /// Where the service's root filesystem goes inside the outer one.
    public static let nestedRoot = "/.ums/nested/rootfs"
    /// What the outer container needs to run a runtime and CRIU for the nested one: the
    /// capabilities runc and CRIU use (mounts and pivot_root, the nested network and cgroups,
    /// ptrace for the dump, the nested PIDs at restore), no seccomp filter, and writable cgroups
    /// and `/proc/sys`. The nested container itself gets only runc's defaults.
    public static let security = SecurityOptions(
        addCapabilities: [
            "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_CHROOT", "CAP_SYS_TIME", "CAP_DAC_OVERRIDE",
            "CAP_SETGID", "CAP_SETUID", "CAP_SYS_PTRACE", "CAP_CHECKPOINT_RESTORE",
            // What Docker's and Podman's outer containers have anyway, so that every engine's
            // outer container can restore what another's dumped (CRIU re-creates the nested
            // /dev tmpfs with its device nodes and owners).
            "CAP_MKNOD", "CAP_CHOWN", "CAP_FOWNER", "CAP_FSETID", "CAP_SETPCAP", "CAP_SETFCAP", "CAP_NET_RAW",
        ],
        seccompUnconfined: true, runsContainers: true
    )

    public struct Manifest: Codable, Sendable, Equatable {
        public var entrypoint: [String]
        public var agentPort: Int
        public var nestedRoot: String

        public init(entrypoint: [String], agentPort: Int, nestedRoot: String) {
            self.entrypoint = entrypoint
            self.agentPort = agentPort
            self.nestedRoot = nestedRoot
        }
    }

    /// What a host image built by `scripts/build-host-image` runs: its agent in host mode, on
    /// the agent's default port, with the service at `nestedRoot`.
    public static let standardManifest = Manifest(
        entrypoint: [MigratableImage.agentPath, "host", "--"], agentPort: MigratableImage.defaultAgentPort, nestedRoot: nestedRoot
    )

    /// The host image's manifest: its own `/.ums/host-image.json` if it has one (an image built
    /// another way), else the standard one; either way the image must carry the agent.
    public static func manifest(hostImage: String) throws(UMSError) -> Manifest {
        guard FileManager.default.isExecutableFile(atPath: hostImage + MigratableImage.agentPath) else {
            throw UMSError(.notFound, "failed to find the host image for nested services at \(hostImage): build it with scripts/build-host-image and give umsd --host-image")
        }
        guard let data = FileManager.default.contents(atPath: hostImage + manifestPath) else { return standardManifest }
        do {
            return try JSONDecoder().decode(Manifest.self, from: data)
        } catch {
            throw UMSError(.invalidArgument, "failed to read the host image's manifest \(hostImage + manifestPath)", cause: error)
        }
    }

    /// Writes the outer root filesystem to `destination` (which must not exist): the host image
    /// with `service` copied to the nested root.
    public static func compose(hostImage: String, service: String, into destination: String, runner: any CommandRunner) async throws -> Manifest {
        let manifest = try manifest(hostImage: hostImage)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: service, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw UMSError(.notFound, "failed to compose a nested container: \(service) is not a directory")
        }
        do {
            try FileSystem.makeDirectory(destination)
            try await runner.execute("cp", ["-a", hostImage + "/.", destination + "/"])
            FileSystem.remove(destination + manifest.nestedRoot)
            try FileSystem.makeDirectory(destination + manifest.nestedRoot)
            try await runner.execute("cp", ["-a", service + "/.", destination + manifest.nestedRoot + "/"])
            return manifest
        } catch {
            FileSystem.remove(destination)
            throw UMSError.wrap(error, .internalError, "failed to compose a nested container from \(service)")
        }
    }

    /// The outer container's Specification: the service's command behind the agent in host mode,
    /// labelled nested, with the privileges the nested runtime needs and a fresh agent token.
    public static func specification(_ specification: Specification, manifest: Manifest, token: String) -> Specification {
        MigratableImage.behindAgent(
            specification, entrypoint: manifest.entrypoint, label: SpecificationLabels.nested, port: manifest.agentPort, security: security, token: token
        )
    }
}
