import Crypto
import Foundation
import NIOCore
import Subprocess
import UMSModel

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Tar streams of directories: how root filesystems and checkpoint files cross between systems.
/// GNU tar does the work (it knows sparse files, xattrs, whiteouts, device nodes); UMS streams its
/// output chunk by chunk and hashes it on the way, so nothing is buffered whole and both ends can
/// check they saw the same bytes.
/// What one side saw of a stream it produced or consumed: both ends compute it, so the sender
/// can tell the receiver saw exactly what it sent.
public struct StreamSummary: Sendable, Equatable {
    /// `sha256:<hex>` of the stream's bytes.
    public var digest: String
    public var bytes: Int64

    public init(digest: String, bytes: Int64) {
        self.digest = digest
        self.bytes = bytes
    }
}

public enum Archive {

    /// Flags that make the stream depend only on names, contents, modes and links, so that the
    /// same tree gives the same digest on every system.
    static let canonicalFlags = [
        "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "--format=posix",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
    ]

    /// Arguments for `tar` creating a stream of `members` under `directory` on standard output.
    /// `snapshot`: GNU tar's listed-incremental file; the first stream made with it holds
    /// everything, the next one only what changed since (and which names are gone).
    public static func createArguments(directory: String, members: [String], canonical: Bool, snapshot: String? = nil) -> [String] {
        var arguments = ["-c", "-f", "-", "--sparse"]
        arguments += canonical ? canonicalFlags : ["--xattrs", "--xattrs-include=*"]
        if let snapshot { arguments.append("--listed-incremental=\(snapshot)") }
        return arguments + ["-C", directory] + members
    }

    /// `untrusted`: a peer's stream of a container's changes: of the `trusted.*` extended
    /// attributes only overlayfs' own (opaque directories, redirects) are written.
    /// `incremental`: the stream is one of a listed-incremental series; names it says are gone
    /// are removed from `directory` (only there: GNU tar keeps to the directory).
    public static func extractArguments(directory: String, untrusted: Bool = false, incremental: Bool = false, gzip: Bool = false) -> [String] {
        let xattrs = untrusted
            ? ["--xattrs-include=user.*", "--xattrs-include=security.*", "--xattrs-include=trusted.overlay.*"]
            : ["--xattrs-include=*"]
        return ["-x", "-f", "-"] + (gzip ? ["-z"] : []) + ["--sparse", "--xattrs"] + xattrs + (incremental ? ["--listed-incremental=/dev/null"] : [])
            + ["--numeric-owner", "-p", "-C", directory]
    }

    /// Runs `tar -c` and hands each chunk to `consume` as it is produced; `consume` applies
    /// backpressure by not returning until it has taken the chunk.
    @discardableResult
    public static func create(
        directory: String, members: [String] = ["."], canonical: Bool = false, snapshot: String? = nil,
        consume: @Sendable (ByteBuffer) async throws -> Void
    ) async throws -> StreamSummary {
        let arguments = createArguments(directory: directory, members: members, canonical: canonical, snapshot: snapshot)
        return try await stream("tar", arguments, what: "archive \(directory)", consume: consume)
    }

    /// Runs a command and hands its standard output to `consume` chunk by chunk as it comes
    /// (backpressure: the next is read once `consume` returned), hashing it on the way.
    @discardableResult
    public static func stream(
        _ executable: String, _ arguments: [String], what: String, consume: @Sendable (ByteBuffer) async throws -> Void
    ) async throws -> StreamSummary {
        let result = try await Subprocess.run(
            .name(executable), arguments: Arguments(arguments), input: .none, output: .sequence, error: .string(limit: 64 << 10)
        ) { execution in
            var hasher = SHA256()
            var bytes: Int64 = 0
            for try await chunk in execution.standardOutput {
                let buffer = chunk.withUnsafeBytes { raw in
                    hasher.update(bufferPointer: raw)
                    return ByteBuffer(bytes: raw)
                }
                bytes += Int64(buffer.readableBytes)
                try await consume(buffer)
            }
            return StreamSummary(digest: "sha256:" + hasher.finalize().hex, bytes: bytes)
        }
        try check(result.terminationStatus, stderr: result.standardError, what: what, program: executable)
        return result.closureResult
    }

    /// Feeds `chunks` into `tar -x` under `directory` (which must exist), hashing them on the way.
    public static func extract<Chunks: AsyncSequence & Sendable>(
        _ chunks: Chunks, into directory: String, untrusted: Bool = false, incremental: Bool = false, gzip: Bool = false
    ) async throws -> StreamSummary where Chunks.Element == ByteBuffer {
        let result = try await Subprocess.run(
            .name("tar"), arguments: Arguments(extractArguments(directory: directory, untrusted: untrusted, incremental: incremental, gzip: gzip)),
            input: .inputWriter, output: .discarded, error: .string(limit: 64 << 10)
        ) { execution in
            var hasher = SHA256()
            var bytes: Int64 = 0
            do {
                for try await buffer in chunks {
                    buffer.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
                    bytes += Int64(buffer.readableBytes)
                    _ = try await execution.standardInputWriter.write(Array(buffer.readableBytesView))
                }
            } catch {
                try? await execution.standardInputWriter.finish()
                throw error
            }
            try await execution.standardInputWriter.finish()
            return StreamSummary(digest: "sha256:" + hasher.finalize().hex, bytes: bytes)
        }
        try check(result.terminationStatus, stderr: result.standardError, what: "extract into \(directory)")
        return result.closureResult
    }

    /// A file's SHA-256 (hex) and size, read in 1 MiB pieces.
    public static func sha256(ofFile file: String) throws -> (hex: String, size: Int64) {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: file))
        defer { try? handle.close() }
        var hasher = SHA256()
        var size: Int64 = 0
        while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
            hasher.update(data: data)
            size += Int64(data.count)
        }
        return (hasher.finalize().hex, size)
    }

    /// The canonical digest of a directory, without keeping the stream.
    public static func digest(of directory: String) async throws -> StreamSummary {
        try await create(directory: directory, canonical: true) { _ in }
    }

    private static func check(_ status: TerminationStatus, stderr: String?, what: String, program: String = "tar") throws {
        if case .exited(0) = status { return }
        let detail = (stderr ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        throw UMSError(.internalError, "failed to \(what): \(program) \(status)", cause: detail.isEmpty ? nil : CommandFailure(detail))
    }
}

extension Digest {
    public var hex: String { Array(self.makeIterator().map { $0 }).hex }
}
