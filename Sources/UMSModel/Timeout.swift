/// Runs `operation`, failing with `timeout` if it has not finished after `duration` (the
/// operation is then cancelled).
public func withTimeout<Result: Sendable>(
    _ duration: Duration, _ timeout: @autoclosure @escaping @Sendable () -> UMSError,
    _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    try await withThrowingTaskGroup(of: Result?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: duration)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let result = first else { throw timeout() }
        return result
    }
}
