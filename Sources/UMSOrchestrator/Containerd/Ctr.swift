import UMSModel
import UMSOS

/// containerd's command line (`ctr`), for the `containerd` orchestrator: the embedded
/// orchestrator's bundles, overlays and network namespaces, with containerd (and its runc shim)
/// running the containers instead of UMS calling runc itself. Each system uses its own
/// containerd socket and a namespace of its own.
public struct Ctr: Sendable, Equatable {
    public var address: String
    public var namespace: String
    public var binary: String

    public init(address: String, namespace: String, binary: String = "ctr") {
        self.address = address
        self.namespace = namespace
        self.binary = binary
    }

    func global() -> [String] { ["--address", address, "--namespace", namespace] }

    /// Runs the container from our OCI config (its root an absolute path), stdio to /dev/null.
    public func runArguments(id: String, config: String) -> [String] {
        global() + ["run", "--detach", "--null-io", "--config", config, id]
    }

    public func tasksArguments() -> [String] { global() + ["tasks", "list"] }
    public func processesArguments(id: String) -> [String] { global() + ["tasks", "ps", id] }
    public func killArguments(id: String) -> [String] { global() + ["tasks", "kill", "--signal", "SIGKILL", "--all", id] }
    public func deleteTaskArguments(id: String) -> [String] { global() + ["tasks", "delete", "--force", id] }
    public func deleteContainerArguments(id: String) -> [String] { global() + ["containers", "delete", id] }
    public func versionArguments() -> [String] { ["--address", address, "version"] }

    /// `ctr tasks list`: `TASK PID STATUS` rows; the state and PID of `id`, nil if it has no task.
    public static func parseTasks(_ text: String, id: String) -> (ContainerInfo.State, Int?)? {
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(whereSeparator: \.isWhitespace).map(String.init)
            guard fields.count >= 3, fields[0] == id else { continue }
            let state: ContainerInfo.State = switch fields[2].uppercased() {
            case "RUNNING": .running
            case "PAUSED", "PAUSING": .paused
            case "CREATED": .created
            case "STOPPED": .stopped
            default: .unknown
            }
            return (state, Int(fields[1]).flatMap { $0 > 0 ? $0 : nil })
        }
        return nil
    }

    /// `ctr tasks ps`: `PID INFO` rows.
    public static func parseProcessCount(_ text: String) -> Int {
        text.split(separator: "\n").dropFirst().filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }.count
    }

    /// `ctr version`: the server's version.
    public static func parseServerVersion(_ text: String) -> String {
        let server = text.components(separatedBy: "Server:").last ?? ""
        for line in server.split(separator: "\n") where line.contains("Version:") {
            return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
        }
        return "unknown"
    }
}
