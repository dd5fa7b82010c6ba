import Foundation
import UMSModel

/// `ctr containers info`: the part UMS reads of a container containerd made for `ctr run`.
public struct CtrContainerInfo: Decodable, Sendable {
    public var id: String
    /// The image by the name it was made with (containerd keeps no image ID).
    public var image: String
    public var labels: [String: String]?
    public var runtime: Runtime
    public var snapshotter: String
    public var spec: Spec

    /// The runtime spec's fields UMS reads, each optional: containerd writes what it was told.
    public struct Spec: Decodable, Sendable {
        public var process: Process?
        public var root: Root?
        public var hostname: String?
        public var mounts: [Mount]?
        public var linux: Linux?

        public struct Process: Decodable, Sendable {
            public var terminal: Bool?
            public var args: [String]?
            public var env: [String]?
            public var cwd: String?
            public var user: User?
            public var capabilities: Capabilities?
        }

        public struct User: Decodable, Sendable {
            public var uid: Int
            public var gid: Int
        }

        public struct Capabilities: Decodable, Sendable {
            public var bounding: [String]?
        }

        public struct Root: Decodable, Sendable {
            public var path: String?
        }

        public struct Mount: Decodable, Sendable {
            public var destination: String
            public var type: String?
        }

        public struct Linux: Decodable, Sendable {
            public var namespaces: [OCI.Namespace]?
            public var devices: [JSONValue]?
            public var resources: Resources?
        }

        public struct Resources: Decodable, Sendable {
            public var memory: Memory?
        }

        public struct Memory: Decodable, Sendable {
            public var limit: Int64?
        }
    }

    public struct Runtime: Decodable, Sendable {
        public var name: String
        enum CodingKeys: String, CodingKey { case name = "Name" }
    }

    enum CodingKeys: String, CodingKey {
        case id = "ID", image = "Image", labels = "Labels", runtime = "Runtime", snapshotter = "Snapshotter", spec = "Spec"
    }
}

/// Containers made with `ctr run` in containerd's `default` namespace: what UMS reads of them
/// (pure, so every refusal is unit-tested) and the checkpoint it composes for containerd's own
/// restore.
public enum CtrContainers {
    /// What `ctr run` mounts in every container: made anew by the runtime at the destination.
    static let runtimeMounts: Set<String> = ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/run"]
    /// containerd 1.6's default capability set (`oci.WithDefaultSpec`), which the destination's
    /// `ctr` gives the container it restores into.
    static let defaultCapabilities: Set<String> = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
        "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    ]
    static let namespaces: Set<String> = ["pid", "ipc", "uts", "mount", "network"]
    static let runtime = "io.containerd.runc.v2"
    static let snapshotter = "overlayfs"
    /// Labels containerd copies from the image: they come back from the image at the destination.
    static func isImageLabel(_ key: String) -> Bool { key.hasPrefix("io.containerd.image.") || key.hasPrefix("org.opencontainers.image.") }

    /// A `ctr run` container's Specification, from its info and its image's manifest digest. With
    /// `strict`, everything UMS cannot give it again at the destination is refused, every reason
    /// said: the destination makes its container the way `ctr run` does (containerd's defaults
    /// and the image's configuration), so what `ctr run` was told beyond the command, the
    /// environment, the working directory and a memory limit does not move.
    public static func specification(_ info: CtrContainerInfo, imageDigest: String?, strict: Bool) throws -> Specification {
        var refusals: [String] = []
        let spec = info.spec
        let process = spec.process
        if info.runtime.name != runtime { refusals.append("it runs under the \(String(info.runtime.name.prefix(64))) runtime (UMS checkpoints \(runtime) only)") }
        if info.snapshotter != snapshotter { refusals.append("its root filesystem is a \(String(info.snapshotter.prefix(32))) snapshot (UMS moves overlayfs ones)") }
        let digest = imageDigest ?? ""
        let image = ImageReference(digest: digest, source: "containerd image", format: .engine)
        if (try? image.validate()) == nil { refusals.append("its image \(String(info.image.prefix(80))) is not in containerd's image store") }
        if spec.root?.path != "rootfs" { refusals.append("its root filesystem is not containerd's snapshot (ctr run --rootfs)") }
        let declared = spec.linux?.namespaces ?? []
        let types = Set(declared.map(\.type))
        if !types.contains("network") {
            refusals.append("it shares its host's network namespace (ctr run --net-host), which cannot move to another system")
        }
        if let joined = declared.first(where: { $0.path != nil }) {
            refusals.append("it joins an existing \(joined.type) namespace (ctr run --with-ns)")
        }
        if !types.isSubset(of: namespaces) || !types.isSuperset(of: namespaces.subtracting(["network"])) {
            refusals.append("its namespaces (\(types.sorted().joined(separator: ", "))) are not ctr run's")
        }
        for mount in spec.mounts ?? [] where !runtimeMounts.contains(mount.destination) {
            refusals.append("it has a \(mount.type ?? "bind") mount at \(String(mount.destination.prefix(80))) (ctr run --mount), which UMS does not carry for ctr containers")
        }
        let capabilities = Set(process?.capabilities?.bounding ?? [])
        if capabilities != defaultCapabilities {
            let added = capabilities.subtracting(defaultCapabilities).sorted()
            let dropped = defaultCapabilities.subtracting(capabilities).sorted()
            refusals.append(
                "its capabilities are not containerd's defaults (added: \(added.isEmpty ? "none" : added.joined(separator: ", ")); dropped: \(dropped.isEmpty ? "none" : dropped.joined(separator: ", "))); ctr run --privileged or --cap-add/--cap-drop"
            )
        }
        if let devices = spec.linux?.devices, !devices.isEmpty {
            refusals.append("it uses host devices (ctr run --device)")
        }
        if spec.hostname != nil { refusals.append("it has a hostname of its own") }
        if process?.terminal == true { refusals.append("it has a terminal (ctr run --tty); CRIU cannot restore one it does not own") }
        let user = process?.user.map { "\($0.uid):\($0.gid)" }
        if strict, !refusals.isEmpty {
            throw UMSError(.unsupported, "failed to migrate '\(info.id)', made with ctr run: \(refusals.joined(separator: "; "))")
        }
        let labels = (info.labels ?? [:]).filter { !isImageLabel($0.key) && !$0.key.hasPrefix("ums.") }
        var specification = Specification(
            name: info.id, image: image, command: process?.args ?? [], environment: process?.env ?? [],
            workingDirectory: process?.cwd ?? "/",
            limits: ResourceLimits(memoryBytes: spec.linux?.resources?.memory?.limit.flatMap { $0 > 0 ? $0 : nil }),
            labels: labels,
            engine: EngineConfiguration(madeBy: .containerd, user: user, imageName: (try? EngineConfiguration.validateImageName(info.image)) != nil ? info.image : nil)
        )
        specification.security = nil
        try specification.validate()
        return specification
    }

