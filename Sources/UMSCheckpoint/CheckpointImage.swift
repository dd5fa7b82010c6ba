import UMSOS

/// The files of one checkpoint, as they lie in a directory.
public enum CheckpointImage {
    /// The tail of a CRIU log, for an error message.
    public static func logTail(_ path: String, lines: Int = 6) -> String {
        guard let data = try? FileSystem.read(path), let text = String(data: data, encoding: .utf8) else {
            return "no log at \(path)"
        }
        // Root cannot raise RLIMIT_NOFILE on some hosts; CRIU logs that on every run and goes on.
        let relevant = text.split(separator: "\n").filter {
            ($0.contains("Error") || $0.contains("error")) && !$0.contains("RLIMIT_NOFILE")
        }
        return (relevant.isEmpty ? Array(text.split(separator: "\n").suffix(lines)) : Array(relevant.suffix(lines))).joined(separator: "\n")
    }
}
