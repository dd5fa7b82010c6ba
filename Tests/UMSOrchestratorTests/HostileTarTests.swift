import Foundation
import NIOCore
import Testing
import UMSModel
import UMSOS

/// A peer's tar of a container's root filesystem changes, at its worst: nothing lands outside the
/// container's directory, and what could give a process more than it had is refused.
@Suite("Hostile rootfs-change tars", .enabled(if: getuid() == 0, "device nodes and setuid files need root"))
struct HostileTarTests {
    func scratch() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ums-tar-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path + "/src", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: path + "/out", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: path + "/victim", withIntermediateDirectories: true)
        return path
    }

    /// Extracts `tar` as umsd extracts a peer's changes, then checks the tree.
    func receive(_ tar: String, into out: String, incremental: Bool = false) async throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: tar))
        let chunks = AsyncStream<ByteBuffer> { continuation in
            continuation.yield(ByteBuffer(bytes: data))
            continuation.finish()
        }
        _ = try await Archive.extract(chunks, into: out, untrusted: true, incremental: incremental)
        try TreeCheck.verify(out)
    }

    @Test("a volume in two passes (the bulk, then what changed: a file changed, one added, a file and a directory gone) arrives as the source has it, owners and modes kept")
    func twoPasses() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await sh("cd \(dir)/src && mkdir sub && echo 1 > a && echo 2 > gone && echo 3 > sub/x && chown 999:998 a && chmod 640 a")
        let snapshot = "\(dir)/snapshot"
        let first = try await passThrough(directory: "\(dir)/src", snapshot: snapshot)
        try await receive(first, into: "\(dir)/out", incremental: true)
        try await sh("cd \(dir)/src && echo changed > a && rm gone && rm -r sub && echo new > added")
        let second = try await passThrough(directory: "\(dir)/src", snapshot: snapshot)
        try await receive(second, into: "\(dir)/out", incremental: true)
        #expect(try await Archive.digest(of: "\(dir)/out") == (try await Archive.digest(of: "\(dir)/src")))
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/out").sorted() == ["a", "added"])
        let attributes = try FileManager.default.attributesOfItem(atPath: "\(dir)/out/a")
        #expect(attributes[.ownerAccountID] as? NSNumber == 999 && attributes[.posixPermissions] as? NSNumber == 0o640)
        // The second pass holds only what changed.
        let sizes = try [first, second].map { try FileManager.default.attributesOfItem(atPath: $0)[.size] as? NSNumber ?? 0 }
        #expect(sizes[1].intValue <= sizes[0].intValue)
    }

    /// One pass of `Archive.create` with a snapshot file, into a tar file.
    func passThrough(directory: String, snapshot: String) async throws -> String {
        let tar = "\(directory).\(UUID().uuidString.prefix(6)).tar"
        FileManager.default.createFile(atPath: tar, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: tar))
        defer { try? handle.close() }
        try await Archive.create(directory: directory, snapshot: snapshot) { buffer in
            handle.write(Data(buffer.readableBytesView))
        }
        return tar
    }

    @Test("a member with ../ is refused and writes nothing outside")
    func dotDot() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await sh("cd \(dir) && echo x > src/f && tar -C src -cf t.tar --transform 's,^,../victim/,' f")
        await #expect(throws: UMSError.self) { try await receive("\(dir)/t.tar", into: "\(dir)/out") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/victim").isEmpty)
    }

    @Test("an absolute member lands inside the directory, not at its path")
    func absolute() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await sh("cd \(dir) && echo x > src/f && tar -C src -P -cf t.tar --transform 's,^,\(dir)/victim/,' f")
        try? await receive("\(dir)/t.tar", into: "\(dir)/out")
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/victim").isEmpty)
    }

    @Test("a symlink the archive made is never written through")
    func symlinkThenWrite() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await sh("cd \(dir) && echo x > src/pwned && ln -s \(dir)/victim src/link && tar -C src -cf t.tar link && tar -C src -rf t.tar --transform 's,^pwned,link/pwned,' pwned")
        await #expect(throws: UMSError.self) { try await receive("\(dir)/t.tar", into: "\(dir)/out") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/victim").isEmpty)
    }

    @Test("a device node is refused; an overlayfs whiteout (character 0:0) is a deletion and passes")
    func deviceNodes() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await sh("cd \(dir) && mknod src/mem c 1 1 && tar -C src -cf t.tar mem")
        let error = await #expect(throws: UMSError.self) { try await receive("\(dir)/t.tar", into: "\(dir)/out") }
        #expect(error?.message.contains("device node") == true)
        try await sh("cd \(dir) && rm -rf out/* src/* && mknod src/deleted c 0 0 && tar -C src -cf w.tar deleted")
        try await receive("\(dir)/w.tar", into: "\(dir)/out")
    }

    @Test("a setuid file is refused")
    func setuid() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await sh("cd \(dir) && echo x > src/su && chmod 4755 src/su && tar -C src -cf t.tar su")
        let error = await #expect(throws: UMSError.self) { try await receive("\(dir)/t.tar", into: "\(dir)/out") }
        #expect(error?.message.contains("setuid") == true)
    }
}
