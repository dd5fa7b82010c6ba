import Foundation
#if canImport(Glibc)
import Glibc
#endif
import UMSModel
import UMSOS

/// Where a post-copy dump serves its pages: on the source system's address.
public struct PageServerAddress: Codable, Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(parsing text: String) throws(UMSError) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port),
              colon > text.startIndex
        else { throw UMSError(.invalidArgument, "invalid page-server address '\(text)': expected HOST:PORT") }
        self.init(host: String(text[..<colon]), port: port)
    }

    public var description: String { "\(host):\(port)" }

    /// Connects and hangs up at once. A post-copy dump whose destination will never fetch its
    /// pages fails cleanly on that: CRIU releases the tasks and unlocks the network, which a
    /// killed CRIU would not.
    public func hangUp() {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { return }
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
}

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
