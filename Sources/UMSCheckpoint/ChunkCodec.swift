import CLZ4
import CZstd
import UMSModel

/// The two codecs a compressed frame of the image stream may use.
enum Codec: Sendable {
    case zstd, lz4
}

/// One chunk of the image stream compressed (issue 17). Not shared between tasks: each writing
/// stream owns one, with its library context and output buffer.
final class ChunkCodec {

    /// zstd's fast level: the point is to beat the wire, not to win on ratio.
    static let zstdLevel: Int32 = 1
    /// Kept only when at least this much smaller than the raw bytes.
    static let worthIt = 0.9
    /// `auto` first compresses this much of a longer run: when that does not pay, the run goes
    /// as it is (random memory costs a sample's compression, not the whole run's).
    static let sample = 64 << 10

    private let compressor: OpaquePointer
    private var output: [UInt8]
    private let policy: ImageCompression

    init(policy: ImageCompression, chunkSize: Int) {
        self.policy = policy
        compressor = ZSTD_createCCtx()
        output = [UInt8](repeating: 0, count: max(ZSTD_compressBound(chunkSize), Int(LZ4_compressBound(Int32(chunkSize))), chunkSize))
    }

    deinit {
        ZSTD_freeCCtx(compressor)
    }

    /// `input` compressed, when that pays; nil: send it as it is.
    func compress(_ input: UnsafeRawBufferPointer) -> (Codec, ArraySlice<UInt8>)? {
        let codec: Codec
        switch policy {
        case .off: return nil
        case .zstd, .auto: codec = .zstd
        case .lz4: codec = .lz4
        }
        if policy == .auto, input.count > 2 * Self.sample {
            guard pack(UnsafeRawBufferPointer(rebasing: input[0..<Self.sample]), codec) != nil else { return nil }
        }
        return pack(input, codec).map { (codec, $0) }
    }

    private func pack(_ input: UnsafeRawBufferPointer, _ codec: Codec) -> ArraySlice<UInt8>? {
        guard let base = input.baseAddress, !input.isEmpty else { return nil }
        let size: Int = output.withUnsafeMutableBytes { out in
            switch codec {
            case .zstd:
                let n = ZSTD_compressCCtx(compressor, out.baseAddress, out.count, base, input.count, Self.zstdLevel)
                return ZSTD_isError(n) != 0 ? 0 : n
            case .lz4:
                let n = LZ4_compress_default(
                    base.assumingMemoryBound(to: CChar.self), out.baseAddress!.assumingMemoryBound(to: CChar.self),
                    Int32(input.count), Int32(out.count)
                )
                return Int(max(n, 0))
            }
        }
        guard size > 0, Double(size) <= Double(input.count) * Self.worthIt else { return nil }
        return output[0..<size]
    }

    /// Whether `bytes` are all zero (a page CRIU dumped that was never written, or was cleared).
    static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        let count = bytes.count
        while index + 8 <= count {
            if bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) != 0 { return false }
            index += 8
        }
        while index < count {
            if bytes[index] != 0 { return false }
            index += 1
        }
        return true
    }
}

/// One compressed frame of the image stream expanded (issue 17): what a reading stream owns —
/// only zstd's decompression context, no compressor or output buffer of its own.
final class ChunkExpander {
    private let decompressor: OpaquePointer

    init() {
        decompressor = ZSTD_createDCtx()
    }

    deinit {
        ZSTD_freeDCtx(decompressor)
    }

    /// Expands `input` into `into`, which must come out exactly `into.count` bytes; false if the
    /// bytes are not that (corrupt, or a different size than announced — never written past).
    func decompress(_ input: UnsafeRawBufferPointer, codec: Codec, into: UnsafeMutableRawBufferPointer) -> Bool {
        guard let source = input.baseAddress, let destination = into.baseAddress, !input.isEmpty else { return false }
        switch codec {
        case .zstd:
            let n = ZSTD_decompressDCtx(decompressor, destination, into.count, source, input.count)
            return ZSTD_isError(n) == 0 && n == into.count
        case .lz4:
            let n = LZ4_decompress_safe(
                source.assumingMemoryBound(to: CChar.self), destination.assumingMemoryBound(to: CChar.self),
                Int32(input.count), Int32(into.count)
            )
            return Int(n) == into.count
        }
    }
}
