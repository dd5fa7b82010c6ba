import Foundation
import Logging
import Subprocess
import UMSModel

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// A command to run on the host: an executable, its arguments, optionally input.
public struct Command: Sendable, Equatable, CustomStringConvertible {
    public var executable: String
    public var arguments: [String]
    /// Extra environment entries on top of the Coordinator's own.
    public var environment: [String: String]
    public var workingDirectory: String?
    /// Give the command /dev/null for its output instead of pipes (for commands that leave a
    /// detached child holding their descriptors); its errors must then come from a log file.
    public var discardOutput: Bool

    public init(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:],
        workingDirectory: String? = nil, discardOutput: Bool = false
    ) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.discardOutput = discardOutput
    }

    public var description: String { ([executable] + arguments).joined(separator: " ") }
}

public struct CommandResult: Sendable {
    public var exitCode: Int32
    public var standardOutput: String
    public var standardError: String

    public init(exitCode: Int32, standardOutput: String, standardError: String) {
        self.exitCode = exitCode
        self.standardOutput = standardOutput
        self.standardError = standardError
    }
}

/// The seam between UMS and the host's programs (runc, criu, ip, iptables, tar). Tests replace it
/// to assert the exact argument vectors without running anything.
public protocol CommandRunner: Sendable {
    /// Runs `command` to completion and returns its output; throws when it exits non-zero.
    func run(_ command: Command) async throws -> CommandResult
}

extension CommandRunner {
    /// Runs a command and returns its trimmed standard output.
    public func output(_ executable: String, _ arguments: [String]) async throws -> String {
        try await run(Command(executable, arguments)).standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs a command for its effect.
    public func execute(_ executable: String, _ arguments: [String]) async throws {
        _ = try await run(Command(executable, arguments))
    }
}

/// Runs commands as child processes with swift-subprocess.
public struct SubprocessRunner: CommandRunner {
    let logger: Logger
    /// Output beyond this is an error: commands UMS runs print little.
    let outputLimit = 4 << 20

    public init(logger: Logger) {
        self.logger = logger
    }

    public func run(_ command: Command) async throws -> CommandResult {
        logger.trace("running command", metadata: ["command": "\(command)"])
        let executable: Executable = command.executable.hasPrefix("/") ? .path(FilePath(command.executable)) : .name(command.executable)
        var environment: Environment = .inherit
        if !command.environment.isEmpty {
            environment = .inherit.updating(Dictionary(uniqueKeysWithValues: command.environment.map { (Environment.Key(stringLiteral: $0.key), Optional($0.value)) }))
        }
        let status: TerminationStatus
        let out: String
        let err: String
        do {
            if command.discardOutput {
                // A detached child (e.g. `runc run -d`) inherits these descriptors; pipes would keep
                // us waiting for an EOF that never comes, so it gets /dev/null.
                let result = try await Subprocess.run(
                    executable, arguments: Arguments(command.arguments), environment: environment,
                    workingDirectory: command.workingDirectory.map { FilePath($0) },
                    input: .none, output: .discarded, error: .discarded
                )
                (status, out, err) = (result.terminationStatus, "", "")
            } else {
                let result = try await Subprocess.run(
                    executable, arguments: Arguments(command.arguments), environment: environment,
                    workingDirectory: command.workingDirectory.map { FilePath($0) },
                    input: .none, output: .string(limit: outputLimit), error: .string(limit: outputLimit)
                )
                (status, out, err) = (result.terminationStatus, result.standardOutput, result.standardError)
            }
        } catch {
            throw UMSError(.unavailable, "failed to run \(command.executable)", cause: error)
        }
        let code: Int32
        switch status {
        case .exited(let status): code = status
        case .signaled(let signal): code = 128 + signal
        }
        guard code == 0 else {
            let detail = err.trimmingCharacters(in: CharacterSet.whitespacesAndNewlines)
            throw UMSError(.internalError, "failed to run '\(command)': exit \(code)", cause: detail.isEmpty ? nil : CommandFailure(detail))
        }
        return CommandResult(exitCode: code, standardOutput: out, standardError: err)
    }
}

/// The standard error of a failed command, carried as an error's cause.
public struct CommandFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ text: String) {
        // Keep the tail: runc and criu put the reason last.
        description = text.count > 2000 ? "…" + text.suffix(2000) : text
    }
}
