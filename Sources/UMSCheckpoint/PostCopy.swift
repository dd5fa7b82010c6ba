import Foundation
#if canImport(Glibc)
import Glibc
#endif
import UMSModel
import UMSOS

/// `criu lazy-pages` at the destination: the daemon that the restored process's page faults go to,
/// and that fetches every remaining page from the source's page-server.
public struct LazyPagesOptions: Sendable, Equatable {
    public var imagesDirectory: String
    /// Must be the restore's work directory: CRIU's restore finds the daemon's socket there.
    public var workDirectory: String
    public var source: PageServerAddress

    public init(imagesDirectory: String, workDirectory: String, source: PageServerAddress) {
        self.imagesDirectory = imagesDirectory
        self.workDirectory = workDirectory
        self.source = source
    }

    public var logFile: String { "\(workDirectory)/lazy-pages.log" }
    public var socket: String { "\(workDirectory)/lazy-pages.socket" }

    public func arguments() -> [String] {
        ["lazy-pages", "--page-server", "--address", source.host, "--port", String(source.port),
         "--images-dir", imagesDirectory, "--work-dir", workDirectory, "--log-file", logFile, "-v4"]
    }

    /// Bytes of pages the daemon moved, from its log ("UFFD transferred pages: (N/M)" per process).
    public static func transferredBytes(log text: String, pageSize: Int64 = 4096) -> Int64 {
        var pages: [Substring: Int64] = [:]
        for line in text.split(separator: "\n") {
            guard let marker = line.range(of: "UFFD transferred pages: ("),
                  let uffd = line.range(of: "uffd: "), uffd.upperBound < marker.lowerBound
            else { continue }
            let process = line[uffd.upperBound...].prefix { $0 != ":" }
            let counts = line[marker.upperBound...].prefix { $0 != ")" }.split(separator: "/")
            if let done = counts.first.flatMap({ Int64($0) }) { pages[process] = done }
        }
        return pages.values.reduce(0, +) * pageSize
    }

    /// Starts the daemon and returns once it listens for the restore.
    public func start(criu: CRIUInfo) async throws -> BackgroundProcess {
        try FileSystem.makeDirectory(workDirectory)
        let process = BackgroundProcess(Command(criu.path, arguments()), logFile: logFile)
        let socket = self.socket
        try await process.waitUntilReady(timeout: .seconds(10)) { FileSystem.exists(socket) }
        return process
    }
}
