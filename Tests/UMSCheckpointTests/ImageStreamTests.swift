import Foundation
import NIOCore
import Testing
import UMSCheckpoint
import UMSModel

/// The synchronization module with real files: a directory that grows while it is streamed
/// arrives whole, and a damaged stream is refused.
@Suite("Image stream")
struct ImageStreamTests {
    func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ums-stream-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Streams `source` while `writer` keeps appending to it, and returns the framed chunks.
    func stream(_ source: String, writer: @escaping @Sendable () async throws -> Void) async throws -> ([ByteBuffer], ImageStream.Summary) {
        let done = Flag()
        let box = Chunks()
        async let summary = ImageStream.send(directory: source, isFinished: { await done.value }) { await box.append($0) }
        try await writer()
        await done.set()
        let finished = try await summary
        return (await box.all, finished)
    }

    @Test("files that grow while they are streamed arrive complete")
    func growingFiles() async throws {
        let source = try temporaryDirectory()
        let target = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: target) }
        let (chunks, sent) = try await stream(source) {
            let handle = try #require(FileHandle(forWritingAtPath: { FileManager.default.createFile(atPath: source + "/pages-1.img", contents: nil); return source + "/pages-1.img" }()))
            for index in 0..<40 {
                handle.write(Data(repeating: UInt8(index), count: 300_000))
                try await Task.sleep(for: .milliseconds(1))
            }
            try handle.close()
            try Data("inventory".utf8).write(to: URL(fileURLWithPath: source + "/inventory.img"))
        }
        let received = try await ImageStream.receive(chunks.async, into: target)
        #expect(received == sent)
        #expect(received.files == 2)
        #expect(received.bytes == 40 * 300_000 + 9)
        for name in ["pages-1.img", "inventory.img"] {
            #expect(FileManager.default.contents(atPath: target + "/" + name) == FileManager.default.contents(atPath: source + "/" + name))
        }
    }

    @Test("a stream cut short, with a bad header or a path in a file name is refused")
    func damaged() async throws {
        let source = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: source) }
        try Data(repeating: 7, count: 10_000).write(to: URL(fileURLWithPath: source + "/core-1.img"))
        let (chunks, _) = try await stream(source) {}
        var all = ByteBuffer()
        for var chunk in chunks { all.writeBuffer(&chunk) }

        let truncated = try #require(all.getSlice(at: 0, length: all.readableBytes - 10))
        var badHeader = all
        badHeader.setBytes(Array("XXXX".utf8), at: 0)
        var escaping = all
        let nameOffset = 5 + 1 + 2  // header, kind, name length
        escaping.setBytes(Array("../e-1.img".utf8), at: nameOffset)  // same length as core-1.img

        for damaged in [truncated, badHeader, escaping] {
            let target = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: target) }
            let error = await #expect(throws: UMSError.self) { try await ImageStream.receive([damaged].async, into: target) }
            #expect(error?.code == .invalidArgument)
            #expect(!FileManager.default.fileExists(atPath: target + "/../e-1.img"))
        }
    }
}

actor Flag {
    var value = false
    func set() { value = true }
}

actor Chunks {
    var all: [ByteBuffer] = []
    func append(_ chunk: ByteBuffer) { all.append(chunk) }
}

extension Array where Element == ByteBuffer {
    var async: AsyncStream<ByteBuffer> {
        AsyncStream { continuation in
            for chunk in self { continuation.yield(chunk) }
            continuation.finish()
        }
    }
}
