import Crypto
import Foundation
import NIOCore
import Testing
import UMSCheckpoint
import UMSModel

/// The UMSI format (docs/image-stream.md) has two writers and two readers: Swift's `ImageStream`
/// between Coordinators and the C agent's between agents. These tests hold them to one format:
/// golden bytes both writers must produce, streams written by one side read by the other, and
/// damaged streams both refuse. The agent is built from `agent/ums-agent.c` (gcc, as
/// `scripts/build-agent` does); `scripts/setup` installs gcc.
/// Runs blocking work (a child process and its pipes) on a thread of its own, so that it never
/// holds one of the few threads every concurrently running test shares.
func offThePool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: work()) }.start()
    }
}

let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// The agent, built once for this run.
let interopAgent: String? = {
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("ums-agent-interop-\(getpid())").path
    guard StreamInteropTests.run(["\(repositoryRoot)/scripts/build-agent", out]).status == 0 else { return nil }
    return out
}()

@Suite("Image stream: Swift and the C agent speak one format", .enabled(if: interopAgent != nil, "no gcc to build the agent (run scripts/setup)"))
struct StreamInteropTests {
    static var agent: String? { interopAgent }

    @discardableResult
    static func run(_ arguments: [String], input: Data = Data()) -> (status: Int32, output: Data, error: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        do { try process.run() } catch { return (-1, Data(), "\(error)") }
        let writer = Thread {
            stdin.fileHandleForWriting.write(input)
            try? stdin.fileHandleForWriting.close()
        }
        writer.start()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        let error = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output, error)
    }

    func directory(_ files: [String: Data] = [:]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ums-interop-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        for (name, data) in files { try data.write(to: URL(fileURLWithPath: "\(path)/\(name)")) }
        return path
    }

    func contents(_ directory: String) throws -> [String: Data] {
        var result: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
            result[name] = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(name)"))
        }
        return result
    }

    /// One frame, written from the specification (not by either writer).
    static func frame(_ kind: UInt8, _ name: String, offset: UInt64, length: UInt32, _ payload: Data = Data()) -> Data {
        var data = Data([kind])
        let nameBytes = Data(name.utf8)
        data += [UInt8(nameBytes.count >> 8), UInt8(nameBytes.count & 0xff)]
        data += nameBytes
        data += (0..<8).map { UInt8(truncatingIfNeeded: offset >> (56 - 8 * UInt64($0))) }
        data += (0..<4).map { UInt8(truncatingIfNeeded: length >> (24 - 8 * UInt32($0))) }
        return data + payload
    }

    static let magic = Data("UMSI".utf8) + [1]

    /// A directory of one file `pstree.img` = "hello", as the specification writes it.
    static let golden = magic + frame(1, "pstree.img", offset: 0, length: 5, Data("hello".utf8)) + frame(0, "", offset: 5, length: 1)

    func swiftSend(_ directory: String, compression: ImageCompression? = nil) async throws -> (Data, ImageStream.Summary) {
        let box = Chunks()
        let summary = try await ImageStream.send(directory: directory, isFinished: { true }, compression: compression) { await box.append($0) }
        return (await box.all.reduce(into: Data()) { $0 += Data($1.readableBytesView) }, summary)
    }

    func swiftReceive(_ stream: Data, into directory: String) async throws -> ImageStream.Summary {
        // In uneven pieces, as a network delivers them.
        var pieces: [ByteBuffer] = []
        var index = 0
        while index < stream.count {
            let size = min(stream.count - index, 7 + index % 65_537)
            pieces.append(ByteBuffer(bytes: stream[index..<(index + size)]))
            index += size
        }
        return try await ImageStream.receive(pieces.async, into: directory)
    }

    func agentUnpack(_ stream: Data, into directory: String) async throws -> (ok: Bool, error: String, output: String) {
        let agent = try #require(Self.agent)
        let result = await offThePool { Self.run([agent, "stream-unpack", directory], input: stream) }
        return (result.status == 0, result.error, String(decoding: result.output, as: UTF8.self))
    }

    func agentPack(_ directory: String, policy: ImageCompression? = nil) async throws -> (status: Int32, output: Data, error: String) {
        let agent = try #require(Self.agent)
        return await offThePool { Self.run([agent, "stream-pack", directory] + (policy.map { [$0.rawValue] } ?? [])) }
    }

    @Test("both writers produce exactly the golden bytes for the same directory")
    func goldenWriters() async throws {
        let source = try directory(["pstree.img": Data("hello".utf8)])
        defer { try? FileManager.default.removeItem(atPath: source) }
        let (swift, summary) = try await swiftSend(source)
        #expect(swift == Self.golden)
        #expect(summary.digest == "sha256:" + Array(SHA256.hash(data: Self.golden)).hex, "the digest is the framed stream's")
        let c = try await agentPack(source)
        #expect(c.status == 0)
        #expect(c.output == Self.golden)
    }

    @Test("a stream with a truncate frame: both readers end with the same file")
    func goldenTruncate() async throws {
        let stream = Self.magic
            + Self.frame(1, "pages.img", offset: 0, length: 8, Data("abcdefgh".utf8))
            + Self.frame(2, "pages.img", offset: 0, length: 0)
            + Self.frame(1, "pages.img", offset: 0, length: 3, Data("xyz".utf8))
            + Self.frame(0, "", offset: 11, length: 1)
        let bySwift = try directory(), byC = try directory()
        defer { try? FileManager.default.removeItem(atPath: bySwift); try? FileManager.default.removeItem(atPath: byC) }
        let summary = try await swiftReceive(stream, into: bySwift)
        #expect(summary.bytes == 11)
        #expect(summary.digest == "sha256:" + Array(SHA256.hash(data: stream)).hex)
        #expect(try await agentUnpack(stream, into: byC).ok)
        #expect(try contents(bySwift) == ["pages.img": Data("xyz".utf8)])
        #expect(try contents(byC) == ["pages.img": Data("xyz".utf8)])
    }

    /// Files across the 1 MiB frame size, an empty one, and many small ones.
    func sampleFiles() -> [String: Data] {
        var generator = SystemRandomNumberGenerator()
        var files: [String: Data] = ["empty.img": Data(), "pages-1.img": randomBytes(2_500_000)]
        for index in 0..<20 { files["core-\(index).img"] = Data("core \(index)".utf8) }
        return files
    }

    @Test("Swift writes, C reads: every file arrives byte for byte")
    func swiftToC() async throws {
        let files = sampleFiles()
        let source = try directory(files), target = try directory()
        defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: target) }
        let (stream, summary) = try await swiftSend(source)
        #expect(summary.digest == "sha256:" + Array(SHA256.hash(data: stream)).hex)
        let unpacked = try await agentUnpack(stream, into: target)
        #expect(unpacked.ok, "\(unpacked.error)")
        #expect(unpacked.output.contains(summary.digest), "the C reader's SHA-256 of the stream is Swift's: \(unpacked.output)")
        #expect(try contents(target).filter { !$0.value.isEmpty } == files.filter { !$0.value.isEmpty })
    }

    @Test("C writes, Swift reads: every file arrives byte for byte, and the digest is the stream's")
    func cToSwift() async throws {
        let files = sampleFiles()
        let source = try directory(files), target = try directory()
        defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: target) }
        let packed = try await agentPack(source)
        #expect(packed.status == 0)
        let summary = try await swiftReceive(packed.output, into: target)
        #expect(summary.digest == "sha256:" + Array(SHA256.hash(data: packed.output)).hex)
        #expect(packed.error.contains(summary.digest), "the C writer's SHA-256 of the stream is Swift's: \(packed.error)")
        #expect(try contents(target).filter { !$0.value.isEmpty } == files.filter { !$0.value.isEmpty })
    }

    /// Random pages, zero pages, text-like pages and a short tail, in a 2.3 MiB image, plus small files.
    func mixedFiles() -> [String: Data] {
        var generator = SystemRandomNumberGenerator()
        var pages = randomBytes(73 * 4096)
        pages.append(Data(count: 1 << 20))
        let line = Array("key:42 value:memory that compresses, as a real service's does\n".utf8)
        pages.append(Data((0..<(1 << 20)).map { line[$0 % line.count] }))
        pages.append(Data([9, 0, 0, 1]))
        var files = ["pages-1.img": pages, "empty.img": Data()]
        for index in 0..<5 { files["core-\(index).img"] = Data("core \(index)".utf8) }
        return files
    }

    @Test("version 2, both ways: zero pages and compressed runs arrive byte for byte", arguments: ImageCompression.allCases)
    func version2(policy: ImageCompression) async throws {
        let files = mixedFiles()
        let source = try directory(files), byC = try directory(), bySwift = try directory()
        defer { for path in [source, byC, bySwift] { try? FileManager.default.removeItem(atPath: path) } }
        let (stream, summary) = try await swiftSend(source, compression: policy)
        #expect(stream.prefix(5) == Data("UMSI".utf8) + [2])
        let unpacked = try await agentUnpack(stream, into: byC)
        #expect(unpacked.ok, "\(unpacked.error)")
        #expect(unpacked.output.contains(summary.digest))
        #expect(try contents(byC).filter { !$0.value.isEmpty } == files.filter { !$0.value.isEmpty })

        let packed = try await agentPack(source, policy: policy)
        #expect(packed.status == 0, "\(packed.error)")
        #expect(packed.output.prefix(5) == Data("UMSI".utf8) + [2])
        let received = try await swiftReceive(packed.output, into: bySwift)
        #expect(received.zeroBytes == 1 << 20, "C announced the zero pages")
        if policy != .off {
            #expect(received.compressedBytes >= 1 << 20, "C compressed the text-like pages")
            #expect(packed.output.count < 600_000 + 300_000, "\(packed.output.count) bytes for 2.3 MiB")
        }
        #expect(try contents(bySwift).filter { !$0.value.isEmpty } == files.filter { !$0.value.isEmpty })
    }

    static let magic2 = Data("UMSI".utf8) + [2]

    /// A zstd frame of 100,000 × "A" as Swift's writer makes it, with its raw length replaced.
    func zstdFrame(announcing raw: UInt32?) async throws -> Data {
        let source = try directory(["a.img": Data(repeating: 0x41, count: 100_000)])
        defer { try? FileManager.default.removeItem(atPath: source) }
        let (stream, _) = try await swiftSend(source, compression: .zstd)
        var frame = Data(stream.dropFirst(5).prefix(while: { _ in true }))
        // The first frame: kind 6, name a.img (5), offset, length, then u32(raw) and the bytes.
        let length = Int(frame[frame.startIndex + 3 + 5 + 8..<frame.startIndex + 3 + 5 + 12].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        frame = frame.prefix(3 + 5 + 12 + length)
        if let raw {
            let at = frame.startIndex + 3 + 5 + 12
            frame.replaceSubrange(at..<at + 4, with: (0..<4).map { UInt8(truncatingIfNeeded: raw >> (24 - 8 * UInt32($0))) })
        }
        return frame
    }

    @Test("both readers refuse hostile version 2 frames, each with its reason")
    func damagedVersion2() async throws {
        let honest = try await zstdFrame(announcing: nil)
        let cases: [(what: String, stream: Data, swift: String, c: String)] = [
            ("zero pages in a version 1 stream", Self.magic + Self.frame(5, "a.img", offset: 0, length: 4096) + Self.frame(0, "", offset: 4096, length: 1),
             "unknown frame kind 5 in a version 1 stream", "unknown frame kind 5 in a version 1 stream"),
            ("an empty zero run", Self.magic2 + Self.frame(5, "a.img", offset: 0, length: 0) + Self.frame(0, "", offset: 0, length: 1),
             "an empty run of zero pages", "a run of 0 zero bytes"),
            ("a zero run over 1 MiB", Self.magic2 + Self.frame(5, "a.img", offset: 0, length: (1 << 20) + 1) + Self.frame(0, "", offset: (1 << 20) + 1, length: 1),
             "larger than", "a run of 1048577 zero bytes"),
            ("expands beyond a chunk", Self.magic2 + (try await zstdFrame(announcing: (1 << 20) + 1)) + Self.frame(0, "", offset: (1 << 20) + 1, length: 1),
             "expands to 1048577 bytes", "expands to 1048577 bytes"),
            ("expands to less than announced", Self.magic2 + (try await zstdFrame(announcing: 200_000)) + Self.frame(0, "", offset: 200_000, length: 1),
             "does not expand to the 200000 bytes", "does not expand to the 200000 bytes"),
            ("expands to more than announced", Self.magic2 + (try await zstdFrame(announcing: 50_000)) + Self.frame(0, "", offset: 50_000, length: 1),
             "does not expand to the 50000 bytes", "does not expand to the 50000 bytes"),
            ("zstd bytes called lz4", Self.magic2 + { var f = honest; f[f.startIndex] = 7; return f }() + Self.frame(0, "", offset: 100_000, length: 1),
             "does not expand to the 100000 bytes", "does not expand to the 100000 bytes"),
            ("a compressed frame without data", Self.magic2 + Self.frame(6, "a.img", offset: 0, length: 4, Data([0, 0, 16, 0])) + Self.frame(0, "", offset: 4096, length: 1),
             "without its data", "without its data"),
        ]
        for (what, stream, swiftReason, cReason) in cases {
            try await expectBothRefuse(what, stream, swift: swiftReason, c: cReason)
        }
        // The honest frame is accepted by both.
        let stream = Self.magic2 + honest + Self.frame(0, "", offset: 100_000, length: 1)
        let bySwift = try directory(), byC = try directory()
        defer { try? FileManager.default.removeItem(atPath: bySwift); try? FileManager.default.removeItem(atPath: byC) }
        #expect(try await swiftReceive(stream, into: bySwift).bytes == 100_000)
        let c = try await agentUnpack(stream, into: byC)
        #expect(c.ok, "\(c.error)")
    }

    /// A damaged stream, and the reason each reader must give (Swift's, C's).
    static let damaged: [(what: String, stream: Data, swift: String, c: String)] = [
        ("wrong magic", Data("UMSX".utf8) + [1] + frame(0, "", offset: 0, length: 0), "not a UMS image stream", "not a UMS image stream"),
        ("no end frame", magic + frame(1, "a.img", offset: 0, length: 1, Data("a".utf8)), "before its end frame", "before its end frame"),
        ("end frame counts other bytes", magic + frame(1, "a.img", offset: 0, length: 1, Data("a".utf8)) + frame(0, "", offset: 2, length: 1), "sender sent 2 bytes", "sent 2 bytes"),
        ("a path in the name", magic + frame(1, "../a.img", offset: 0, length: 1, Data("a".utf8)) + frame(0, "", offset: 1, length: 1), "invalid file name", "invalid image name"),
        ("a name that is ..", magic + frame(1, "..", offset: 0, length: 1, Data("a".utf8)) + frame(0, "", offset: 1, length: 1), "invalid file name", "invalid image name"),
        ("an unknown kind", magic + frame(9, "a.img", offset: 0, length: 0) + frame(0, "", offset: 0, length: 0), "unknown frame kind 9", "unknown frame kind 9"),
        ("a frame larger than 1 MiB", magic + frame(1, "a.img", offset: 0, length: 2 << 20), "larger than", "too large"),
        ("an offset beyond a tebibyte", magic + frame(1, "a.img", offset: 1 << 62, length: 1, Data("a".utf8)) + frame(0, "", offset: 1, length: 1), "beyond", "beyond"),
        ("an end offset beyond Int64", magic + frame(0, "", offset: .max, length: 0), "sender sent", "sent"),
        ("a truncated frame", magic + frame(1, "a.img", offset: 0, length: 4, Data("ab".utf8)), "before its end frame", "truncated frame data"),
    ]

    @Test("both readers refuse a damaged stream, and write nothing outside their directory", arguments: 0..<damaged.count)
    func damagedStreams(index: Int) async throws {
        let (what, stream, swiftReason, cReason) = Self.damaged[index]
        try await expectBothRefuse(what, stream, swift: swiftReason, c: cReason)
    }

    /// Both readers refuse `stream`, each with its reason, and write nothing outside their directory.
    func expectBothRefuse(_ what: String, _ stream: Data, swift swiftReason: String, c cReason: String) async throws {
        let bySwift = try directory(), byC = try directory()
        defer { try? FileManager.default.removeItem(atPath: bySwift); try? FileManager.default.removeItem(atPath: byC) }
        let error = await #expect(throws: UMSError.self, "Swift accepted: \(what)") { _ = try await swiftReceive(stream, into: bySwift) }
        #expect(error?.message.contains(swiftReason) == true, "\(what): \(error?.message ?? "")")
        let c = try await agentUnpack(stream, into: byC)
        #expect(!c.ok, "C accepted: \(what)")
        #expect(c.error.contains(cReason), "\(what): \(c.error)")
        #expect(!FileManager.default.fileExists(atPath: bySwift + "/../a.img") && !FileManager.default.fileExists(atPath: byC + "/../a.img"))
    }
}