    // MARK: The checkpoint containerd restores from

    /// An OCI content descriptor.
    public struct Descriptor: Codable, Sendable, Equatable {
        public var mediaType: String
        public var digest: String
        public var size: Int64
        public var annotations: [String: String]?

        public init(mediaType: String, digest: String, size: Int64, annotations: [String: String]? = nil) {
            self.mediaType = mediaType
            self.digest = digest
            self.size = size
            self.annotations = annotations
        }
    }

    /// An OCI image index (a layout's `index.json`, or a checkpoint).
    public struct Index: Codable, Sendable, Equatable {
        public var schemaVersion: Int
        public var manifests: [Descriptor]
        public var annotations: [String: String]?

        public init(manifests: [Descriptor], annotations: [String: String]? = nil) {
            self.schemaVersion = 2
            self.manifests = manifests
            self.annotations = annotations
        }
    }

    public enum MediaType {
        public static let criu = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
        public static let config = "application/vnd.containerd.container.checkpoint.config.v1+proto"
        public static let layer = "application/vnd.oci.image.layer.v1.tar+gzip"
    }

    /// What containerd's restore reads: the CRIU images (a tar), the container's spec, its root
    /// filesystem's changes (a layer), and — in annotations — the image to make its snapshot from
    /// (by this system's name for it), the runtime and the snapshotter.
    public static func checkpointIndex(imageName: String, criu: Descriptor, config: Descriptor, changes: Descriptor) -> Index {
        Index(
            manifests: [criu, config, changes],
            annotations: [
                "org.opencontainers.image.ref.name": imageName,
                "io.containerd.checkpoint.runtime": runtime,
                "io.containerd.checkpoint.snapshotter": snapshotter,
            ]
        )
    }

    /// containerd keeps a container's spec as a protobuf `Any`: the type URL (field 1) and the
    /// spec's JSON (field 2), each length-delimited.
    public static let specTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

    public static func protobufAny(typeURL: String, value: Data) -> Data {
        var data = Data()
        func field(_ number: UInt8, _ bytes: Data) {
            data.append((number << 3) | 2)
            var length = UInt64(bytes.count)
            repeat {
                let low = UInt8(length & 0x7F)
                length >>= 7
                data.append(length == 0 ? low : low | 0x80)
            } while length != 0
            data.append(bytes)
        }
        field(1, Data(typeURL.utf8))
        field(2, value)
        return data
    }

    /// Reads an image layout's `index.json` a peer sent: one image, the expected one.
    public static func checkImageLayout(_ data: Data, expected digest: String) throws(UMSError) -> Descriptor {
        guard data.count <= 64 << 10, let index = try? JSONDecoder().decode(Index.self, from: data) else {
            throw UMSError(.invalidArgument, "failed to receive image \(digest): its archive has no readable index.json")
        }
        guard index.manifests.count == 1, let manifest = index.manifests.first, manifest.digest == digest,
              manifest.mediaType == "application/vnd.docker.distribution.manifest.v2+json" || manifest.mediaType == "application/vnd.oci.image.manifest.v1+json",
              (1...(1 << 20)).contains(manifest.size)
        else {
            throw UMSError(.invalidArgument, "failed to receive image \(digest): its archive holds another image (or more than one)")
        }
        return manifest
    }
}
