import Logging
import Foundation
#if canImport(Glibc)
import Glibc
#endif
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

    /// The bytes of the regular files under `path` (symbolic links not followed; 0 when it cannot
    /// be read).
    public static func treeBytes(_ path: String) -> Int64 {
        guard let walker = FileManager.default.enumerator(atPath: path) else { return 0 }
        var total: Int64 = 0
        while walker.nextObject() != nil {
            guard let attributes = walker.fileAttributes, attributes[.type] as? FileAttributeType == .typeRegular else { continue }
            total += (attributes[.size] as? NSNumber)?.int64Value ?? 0
        }
        return total
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

    /// Writes through a temporary file and a rename; `secret` files are readable by their owner
    /// only (set before the rename, so they are never readable by others even for a moment).
    /// With `durable`, the file is flushed to disk before the rename and the directory after it
    /// (fsync of both), so a crash or power loss right after keeps either the old or the new
    /// content — the journal's guarantee.
    public static func writeAtomically(_ data: Data, to path: String, secret: Bool = false, durable: Bool = false) throws {
        let staging = "\(path).tmp-\(UUID().uuidString.prefix(8))"
        do {
            guard FileManager.default.createFile(atPath: staging, contents: nil, attributes: [.posixPermissions: secret ? 0o600 : 0o644]) else {
                throw UMSError(.internalError, "failed to create \(staging)")
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: staging))
            do {
                try handle.write(contentsOf: data)
                if durable { try handle.synchronize() }
                try handle.close()
            } catch {
                try? handle.close()
                throw error
            }
            guard rename(staging, path) == 0 else {
                throw UMSError(.internalError, "failed to rename \(staging) to \(path): errno \(errno)")
            }
            if durable { try syncDirectory(of: path) }
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw UMSError(.internalError, "failed to write \(path)", cause: error)
        }
    }

    /// Flushes the directory holding `path` (its entries: a rename made durable).
    static func syncDirectory(of path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let descriptor = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY)
        guard descriptor >= 0 else { throw UMSError(.internalError, "failed to open directory \(directory): errno \(errno)") }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw UMSError(.internalError, "failed to flush directory \(directory): errno \(errno)") }
    }

    /// Makes `path` a directory only its owner can enter (a Coordinator's state directory: it
    /// holds tokens, keys and memory images).
    public static func makePrivateDirectory(_ path: String) throws {
        try makeDirectory(path)
        do {
            try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: path)
        } catch {
            throw UMSError(.internalError, "failed to make \(path) private (mode 0700)", cause: error)
        }
    }

    /// Refuses a file that holds a secret (a token, a key) when its group or others may read it.
    public static func checkPrivate(_ path: String, what: String) throws(UMSError) {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue
        else {
            throw UMSError(.invalidArgument, "failed to read \(what) \(path)")
        }
        guard mode & 0o077 == 0 else {
            throw UMSError(.invalidArgument, "refusing \(what) \(path): its group or others may read it (mode \(String(mode, radix: 8))); run chmod 600 \(path)")
        }
    }
}

/// A directory of JSON documents, one per key, each written atomically and durably (file and
/// directory flushed before `save` returns): the registries of containers and the journals of
/// migrations survive a Coordinator crash or a power loss.
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
        // Records may hold secrets (a container's environment carries its agent's token).
        try FileSystem.writeAtomically(try encoder.encode(value), to: path(key), secret: true, durable: true)
    }

    public func load(key: String) -> Value? {
        guard let data = try? FileSystem.read(path(key)) else { return nil }
        return try? UMSJSON.decoder().decode(Value.self, from: data)
    }

    public func delete(key: String) {
        FileSystem.remove(path(key))
        try? FileSystem.syncDirectory(of: path(key))
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
