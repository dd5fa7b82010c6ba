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
