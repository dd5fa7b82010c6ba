import Synchronization
import Foundation

/// Reading the reason for a failure out of a tool's log (runc, CRIU), for an error message.
public enum LogFile {
    /// The last error lines of the log at `path`, or its last lines when it has none.
    public static func tail(_ path: String, lines: Int = 6) -> String {
        guard let data = try? FileSystem.read(path), let text = String(data: data, encoding: .utf8) else {
            return "no log at \(path)"
        }
        let all = text.split(separator: "\n")
        // Root cannot raise RLIMIT_NOFILE on some hosts; CRIU logs that on every run and goes on.
        let errors = all.filter { ($0.contains("Error") || $0.contains("error")) && !$0.contains("RLIMIT_NOFILE") }
        return (errors.isEmpty ? all.suffix(lines) : errors.suffix(lines)).joined(separator: "\n")
    }
}

/// Watches a log that another process is writing for a line, reading only what was appended
/// since the last look: a poll every few milliseconds must not read a growing verbose log whole
/// each time (CRIU's, while it dumps on the same cores).
public final class LogWatch: Sendable {
    let path: String
    let needle: Data
    /// Where the next look starts.
    let offset = Mutex<UInt64>(0)

    public init(path: String, for line: String) {
        self.path = path
        self.needle = Data(line.utf8)
    }

    /// Whether the line has appeared (a match across two looks counts: each look starts the
    /// needle's length before where the last one ended).
    public func appeared() -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        return offset.withLock { offset in
            let overlap = UInt64(max(needle.count - 1, 0))
            let start = offset > overlap ? offset - overlap : 0
            guard (try? handle.seek(toOffset: start)) != nil, let data = try? handle.readToEnd(), !data.isEmpty else { return false }
            offset = start + UInt64(data.count)
            return data.range(of: needle) != nil
        }
    }
}
