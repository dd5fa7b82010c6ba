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

/// Version 2 of the stream (issue 17): zero pages announced, the rest compressed where it pays.
@Suite("Image stream: zero pages and compression")
struct CompressedImageStreamTests {
    let base = ImageStreamTests()

    /// 1 MiB of random bytes, 1 MiB of zero pages, 2 MiB of text-like pages, a short odd tail.
    static func content() -> Data {
        var data = randomBytes(1 << 20)
        data.append(Data(count: 1 << 20))
        let line = Array("key:12345 value:the quick brown fox jumps over the lazy dog\n".utf8)
        data.append(Data((0..<(2 << 20)).map { line[$0 % line.count] }))
        data.append(Data([1, 2, 3, 0, 0, 7]))
        return data
    }

    func roundTrip(_ compression: ImageCompression?, _ content: Data) async throws -> (ImageStream.Summary, ImageStream.Summary) {
        let source = try base.temporaryDirectory()
        let target = try base.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: target) }
        try content.write(to: URL(fileURLWithPath: source + "/pages-1.img"))
        try Data("inventory".utf8).write(to: URL(fileURLWithPath: source + "/inventory.img"))
        let box = Chunks()
        let sent = try await ImageStream.send(directory: source, isFinished: { true }, compression: compression) { await box.append($0) }
        let received = try await ImageStream.receive(await box.all.async, into: target)
        #expect(FileManager.default.contents(atPath: target + "/pages-1.img") == content)
        #expect(FileManager.default.contents(atPath: target + "/inventory.img") == Data("inventory".utf8))
        #expect(received == sent)
        return (sent, received)
    }

    @Test("every policy delivers the same bytes; zero pages never cross; compression shrinks what compresses", arguments: ImageCompression.allCases)
    func policies(_ compression: ImageCompression) async throws {
        let content = Self.content()
        let (sent, _) = try await roundTrip(compression, content)
        #expect(sent.bytes == Int64(content.count) + 9)
        #expect(sent.zeroBytes == 1 << 20, "the zero pages are announced, not sent")
        if compression == .off {
            #expect(sent.compressedBytes == 0)
            #expect(sent.wireBytes > Int64(content.count) - (1 << 20))
        } else {
            #expect(sent.compressedBytes >= 2 << 20, "the text-like pages go compressed")
            #expect(sent.wireBytes < Int64(content.count) / 3, "\(sent.wireBytes) bytes crossed for \(content.count)")
        }
    }

    @Test("auto sends random data as it is, and the plain (version 1) stream is what it always was")
    func randomAndPlain() async throws {
        let content = randomBytes(3 << 20)
        let (auto, _) = try await roundTrip(.auto, content)
        #expect(auto.compressedBytes == 0 && auto.zeroBytes == 0)
        #expect(auto.wireBytes < Int64(content.count) + 1024)
        let (plain, _) = try await roundTrip(nil, Self.content())
        #expect(plain.zeroBytes == 0 && plain.compressedBytes == 0)
    }

    /// One frame by hand: kind, name, offset, length field, payload.
    static func frame(_ kind: UInt8, _ name: String, offset: UInt64, length: UInt32, payload: [UInt8] = []) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeInteger(kind)
        buffer.writeInteger(UInt16(name.utf8.count))
        buffer.writeString(name)
        buffer.writeInteger(offset)
        buffer.writeInteger(length)
        buffer.writeBytes(payload)
        return Array(buffer.readableBytesView)
    }

    static func compressedPayload(raw: UInt32, _ bytes: [UInt8]) -> [UInt8] {
        [UInt8(raw >> 24), UInt8((raw >> 16) & 0xFF), UInt8((raw >> 8) & 0xFF), UInt8(raw & 0xFF)] + bytes
    }

    /// A zstd frame of `count` bytes of 0x41, made by the stream's own sender.
    func zstdFrame(count: Int) async throws -> [UInt8] {
        let source = try base.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: source) }
        try Data(repeating: 0x41, count: count).write(to: URL(fileURLWithPath: source + "/a.img"))
        let box = Chunks()
        _ = try await ImageStream.send(directory: source, isFinished: { true }, compression: .zstd) { await box.append($0) }
        let all = await box.all
        var frame = all[1]  // after the header
        #expect(frame.getInteger(at: 0, as: UInt8.self) == 6, "a zstd frame")
        return frame.readBytes(length: frame.readableBytes) ?? []
    }

    @Test("hostile version 2 frames are refused before anything is written past what they may")
    func hostile() async throws {
        let v1 = Array("UMSI".utf8) + [1]
        let v2 = Array("UMSI".utf8) + [2]
        let packed = try await zstdFrame(count: 100_000)
        // The compressed bytes of that frame, to re-announce with lies.
        let name = "a.img"
        let body = Array(packed[(1 + 2 + name.utf8.count + 8 + 4 + 4)...])
        // Each ends as an honest stream of what it announces would, so only the check named fails.
        func end(_ announced: UInt64) -> [UInt8] { Self.frame(0, "", offset: announced, length: 1) }
        let cases: [(String, [UInt8])] = [
            ("zero pages in a version 1 stream", v1 + Self.frame(5, name, offset: 0, length: 4096) + end(4096)),
            ("an empty run of zero pages", v2 + Self.frame(5, name, offset: 0, length: 0) + end(0)),
            ("a run of zero pages longer than a chunk", v2 + Self.frame(5, name, offset: 0, length: (1 << 20) + 1) + end((1 << 20) + 1)),
            ("zero pages beyond the largest offset", v2 + Self.frame(5, name, offset: 1 << 41, length: 4096) + end(4096)),
            ("a frame expanding beyond a chunk", v2 + Self.frame(6, name, offset: 0, length: UInt32(4 + body.count), payload: Self.compressedPayload(raw: (1 << 20) + 1, body)) + end((1 << 20) + 1)),
            ("a frame expanding to less than it says", v2 + Self.frame(6, name, offset: 0, length: UInt32(4 + body.count), payload: Self.compressedPayload(raw: 200_000, body)) + end(200_000)),
            ("a frame expanding to more than it says", v2 + Self.frame(6, name, offset: 0, length: UInt32(4 + body.count), payload: Self.compressedPayload(raw: 50_000, body)) + end(50_000)),
            ("lz4 bytes that are zstd's", v2 + Self.frame(7, name, offset: 0, length: UInt32(4 + body.count), payload: Self.compressedPayload(raw: 100_000, body)) + end(100_000)),
            ("a compressed frame without data", v2 + Self.frame(6, name, offset: 0, length: 4, payload: Self.compressedPayload(raw: 10, [])) + end(10)),
            ("garbage to expand", v2 + Self.frame(6, name, offset: 0, length: 14, payload: Self.compressedPayload(raw: 4096, Array(repeating: 0xFF, count: 10))) + end(4096)),
            ("an unknown kind", v2 + Self.frame(9, name, offset: 0, length: 0) + end(0)),
            ("the agent's open-file kind between Coordinators", v2 + Self.frame(3, name, offset: 0, length: 0) + end(0)),
            ("an unknown version", Array("UMSI".utf8) + [3] + end(0)),
        ]
        for (what, bytes) in cases {
            let target = try base.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: target) }
            let error = await #expect(throws: UMSError.self, "\(what)") { try await ImageStream.receive([ByteBuffer(bytes: bytes)].async, into: target) }
            #expect(error?.code == .invalidArgument, "\(what)")
            let size = (try? FileManager.default.attributesOfItem(atPath: target + "/a.img")[.size] as? Int) ?? 0
            #expect(size <= 1 << 20, "\(what): \(size) bytes written")
        }
        // The honest frame itself is accepted.
        let target = try base.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: target) }
        let received = try await ImageStream.receive([ByteBuffer(bytes: v2 + packed + Self.frame(0, "", offset: 100_000, length: 1))].async, into: target)
        #expect(received.bytes == 100_000 && received.compressedBytes == 100_000)
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

/// `count` random bytes (incompressible), made a word at a time: cheap even in a debug build.
func randomBytes(_ count: Int) -> Data {
    var generator = SystemRandomNumberGenerator()
    var words = [UInt64](repeating: 0, count: (count + 7) / 8)
    for index in words.indices { words[index] = generator.next() }
    return words.withUnsafeBytes { Data($0.prefix(count)) }
}
