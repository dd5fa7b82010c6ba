import UMSModel

/// The bodies UMS sends to and reads from a container engine's API (Docker Engine 1.41, and
/// Podman's compatible and libpod endpoints), as the part UMS uses. What an engine sends is
/// decoded into these, never walked as dictionaries.
public enum DockerAPI {
    /// `POST /containers/create`.
    public struct CreateBody: Codable, Sendable, Equatable {
        public var image: String
        public var cmd: [String]
        public var entrypoint: [String]
        public var env: [String]
        public var workingDir: String
        public var labels: [String: String]
        public var exposedPorts: [String: Empty]
        public var hostConfig: HostConfig
        public var hostname: String
        public var user: String?

        enum CodingKeys: String, CodingKey {
            case image = "Image", cmd = "Cmd", entrypoint = "Entrypoint", env = "Env", workingDir = "WorkingDir"
            case labels = "Labels", exposedPorts = "ExposedPorts", hostConfig = "HostConfig", hostname = "Hostname", user = "User"
        }
    }

    /// `RestartPolicy` in a create or update body, and in an inspect.
    public struct RestartPolicy: Codable, Sendable, Equatable {
        public var name: String?
        enum CodingKeys: String, CodingKey { case name = "Name" }
        public init(name: String?) { self.name = name }
    }

    /// `POST /containers/{id}/update`: only the restart policy.
    public struct UpdateBody: Codable, Sendable, Equatable {
        public var restartPolicy: RestartPolicy
        enum CodingKeys: String, CodingKey { case restartPolicy = "RestartPolicy" }
    }

    /// `GET /containers/json?all=true`: one row per container.
    public struct ContainerSummary: Codable, Sendable, Equatable {
        public var id: String
        public var names: [String]?
        public var labels: [String: String]?
        enum CodingKeys: String, CodingKey { case id = "Id", names = "Names", labels = "Labels" }
    }

    /// `{}` in JSON (Docker's way of listing exposed ports).
    public struct Empty: Codable, Sendable, Equatable {}

    public struct HostConfig: Codable, Sendable, Equatable {
        public var portBindings: [String: [PortBinding]] = [:]
        public var privileged: Bool?
        public var capAdd: [String]?
        public var capDrop: [String]?
        public var securityOpt: [String]?
        public var maskedPaths: [String]?
        public var readonlyPaths: [String]?
        public var memory: Int64?
        public var nanoCpus: Int64?
        public var pidsLimit: Int64?
        public var restartPolicy: RestartPolicy?
        /// `NAME:/path[:ro]` for named volumes.
        public var binds: [String]?
        /// `--tmpfs`: mount point → options.
        public var tmpfs: [String: String]?

        enum CodingKeys: String, CodingKey {
            case portBindings = "PortBindings", privileged = "Privileged", capAdd = "CapAdd", capDrop = "CapDrop"
            case securityOpt = "SecurityOpt", maskedPaths = "MaskedPaths", readonlyPaths = "ReadonlyPaths"
            case memory = "Memory", nanoCpus = "NanoCpus", pidsLimit = "PidsLimit", restartPolicy = "RestartPolicy", binds = "Binds", tmpfs = "Tmpfs"
        }
    }

    public struct PortBinding: Codable, Sendable, Equatable {
        public var hostIp: String
        public var hostPort: String

        enum CodingKeys: String, CodingKey { case hostIp = "HostIp", hostPort = "HostPort" }
    }

    /// `POST /containers/{id}/checkpoints`.
    public struct CheckpointBody: Codable, Sendable, Equatable {
        public var checkpointID: String
        public var checkpointDir: String
        public var exit: Bool

        enum CodingKeys: String, CodingKey { case checkpointID = "CheckpointID", checkpointDir = "CheckpointDir", exit = "Exit" }
    }

    /// `GET /version`.
    public struct Version: Codable, Sendable, Equatable {
        public var version: String?
        enum CodingKeys: String, CodingKey { case version = "Version" }
    }

    /// `GET /info`.
    public struct Info: Codable, Sendable, Equatable {
        public var dockerRootDir: String
        enum CodingKeys: String, CodingKey { case dockerRootDir = "DockerRootDir" }
    }

    /// `GET /images/{name}/json` (and libpod's).
    public struct ImageInspect: Codable, Sendable, Equatable {
        public var id: String
        enum CodingKeys: String, CodingKey { case id = "Id" }
    }

    /// `GET /containers/{id}/json`.
    public struct ContainerInspect: Codable, Sendable, Equatable {
        public struct State: Codable, Sendable, Equatable {
            public var status: String?
            public var pid: Int?
            enum CodingKeys: String, CodingKey { case status = "Status", pid = "Pid" }
        }

        public struct Network: Codable, Sendable, Equatable {
            public var ipAddress: String?
            enum CodingKeys: String, CodingKey { case ipAddress = "IPAddress" }
        }

        public struct NetworkSettings: Codable, Sendable, Equatable {
            public var ipAddress: String?
            public var networks: [String: Network]?
            enum CodingKeys: String, CodingKey { case ipAddress = "IPAddress", networks = "Networks" }
        }

        /// What the container was made with (the part UMS reads to adopt it).
        public struct Config: Codable, Sendable, Equatable {
            public var cmd: [String]?
            public var entrypoint: [String]?
            public var env: [String]?
            public var workingDir: String?
            public var user: String?
            public var labels: [String: String]?
            public var hostname: String?
            /// The image's name as the container was made with it (`docker run NAME`).
            public var image: String?
            enum CodingKeys: String, CodingKey {
                case cmd = "Cmd", entrypoint = "Entrypoint", env = "Env", workingDir = "WorkingDir", user = "User"
                case labels = "Labels", hostname = "Hostname", image = "Image"
            }
        }

