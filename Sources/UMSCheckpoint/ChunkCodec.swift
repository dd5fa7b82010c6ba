import CLZ4
import CZstd
import UMSModel

/// One chunk of the image stream compressed or expanded (issue 17). Not shared between tasks:
/// each stream owns one, with its library context and buffers.
final class ChunkCodec {
    enum Codec: Sendable {
        case zstd, lz4
    }

    /// zstd's fast level: the point is to beat the wire, not to win on ratio.
    static let zstdLevel: Int32 = 1
    /// Kept only when at least this much smaller than the raw bytes.
    static let worthIt = 0.9
    /// `auto` first compresses this much of a longer run: when that does not pay, the run goes
    /// as it is (random memory costs a sample's compression, not the whole run's).
    static let sample = 64 << 10

    private let compressor: OpaquePointer
    private let decompressor: OpaquePointer
    private var output: [UInt8]
    private let policy: ImageCompression
    /// `auto`'s choice of codec, from what this stream measured.
    private(set) var chooser = CodecChooser()

    init(policy: ImageCompression, chunkSize: Int) {
        self.policy = policy
        compressor = ZSTD_createCCtx()
        decompressor = ZSTD_createDCtx()
        output = [UInt8](repeating: 0, count: max(ZSTD_compressBound(chunkSize), Int(LZ4_compressBound(Int32(chunkSize))), chunkSize))
    }

    deinit {
        ZSTD_freeCCtx(compressor)
        ZSTD_freeDCtx(decompressor)
    }

    /// `input` compressed, when that pays; nil: send it as it is.
    func compress(_ input: UnsafeRawBufferPointer) -> (Codec, ArraySlice<UInt8>)? {
        let codec: Codec
        switch policy {
        case .off: return nil
        case .zstd: codec = .zstd
        case .lz4: codec = .lz4
        case .auto: codec = chooser.choose()
        }
        if policy == .auto, input.count > 2 * Self.sample {
            guard timedPack(UnsafeRawBufferPointer(rebasing: input[0..<Self.sample]), codec) != nil else { return nil }
        }
        return timedPack(input, codec).map { (codec, $0) }
    }

    /// The sender spent `seconds` handing `bytes` of the stream to the wire (it waits while the
    /// connection is busy): what sending costs per byte, for `auto`'s choice.
    func sent(bytes: Int, seconds: Double) {
        chooser.sent(bytes: bytes, seconds: seconds)
    }

    private func timedPack(_ input: UnsafeRawBufferPointer, _ codec: Codec) -> ArraySlice<UInt8>? {
        let start = ContinuousClock.now
        let packed = pack(input, codec)
        let elapsed = ContinuousClock.now - start
        chooser.compressed(codec, raw: input.count, packed: packed?.count, seconds: Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds))
        return packed
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

    /// Expands `input` into `into`, which must come out exactly `into.count` bytes; nil if the
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

/// `auto`'s choice between zstd and lz4 for the next run of pages, from what this stream has
/// measured so far: each codec's compression time and ratio per raw byte, and what sending a
/// byte costs (the time the sender waited on the connection). The cheaper of compressing plus
/// sending wins — on a fast link with busy cores lz4, on a slow link zstd's better ratio — and
/// the other is tried every `refresh` runs so its figures stay current.
struct CodecChooser: Sendable, Equatable {
    struct Figures: Sendable, Equatable {
        /// Seconds of compression per raw byte.
        var secondsPerByte: Double
        /// Bytes out per byte in (1 when it did not pay: the run went as it was).
        var ratio: Double
    }

    /// How much a new measurement weighs against the ones before.
    static let weight = 0.3
    static let refresh = 16

    private(set) var zstd: Figures?
    private(set) var lz4: Figures?
    /// Seconds per byte handed to the wire.
    private(set) var wireSecondsPerByte: Double?
    private var runs = 0

    func cost(_ codec: ChunkCodec.Codec) -> Double? {
        guard let figures = codec == .zstd ? zstd : lz4 else { return nil }
        return figures.secondsPerByte + figures.ratio * (wireSecondsPerByte ?? 0)
    }

    /// The codec for the next run: each is tried once first, then the cheaper, and now and then
    /// the other.
    mutating func choose() -> ChunkCodec.Codec {
        runs += 1
        guard let zstdCost = cost(.zstd) else { return .zstd }
        guard let lz4Cost = cost(.lz4) else { return .lz4 }
        let best: ChunkCodec.Codec = zstdCost <= lz4Cost ? .zstd : .lz4
        guard runs % Self.refresh == 0 else { return best }
        return best == .zstd ? .lz4 : .zstd
    }

    mutating func compressed(_ codec: ChunkCodec.Codec, raw: Int, packed: Int?, seconds: Double) {
        guard raw > 0, seconds >= 0 else { return }
        let measured = Figures(secondsPerByte: seconds / Double(raw), ratio: packed.map { Double($0) / Double(raw) } ?? 1)
        func blend(_ old: Figures?) -> Figures {
            guard let old else { return measured }
            return Figures(
                secondsPerByte: old.secondsPerByte + Self.weight * (measured.secondsPerByte - old.secondsPerByte),
                ratio: old.ratio + Self.weight * (measured.ratio - old.ratio)
            )
        }
        switch codec {
        case .zstd: zstd = blend(zstd)
        case .lz4: lz4 = blend(lz4)
        }
    }

    mutating func sent(bytes: Int, seconds: Double) {
        guard bytes >= 4096, seconds >= 0 else { return }  // headers alone say nothing about the link
        let measured = seconds / Double(bytes)
        wireSecondsPerByte = wireSecondsPerByte.map { $0 + Self.weight * (measured - $0) } ?? measured
    }
}
