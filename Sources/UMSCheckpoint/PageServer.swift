import Foundation
import Logging
import Subprocess
import UMSModel
import UMSOS

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Where a checkpoint's memory pages should go: a CRIU page-server at the destination. Pages
/// stream over TCP while the dump writes them, so checkpoint and transfer overlap (the paper's
/// Steps 8 and 9) and the source never holds the memory image on disk.
public struct PageServerAddress: Codable, Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(host):\(port)" }
}

/// Arguments for a one-shot `criu page-server` that writes the pages it receives into
/// `imagesDirectory` and exits when the dump closes the connection.
public struct PageServerOptions: Sendable, Equatable {
    public var imagesDirectory: String
    public var address: String
    public var port: Int
    public var logFile: String

    public init(imagesDirectory: String, address: String, port: Int, logFile: String) {
        self.imagesDirectory = imagesDirectory
        self.address = address
        self.port = port
        self.logFile = logFile
    }

    public func arguments() -> [String] {
        ["page-server", "--images-dir", imagesDirectory, "--address", address, "--port", String(port),
         "--log-file", logFile, "-v4"]
    }
}

/// A running page-server. The Coordinator starts it during pre-migration (the destination
/// container's receiving end) and waits for it after the dump.
public final class PageServer: Sendable {
    public let options: PageServerOptions
    private let task: Task<Void, any Error>

    /// Starts the page-server and returns once it listens (or throws if it exits first).
    public static func start(criu: CRIUInfo, options: PageServerOptions, logger: Logger) async throws -> PageServer {
        let criuPath = criu.path
        let arguments = options.arguments()
        let task = Task<Void, any Error> {
            let result = try await Subprocess.run(
                .path(FilePath(criuPath)), arguments: Arguments(arguments),
                input: .none, output: .discarded, error: .string(limit: 64 << 10)
            )
            guard case .exited(0) = result.terminationStatus else {
                throw UMSError(.internalError, "failed to receive pages: criu page-server \(result.terminationStatus)",
                               cause: CommandFailure(PageServer.tail(of: options.logFile)))
            }
        }
        let server = PageServer(options: options, task: task)
        // The page-server runs its status-ready hooks once it listens, just before it accepts;
        // that log line is the readiness signal.
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline, !task.isCancelled {
            if let log = try? String(contentsOfFile: options.logFile, encoding: .utf8),
               log.contains("Running status-ready scripts") || log.contains("Accepted connection") {
                return server
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        server.cancel()
        throw UMSError(.timeout, "failed to start criu page-server on \(options.address):\(options.port)",
                       cause: CommandFailure(tail(of: options.logFile)))
    }

    private init(options: PageServerOptions, task: Task<Void, any Error>) {
        self.options = options
        self.task = task
    }

    /// Waits until the dump has sent everything and the page-server exited cleanly.
    public func finish(timeout: Duration = .seconds(30)) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.task.value }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw UMSError(.timeout, "failed to receive pages: page-server did not finish in \(timeout)")
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// Stops it (a cancelled migration); the process is terminated by swift-subprocess.
    public func cancel() {
        task.cancel()
    }

    static func tail(of file: String) -> String {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return "no log at \(file)" }
        return text.split(separator: "\n").suffix(8).joined(separator: "\n")
    }
}
