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

    func swiftSend(_ directory: String) async throws -> (Data, ImageStream.Summary) {
        let box = Chunks()
        let summary = try await ImageStream.send(directory: directory, isFinished: { true }) { await box.append($0) }
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

    func agentPack(_ directory: String) async throws -> (status: Int32, output: Data, error: String) {
        let agent = try #require(Self.agent)
        return await offThePool { Self.run([agent, "stream-pack", directory]) }
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
        var files: [String: Data] = ["empty.img": Data(), "pages-1.img": Data((0..<(2_500_000)).map { _ in UInt8.random(in: 0...255, using: &generator) })]
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
