import Foundation
import NIOCore
import UMSModel

#if canImport(Glibc)
import Glibc
#endif

/// Rewrites a few small members of a tar archive without unpacking it: one pass over the
/// headers (the members' data is skipped, not read), the replaced members' new bytes, and the
/// rest of the file passed through unchanged, as a sequence of chunks read as they are sent.
///
/// Why: a Podman checkpoint export names the source's image in its `config.dump`; the
/// destination changes that one small file. Unpacking the whole export (its pages, 128 MiB and
/// more), writing it back into a second archive and reading that into memory cost ~0.3 s of the
/// restore at 128 MiB; this costs one read of the file, while it is sent.
///
/// The archive may come from a peer: every header's checksum is verified, every size bounded
/// before it is used, a replaced member must be a regular file, appear once and hold at most
/// `maxMemberBytes`, and an archive that ends inside a member is refused.
public enum TarRewrite {
    public typealias Transform = @Sendable (Data) throws -> Data

    public enum Segment: Sendable, Equatable {
        /// `length` bytes of the file from `offset`.
        case copy(offset: Int64, length: Int64)
        case bytes([UInt8])
    }

    public struct Plan: Sendable {
        public var file: String
        public var segments: [Segment]
        /// The rewritten archive's size.
        public var length: Int64
        /// The members that were replaced (by their names without a leading `./`).
        public var rewritten: Set<String>

        /// The rewritten archive, read from the file as it is consumed.
        public var chunks: Chunks { Chunks(file: file, segments: segments) }
    }

    static let block = 512
    /// A replaced member's largest size (a `config.dump` or `spec.dump` is a few KiB).
    public static let maxMemberBytes = 16 << 20
    /// A pax extended header's or a GNU long name's largest size.
    static let maxHeaderRecordBytes = 1 << 20
    /// The largest member size believed: no member of a checkpoint is a tebibyte.
    static let maxSize: Int64 = 1 << 40

