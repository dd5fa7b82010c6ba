import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Finds and ends processes a crashed Coordinator left behind: CRIU page servers, lazy-pages
/// daemons, `runc checkpoint`/`restore` with their CRIU children — recognised by a directory of
/// that Coordinator's own (an argument or the working directory under one of `prefixes`), so a
/// process of anyone else's is never touched.
public enum ProcessSweep {
    /// The PIDs whose command line or working directory refer to one of `prefixes`, with their
    /// descendants.
    public static func find(referring prefixes: [String], except kept: [String] = [], proc: String = "/proc") -> [Int32] {
        let own = getpid()
        var parent: [Int32: Int32] = [:]
        var matched: Set<Int32> = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: proc)) ?? [] {
            guard let pid = Int32(entry), pid != own else { continue }
            if let stat = try? String(contentsOfFile: "\(proc)/\(entry)/stat", encoding: .utf8),
               let close = stat.lastIndex(of: ")")
            {
                // "pid (comm) state ppid …": the command may hold spaces and parentheses.
                let fields = stat[stat.index(after: close)...].split(separator: " ")
                if fields.count > 1, let ppid = Int32(fields[1]) { parent[pid] = ppid }
            }
            let arguments = ((try? Data(contentsOf: URL(fileURLWithPath: "\(proc)/\(entry)/cmdline"))) ?? Data())
                .split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            let directory = (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(proc)/\(entry)/cwd")) ?? ""
            let under = { (text: String, list: [String]) in list.contains { text.hasPrefix($0) || text.contains("=\($0)") } }
            // A directory names itself with or without its trailing slash.
            let refers = { (text: String) in under(text + "/", prefixes) && !under(text + "/", kept) }
            if arguments.contains(where: refers) || refers(directory) { matched.insert(pid) }
        }
        // Descendants of a matched process (CRIU under runc) go with it.
        var changed = true
        while changed {
            changed = false
            for (pid, ppid) in parent where !matched.contains(pid) && matched.contains(ppid) {
                matched.insert(pid)
                changed = true
            }
        }
        return matched.sorted()
    }

    /// Whether a process runs whose command line holds every one of `arguments`, in order (as
    /// separate arguments).
    public static func running(arguments: [String], proc: String = "/proc") -> Bool {
        guard !arguments.isEmpty else { return false }
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: proc)) ?? [] where Int32(entry) != nil {
            let words = ((try? Data(contentsOf: URL(fileURLWithPath: "\(proc)/\(entry)/cmdline"))) ?? Data())
                .split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard let first = words.firstIndex(of: arguments[0]), words.count - first >= arguments.count else { continue }
            if Array(words[first..<(first + arguments.count)]) == arguments { return true }
        }
        return false
    }

    /// Ends them (SIGKILL: they serve a migration that is over). Returns the PIDs signalled.
    @discardableResult
    public static func kill(referring prefixes: [String], except kept: [String] = []) -> [Int32] {
        let pids = find(referring: prefixes, except: kept)
        for pid in pids { _ = Glibc.kill(pid, SIGKILL) }
        return pids
    }
}
