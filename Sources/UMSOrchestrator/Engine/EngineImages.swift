import Foundation
import Logging
import NIOCore
import UMSModel
import UMSOS

/// An engine's own images (adopted containers' and services'), by the engine's image ID: what the
/// Docker, Podman and Swarm adapters move with `docker save` and `docker load`.
extension EngineAPI {
    func hasImage(_ image: ImageReference) async -> Bool {
        (try? await request(.GET, "/images/\(image.digest)/json", operation: "inspect image")) != nil
    }

    /// Gives an engine image (moved by ID) the name the source ran it by — never a name this
    /// engine already uses for an image of its own. Best effort: the container runs by ID anyway.
    func nameImage(_ image: ImageReference, as name: String?, logger: Logger) async {
        guard let name, image.format == .engine, (try? EngineConfiguration.validateImageName(name)) != nil else { return }
        if (try? await request(.GET, "/images/\(name)/json", operation: "inspect image \(name)")) != nil { return }
        let slash = name.lastIndex(of: "/") ?? name.startIndex
        let colon = name[slash...].lastIndex(of: ":")
        let (repository, tag) = colon.map { (String(name[..<$0]), String(name[name.index(after: $0)...])) } ?? (name, "latest")
        do {
            try await request(.POST, "/images/\(image.digest)/tag?repo=\(repository)&tag=\(tag)", operation: "name image \(image.digest.prefix(19)) \(name)")
        } catch {
            logger.warning("could not name a moved image as at the source", metadata: ["image": "\(image.digest)", "name": "\(name)", "error": "\(error)"])
        }
    }

    /// `GET /images/{id}/get` (docker save / podman's compatible save): the image's layers and
    /// configuration as one tar, streamed from a file.
    func saveImage(_ image: ImageReference, staging: ImageStore, consume: @Sendable (ByteBuffer) async throws -> Void) async throws {
        let file = staging.stagingPath(".tar")
        defer { FileSystem.remove(file) }
        try await download(.GET, "/images/\(image.digest)/get", to: file, operation: "save image \(image.digest.prefix(19))")
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: file))
        defer { try? handle.close() }
        while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
            try await consume(ByteBuffer(data: data))
        }
    }

    /// A peer's `docker save` stream into a private staging file (the caller removes it), and the
    /// image as received (its size).
    static func receive<Chunks: AsyncSequence & Sendable>(_ chunks: Chunks, expected: ImageReference, staging: ImageStore) async throws -> (file: String, image: ImageReference)
        where Chunks.Element == ByteBuffer
    {
        let file = staging.stagingPath(".tar")
        guard FileManager.default.createFile(atPath: file, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw UMSError(.internalError, "failed to receive image \(expected.digest): cannot write \(file)")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        var bytes: Int64 = 0
        do {
            for try await chunk in chunks {
                bytes += Int64(chunk.readableBytes)
                try handle.write(contentsOf: Data(buffer: chunk))
            }
            try handle.close()
        } catch {
            try? handle.close()
            FileSystem.remove(file)
            throw error
        }
        var received = expected
        received.sizeBytes = bytes
        return (file, received)
    }

    /// `POST /images/load`, then the engine must hold the image under the announced ID — the ID
    /// is the digest of the image's configuration, which names every layer by its content, so
    /// that is the check that what arrived is what was sent.
    func loadImage(file: String, expected: ImageReference) async throws {
        let data = try FileSystem.read(file)
        try await request(.POST, "/images/load", body: .bytes(ByteBuffer(data: data)), contentType: "application/x-tar", timeout: .seconds(600), operation: "load image \(expected.digest.prefix(19))")
        guard await hasImage(expected) else {
            throw UMSError(.invalidArgument, "failed to receive image \(expected.digest): the loaded archive holds another image (corrupted transfer?)")
        }
    }
}
