@testable import UMSCoordination

/// Runs `body` with the Coordinator's background work running (what umsd's service group does),
/// then lets it finish.
func withBackground<Result: Sendable>(
    _ coordinator: Coordinator, sweepEvery interval: Duration = .milliseconds(50), _ body: () async throws -> Result
) async rethrows -> Result {
    async let background: Void = coordinator.runBackground(sweepEvery: interval)
    do {
        let result = try await body()
        coordinator.finishBackground()
        await background
        return result
    } catch {
        coordinator.finishBackground()
        await background
        throw error
    }
}

import NIOCore

/// A stream with no chunks.
func noChunks() -> AsyncStream<ByteBuffer> {
    AsyncStream { $0.finish() }
}
