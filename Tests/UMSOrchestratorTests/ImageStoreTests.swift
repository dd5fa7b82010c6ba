import Foundation
import NIOCore
import Testing
import UMSModel
import UMSOS
@testable import UMSOrchestrator

/// Real tar streams through the image store: what a peer sends is kept only if it is exactly
/// what was announced.
@Suite("Image store")
struct ImageStoreTests {
    func makeTree() throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ums-tree-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/bin", withIntermediateDirectories: true)
        try Data("payload-of-hello".utf8).write(to: URL(fileURLWithPath: root + "/bin/hello"))
        try FileManager.default.createSymbolicLink(atPath: root + "/bin/link", withDestinationPath: "hello")
        return root
    }

    /// Collects a canonical stream of `directory` as chunks.
    func stream(_ directory: String) async throws -> (chunks: [ByteBuffer], summary: StreamSummary) {
        let box = ChunkBox()
        let summary = try await Archive.create(directory: directory, canonical: true) { await box.append($0) }
        return (await box.chunks, summary)
    }

    @Test("a stream whose digest matches is stored and gives the same digest again")
    func roundTrip() async throws {
        let tree = try makeTree()
        let storeRoot = tree + ".store"
        defer { FileSystem.remove(tree); FileSystem.remove(storeRoot) }
        let store = try ImageStore(root: storeRoot)
        let (chunks, summary) = try await stream(tree)
        let reference = ImageReference(digest: summary.digest)
        let stored = try await store.importStream(chunks.async, expected: reference)
        #expect(stored.digest == summary.digest)
        #expect(store.contains(reference))
        #expect(try await Archive.digest(of: try store.rootfs(reference)).digest == summary.digest)
    }

    @Test("a corrupted stream is refused and nothing is stored", arguments: ["payload-of-hello", "bin/hello"])
    func corrupted(target: String) async throws {
        let tree = try makeTree()
        let storeRoot = tree + ".store"
        defer { FileSystem.remove(tree); FileSystem.remove(storeRoot) }
        let store = try ImageStore(root: storeRoot)
        var (chunks, summary) = try await stream(tree)
        // Flip one byte of the file's contents (the digest no longer matches) or of its header
        // (tar itself refuses the stream).
        var first = chunks[0]
        let bytes = Array(first.readableBytesView)
        let needle = Array(target.utf8)
        let offset = try #require((0..<bytes.count - needle.count).first { Array(bytes[$0..<$0 + needle.count]) == needle })
        first.setInteger(UInt8(ascii: "X"), at: first.readerIndex + offset + needle.count - 1)
        chunks[0] = first
        let error = await #expect(throws: UMSError.self) {
            try await store.importStream(chunks.async, expected: ImageReference(digest: summary.digest))
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("corrupted") == true)
        #expect(!store.contains(ImageReference(digest: summary.digest)))
        #expect(try FileSystem.contents(of: storeRoot).isEmpty)
    }

    @Test("the same content imported twice at once: both succeed, one copy is kept")
    func concurrentImports() async throws {
        let tree = try makeTree()
        let storeRoot = tree + ".store"
        defer { try? FileManager.default.removeItem(atPath: tree); try? FileManager.default.removeItem(atPath: storeRoot) }
        let store = try ImageStore(root: storeRoot)
        let (chunks, summary) = try await stream(tree)
        let expected = ImageReference(digest: summary.digest)
        try await withThrowingTaskGroup(of: ImageReference.self) { group in
            for _ in 0..<4 {
                group.addTask { try await store.importStream(chunks.async, expected: expected) }
            }
            for try await reference in group { #expect(reference.digest == summary.digest) }
        }
        #expect(store.contains(expected))
        #expect(try FileManager.default.contentsOfDirectory(atPath: storeRoot).filter { $0.hasPrefix(".incoming") }.isEmpty, "no staging left behind")
    }

    @Test("a malformed digest is refused before anything is read")
    func malformedDigest() {
        #expect(throws: UMSError.self) { try ImageStore.hexDigest(ImageReference(digest: "md5:abc")) }
        #expect(throws: UMSError.self) { try ImageStore.hexDigest(ImageReference(digest: "sha256:../../etc")) }
    }

    @Test("staging an interrupted import left is removed when the store opens again; images stay")
    func sweepsStaging() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ums-store-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try ImageStore(root: root)
        try FileManager.default.createDirectory(atPath: store.stagingPath() + "/rootfs", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: store.stagingPath(".tar"), contents: Data("partial".utf8))
        try FileManager.default.createDirectory(atPath: "\(root)/\(String(repeating: "a", count: 64))/rootfs", withIntermediateDirectories: true)
        _ = try ImageStore(root: root)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root) == [String(repeating: "a", count: 64)])
    }
}

actor ChunkBox {
    var chunks: [ByteBuffer] = []
    func append(_ chunk: ByteBuffer) { chunks.append(chunk) }
}

extension Array where Element == ByteBuffer {
    /// The chunks as an async sequence, as a request body delivers them.
    var async: AsyncStream<ByteBuffer> {
        AsyncStream { continuation in
            for chunk in self { continuation.yield(chunk) }
            continuation.finish()
        }
    }
}
