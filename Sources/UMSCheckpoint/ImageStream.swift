import Crypto
import Foundation
import NIOCore
import UMSModel
import UMSOS

#if canImport(Glibc)
import Glibc
#endif

/// The synchronization module (paper Fig. 1): streams a checkpoint's image files to the
/// destination **while CRIU writes them**, over the Coordinators' authenticated HTTP channel.
///
/// CRIU writes each image file sequentially; the sender tails the directory, sending every new
/// range of every file as a frame, until the dump has finished and a last pass found nothing new.
/// The receiver writes each frame at its offset. Both sides hash the framed stream, so the source
/// knows the destination saw exactly what it sent.
///
/// Why not CRIU's page-server: its client keeps the socket corked on the final close command, which
/// costs 200 ms on every dump with CRIU 4.2, and its port is unauthenticated.
///
/// Stream format: `"UMSI" u8(version)` then frames `u8(kind) u16(nameLength) name u64(offset)
/// u32(length) bytes`, kind 1 = data, 2 = truncate to `offset`, 0 = end (name empty, offset = data
/// bytes sent, length = files).
public enum ImageStream {
    public struct Summary: Sendable, Equatable {
        public var bytes: Int64
        public var files: Int
        /// `sha256:<hex>` of the framed stream.
        public var digest: String
    }

    static let magic: [UInt8] = Array("UMSI".utf8) + [1]
    /// The largest payload of one frame (both writers send at most this).
    static let chunkSize = 1 << 20
    /// The largest offset a frame may name: no image file is a tebibyte.
    static let maxOffset: UInt64 = 1 << 40
    /// The most image files one stream may create.
    static let maxFiles = 4096

    enum Kind: UInt8 {
        case end = 0, data = 1, truncate = 2
    }

