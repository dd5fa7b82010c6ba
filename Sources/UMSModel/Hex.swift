extension Sequence where Element == UInt8 {
    /// Lowercase hexadecimal (digests in `sha256:<hex>` form).
    public var hex: String {
        var text = ""
        for byte in self {
            text += String(byte >> 4, radix: 16) + String(byte & 0xF, radix: 16)
        }
        return text
    }
}
