import Synchronization

/// Work a long-lived part starts and does not wait for (a migration it drives, an update after
/// an answer): each runs as a child task of `run()`, so it belongs to the service that runs
/// that, ends with it, and is never a task nobody owns.
public final class BackgroundTasks: Sendable {
    private let stream: AsyncStream<@Sendable () async -> Void>
    private let continuation: AsyncStream<@Sendable () async -> Void>.Continuation
    private let finishing = Atomic<Bool>(false)

    public init() {
        (stream, continuation) = AsyncStream.makeStream(of: (@Sendable () async -> Void).self)
    }

    /// Starts `work` as a child of `run()`. After `finish()` it is not started.
    @discardableResult
    public func spawn(_ work: @escaping @Sendable () async -> Void) -> Bool {
        if case .enqueued = continuation.yield(work) { return true }
        return false
    }

    /// Runs the work as it comes, until `finish()` was called and all of it has ended (or until
    /// cancelled, which cancels the work).
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await work in stream {
                group.addTask { await work() }
            }
        }
    }

    /// No new work; `run()` returns once what runs has ended (work that waits with `pause`
    /// ends its wait at once).
    public func finish() {
        finishing.store(true, ordering: .releasing)
        continuation.finish()
    }

    /// Runs `attempt` as background work until it returns true, waiting `first` (doubling up to
    /// `max`) after each failed attempt — and before the first with `waitFirst` — and ending early
    /// when the owner finishes (a restart retries from its own records).
    @discardableResult
    public func retrying(first: Duration, max: Duration, waitFirst: Bool = false, _ attempt: @escaping @Sendable () async -> Bool) -> Bool {
        spawn { [self] in
            var delay = first
            if waitFirst, !(await pause(delay)) { return }
            while !(await attempt()) {
                guard await pause(delay) else { return }
                delay = min(delay * 2, max)
            }
        }
    }

    /// Whether `finish()` was called (a shutdown is under way).
    public var isFinishing: Bool { finishing.load(ordering: .acquiring) }

    /// Waits `duration` (a retry's backoff), or less if the owner is finishing: returns false then,
    /// and the work should end.
    public func pause(_ duration: Duration) async -> Bool {
        let deadline = ContinuousClock.now + duration
        while ContinuousClock.now < deadline {
            if finishing.load(ordering: .acquiring) || Task.isCancelled { return false }
            try? await Task.sleep(for: min(.milliseconds(100), deadline - ContinuousClock.now))
        }
        return !finishing.load(ordering: .acquiring)
    }
}
