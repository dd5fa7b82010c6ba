import UMSModel

/// The part of the OCI runtime spec (`config.json`) that UMS reads or writes. Every object is
/// `Open`: fields UMS does not declare (runc's defaults: mounts' details, masked paths, devices,
/// rlimits, …) come back unchanged when a spec round-trips.
public enum OCI {
    public typealias Spec = Open<SpecFields>

    public struct SpecFields: KnownFields, Equatable {
        public var process: Open<Process>?
        public var root: Open<Root>?
        public var hostname: String?
        public var annotations: [String: String]?
        public var mounts: [Open<Mount>]?
        public var linux: Open<Linux>?

        enum CodingKeys: String, CodingKey, CaseIterable { case process, root, hostname, annotations, mounts, linux }
        public static let knownKeys = keys(CodingKeys.self)
    }

    public struct Process: KnownFields, Equatable {
        public var terminal: Bool?
        public var args: [String]?
        public var env: [String]?
        public var cwd: String?
        public var capabilities: Open<Capabilities>?

        enum CodingKeys: String, CodingKey, CaseIterable { case terminal, args, env, cwd, capabilities }
        public static let knownKeys = keys(CodingKeys.self)
    }

    public struct Capabilities: KnownFields, Equatable {
        public var bounding: [String]?
        public var effective: [String]?
        public var permitted: [String]?

        enum CodingKeys: String, CodingKey, CaseIterable { case bounding, effective, permitted }
        public static let knownKeys = keys(CodingKeys.self)
    }

    public struct Root: KnownFields, Equatable {
        public var path: String
        public var readonly: Bool?

        enum CodingKeys: String, CodingKey, CaseIterable { case path, readonly }
        public static let knownKeys = keys(CodingKeys.self)
    }

    public struct Mount: KnownFields, Equatable {
        public var destination: String
        public var type: String?
        public var source: String?
        public var options: [String]?

        enum CodingKeys: String, CodingKey, CaseIterable { case destination, type, source, options }
        public static let knownKeys = keys(CodingKeys.self)
    }

    public struct Namespace: Codable, Sendable, Equatable {
        public var type: String
        public var path: String?

        public init(type: String, path: String? = nil) {
            self.type = type
            self.path = path
        }
    }

    public struct Linux: KnownFields, Equatable {
        public var namespaces: [Namespace]?
        public var cgroupsPath: String?
        /// Kept as it is, or removed; UMS never writes a filter of its own.
        public var seccomp: JSONValue?
        public var readonlyPaths: [String]?
        public var resources: Open<Resources>?

        enum CodingKeys: String, CodingKey, CaseIterable { case namespaces, cgroupsPath, seccomp, readonlyPaths, resources }
        public static let knownKeys = keys(CodingKeys.self)
    }

    public struct Resources: KnownFields, Equatable {
        public var memory: Memory?
        public var cpu: CPU?
        public var pids: Pids?

        enum CodingKeys: String, CodingKey, CaseIterable { case memory, cpu, pids }
        public static let knownKeys = keys(CodingKeys.self)
    }

    public struct Memory: Codable, Sendable, Equatable {
        public var limit: Int64
    }

    public struct CPU: Codable, Sendable, Equatable {
        public var quota: Int64
        public var period: UInt64
    }

    public struct Pids: Codable, Sendable, Equatable {
        public var limit: Int64
    }
}

