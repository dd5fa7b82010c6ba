import Foundation
import Testing
import UMSOS

/// Whether root's CRIU may dump a service, read from a /proc tree (a fake one here, so every case
/// is met whatever this machine's own capabilities).
@Suite("Checkpoint permission")
struct CheckpointPermissionTests {
    /// A fake /proc: `self` and processes with their uids, gids, children and user namespace.
    struct FakeProc {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ums-proc-\(UUID().uuidString)").path

        func process(_ pid: String, uid: Int, gid: Int = 0, capEff: String = "0000000000000000", children: [Int] = [], userNamespace: String = "user:[4026531837]") throws {
            let directory = "\(root)/\(pid)"
            try FileManager.default.createDirectory(atPath: "\(directory)/task/\(pid)", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: "\(directory)/ns", withIntermediateDirectories: true)
            try "Name:\tx\nUid:\t\(uid)\t\(uid)\t\(uid)\t\(uid)\nGid:\t\(gid)\t\(gid)\t\(gid)\t\(gid)\nCapEff:\t\(capEff)\n"
                .write(toFile: "\(directory)/status", atomically: true, encoding: .utf8)
            try children.map(String.init).joined(separator: " ").write(toFile: "\(directory)/task/\(pid)/children", atomically: true, encoding: .utf8)
            try FileManager.default.createSymbolicLink(atPath: "\(directory)/ns/user", withDestinationPath: userNamespace)
        }
    }

    @Test("without CAP_SYS_RESOURCE a child running as another uid (or gid) is named; root-only trees, and a root that holds the capability are not refused; a user namespace of its own is (restore fails)")
    func cases() throws {
        let proc = FakeProc()
        defer { try? FileManager.default.removeItem(atPath: proc.root) }
        // This process lacks CAP_SYS_RESOURCE (bit 24).
        try proc.process("self", uid: 0, capEff: "000001fffeffffff")
        try proc.process("100", uid: 0, children: [101])
        try proc.process("101", uid: 999)
        let problem = CheckpointPermission.problem(pid: 100, proc: proc.root)
        #expect(problem?.contains("its process 101 runs as uid 999") == true, "\(problem ?? "nil")")
        #expect(problem?.contains("CAP_SYS_RESOURCE") == true)

        try proc.process("200", uid: 0, children: [201])
        try proc.process("201", uid: 0)
        #expect(CheckpointPermission.problem(pid: 200, proc: proc.root) == nil, "all root")

        try proc.process("300", uid: 0, gid: 5)
        #expect(CheckpointPermission.problem(pid: 300, proc: proc.root)?.contains("runs as gid 5") == true)

        // A user namespace of its own: dumped, but not restored by this CRIU (and then neither
        // at the source), whatever the capabilities.
        try proc.process("400", uid: 0, userNamespace: "user:[4026532999]")
        #expect(CheckpointPermission.problem(pid: 400, proc: proc.root)?.contains("user namespace of its own") == true)

        // A root that holds every capability may dump anyone's process.
        let full = FakeProc()
        defer { try? FileManager.default.removeItem(atPath: full.root) }
        try full.process("self", uid: 0, capEff: "000001ffffffffff")
        try full.process("100", uid: 999)
        #expect(CheckpointPermission.problem(pid: 100, proc: full.root) == nil)
        try full.process("400", uid: 0, userNamespace: "user:[4026532999]")
        #expect(CheckpointPermission.problem(pid: 400, proc: full.root) != nil)
        // Hostile or missing status files are no reason to refuse here (the dump reports them).
        try "Uid:\tx\n".write(toFile: "\(proc.root)/101/status", atomically: true, encoding: .utf8)
        #expect(CheckpointPermission.problem(pid: 101, proc: proc.root) == nil)
        #expect(CheckpointPermission.problem(pid: 999_999, proc: proc.root) == nil)
    }
}
