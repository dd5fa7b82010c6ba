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

    // MARK: Containers made with `ctr run` (adopted)

    /// The namespace `ctr` uses when given none: where `ctr run` puts its containers. UMS adopts
    /// only from there — other namespaces belong to other tools (`moby` to Docker, `k8s.io` to
    /// the CRI), whose own bookkeeping a migration would bypass.
    public static let adoptedNamespace = "default"

    /// The same containerd, in the namespace of `ctr run`'s containers.
    public var adopted: Ctr { Ctr(address: address, namespace: Self.adoptedNamespace, binary: binary) }

    public func containerIDsArguments() -> [String] { global() + ["containers", "list", "--quiet"] }
    public func containerInfoArguments(id: String) -> [String] { global() + ["containers", "info", id] }
    public func imagesArguments() -> [String] { global() + ["images", "list"] }
    public func exportImageArguments(file: String, name: String) -> [String] {
        global() + ["images", "export", "--skip-manifest-json", file, name]
    }
    /// Imports an OCI layout archive; `indexName` keeps its index as that image (a checkpoint).
    public func importArguments(file: String, indexName: String? = nil) -> [String] {
        global() + ["images", "import"] + (indexName.map { ["--no-unpack", "--index-name", $0] } ?? []) + [file]
    }
    public func tagArguments(_ source: String, _ target: String) -> [String] { global() + ["images", "tag", source, target] }
    public func removeImageArguments(_ name: String) -> [String] { global() + ["images", "remove", name] }
    /// The task's checkpoint through its runc shim, CRIU's images written into `imagePath` (as
    /// they are written: the stream sends them on meanwhile); the task exits with the dump.
    public func checkpointTaskArguments(id: String, imagePath: String, workPath: String) -> [String] {
        global() + ["tasks", "checkpoint", "--exit", "--image-path", imagePath, "--work-path", workPath, id]
    }
    /// With no task, containerd's checkpoint of a container is its root filesystem's changes
    /// (an OCI layer) and its runtime options: `ref` names it.
    public func checkpointChangesArguments(id: String, ref: String) -> [String] {
        global() + ["containers", "checkpoint", "--rw", id, ref]
    }
    public func deleteStoppedTaskArguments(id: String) -> [String] { global() + ["tasks", "delete", id] }
    public func contentArguments(digest: String) -> [String] { global() + ["content", "get", digest] }
    /// A container as `ctr run` makes one from `image` (its spec from containerd's defaults and the
    /// image's configuration), not started.
    public func createArguments(image: String, id: String, environment: [String], workingDirectory: String?, memoryBytes: Int64?, command: [String]) -> [String] {
        global() + ["containers", "create"] + environment.flatMap { ["--env", $0] } + (workingDirectory.map { ["--cwd", $0] } ?? [])
            + (memoryBytes.map { ["--memory-limit", String($0)] } ?? []) + ["--", image, id] + command
    }
    /// Makes the container from a checkpoint and its task from the dump in it (`--live`), the
    /// root filesystem's changes applied (`--rw`).
    public func restoreArguments(id: String, ref: String) -> [String] { global() + ["containers", "restore", "--live", "--rw", id, ref] }
    public func labelArguments(id: String, labels: [String: String]) -> [String] {
        global() + ["containers", "label", id] + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    }

    /// `ctr images list`: `REF TYPE DIGEST SIZE …` rows; each image's name and the digest of what
    /// it points at (its manifest).
    public static func parseImages(_ text: String) -> [(name: String, digest: String)] {
        text.split(separator: "\n").dropFirst().compactMap { line in
            let fields = line.split(whereSeparator: \.isWhitespace).map(String.init)
            guard fields.count >= 3, fields[2].hasPrefix("sha256:") else { return nil }
            return (fields[0], fields[2])
        }
    }

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
