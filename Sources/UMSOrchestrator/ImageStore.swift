import Foundation
import NIOCore
import UMSModel
import UMSOS

/// Root filesystems held by one system, by content digest: `<root>/<hex>/rootfs`.
public struct ImageStore: Sendable {
    public let root: String

    /// Opens the store; staging files and directories (`.incoming-*`) an interrupted import left
    /// are removed (the store is opened at start-up, before anything imports).
    public init(root: String) throws {
        self.root = root
        try FileSystem.makeDirectory(root)
        for entry in (try? FileSystem.contents(of: root)) ?? [] where entry.hasPrefix(".incoming-") {
            FileSystem.remove("\(root)/\(entry)")
        }
    }

    /// A fresh staging path inside the store (swept at the next start if left behind).
    public func stagingPath(_ suffix: String = "") -> String {
        "\(root)/.incoming-\(UUID().uuidString)\(suffix)"
    }

    static func hexDigest(_ reference: ImageReference) throws -> String {
        let hex = reference.digest.hasPrefix("sha256:") ? String(reference.digest.dropFirst(7)) : ""
        guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw UMSError(.invalidArgument, "invalid image digest '\(reference.digest)': expected sha256:<64 hex digits>")
        }
        return hex
    }

    public func rootfs(_ reference: ImageReference) throws -> String {
        "\(root)/\(try Self.hexDigest(reference))/rootfs"
    }

    public func contains(_ reference: ImageReference) -> Bool {
        (try? rootfs(reference)).map(FileSystem.isDirectory) ?? false
    }

    /// Copies a local directory in (what `ums run --rootfs DIR` does).
    public func importDirectory(_ directory: String, runner: any CommandRunner) async throws -> ImageReference {
        guard FileSystem.isDirectory(directory) else {
            throw UMSError(.invalidArgument, "failed to import rootfs: \(directory) is not a directory on the Coordinator's host")
        }
        let summary = try await Archive.digest(of: directory)
        let reference = ImageReference(digest: summary.digest, source: directory, sizeBytes: summary.bytes)
        if contains(reference) { return reference }
        let staging = "\(root)/.incoming-\(UUID().uuidString)"
        try FileSystem.makeDirectory(staging)
        do {
            try await runner.execute("cp", ["-a", "--", directory, "\(staging)/rootfs"])
            try place(staging, as: reference)
        } catch {
            FileSystem.remove(staging)
            throw UMSError.wrap(error, .internalError, "failed to import rootfs \(directory)")
        }
        return reference
    }

    /// Moves a complete staging directory to its content address. Two imports of the same
    /// content may finish at once (a `ums run` and a peer's upload): the second finds the first's
    /// copy in place, which is the same content, and drops its own.
    func place(_ staging: String, as reference: ImageReference) throws {
        let target = "\(root)/\(try Self.hexDigest(reference))"
        guard !FileSystem.isDirectory(target) else {
            FileSystem.remove(staging)
            return
        }
        do {
            try FileSystem.move(staging, to: target)
        } catch where FileSystem.isDirectory(target) {
            FileSystem.remove(staging)
        }
    }

    /// Receives a canonical tar stream, keeping it only if its digest is the one announced.
    public func importStream<Chunks: AsyncSequence & Sendable>(_ chunks: Chunks, expected: ImageReference) async throws -> ImageReference
        where Chunks.Element == ByteBuffer
    {
        // A digest that is not sha256:<hex> is refused before anything is written.
        _ = try Self.hexDigest(expected)
        let staging = "\(root)/.incoming-\(UUID().uuidString)"
        try FileSystem.makeDirectory("\(staging)/rootfs")
        do {
            let summary: StreamSummary
            do {
                summary = try await Archive.extract(chunks, into: "\(staging)/rootfs")
            } catch {
                throw UMSError(.invalidArgument, "failed to import image: the received stream is not a valid archive (corrupted or truncated transfer)", cause: error)
            }
            guard summary.digest == expected.digest else {
                throw UMSError(.invalidArgument, "failed to import image: received stream has digest \(summary.digest), expected \(expected.digest) (corrupted or truncated transfer)")
            }
            try place(staging, as: expected)
            return ImageReference(digest: expected.digest, source: expected.source, sizeBytes: summary.bytes)
        } catch {
            FileSystem.remove(staging)
            throw UMSError.wrap(error, .internalError, "failed to import image \(expected.digest)")
        }
    }

    public func export(_ reference: ImageReference, consume: @Sendable (ByteBuffer) async throws -> Void) async throws {
        guard contains(reference) else {
            throw UMSError(.notFound, "failed to export image: \(reference.digest) is not on this system")
        }
        try await Archive.create(directory: try rootfs(reference), canonical: true, consume: consume)
    }
}

/// An adapter whose images are UMS's own content-addressed store: the image half of
/// `Orchestrator`, the same for every such adapter.
protocol ImageStoreBacked: ImageHolding {
    var images: ImageStore { get }
    var runner: any CommandRunner { get }
}

extension ImageStoreBacked {
    public func hasImage(_ image: ImageReference) async -> Bool { images.contains(image) }

    public func importImage<Chunks: AsyncSequence & Sendable>(_ chunks: Chunks, expected: ImageReference) async throws -> ImageReference
        where Chunks.Element == ByteBuffer
    {
        try await images.importStream(chunks, expected: expected)
    }

    public func exportImage(_ image: ImageReference, consume: @Sendable (ByteBuffer) async throws -> Void) async throws {
        try await images.export(image, consume: consume)
    }

    /// Imports a local directory as an image (for `ums run --rootfs`).
    public func importDirectory(_ directory: String) async throws -> ImageReference {
        try await images.importDirectory(directory, runner: runner)
    }
}

/// An adapter whose engine also holds images of its own (adopted containers' and services'),
/// moved by the engine's image ID: UMS's root filesystems come from the store, the engine's from
/// the engine (Docker, Podman, Swarm).
protocol EngineImageHolding: ImageStoreBacked {
    func hasEngineImage(_ image: ImageReference) async -> Bool
    func importEngineImage<Chunks: AsyncSequence & Sendable>(_ chunks: Chunks, expected: ImageReference) async throws -> ImageReference
        where Chunks.Element == ByteBuffer
    func exportEngineImage(_ image: ImageReference, consume: @Sendable (ByteBuffer) async throws -> Void) async throws
}

extension EngineImageHolding {
    public func hasImage(_ image: ImageReference) async -> Bool {
        image.format == .engine ? await hasEngineImage(image) : images.contains(image)
    }

    public func importImage<Chunks: AsyncSequence & Sendable>(_ chunks: Chunks, expected: ImageReference) async throws -> ImageReference
        where Chunks.Element == ByteBuffer
    {
        expected.format == .engine ? try await importEngineImage(chunks, expected: expected) : try await images.importStream(chunks, expected: expected)
    }

    public func exportImage(_ image: ImageReference, consume: @Sendable (ByteBuffer) async throws -> Void) async throws {
        if image.format == .engine {
            try await exportEngineImage(image, consume: consume)
        } else {
            try await images.export(image, consume: consume)
        }
    }
}
