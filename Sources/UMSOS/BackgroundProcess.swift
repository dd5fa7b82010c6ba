import Foundation
import Subprocess
import Synchronization
import UMSModel

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// A child process that outlives the call that started it: a post-copy dump that serves pages
/// until the destination has them all, or the destination's lazy-pages daemon. It is started,
/// waited for until a readiness check passes, and later finished (awaited) or cancelled (killed).
public final class BackgroundProcess: Sendable {
    public let command: Command
    private let task: Task<Void, any Error>
    /// Set when the process has exited, so readiness polling can notice without waiting.
    private let outcome: Outcome

    final class Outcome: Sendable {
        let value = Mutex<Result<Void, any Error>?>(nil)
    }

    /// Starts `command`; its output goes to /dev/null (its own log file says what it did).
    public init(_ command: Command, logFile: String) {
        self.command = command
        let executable: Executable = command.executable.hasPrefix("/") ? .path(FilePath(command.executable)) : .name(command.executable)
        let outcome = Outcome()
        self.outcome = outcome
        task = Task {
            do {
                // Its own session, so that cancelling kills what it started too (runc's CRIU).
                var options = PlatformOptions()
                options.createSession = true
                options.teardownSequence = [.send(signal: .kill, toProcessGroup: true, allowedDurationToNextStep: .seconds(2))]
                let result = try await Subprocess.run(
                    executable, arguments: Arguments(command.arguments), platformOptions: options,
                    input: .none, output: .discarded, error: .discarded
                )
                guard case .exited(0) = result.terminationStatus else {
                    throw UMSError(.internalError, "failed to run '\(command)': \(result.terminationStatus)",
                                   cause: CommandFailure(LogFile.tail(logFile)))
                }
                outcome.value.withLock { $0 = .success(()) }
            } catch {
                outcome.value.withLock { $0 = .failure(error) }
                throw error
            }
        }
    }

    /// Polls `isReady` until it is true; throws if the process exits first or `timeout` passes.
    public func waitUntilReady(timeout: Duration, _ isReady: @Sendable () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if isReady() { return }
            if let exit = outcome.value.withLock({ $0 }) {
                if case .failure(let error) = exit { throw error }
                throw UMSError(.internalError, "failed to start '\(command.executable)': it exited before it was ready")
            }
            try await Task.sleep(for: .milliseconds(3))
        }
        cancel()
        throw UMSError(.timeout, "failed to start '\(command)': not ready after \(timeout)")
    }

    /// Waits for the process to exit successfully.
    public func finish(timeout: Duration) async throws {
        let task = self.task
        try await withTimeout(timeout, UMSError(.timeout, "failed to finish '\(self.command.executable)' in \(timeout)")) {
            try await task.value
        }
    }

    /// Kills it and its process group (swift-subprocess tears the child down when its task is
    /// cancelled). A last resort: it gives the process no chance to clean up.
    public func cancel() {
        task.cancel()
    }
}
