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
/// bytes sent, length = files). Version 2 (issue 17) adds kind 5 = `length` zero bytes at
/// `offset` (no payload: whole zero pages never cross), 6 = zstd and 7 = lz4 (payload:
/// `u32(rawLength)` then the compressed bytes, which must expand to exactly `rawLength`).
public enum ImageStream {
    public struct Summary: Sendable, Equatable {
        /// The images' bytes (as written at the destination).
        public var bytes: Int64
        public var files: Int
        /// `sha256:<hex>` of the framed stream.
        public var digest: String
        /// Of `bytes`: announced as zero pages, and sent compressed.
        public var zeroBytes: Int64 = 0
        public var compressedBytes: Int64 = 0
        /// The framed stream's size.
        public var wireBytes: Int64 = 0
    }

    static func magic(version: UInt8) -> [UInt8] { Array("UMSI".utf8) + [version] }
    /// The page size CRIU dumps in; zero runs are found in whole pages.
    static let pageSize = 4096
    /// The largest payload of one frame (both writers send at most this).
    static let chunkSize = 1 << 20
    /// The largest offset a frame may name: no image file is a tebibyte.
    static let maxOffset: UInt64 = 1 << 40
    /// The most image files one stream may create.
    static let maxFiles = 4096

    enum Kind: UInt8 {
        // 3 and 4 are the C agent's (its open files and metadata, version 1): not used here.
        case end = 0, data = 1, truncate = 2, zeros = 5, zstd = 6, lz4 = 7
    }

    /// Streams `directory` until `isFinished()` is true and a last pass has sent everything.
    /// `compression` nil: version 1, every byte as read (a destination that reads nothing else);
    /// otherwise version 2: zero pages announced, the rest compressed as the policy says.
    public static func send(
        directory: String, isFinished: @Sendable () async -> Bool, compression: ImageCompression? = nil,
        consume: @Sendable (ByteBuffer) async throws -> Void
    ) async throws -> Summary {
        var hasher = SHA256()
        var wire: Int64 = 0
        func emit(_ buffer: ByteBuffer) async throws {
            buffer.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
            wire += Int64(buffer.readableBytes)
            try await consume(buffer)
        }
        try await emit(ByteBuffer(bytes: magic(version: compression == nil ? 1 : 2)))
        let codec = compression.map { ChunkCodec(policy: $0, chunkSize: chunkSize) }
        var zeroBytes: Int64 = 0
        var compressedBytes: Int64 = 0
        /// One run of bytes read at `offset` of `name`: as zero-page runs and data (compressed
        /// where that pays) in version 2, as one data frame in version 1.
        func emitRun(_ name: String, _ offset: Int64, _ bytes: ArraySlice<UInt8>) async throws {
            guard let codec else {
                try await emit(frame(.data, name: name, offset: offset, payload: bytes))
                return
            }
            var start = bytes.startIndex
            while start < bytes.endIndex {
                func zero(_ at: Int) -> Bool {
                    bytes[at..<min(at + pageSize, bytes.endIndex)].withUnsafeBytes { ChunkCodec.isZero($0) }
                }
                let zeros = zero(start)
                var end = min(start + pageSize, bytes.endIndex)
                while end < bytes.endIndex, zero(end) == zeros { end = min(end + pageSize, bytes.endIndex) }
                let at = offset + Int64(start - bytes.startIndex)
                if zeros {
                    try await emit(frame(.zeros, name: name, offset: at, payload: nil, length: UInt32(end - start)))
                    zeroBytes += Int64(end - start)
                } else if let (kind, packed) = bytes[start..<end].withUnsafeBytes({ codec.compress($0) }) {
                    let raw = UInt32(end - start)
                    var payload = [UInt8(raw >> 24), UInt8((raw >> 16) & 0xFF), UInt8((raw >> 8) & 0xFF), UInt8(raw & 0xFF)]
                    payload.append(contentsOf: packed)
                    try await emit(frame(kind == .zstd ? .zstd : .lz4, name: name, offset: at, payload: payload[...]))
                    compressedBytes += Int64(end - start)
                } else {
                    try await emit(frame(.data, name: name, offset: at, payload: bytes[start..<end]))
                }
                start = end
            }
        }
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
                    try await emitRun(name, offset, scratch[0..<got])
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
        return Summary(
            bytes: sent, files: offsets.count, digest: "sha256:" + hasher.finalize().hex, zeroBytes: zeroBytes, compressedBytes: compressedBytes,
            wireBytes: wire
        )
    }