    /// Streams `directory` until `isFinished()` is true and a last pass has sent everything.
    public static func send(
        directory: String, isFinished: @Sendable () async -> Bool, consume: @Sendable (ByteBuffer) async throws -> Void
    ) async throws -> Summary {
        var hasher = SHA256()
        func emit(_ buffer: ByteBuffer) async throws {
            buffer.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
            try await consume(buffer)
        }
        try await emit(ByteBuffer(bytes: magic))
        var offsets: [String: Int64] = [:]
        var sent: Int64 = 0
        var scratch = [UInt8](repeating: 0, count: chunkSize)
        while true {
            try Task.checkCancellation()
            // Read the flag before the pass: a pass that starts after the dump ended sees every byte.
            let finished = await isFinished()
            var progressed = false
            for name in try FileSystem.contents(of: directory) {
                let path = "\(directory)/\(name)"
                var info = stat()
                guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
                let size = Int64(info.st_size)
                var offset = offsets[name] ?? 0
                if size < offset {
                    try await emit(frame(.truncate, name: name, offset: 0, payload: nil))
                    offset = 0
                }
                guard size > offset else { continue }
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw UMSError(.internalError, "failed to read checkpoint image \(path): errno \(errno)") }
                defer { close(fd) }
                while offset < size {
                    let want = Int(min(Int64(chunkSize), size - offset))
                    let got = scratch.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(offset)) }
                    guard got > 0 else { break }
                    try await emit(frame(.data, name: name, offset: offset, payload: scratch[0..<got]))
                    offset += Int64(got)
                    sent += Int64(got)
                    progressed = true
                }
                offsets[name] = offset
            }
            if finished { break }
            if !progressed { try await Task.sleep(for: .milliseconds(2)) }
        }
        try await emit(frame(.end, name: "", offset: sent, payload: nil, length: UInt32(offsets.count)))
        return Summary(bytes: sent, files: offsets.count, digest: "sha256:" + hasher.finalize().hex)
    }

    static func frame(_ kind: Kind, name: String, offset: Int64, payload: ArraySlice<UInt8>?, length: UInt32? = nil) -> ByteBuffer {
        let nameBytes = Array(name.utf8)
        var buffer = ByteBuffer()
        buffer.reserveCapacity(15 + nameBytes.count + (payload?.count ?? 0))
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(UInt16(nameBytes.count))
        buffer.writeBytes(nameBytes)
        buffer.writeInteger(UInt64(offset))
        buffer.writeInteger(length ?? UInt32(payload?.count ?? 0))
        if let payload { buffer.writeBytes(payload) }
        return buffer
    }

    /// Receives a stream into `directory` (which must exist). Refuses anything malformed: a bad
    /// header, a file name that is not a plain name, a stream that ends early or says it sent
    /// a different number of bytes than arrived.
    public static func receive<Chunks: AsyncSequence & Sendable>(_ chunks: Chunks, into directory: String) async throws -> Summary
        where Chunks.Element == ByteBuffer
    {
        var hasher = SHA256()
        var pending = ByteBuffer()
        var files: [String: Int32] = [:]
        defer { for fd in files.values { close(fd) } }
        var received: Int64 = 0
        var headerSeen = false
        var ended = false
        func corrupt(_ reason: String) -> UMSError {
            UMSError(.invalidArgument, "failed to receive checkpoint images: \(reason) (corrupted or truncated transfer)")
        }
        for try await chunk in chunks {
            guard !ended else { throw corrupt("data after the end of the stream") }
            chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
            var incoming = chunk
            pending.writeBuffer(&incoming)
            if !headerSeen {
                guard pending.readableBytes >= magic.count else { continue }
                guard pending.readBytes(length: magic.count) == magic else { throw corrupt("not a UMS image stream") }
                headerSeen = true
            }
            while true {
                let start = pending.readerIndex
                guard let kindByte: UInt8 = pending.readInteger(), let nameLength: UInt16 = pending.readInteger(),
                      let nameBytes = pending.readBytes(length: Int(nameLength)),
                      let offset: UInt64 = pending.readInteger(), let length: UInt32 = pending.readInteger()
                else { pending.moveReaderIndex(to: start); break }
                guard let kind = Kind(rawValue: kindByte) else { throw corrupt("unknown frame kind \(kindByte)") }
                // Bounded before anything is buffered or converted: no value from the wire can
                // make this side wait for gigabytes or trap.
                guard length <= chunkSize else { throw corrupt("a frame of \(length) bytes is larger than \(chunkSize)") }
                guard kind == .end || offset <= maxOffset else { throw corrupt("a frame at offset \(offset) is beyond \(maxOffset)") }
                let payloadLength = kind == .data ? Int(length) : 0
                guard pending.readableBytes >= payloadLength else { pending.moveReaderIndex(to: start); break }
                let name = String(decoding: nameBytes, as: UTF8.self)
                if kind == .end {
                    guard Int64(exactly: offset) == received else { throw corrupt("sender sent \(offset) bytes, \(received) arrived") }
                    ended = true
                    break
                }
                guard !name.isEmpty, !name.contains("/"), name != ".", name != "..", name.utf8.count <= 255 else {
                    throw corrupt("invalid file name '\(name)'")
                }
                let fd: Int32
                if let open = files[name] {
                    fd = open
                } else {
                    guard files.count < maxFiles else { throw corrupt("more than \(maxFiles) files") }
                    fd = open("\(directory)/\(name)", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
                    guard fd >= 0 else { throw UMSError(.internalError, "failed to write checkpoint image \(name): errno \(errno)") }
                    files[name] = fd
                }
                if kind == .truncate {
                    guard ftruncate(fd, off_t(offset)) == 0 else { throw UMSError(.internalError, "failed to truncate \(name)") }
                    continue
                }
                var written = 0
                try pending.withUnsafeReadableBytes { raw in
                    guard let base = raw.baseAddress else { return }
                    while written < payloadLength {
                        let n = pwrite(fd, base + written, payloadLength - written, off_t(Int(offset) + written))
                        guard n > 0 else { throw UMSError(.internalError, "failed to write checkpoint image \(name): errno \(errno)") }
                        written += n
                    }
                }
                pending.moveReaderIndex(forwardBy: payloadLength)
                received += Int64(payloadLength)
            }
            pending.discardReadBytes()
        }
        guard ended else { throw corrupt("the stream ended before its end frame") }
        return Summary(bytes: received, files: files.count, digest: "sha256:" + hasher.finalize().hex)
    }
}
