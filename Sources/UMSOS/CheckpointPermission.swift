import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Whether a CRIU run by this process (as the engines and runc run it: as root, in this user
/// namespace) may dump a process tree. CRIU reads every process's resource limits with
/// `prlimit`, which the kernel allows on another user's process only with CAP_SYS_RESOURCE; a
/// machine whose root lacks it cannot checkpoint a service that runs as its own user (PostgreSQL,
/// nginx's workers) — CRIU fails mid-dump, after the freeze. Asked before anything freezes.
/// Nor can it restore a container in a user namespace of its own (below).
public enum CheckpointPermission {
    /// CAP_SYS_RESOURCE's bit in `/proc/PID/status`'s `CapEff`.
    static let sysResource: UInt64 = 1 << 24

    /// The first reason CRIU here cannot dump the tree under `pid`, or nil when it can (or the tree
    /// cannot be read, which the dump itself will report).
    public static func problem(pid: Int, proc: String = "/proc") -> String? {
        guard let own = status(of: "self", proc: proc) else { return nil }
        let ownNamespace = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(proc)/self/ns/user")
        for member in tree(of: pid, proc: proc) {
            guard let process = status(of: String(member), proc: proc) else { continue }
            // In a user namespace of its own root here would hold every capability over it, and
            // the dump works; but the restore does not (runc's CRIU 4.2 opens the time namespace's
            // image from inside the new user namespace: "Permission denied", tried with Podman
            // --uidmap), and the source then cannot be restored in place either.
            let namespace = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(proc)/\(member)/ns/user")
            guard namespace == ownNamespace else {
                return "its process \(member) runs in a user namespace of its own (--uidmap, --userns), which CRIU here dumps but cannot restore"
            }
            guard own.effective & sysResource == 0 else { continue }
            let other = process.uids.first { $0 != own.uids[0] }.map { "uid \($0)" }
                ?? process.gids.first { $0 != own.gids[0] }.map { "gid \($0)" }
            if let other {
                return "its process \(member) runs as \(other), and CRIU on this system cannot checkpoint another user's process (this system's root lacks CAP_SYS_RESOURCE)"
            }
        }
        return nil
    }

    struct Status {
        var uids: [UInt32]
        var gids: [UInt32]
        var effective: UInt64
    }

    /// `Uid:` and `Gid:` (real, effective, saved, filesystem) and `CapEff:` of one process.
    static func status(of pid: String, proc: String) -> Status? {
        guard let text = try? String(contentsOfFile: "\(proc)/\(pid)/status", encoding: .utf8) else { return nil }
        var uids: [UInt32]?, gids: [UInt32]?, effective: UInt64?
        for line in text.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard let key = fields.first else { continue }
            switch key {
            case "Uid:": uids = fields.dropFirst().prefix(3).compactMap { UInt32($0) }
            case "Gid:": gids = fields.dropFirst().prefix(3).compactMap { UInt32($0) }
            case "CapEff:": effective = fields.dropFirst().first.flatMap { UInt64($0, radix: 16) }
            default: continue
            }
        }
        guard let uids, let gids, let effective, uids.count == 3, gids.count == 3 else { return nil }
        return Status(uids: uids, gids: gids, effective: effective)
    }

    /// `pid` and its descendants, by each thread's `children` (bounded: 4096 processes).
    static func tree(of pid: Int, proc: String) -> [Int] {
        var found: [Int] = []
        var queue = [pid]
        while let next = queue.popLast(), found.count < 4096 {
            guard !found.contains(next) else { continue }
            found.append(next)
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "\(proc)/\(next)/task")) ?? []
            for task in tasks.prefix(4096) {
                let children = (try? String(contentsOfFile: "\(proc)/\(next)/task/\(task)/children", encoding: .utf8)) ?? ""
                queue += children.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
        }
        return found
    }
}