    static func frame(_ kind: Kind, name: String, offset: Int64, payload: ArraySlice<UInt8>?, length: UInt32? = nil) -> ByteBuffer {
        let nameBytes = Array(name.utf8)
        var buffer = ByteBuffer()
        buffer.reserveCapacity(15 + nameBytes.count + (payload.map { $0.count } ?? 0))
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(UInt16(nameBytes.count))
        buffer.writeBytes(nameBytes)
        buffer.writeInteger(UInt64(offset))
        buffer.writeInteger(length ?? UInt32(payload.map { $0.count } ?? 0))
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
        var version: UInt8 = 0
        var ended = false
        var zeroBytes: Int64 = 0
        var compressedBytes: Int64 = 0
        var wire: Int64 = 0
        var expander: ChunkExpander?
        var expanded: [UInt8] = []
        func corrupt(_ reason: String) -> UMSError {
            UMSError(.invalidArgument, "failed to receive checkpoint images: \(reason) (corrupted or truncated transfer)")
        }
        for try await chunk in chunks {
            guard !ended else { throw corrupt("data after the end of the stream") }
            chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
            wire += Int64(chunk.readableBytes)
            var incoming = chunk
            pending.writeBuffer(&incoming)
            if version == 0 {
                guard pending.readableBytes >= 5 else { continue }
                let header = pending.readBytes(length: 5) ?? []
                guard header == magic(version: 1) || header == magic(version: 2) else { throw corrupt("not a UMS image stream") }
                version = header[4]
            }
            while true {
                let start = pending.readerIndex
                guard let kindByte: UInt8 = pending.readInteger(), let nameLength: UInt16 = pending.readInteger(),
                      let nameBytes = pending.readBytes(length: Int(nameLength)),
                      let offset: UInt64 = pending.readInteger(), let length: UInt32 = pending.readInteger()
                else { pending.moveReaderIndex(to: start); break }
                guard let kind = Kind(rawValue: kindByte), version >= 2 || [.end, .data, .truncate].contains(kind) else {
                    throw corrupt("unknown frame kind \(kindByte) in a version \(version) stream")
                }
                // Bounded before anything is buffered or converted: no value from the wire can
                // make this side wait for gigabytes or trap.
                guard length <= chunkSize else { throw corrupt("a frame of \(length) bytes is larger than \(chunkSize)") }
                guard kind == .end || offset <= maxOffset else { throw corrupt("a frame at offset \(offset) is beyond \(maxOffset)") }
                let payloadLength = [.data, .zstd, .lz4].contains(kind) ? Int(length) : 0
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
                func write(_ bytes: UnsafeRawBufferPointer, at position: Int) throws {
                    guard let base = bytes.baseAddress else { return }
                    var written = 0
                    while written < bytes.count {
                        let n = pwrite(fd, base + written, bytes.count - written, off_t(position + written))
                        guard n > 0 else { throw UMSError(.internalError, "failed to write checkpoint image \(name): errno \(errno)") }
                        written += n
                    }
                }
                switch kind {
                case .end:
                    break
                case .truncate:
                    guard ftruncate(fd, off_t(offset)) == 0 else { throw UMSError(.internalError, "failed to truncate \(name)") }
                case .data:
                    try pending.withUnsafeReadableBytes { try write(UnsafeRawBufferPointer(rebasing: $0[0..<payloadLength]), at: Int(offset)) }
                    received += Int64(payloadLength)
                case .zeros:
                    // Beyond the file's end a hole reads as zeros; below it, zeros are written.
                    guard length > 0 else { throw corrupt("an empty run of zero pages") }
                    var info = stat()
                    guard fstat(fd, &info) == 0 else { throw UMSError(.internalError, "failed to read the size of \(name)") }
                    let (start, end) = (Int(offset), Int(offset) + Int(length))
                    if start < Int(info.st_size) {
                        let zeros = [UInt8](repeating: 0, count: min(end, Int(info.st_size)) - start)
                        try zeros.withUnsafeBytes { try write($0, at: start) }
                    }
                    if end > Int(info.st_size) {
                        guard ftruncate(fd, off_t(end)) == 0 else { throw UMSError(.internalError, "failed to extend \(name)") }
                    }
                    received += Int64(length)
                    zeroBytes += Int64(length)
                case .zstd, .lz4:
                    guard payloadLength > 4 else { throw corrupt("a compressed frame without its data") }
                    let raw = Int(pending.getInteger(at: pending.readerIndex, as: UInt32.self) ?? 0)
                    guard raw > 0, raw <= chunkSize else { throw corrupt("a compressed frame that expands to \(raw) bytes (at most \(chunkSize))") }
                    let frames = expander ?? ChunkExpander()
                    expander = frames
                    if expanded.count < raw { expanded = [UInt8](repeating: 0, count: chunkSize) }
                    let ok = pending.withUnsafeReadableBytes { packed in
                        expanded.withUnsafeMutableBytes { out in
                            frames.decompress(
                                UnsafeRawBufferPointer(rebasing: packed[4..<payloadLength]), codec: kind == .zstd ? .zstd : .lz4,
                                into: UnsafeMutableRawBufferPointer(rebasing: out[0..<raw])
                            )
                        }
                    }
                    guard ok else { throw corrupt("a compressed frame that does not expand to the \(raw) bytes it announced") }
                    try expanded.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[0..<raw]), at: Int(offset)) }
                    received += Int64(raw)
                    compressedBytes += Int64(raw)
                }
                pending.moveReaderIndex(forwardBy: payloadLength)
            }
            pending.discardReadBytes()
        }
        guard ended else { throw corrupt("the stream ended before its end frame") }
        return Summary(
            bytes: received, files: files.count, digest: "sha256:" + hasher.finalize().hex, zeroBytes: zeroBytes, compressedBytes: compressedBytes,
            wireBytes: wire
        )
    }
}