        public struct InspectHostConfig: Codable, Sendable, Equatable {
            public var portBindings: [String: [PortBinding]?]?
            public var privileged: Bool?
            public var capAdd: [String]?
            public var networkMode: String?
            public var devices: [Device]?
            public var memory: Int64?
            public var nanoCpus: Int64?
            public var pidsLimit: Int64?
            public var restartPolicy: RestartPolicy?
            public var pidMode: String?
            public var ipcMode: String?
            /// `--tmpfs`: mount point → options (`size=64m,mode=1777`).
            public var tmpfs: [String: String]?
            enum CodingKeys: String, CodingKey {
                case portBindings = "PortBindings", privileged = "Privileged", capAdd = "CapAdd", networkMode = "NetworkMode"
                case devices = "Devices", memory = "Memory", nanoCpus = "NanoCpus", pidsLimit = "PidsLimit"
                case restartPolicy = "RestartPolicy", pidMode = "PidMode", ipcMode = "IpcMode", tmpfs = "Tmpfs"
            }
        }

        public struct Device: Codable, Sendable, Equatable {
            public var pathOnHost: String?
            enum CodingKeys: String, CodingKey { case pathOnHost = "PathOnHost" }
        }

        public struct Mount: Codable, Sendable, Equatable {
            public var type: String?
            public var name: String?
            public var source: String?
            public var destination: String?
            public var rw: Bool?
            enum CodingKeys: String, CodingKey { case type = "Type", name = "Name", source = "Source", destination = "Destination", rw = "RW" }
        }

        public var id: String
        public var name: String?
        /// The image's ID (`sha256:<hex>`).
        public var image: String?
        public var state: State?
        public var networkSettings: NetworkSettings?
        public var config: Config?
        public var hostConfig: InspectHostConfig?
        public var mounts: [Mount]?

        enum CodingKeys: String, CodingKey {
            case id = "Id", name = "Name", image = "Image", state = "State", networkSettings = "NetworkSettings"
            case config = "Config", hostConfig = "HostConfig", mounts = "Mounts"
        }

        /// The container's address on its engine's network, if it has one.
        public var address: String? {
            if let address = networkSettings?.ipAddress, !address.isEmpty { return address }
            return networkSettings?.networks?.keys.sorted().compactMap { networkSettings?.networks?[$0]?.ipAddress }.first { !$0.isEmpty }
        }
    }

    /// `GET /containers/{id}/top`: one row per process.
    public struct Top: Codable, Sendable, Equatable {
        public var processes: [[String]]?
        enum CodingKeys: String, CodingKey { case processes = "Processes" }
    }

    /// An engine's error answer.
    public struct ErrorBody: Codable, Sendable, Equatable {
        public var message: String
    }
}

/// Podman's own API (libpod) where it differs from Docker's.
public enum LibpodAPI {
    /// `POST /libpod/containers/create` (libpod's SpecGenerator, the part UMS sets).
    public struct CreateBody: Codable, Sendable, Equatable {
        public var name: String
        public var image: String
        public var command: [String]
        public var entrypoint: [String]
        public var env: [String: String]
        public var workDir: String
        public var hostname: String
        public var labels: [String: String]
        public var portmappings: [PortMapping]
        public var privileged: Bool?
        public var capDrop: [String]?
        public var capAdd: [String]?
        public var noNewPrivileges: Bool?
        public var seccompProfilePath: String?
        public var resourceLimits: OCI.Resources?
        public var volumes: [NamedVolume]?
        public var mounts: [BindMountSpec]?

        enum CodingKeys: String, CodingKey {
            case name, image, command, entrypoint, env, hostname, labels, portmappings, privileged, volumes, mounts
            case workDir = "work_dir", capDrop = "cap_drop", capAdd = "cap_add", noNewPrivileges = "no_new_privileges"
            case seccompProfilePath = "seccomp_profile_path", resourceLimits = "resource_limits"
        }
    }

    /// A bind mount in a SpecGenerator (an OCI mount).
    public struct BindMountSpec: Codable, Sendable, Equatable {
        public var destination: String
        public var type: String
        public var source: String
        public var options: [String]
    }

    /// A named volume in a SpecGenerator.
    public struct NamedVolume: Codable, Sendable, Equatable {
        public var name: String
        public var dest: String
        public var options: [String]
        enum CodingKeys: String, CodingKey { case name = "Name", dest = "Dest", options = "Options" }
    }

    public struct PortMapping: Codable, Sendable, Equatable {
        public var hostPort: Int
        public var containerPort: Int
        public var `protocol`: String

        enum CodingKeys: String, CodingKey { case hostPort = "host_port", containerPort = "container_port", `protocol` }
    }

    /// A checkpoint export's `config.dump`: only the image it names is changed; the rest is
    /// Podman's and goes back as it came.
    public struct CheckpointConfig: KnownFields, Equatable {
        public var rootfsImageID: String?
        /// The name Podman resolves (and would pull) the image by at the restore.
        public var rootfsImageName: String?

        enum CodingKeys: String, CodingKey, CaseIterable { case rootfsImageID, rootfsImageName }
        public static let knownKeys = keys(CodingKeys.self)
    }
}
