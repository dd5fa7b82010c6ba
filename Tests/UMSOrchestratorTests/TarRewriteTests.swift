import Foundation
import NIOCore
import Testing
import UMSModel
import UMSOS

/// The one-pass rewrite of a checkpoint export's small members (Podman's `config.dump`), against
/// archives GNU tar makes in each of its formats, and against archives a hostile peer could send.
@Suite("Tar member rewrite")
struct TarRewriteTests {
    func scratch() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ums-tarrw-\(UUID().uuidString)").path
        for sub in ["src/checkpoint", "out"] {
            try FileManager.default.createDirectory(atPath: "\(path)/\(sub)", withIntermediateDirectories: true)
        }
        return path
    }

    /// An export-like tree: config.dump, spec.dump, 3 MiB of "pages", a name longer than 100 bytes, a
    /// sparse file of ten pieces (GNU tar's old format continues its header in extra blocks).
    func makeTree(_ dir: String) async throws {
        try await sh(
            """
            cd \(dir)/src
            printf '{"rootfsImageID":"source","rootfsImageName":"x","other":1}' > config.dump
            printf '{"ociVersion":"1.0.2"}' > spec.dump
            head -c 3145728 /dev/urandom > checkpoint/pages-1.img
            echo inventory > checkpoint/inventory.img
            echo long > checkpoint/\(String(repeating: "n", count: 120)).img
            for i in 0 1 2 3 4 5 6 7 8 9; do dd if=/dev/urandom of=checkpoint/sparse.img bs=4096 count=1 seek=$((i * 4)) conv=notrunc status=none; done
            """
        )
    }

    /// Writes the plan's chunks to a file; checks they add up to its length.
    func materialize(_ plan: TarRewrite.Plan, to file: String) async throws {
        var data = Data()
        for try await chunk in plan.chunks { data.append(contentsOf: chunk.readableBytesView) }
        #expect(Int64(data.count) == plan.length)
        try data.write(to: URL(fileURLWithPath: file))
    }

    static let newConfig = Data(#"{"rootfsImageID":"this-systems-image-id-which-is-longer","other":1}"#.utf8)

    @Test("config.dump replaced, every other member byte for byte, in GNU, POSIX (pax) and ustar archives, with and without ./", arguments: [
        ("gnu", "."), ("posix", "."), ("ustar", "."), ("gnu", "config.dump spec.dump checkpoint"), ("posix", "config.dump spec.dump checkpoint"),
    ])
    func rewritesOneMember(format: String, members: String) async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await makeTree(dir)
        if format == "ustar" {
            // ustar cannot hold the long name in one field: a prefix holds the directory.
            try await sh("cd \(dir)/src && rm checkpoint/n*.img && mkdir -p \(String(repeating: "d", count: 90)) && echo deep > \(String(repeating: "d", count: 90))/\(String(repeating: "f", count: 60))")
        }
        try await sh("tar -C \(dir)/src --format=\(format) \(format == "ustar" ? "" : "--sparse") -cf \(dir)/export.tar \(members)")
        let plan = try TarRewrite.plan(file: "\(dir)/export.tar", replacing: ["config.dump": { old in
            #expect(String(decoding: old, as: UTF8.self).contains("source"))
            return Self.newConfig
        }])
        #expect(plan.rewritten == ["config.dump"])
        try await materialize(plan, to: "\(dir)/rewritten.tar")
        try await sh("tar -C \(dir)/out -xf \(dir)/rewritten.tar")
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/out/config.dump")) == Self.newConfig)
        // Everything else as it was: the trees are the same once config.dump is too.
        try Self.newConfig.write(to: URL(fileURLWithPath: "\(dir)/src/config.dump"))
        try await sh("diff -r \(dir)/src \(dir)/out")
        // One member's bytes are new; everything else is copied from the file.
        #expect(plan.segments.filter { if case .bytes = $0 { true } else { false } }.count == 1)
    }

    @Test("no replacements: the file itself, in one-MiB chunks")
    func passThrough() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await makeTree(dir)
        try await sh("tar -C \(dir)/src -cf \(dir)/export.tar .")
        let plan = try TarRewrite.plan(file: "\(dir)/export.tar", replacing: [:])
        try await materialize(plan, to: "\(dir)/same.tar")
        try await sh("cmp \(dir)/export.tar \(dir)/same.tar")
    }

    /// Builds an archive with GNU tar, lets `damage` change its bytes, and expects the plan refused.
    func refused(_ dir: String, tarArguments: String = ".", replacing: [String: TarRewrite.Transform] = ["config.dump": { $0 }], damage: (inout [UInt8]) -> Void = { _ in }) async throws -> UMSError? {
        try await sh("tar -C \(dir)/src --format=gnu -cf \(dir)/export.tar \(tarArguments)")
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(dir)/export.tar")))
        damage(&bytes)
        try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/export.tar"))
        do {
            _ = try TarRewrite.plan(file: "\(dir)/export.tar", replacing: replacing)
            return nil
        } catch let error as UMSError {
            return error
        }
    }

    /// The offset of the header of the member named `name` (a GNU archive, names in one field).
    func header(of name: String, in bytes: [UInt8]) -> Int {
        var offset = 0
        while offset + 512 <= bytes.count {
            let field = bytes[offset..<(offset + 100)].prefix { $0 != 0 }
            let size = Int(String(decoding: bytes[(offset + 124)..<(offset + 135)], as: UTF8.self), radix: 8) ?? 0
            if String(decoding: field, as: UTF8.self).hasSuffix(name) { return offset }
            offset += 512 + (size + 511) / 512 * 512
        }
        return -1
    }

    @Test("a hostile archive is refused, never trusted: wrong checksum, a size beyond the end, cut short, no end block")
    func hostileHeaders() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await makeTree(dir)
        let checksum = try await refused(dir) { bytes in bytes[self.header(of: "pages-1.img", in: bytes) + 130] ^= 1 }
        #expect(checksum?.code == .invalidArgument && checksum?.message.contains("checksum") == true)
        let beyond = try await refused(dir) { bytes in
            // pages-1.img claims 64 GiB (octal 1000000000000), checksum made right again.
            let at = self.header(of: "pages-1.img", in: bytes)
            bytes.replaceSubrange((at + 124)..<(at + 136), with: Array("1000000000000".utf8.prefix(11)) + [0])
            Self.fixChecksum(&bytes, at: at)
        }
        #expect(beyond?.message.contains("beyond the archive's end") == true)
        let cut = try await refused(dir) { bytes in bytes.removeLast(bytes.count - self.header(of: "pages-1.img", in: bytes) - 1024) }
        #expect(cut?.code == .invalidArgument)
        let noEnd = try await refused(dir) { bytes in
            // Every zero block at the end gone: the archive ends after its last member.
            while bytes.count >= 512, bytes[(bytes.count - 512)...].allSatisfy({ $0 == 0 }) { bytes.removeLast(512) }
        }
        #expect(noEnd?.message.contains("end-of-archive") == true)
        let octal = try await refused(dir) { bytes in
            let at = self.header(of: "spec.dump", in: bytes)
            bytes[at + 125] = UInt8(ascii: "9")
            Self.fixChecksum(&bytes, at: at)
        }
        #expect(octal?.message.contains("invalid size") == true)
    }

    @Test("the member to replace must be there once, as a regular file, and small; the transform's refusal is the plan's")
    func hostileMember() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await makeTree(dir)
        let missing = try await refused(dir, tarArguments: "spec.dump checkpoint")
        #expect(missing?.message.contains("has no config.dump") == true)
        try await sh("cd \(dir)/src && mv config.dump real && ln -s /etc/shadow config.dump")
        let link = try await refused(dir)
        #expect(link?.message.contains("not a regular file") == true)
        try await sh("cd \(dir)/src && rm config.dump && head -c 17000000 /dev/zero > config.dump")
        let large = try await refused(dir)
        #expect(large?.message.contains("at most") == true)
        try await sh("cd \(dir)/src && mv real config.dump")
        // Twice in one archive: tar would keep the last, which was never rewritten.
        let twice = try await refused(dir, tarArguments: "--hard-dereference config.dump spec.dump config.dump")
        #expect(twice?.message.contains("more than once") == true)
        let transform = try await refused(dir, replacing: ["config.dump": { _ in throw UMSError(.invalidArgument, "not JSON") }])
        #expect(transform?.message == "not JSON")
    }

    @Test("a pax header's size is the member's: a hostile one is bounded")
    func hostilePax() async throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await makeTree(dir)
        try await sh("tar -C \(dir)/src --format=posix -cf \(dir)/export.tar .")
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(dir)/export.tar")))
        // The first extended header's first record becomes a size of 2^62.
        var at = 0
        while bytes[at + 156] != UInt8(ascii: "x") { at += 512 + ((Int(String(decoding: bytes[(at + 124)..<(at + 135)], as: UTF8.self), radix: 8) ?? 0) + 511) / 512 * 512 }
        let body = " size=4611686018427387904\n"
        let record = Array("\(body.utf8.count + 2)\(body)".utf8)
        let length = Int(String(decoding: bytes[(at + 124)..<(at + 135)], as: UTF8.self), radix: 8) ?? 0
        var payload = record + Array(bytes[(at + 512)..<(at + 512 + length)])
        payload += [UInt8](repeating: 0, count: (512 - payload.count % 512) % 512)
        bytes.replaceSubrange((at + 124)..<(at + 136), with: Array(String(format: "%011o", record.count + length).utf8) + [0])
        Self.fixChecksum(&bytes, at: at)
        bytes.replaceSubrange((at + 512)..<(at + 512 + (length + 511) / 512 * 512), with: payload)
        try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/export.tar"))
        #expect(throws: UMSError.self) { try TarRewrite.plan(file: "\(dir)/export.tar", replacing: ["config.dump": { $0 }]) }
    }

    static func fixChecksum(_ bytes: inout [UInt8], at offset: Int) {
        bytes.replaceSubrange((offset + 148)..<(offset + 156), with: [UInt8](repeating: UInt8(ascii: " "), count: 8))
        let sum = bytes[offset..<(offset + 512)].reduce(0) { $0 + Int($1) }
        bytes.replaceSubrange((offset + 148)..<(offset + 156), with: Array(String(format: "%06o", sum).utf8) + [0, UInt8(ascii: " ")])
    }
}
