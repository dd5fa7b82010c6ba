import NIOCore
import UMSModel

/// A stream of chunks that fails once more than `limit` bytes have come: an upload never grows
/// past what the receiver agreed to, whatever the sender does.
public struct ByteLimited<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable where Base.Element == ByteBuffer {
    public typealias Element = ByteBuffer
    let base: Base
    let limit: Int64
    let what: String

    public init(_ base: Base, limit: Int64, what: String) {
        self.base = base
        self.limit = limit
        self.what = what
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let limit: Int64
        let what: String
        var seen: Int64 = 0

        public mutating func next() async throws -> ByteBuffer? {
            guard let chunk = try await base.next() else { return nil }
            seen += Int64(chunk.readableBytes)
            guard seen <= limit else {
                throw UMSError(.forbidden, "admission refused (rule \(what)): more than \(limit) bytes sent")
            }
            return chunk
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator(), limit: limit, what: what)
    }
}
