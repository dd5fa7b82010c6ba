import Foundation

/// Any JSON value. Only for what is truly dynamic: the fields of a document UMS does not know
/// but must hand back unchanged (`Open`).
public enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case unsigned(UInt64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .int(value)
        } else if let value = try? container.decode(UInt64.self) {
            self = .unsigned(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .unsigned(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

/// The fields a document type knows, by their JSON names.
public protocol KnownFields: Codable, Sendable {
    static var knownKeys: Set<String> { get }
}

/// A JSON object read into `Known`, keeping every field `Known` does not declare, so that a
/// document UMS changes in part (an OCI runtime spec, a checkpoint's config) round-trips without
/// losing what it does not understand. Its fields read and write as `Known`'s own.
@dynamicMemberLookup
public struct Open<Known: KnownFields>: Codable, Sendable {
    public var known: Known
    /// The fields `Known` does not declare, as they came.
    public var unknown: [String: JSONValue]

    public init(_ known: Known, unknown: [String: JSONValue] = [:]) {
        self.known = known
        self.unknown = unknown
    }

    public subscript<Value>(dynamicMember keyPath: WritableKeyPath<Known, Value>) -> Value {
        get { known[keyPath: keyPath] }
        set { known[keyPath: keyPath] = newValue }
    }

    public init(from decoder: any Decoder) throws {
        known = try Known(from: decoder)
        let all = try [String: JSONValue](from: decoder)
        unknown = all.filter { !Known.knownKeys.contains($0.key) }
    }

    public func encode(to encoder: any Encoder) throws {
        // `Known`'s fields first (as its own Codable writes them), then the others beside them.
        let data = try JSONEncoder().encode(known)
        var merged = try JSONDecoder().decode([String: JSONValue].self, from: data)
        for (key, value) in unknown where merged[key] == nil && !Known.knownKeys.contains(key) {
            merged[key] = value
        }
        try merged.encode(to: encoder)
    }
}

extension KnownFields where Self: Codable {
    /// Known keys from a `CaseIterable` coding-key enum.
    public static func keys<Keys: CodingKey & CaseIterable>(_ keys: Keys.Type) -> Set<String> {
        Set(Keys.allCases.map(\.stringValue))
    }
}
extension Open: Equatable where Known: Equatable {}
