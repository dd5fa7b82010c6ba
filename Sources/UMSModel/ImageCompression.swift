/// How a migration's checkpoint images cross (issue 17): whole zero pages never do; the rest is
/// compressed where that pays.
public enum ImageCompression: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    /// zstd (fast level) on each run of pages that shrinks by at least a tenth; a longer run is
    /// first tried on a 64 KiB sample, and goes as it is when that does not shrink — random
    /// memory costs a sample's compression, not the whole run's.
    case auto
    /// Sent as read (zero pages still elided).
    case off
    /// Every chunk tried with zstd (fast level); kept only where smaller.
    case zstd
    /// Every chunk tried with lz4; kept only where smaller.
    case lz4

    public var description: String { rawValue }
}

/// What the image stream of one migration carried: the images' own size, the bytes that crossed,
/// and why they differ.
public struct ImageTransferSummary: Codable, Sendable, Equatable {
    /// The compression asked for (`auto` unless the request said otherwise), or `off` when the
    /// destination cannot read anything else.
    public var compression: ImageCompression
    /// The images' size: every byte written at the destination.
    public var rawBytes: Int64
    /// Of those, in whole zero pages: announced, never sent.
    public var zeroBytes: Int64
    /// Of those, sent compressed (before compression).
    public var compressedBytes: Int64
    /// The framed stream as it crossed (headers and compressed payloads included).
    public var wireBytes: Int64

    public init(compression: ImageCompression, rawBytes: Int64 = 0, zeroBytes: Int64 = 0, compressedBytes: Int64 = 0, wireBytes: Int64 = 0) {
        self.compression = compression
        self.rawBytes = rawBytes
        self.zeroBytes = zeroBytes
        self.compressedBytes = compressedBytes
        self.wireBytes = wireBytes
    }
}
