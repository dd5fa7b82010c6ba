import UMSModel
import UMSOS

/// The `runc` command line, built from option structs so that tests can assert exact argument
/// vectors without running runc.
public struct Runc: Sendable {
    /// runc's state directory (`--root`): each system keeps its own.
    public var root: String
    /// The CRIU binary runc hands checkpoints to (`--criu`).
    public var criuPath: String
    public var binary: String

    public init(root: String, criuPath: String, binary: String = "runc") {
        self.root = root
        self.criuPath = criuPath
        self.binary = binary
    }

    public struct CheckpointOptions: Sendable, Equatable {
        public var imagePath: String
        public var workPath: String
        public var pageServer: String?
        public var leaveRunning: Bool
        public var tcpEstablished: Bool
        /// Post-copy: dump everything but the pages, then serve them at `pageServer`.
        public var lazyPages: Bool

        public init(
            imagePath: String, workPath: String, pageServer: String? = nil, leaveRunning: Bool = true,
            tcpEstablished: Bool = false, lazyPages: Bool = false
        ) {
            self.imagePath = imagePath
            self.workPath = workPath
            self.pageServer = pageServer
            self.leaveRunning = leaveRunning
            self.tcpEstablished = tcpEstablished
            self.lazyPages = lazyPages
        }
    }

    public struct RestoreOptions: Sendable, Equatable {
        public var imagePath: String
        public var workPath: String
        public var bundle: String
        public var tcpEstablished: Bool
        /// Post-copy: pages come from the lazy-pages daemon listening in `workPath`.
        public var lazyPages: Bool

        public init(imagePath: String, workPath: String, bundle: String, tcpEstablished: Bool = false, lazyPages: Bool = false) {
            self.imagePath = imagePath
            self.workPath = workPath
            self.bundle = bundle
            self.tcpEstablished = tcpEstablished
            self.lazyPages = lazyPages
        }
    }

    private func global(log: String? = nil) -> [String] {
        var arguments = ["--root", root, "--criu", criuPath]
        if let log { arguments += ["--log", log, "--log-format", "json"] }
        return arguments
    }

    public func runArguments(id: String, bundle: String, log: String) -> [String] {
        global(log: log) + ["run", "--detach", "--bundle", bundle, id]
    }

    public func checkpointArguments(id: String, options: CheckpointOptions) -> [String] {
        var arguments = global() + ["checkpoint", "--image-path", options.imagePath, "--work-path", options.workPath]
        if options.leaveRunning { arguments.append("--leave-running") }
        if let pageServer = options.pageServer { arguments += ["--page-server", pageServer] }
        if options.lazyPages { arguments.append("--lazy-pages") }
        if options.tcpEstablished { arguments.append("--tcp-established") }
        return arguments + [id]
    }

    public func restoreArguments(id: String, options: RestoreOptions, log: String) -> [String] {
        var arguments = global(log: log) + ["restore", "--detach", "--image-path", options.imagePath,
                                             "--work-path", options.workPath, "--bundle", options.bundle]
        if options.lazyPages { arguments.append("--lazy-pages") }
        if options.tcpEstablished { arguments.append("--tcp-established") }
        return arguments + [id]
    }

    public func pauseArguments(id: String) -> [String] { global() + ["pause", id] }
    public func resumeArguments(id: String) -> [String] { global() + ["resume", id] }
    public func stateArguments(id: String) -> [String] { global() + ["state", id] }
    public func processesArguments(id: String) -> [String] { global() + ["ps", "--format", "json", id] }
    public func killArguments(id: String, signal: String) -> [String] { global() + ["kill", id, signal] }
    /// `delete --force` kills a running or frozen container without letting it run again: runc
    /// signals a frozen cgroup's processes before it thaws them.
    public func deleteArguments(id: String) -> [String] { global() + ["delete", "--force", id] }

    public func command(_ arguments: [String], discardOutput: Bool = false) -> Command {
        Command(binary, arguments, discardOutput: discardOutput)
    }
}
