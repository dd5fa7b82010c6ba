import UMSModel

/// The bodies UMS sends to and reads from a Docker Swarm manager's API (Docker Engine 1.41:
/// services, tasks, nodes), the part UMS uses. Decoded into these, never walked as dictionaries.
public enum SwarmAPI {
    /// A service's specification: `POST /services/create`, `POST /services/{id}/update`, and
    /// `Spec` in `GET /services/{id}`.
    public struct ServiceSpec: Codable, Sendable, Equatable {
        public var name: String
        public var labels: [String: String]?
        public var taskTemplate: TaskTemplate
        public var mode: Mode?
        public var endpointSpec: EndpointSpec?

        enum CodingKeys: String, CodingKey {
            case name = "Name", labels = "Labels", taskTemplate = "TaskTemplate", mode = "Mode", endpointSpec = "EndpointSpec"
        }
    }

    public struct TaskTemplate: Codable, Sendable, Equatable {
        public var containerSpec: ContainerSpec
        public var resources: Resources?
        public var restartPolicy: RestartPolicy?
        public var placement: Placement?
        /// Raised by one to make Swarm replace the task (`docker service update --force`).
        public var forceUpdate: UInt64?

        enum CodingKeys: String, CodingKey {
            case containerSpec = "ContainerSpec", resources = "Resources", restartPolicy = "RestartPolicy", placement = "Placement"
            case forceUpdate = "ForceUpdate"
        }
    }

    public struct ContainerSpec: Codable, Sendable, Equatable {
        public var image: String
        public var labels: [String: String]?
        /// Replaces the image's entrypoint (Swarm's `Command`); `Args` follow it.
        public var command: [String]?
        public var args: [String]?
        public var hostname: String?
        public var env: [String]?
        public var dir: String?
        public var user: String?
        public var mounts: [Mount]?
        public var capabilityAdd: [String]?
        public var capabilityDrop: [String]?

        enum CodingKeys: String, CodingKey {
            case image = "Image", labels = "Labels", command = "Command", args = "Args", hostname = "Hostname", env = "Env", dir = "Dir"
            case user = "User", mounts = "Mounts", capabilityAdd = "CapabilityAdd", capabilityDrop = "CapabilityDrop"
        }
    }

    public struct Mount: Codable, Sendable, Equatable {
        public var type: String
        public var source: String?
        public var target: String
        public var readOnly: Bool?
        public var tmpfsOptions: TmpfsOptions?

        enum CodingKeys: String, CodingKey { case type = "Type", source = "Source", target = "Target", readOnly = "ReadOnly", tmpfsOptions = "TmpfsOptions" }
    }

    public struct TmpfsOptions: Codable, Sendable, Equatable {
        public var sizeBytes: Int64?
        public var mode: UInt32?
        enum CodingKeys: String, CodingKey { case sizeBytes = "SizeBytes", mode = "Mode" }
    }

    public struct Resources: Codable, Sendable, Equatable {
        public var limits: Limits?
        enum CodingKeys: String, CodingKey { case limits = "Limits" }
    }

    public struct Limits: Codable, Sendable, Equatable {
        public var nanoCPUs: Int64?
        public var memoryBytes: Int64?
        public var pids: Int64?
        enum CodingKeys: String, CodingKey { case nanoCPUs = "NanoCPUs", memoryBytes = "MemoryBytes", pids = "Pids" }
    }

    public struct RestartPolicy: Codable, Sendable, Equatable {
        /// `none`, `on-failure` or `any`.
        public var condition: String?
        /// Nanoseconds between restarts.
        public var delay: Int64?
        enum CodingKeys: String, CodingKey { case condition = "Condition", delay = "Delay" }
    }

    public struct Placement: Codable, Sendable, Equatable {
        /// `node.hostname==X`, `node.labels.K==V`, …
        public var constraints: [String]?
        enum CodingKeys: String, CodingKey { case constraints = "Constraints" }
    }

    public struct Mode: Codable, Sendable, Equatable {
        public var replicated: Replicated?
        enum CodingKeys: String, CodingKey { case replicated = "Replicated" }
    }

    public struct Replicated: Codable, Sendable, Equatable {
        public var replicas: UInt64?
        enum CodingKeys: String, CodingKey { case replicas = "Replicas" }
    }

