import Foundation

/// Cgroup housekeeping the runtime does not do: a container that runs containers itself (the
/// container-level approach's outer container) leaves cgroups of its own below the one the
/// runtime made, possibly frozen (a nested container paused for a checkpoint). The runtime removes
/// only its own cgroup, and cannot while those remain; frozen processes cannot even die.
public enum Cgroups {
    /// A process's cgroup path (e.g. `/docker/<id>`), from its memory controller's line (cgroup
    /// v1) or the unified one.
    public static func path(ofProcess pid: Int) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n").map { $0.split(separator: ":", maxSplits: 2).map(String.init) }
        let line = lines.first { $0.count == 3 && $0[1].split(separator: ",").contains("memory") } ?? lines.first { $0.count == 3 && $0[1].isEmpty }
        return line.map { $0[2] }
    }

    /// The cgroup filesystem roots: each cgroup v1 hierarchy and the unified one, or the single v2 root.
    public static func hierarchies(root: String = "/sys/fs/cgroup") -> [String] {
        let entries = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).map { "\(root)/\($0)" }
        let v1 = entries.filter { FileManager.default.fileExists(atPath: "\($0)/cgroup.procs") }
        return FileManager.default.fileExists(atPath: "\(root)/cgroup.procs") ? [root] + v1 : v1
    }

    /// Thaws every cgroup below `path` (e.g. `/ums/a/web`) in every hierarchy, so that processes
    /// already killed can exit. Call after killing the container, before removing it.
    public static func thawDescendants(of path: String, root: String = "/sys/fs/cgroup") {
        for directory in descendants(of: path, root: root) {
            write("THAWED", to: "\(directory)/freezer.state")
            write("0", to: "\(directory)/cgroup.freeze")
        }
    }

    /// Sends SIGKILL to every process in the cgroups below `path`, then thaws them: frozen
    /// processes with a pending SIGKILL exit when thawed without running again (a frozen nested
    /// container must never resume at the source). Engines that wait for a killed container's
    /// processes to be gone (Docker waits 10 s) need this before their own kill.
    public static func killAndThawDescendants(of path: String, root: String = "/sys/fs/cgroup") {
        let directories = descendants(of: path, root: root)
        for directory in directories {
            let pids = ((try? String(contentsOfFile: "\(directory)/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
            for pid in pids { kill(pid, SIGKILL) }
        }
        thawDescendants(of: path, root: root)
    }

    /// Sends `signal` to every process in `path` and below (e.g. SIGCONT to a restored service
    /// CRIU left stopped).
    public static func signal(_ signal: Int32, tree path: String, root: String = "/sys/fs/cgroup") {
        for directory in hierarchies(root: root).map({ $0 + path }) + descendants(of: path, root: root) {
            let pids = ((try? String(contentsOfFile: "\(directory)/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
            for pid in pids where pid > 1 { kill(pid, signal) }
        }
    }

    /// Removes every cgroup below `path`, and `path` itself, deepest first; waits up to `timeout`
    /// for their processes to be gone. Never fails: it is cleanup.
    public static func removeTree(_ path: String, root: String = "/sys/fs/cgroup", timeout: Duration = .seconds(2)) async {
        let deadline = ContinuousClock.now + timeout
        var remaining = descendants(of: path, root: root) + hierarchies(root: root).map { $0 + path }
        while true {
            remaining = remaining.filter { FileManager.default.fileExists(atPath: $0) && rmdir($0) != 0 }
            if remaining.isEmpty || ContinuousClock.now >= deadline { return }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// How `freeze` ended.
    public enum Freezing: Sendable, Equatable {
        /// Every process in the cgroup is frozen.
        case frozen
        /// There is no freezer for this cgroup (no such cgroup, or no freezer controller).
        case noFreezer
        /// The freezer did not report frozen within the time given; the cgroup was thawed again.
        case notFrozenInTime
    }

    /// Freezes the processes of the cgroup `path` (e.g. `/ums/a/web`) through the kernel's freezer
    /// — cgroup v1's `freezer.state` where that hierarchy is mounted, else v2's `cgroup.freeze` —
    /// and returns once the kernel reports them frozen. What a runtime's own `pause` does, without
    /// starting the runtime: its process start was most of the time between the Frontman's hold
    /// and the freeze. The runtime sees the cgroup frozen, as if it had paused it itself.
    public static func freeze(_ path: String, root: String = "/sys/fs/cgroup", timeout: Duration = .seconds(2)) async -> Freezing {
        let deadline = ContinuousClock.now + timeout
        let v1 = "\(root)/freezer\(path)/freezer.state"
        if FileManager.default.fileExists(atPath: v1) {
            var attempt = 0
            while ContinuousClock.now < deadline {
                // As runc does: writing FROZEN again moves a freeze that raced a fork along.
                write("FROZEN", to: v1)
                if read(v1) == "FROZEN" { return .frozen }
                attempt += 1
                try? await Task.sleep(for: attempt < 20 ? .microseconds(500) : .milliseconds(2))
            }
            write("THAWED", to: v1)
            return .notFrozenInTime
        }
        let v2 = "\(root)\(path)"
        guard FileManager.default.fileExists(atPath: "\(v2)/cgroup.freeze") else { return .noFreezer }
        write("1", to: "\(v2)/cgroup.freeze")
        var attempt = 0
        while ContinuousClock.now < deadline {
            if (read("\(v2)/cgroup.events") ?? "").split(separator: "\n").contains("frozen 1") { return .frozen }
            attempt += 1
            try? await Task.sleep(for: attempt < 20 ? .microseconds(500) : .milliseconds(2))
        }
        write("0", to: "\(v2)/cgroup.freeze")
        return .notFrozenInTime
    }

    /// How many processes the cgroup `path` and those below it hold (what `runc ps` lists), from
    /// the freezer hierarchy (v1) or the unified one; nil where there is no such cgroup.
    public static func processCount(_ path: String, root: String = "/sys/fs/cgroup") -> Int? {
        let hierarchy = FileManager.default.fileExists(atPath: "\(root)/freezer/cgroup.procs") ? "\(root)/freezer" : root
        let base = hierarchy + path
        guard FileManager.default.fileExists(atPath: "\(base)/cgroup.procs") else { return nil }
        var directories = [base]
        if let walker = FileManager.default.enumerator(atPath: base) {
            while let relative = walker.nextObject() as? String {
                if relative.hasSuffix("/cgroup.procs") { directories.append("\(base)/\(relative.dropLast("/cgroup.procs".count))") }
            }
        }
        return directories.reduce(0) { count, directory in
            count + (read("\(directory)/cgroup.procs") ?? "").split(separator: "\n").count
        }
    }

    static func read(_ path: String) -> String? {
        (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Directories below `path` in every hierarchy, deepest first.
    static func descendants(of path: String, root: String) -> [String] {
        var found: [String] = []
        for hierarchy in hierarchies(root: root) {
            let base = hierarchy + path
            guard let walker = FileManager.default.enumerator(atPath: base) else { continue }
            while let relative = walker.nextObject() as? String {
                var isDirectory: ObjCBool = false
                if FileManager.default.fileExists(atPath: "\(base)/\(relative)", isDirectory: &isDirectory), isDirectory.boolValue {
                    found.append("\(base)/\(relative)")
                }
            }
        }
        return found.sorted { $0.split(separator: "/").count > $1.split(separator: "/").count }
    }

    static func write(_ text: String, to path: String) {
        guard FileManager.default.fileExists(atPath: path) else { return }
        try? text.write(toFile: path, atomically: false, encoding: .utf8)
    }
}