    /// Plans the rewrite of `file`: each member named by a key of `replacing` (with or without
    /// a leading `./`) gets the bytes its transform returns for its contents. Every key must name
    /// a member.
    public static func plan(file: String, replacing: [String: Transform]) throws -> Plan {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw UMSError(.internalError, "failed to read the archive \(file): errno \(errno)") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw UMSError(.internalError, "failed to read the size of \(file)") }
        let size = Int64(info.st_size)
        guard !replacing.isEmpty else {
            return Plan(file: file, segments: size > 0 ? [.copy(offset: 0, length: size)] : [], length: size, rewritten: [])
        }
        func invalid(_ reason: String) -> UMSError {
            UMSError(.invalidArgument, "failed to read the archive \(file): \(reason)")
        }
        func read(_ count: Int, at offset: Int64) throws -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: count)
            var got = 0
            while got < count {
                let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, count - got, off_t(offset) + off_t(got)) }
                guard n > 0 else { throw invalid("it ends at \(offset + Int64(got)) inside a member") }
                got += n
            }
            return bytes
        }

        var segments: [Segment] = []
        var rewritten: Set<String> = []
        var offset: Int64 = 0
        var copyFrom: Int64 = 0
        // What the extension headers before the next member said about it.
        var extensionStart: Int64?
        var longName: String?
        var paxPath: String?
        var paxSize: Int64?
        while true {
            guard offset + Int64(block) <= size else { throw invalid("it ends at \(offset) without its end-of-archive block") }
            let header = try read(block, at: offset)
            if header.allSatisfy({ $0 == 0 }) { break }
            guard Header.checksumMatches(header) else { throw invalid("the header at \(offset) has a wrong checksum") }
            guard let headerSize = Header.number(header[124..<136]), headerSize <= maxSize else {
                throw invalid("the header at \(offset) has an invalid size")
            }
            let type = header[156]
            let dataSize: Int64
            switch type {
            case UInt8(ascii: "x"), UInt8(ascii: "L"), UInt8(ascii: "K"), UInt8(ascii: "g"):
                dataSize = headerSize
            default:
                dataSize = paxSize ?? headerSize
            }
            // GNU's old sparse members may continue their header in blocks of their own.
            var headerBlocks: Int64 = 1
            if type == UInt8(ascii: "S"), header[482] != 0 {
                while true {
                    guard offset + (headerBlocks + 1) * Int64(block) <= size else { throw invalid("it ends inside the sparse header at \(offset)") }
                    let extended = try read(block, at: offset + headerBlocks * Int64(block))
                    headerBlocks += 1
                    if extended[504] == 0 { break }
                }
            }
            let padded = (dataSize + Int64(block) - 1) / Int64(block) * Int64(block)
            let next = offset + headerBlocks * Int64(block) + padded
            guard next <= size else { throw invalid("the member at \(offset) claims \(dataSize) bytes beyond the archive's end") }
            switch type {
            case UInt8(ascii: "x"):
                guard dataSize <= maxHeaderRecordBytes else { throw invalid("an extended header of \(dataSize) bytes") }
                let records = Header.paxRecords(try read(Int(dataSize), at: offset + Int64(block)))
                guard let records else { throw invalid("the extended header at \(offset) is malformed") }
                if let path = records["path"] { paxPath = path }
                if let value = records["size"] {
                    guard let number = Int64(value), (0...maxSize).contains(number) else { throw invalid("an extended header's size '\(value)'") }
                    paxSize = number
                }
                extensionStart = extensionStart ?? offset
            case UInt8(ascii: "L"):
                guard dataSize <= maxHeaderRecordBytes else { throw invalid("a long name of \(dataSize) bytes") }
                let bytes = try read(Int(dataSize), at: offset + Int64(block))
                longName = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
                extensionStart = extensionStart ?? offset
            case UInt8(ascii: "K"):
                extensionStart = extensionStart ?? offset
            case UInt8(ascii: "g"):
                break
            default:
                let name = Header.normalized(paxPath ?? longName ?? Header.name(header))
                if let transform = replacing[name] {
                    guard type == UInt8(ascii: "0") || type == 0 else { throw invalid("\(name) is not a regular file") }
                    guard !rewritten.contains(name) else { throw invalid("\(name) appears more than once") }
                    guard dataSize <= maxMemberBytes else { throw invalid("\(name) has \(dataSize) bytes (at most \(maxMemberBytes))") }
                    let contents = Data(try read(Int(dataSize), at: offset + Int64(block)))
                    let replaced = [UInt8](try transform(contents))
                    guard replaced.count <= maxMemberBytes else { throw invalid("the rewritten \(name) has \(replaced.count) bytes") }
                    let start = extensionStart ?? offset
                    if start > copyFrom { segments.append(.copy(offset: copyFrom, length: start - copyFrom)) }
                    var member = try Header.rewritten(header, name: name, size: replaced.count)
                    member += replaced
                    member += [UInt8](repeating: 0, count: (block - replaced.count % block) % block)
                    segments.append(.bytes(member))
                    copyFrom = next
                    rewritten.insert(name)
                }
                extensionStart = nil
                longName = nil
                paxPath = nil
                paxSize = nil
            }
            offset = next
        }
        if let missing = Set(replacing.keys).subtracting(rewritten).sorted().first {
            throw invalid("it has no \(missing)")
        }
        if size > copyFrom { segments.append(.copy(offset: copyFrom, length: size - copyFrom)) }
        let length = segments.reduce(Int64(0)) { total, segment in
            switch segment {
            case .copy(_, let length): total + length
            case .bytes(let bytes): total + Int64(bytes.count)
            }
        }
        return Plan(file: file, segments: segments, length: length, rewritten: rewritten)
    }

    /// A plan's archive as chunks of at most 1 MiB, read from the file when asked for.
    public struct Chunks: AsyncSequence, Sendable {
        public typealias Element = ByteBuffer
        let file: String
        let segments: [Segment]

        public func makeAsyncIterator() -> Iterator { Iterator(file: file, segments: segments) }

        public final class Iterator: AsyncIteratorProtocol {
            let file: String
            let segments: [Segment]
            var index = 0
            var position: Int64 = 0
            var fd: Int32 = -1

            init(file: String, segments: [Segment]) {
                self.file = file
                self.segments = segments
            }

            deinit { if fd >= 0 { close(fd) } }

            public func next() async throws -> ByteBuffer? {
                while index < segments.count {
                    switch segments[index] {
                    case .bytes(let bytes):
                        index += 1
                        return ByteBuffer(bytes: bytes)
                    case .copy(let offset, let length):
                        guard position < length else {
                            index += 1
                            position = 0
                            continue
                        }
                        if fd < 0 {
                            fd = open(file, O_RDONLY | O_CLOEXEC)
                            guard fd >= 0 else { throw UMSError(.internalError, "failed to read the archive \(file): errno \(errno)") }
                        }
                        let want = Int(Swift.min(Int64(1 << 20), length - position))
                        var buffer = ByteBuffer()
                        let fd = self.fd
                        let at = off_t(offset + position)
                        var got = 0
                        // pread's -1 never reaches the buffer (a negative count would trap it).
                        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: want) { pointer in
                            got = pread(fd, pointer.baseAddress, want, at)
                            return Swift.max(got, 0)
                        }
                        guard got > 0 else { throw UMSError(.internalError, "failed to read the archive \(file): it changed while it was sent") }
                        position += Int64(got)
                        return buffer
                    }
                }
                if fd >= 0 {
                    close(fd)
                    fd = -1
                }
                return nil
            }
        }
    }

    /// The parts of a ustar header this needs.
    enum Header {
        static func checksumMatches(_ header: [UInt8]) -> Bool {
            guard let stored = number(header[148..<156]) else { return false }
            var unsigned: Int64 = 0
            var signed: Int64 = 0
            for (index, byte) in header.enumerated() {
                let value = (148..<156).contains(index) ? UInt8(ascii: " ") : byte
                unsigned += Int64(value)
                signed += Int64(Int8(bitPattern: value))
            }
            return stored == unsigned || stored == signed
        }

        /// An octal field (NUL- or space-terminated), or GNU's base-256 for large values.
        static func number(_ field: ArraySlice<UInt8>) -> Int64? {
            guard let first = field.first else { return nil }
            if first & 0x80 != 0 {
                guard first == 0x80 else { return nil }
                var value: Int64 = 0
                for byte in field.dropFirst() {
                    guard value < Int64.max >> 8 else { return nil }
                    value = value << 8 | Int64(byte)
                }
                return value
            }
            var value: Int64 = 0
            var digits = 0
            for byte in field {
                if byte == 0 || byte == UInt8(ascii: " ") {
                    if digits > 0 { break }
                    continue
                }
                guard (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(byte), digits < 21 else { return nil }
                value = value * 8 + Int64(byte - UInt8(ascii: "0"))
                digits += 1
            }
            return value
        }

        static func string(_ field: ArraySlice<UInt8>) -> String {
            String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
        }

        /// The name, with the ustar prefix where the header has one.
        static func name(_ header: [UInt8]) -> String {
            let name = string(header[0..<100])
            guard header[257..<263].elementsEqual(Array("ustar\0".utf8)) else { return name }
            let prefix = string(header[345..<500])
            return prefix.isEmpty ? name : prefix + "/" + name
        }

        static func normalized(_ name: String) -> String {
            var name = Substring(name)
            while name.hasPrefix("./") { name = name.dropFirst(2) }
            return String(name)
        }

        /// Records `"<length> <key>=<value>\n"`; nil when malformed.
        static func paxRecords(_ bytes: [UInt8]) -> [String: String]? {
            var records: [String: String] = [:]
            var index = 0
            while index < bytes.count {
                if bytes[index] == 0 { break }
                guard let space = bytes[index...].firstIndex(of: UInt8(ascii: " ")), space - index <= 8,
                      let length = Int(String(decoding: bytes[index..<space], as: UTF8.self)), length > space - index + 1,
                      index + length <= bytes.count, bytes[index + length - 1] == UInt8(ascii: "\n")
                else { return nil }
                let record = bytes[(space + 1)..<(index + length - 1)]
                guard let equals = record.firstIndex(of: UInt8(ascii: "=")) else { return nil }
                records[String(decoding: record[record.startIndex..<equals], as: UTF8.self)] = String(decoding: record[(equals + 1)...], as: UTF8.self)
                index += length
            }
            return records
        }

        /// `header` with `name`, no prefix, `size` and its checksum.
        static func rewritten(_ header: [UInt8], name: String, size: Int) throws -> [UInt8] {
            let nameBytes = Array(name.utf8)
            guard nameBytes.count < 100 else { throw UMSError(.invalidArgument, "failed to rewrite the archive: the name \(name) is too long") }
            var header = header
            header.replaceSubrange(0..<100, with: nameBytes + [UInt8](repeating: 0, count: 100 - nameBytes.count))
            if header[257..<263].elementsEqual(Array("ustar\0".utf8)) {
                header.replaceSubrange(345..<500, with: [UInt8](repeating: 0, count: 155))
            }
            header.replaceSubrange(124..<136, with: Array(String(format: "%011o", size).utf8) + [0])
            header.replaceSubrange(148..<156, with: [UInt8](repeating: UInt8(ascii: " "), count: 8))
            let sum = header.reduce(0) { $0 + Int($1) }
            header.replaceSubrange(148..<156, with: Array(String(format: "%06o", sum).utf8) + [0, UInt8(ascii: " ")])
            return header
        }
    }
}