    public struct EndpointSpec: Codable, Sendable, Equatable {
        /// `vip` or `dnsrr` (a VIP needs IPVS, which this kernel lacks).
        public var mode: String?
        public var ports: [PortConfig]?
        enum CodingKeys: String, CodingKey { case mode = "Mode", ports = "Ports" }
    }

    public struct PortConfig: Codable, Sendable, Equatable {
        public var `protocol`: String?
        public var targetPort: Int?
        public var publishedPort: Int?
        /// `host` (on the node running the task) or `ingress` (the routing mesh: IPVS).
        public var publishMode: String?
        enum CodingKeys: String, CodingKey { case `protocol` = "Protocol", targetPort = "TargetPort", publishedPort = "PublishedPort", publishMode = "PublishMode" }
    }

    /// `POST /services/create`'s answer.
    public struct CreateResponse: Codable, Sendable, Equatable {
        public var id: String
        enum CodingKeys: String, CodingKey { case id = "ID" }
    }

    /// `GET /services/{id}`, `GET /services`.
    public struct Service: Codable, Sendable, Equatable {
        public struct Version: Codable, Sendable, Equatable {
            public var index: UInt64
            enum CodingKeys: String, CodingKey { case index = "Index" }
        }

        public var id: String
        public var version: Version
        public var spec: ServiceSpec
        enum CodingKeys: String, CodingKey { case id = "ID", version = "Version", spec = "Spec" }
    }

    /// `GET /tasks`: one per attempt to run a service's replica.
    public struct Task: Codable, Sendable, Equatable {
        public struct Status: Codable, Sendable, Equatable {
            public var state: String?
            public var message: String?
            public var err: String?
            public var containerStatus: ContainerStatus?
            enum CodingKeys: String, CodingKey { case state = "State", message = "Message", err = "Err", containerStatus = "ContainerStatus" }
        }

        public struct ContainerStatus: Codable, Sendable, Equatable {
            public var containerID: String?
            public var pid: Int?
            enum CodingKeys: String, CodingKey { case containerID = "ContainerID", pid = "PID" }
        }

        public var id: String
        public var nodeID: String?
        public var slot: Int?
        public var desiredState: String?
        public var status: Status?
        public var createdAt: String?

        enum CodingKeys: String, CodingKey {
            case id = "ID", nodeID = "NodeID", slot = "Slot", desiredState = "DesiredState", status = "Status", createdAt = "CreatedAt"
        }
    }

    /// `GET /nodes`.
    public struct Node: Codable, Sendable, Equatable {
        public struct Description: Codable, Sendable, Equatable {
            public var hostname: String?
            enum CodingKeys: String, CodingKey { case hostname = "Hostname" }
        }

        public struct Status: Codable, Sendable, Equatable {
            public var state: String?
            public var addr: String?
            enum CodingKeys: String, CodingKey { case state = "State", addr = "Addr" }
        }

        public var id: String
        public var description: Description?
        public var status: Status?
        enum CodingKeys: String, CodingKey { case id = "ID", description = "Description", status = "Status" }
    }

    /// `GET /images/{name}/json` on a node: the image's ID and its own command.
    public struct ImageInspect: Codable, Sendable, Equatable {
        public struct Config: Codable, Sendable, Equatable {
            public var entrypoint: [String]?
            public var cmd: [String]?
            enum CodingKeys: String, CodingKey { case entrypoint = "Entrypoint", cmd = "Cmd" }
        }

        public var id: String
        public var config: Config?
        enum CodingKeys: String, CodingKey { case id = "Id", config = "Config" }
    }

    /// `GET /info`: the part that says which swarm node an engine is.
    public struct Info: Codable, Sendable, Equatable {
        public struct Swarm: Codable, Sendable, Equatable {
            public var nodeID: String?
            public var localNodeState: String?
            public var controlAvailable: Bool?
            enum CodingKeys: String, CodingKey { case nodeID = "NodeID", localNodeState = "LocalNodeState", controlAvailable = "ControlAvailable" }
        }

        public var swarm: Swarm?
        enum CodingKeys: String, CodingKey { case swarm = "Swarm" }
    }
}
