import Logging
import Foundation
import UMSModel

/// Small file operations with UMS errors. Writes are atomic (temporary file + rename) so a crash
/// never leaves a torn record behind.
public enum FileSystem {
    public static func exists(_ path: String) -> Bool {
        FileManager.default.fileExists(atPath: path)
    }

    public static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    public static func makeDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw UMSError(.internalError, "failed to create directory \(path)", cause: error)
        }
    }

    public static func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    public static func move(_ from: String, to: String) throws {
        do {
            try FileManager.default.moveItem(atPath: from, toPath: to)
        } catch {
            throw UMSError(.internalError, "failed to move \(from) to \(to)", cause: error)
        }
    }

    public static func contents(of path: String) throws -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: path))?.sorted() ?? []
    }

    public static func read(_ path: String) throws -> Data {
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw UMSError(.notFound, "failed to read \(path)", cause: error)
        }
    }

    public static func writeAtomically(_ data: Data, to path: String) throws {
        do {
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw UMSError(.internalError, "failed to write \(path)", cause: error)
        }
    }
}

/// A directory of JSON documents, one per key, each written atomically: the registries of
/// containers and migrations survive a Coordinator restart.
public struct JSONStore<Value: Codable & Sendable>: Sendable {
    public let directory: String
    let logger: Logger?

    public init(directory: String, logger: Logger? = nil) throws {
        self.directory = directory
        self.logger = logger
        try FileSystem.makeDirectory(directory)
    }

    private func path(_ key: String) -> String { "\(directory)/\(key).json" }

    public func save(_ value: Value, key: String) throws {
        let encoder = UMSJSON.encoder(pretty: true)
        try FileSystem.writeAtomically(try encoder.encode(value), to: path(key))
    }

    public func load(key: String) -> Value? {
        guard let data = try? FileSystem.read(path(key)) else { return nil }
        return try? UMSJSON.decoder().decode(Value.self, from: data)
    }

    public func delete(key: String) {
        FileSystem.remove(path(key))
    }

    /// Every document that decodes. One that does not (torn, or from another version) is
    /// logged and moved aside to `<key>.json.unreadable`, never silently dropped.
    public func loadAll() -> [Value] {
        var values: [Value] = []
        for file in ((try? FileSystem.contents(of: directory)) ?? []).sorted() where file.hasSuffix(".json") {
            let path = "\(directory)/\(file)"
            do {
                values.append(try UMSJSON.decoder().decode(Value.self, from: FileSystem.read(path)))
            } catch {
                logger?.error("unreadable record kept aside", metadata: ["file": "\(path)", "error": "\(error)"])
                try? FileManager.default.moveItem(atPath: path, toPath: path + ".unreadable")
            }
        }
        return values
    }
}
