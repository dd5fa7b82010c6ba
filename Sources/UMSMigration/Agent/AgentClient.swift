import Foundation
import NIOCore
import NIOPosix
import UMSImage
import UMSModel

/// A Coordinator's line to the checkpoint agent inside one container (`ums-agent`, see
/// `agent/ums-agent.c` and docs/service-level.md): one command per TCP connection, one line each
/// way, authenticated by the container's agent token.
public struct AgentClient: Sendable {
    /// The agent's port inside the container, unless the image says otherwise.
    public static let defaultPort = MigratableImage.defaultAgentPort

    public var host: String
    public var port: Int
    public var token: String

    public init(host: String, port: Int, token: String) {
        self.host = host
        self.port = port
        self.token = token
    }

    /// The agent of a container: its address on the system, the port its label names, the token
    /// from its environment.
    public init(for container: ContainerInfo) throws(UMSError) {
        let specification = container.specification
        guard let host = container.address else {
            throw UMSError(.unsupported, "failed to reach the agent of '\(container.name)': the orchestrator reports no address for it")
        }
        guard let token = specification.environmentValue(MigratableImage.tokenVariable), !token.isEmpty else {
            throw UMSError(.invalidState, "failed to reach the agent of '\(container.name)': its environment has no \(MigratableImage.tokenVariable)")
        }
        self.init(host: host, port: MigratableImage.agentPort(of: specification), token: token)
    }

    /// One reply line: `OK key=value ...` or `ERR message`.
    public struct Reply: Sendable, Equatable {
        public var ok: Bool
        public var fields: [String: String]
        public var message: String

        public init(parsing line: String) {
            let text = line.trimmingCharacters(in: .whitespacesAndNewlines)
            ok = text == "OK" || text.hasPrefix("OK ")
            message = ok ? String(text.dropFirst(2)).trimmingCharacters(in: .whitespaces) : (text.hasPrefix("ERR ") ? String(text.dropFirst(4)) : text)
            var fields: [String: String] = [:]
            if ok {
                for word in message.split(separator: " ") {
                    let parts = word.split(separator: "=", maxSplits: 1)
                    if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
                }
            }
            self.fields = fields
        }

        public func int(_ key: String) -> Int64? { fields[key].flatMap { Int64($0) } }
    }

    /// Sends one command and returns the agent's answer; throws if the agent answers `ERR`, or
    /// cannot be reached or does not answer within `timeout`.
    @discardableResult
    public func send(_ command: String, timeout: Duration, operation: String) async throws -> Reply {
        let reply: Reply
        do {
            reply = try await withTimeout(timeout, UMSError(.timeout, "no answer within \(timeout)")) { try await exchange("\(token) \(command)\n") }
        } catch let error as UMSError {
            throw UMSError(error.code, "failed to \(operation): \(error.message)")
        } catch {
            throw UMSError(.unavailable, "failed to \(operation): the agent at \(host):\(port) is not reachable (\(error))")
        }
        guard reply.ok else {
            let code: UMSError.Code = reply.message.hasPrefix("unauthenticated") ? .unauthenticated : .internalError
            throw UMSError(code, "failed to \(operation): the agent said: \(reply.message)")
        }
        return reply
    }

    /// Asks `STATUS` until the agent answers (it starts with its container), up to `timeout`.
    public func waitUntilReady(timeout: Duration) async throws -> Reply {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            do {
                return try await send("STATUS", timeout: .seconds(2), operation: "reach the agent")
            } catch let error as UMSError where [.unavailable, .timeout].contains(error.code) && clock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    func exchange(_ line: String) async throws -> Reply {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(2))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: line))
            var received = ByteBuffer()
            for try await var chunk in inbound {
                received.writeBuffer(&chunk)
                if let newline = received.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
                    let length = newline - received.readerIndex
                    return Reply(parsing: received.readString(length: length) ?? "")
                }
            }
            throw UMSError(.unavailable, "the agent at \(host):\(port) closed the connection without answering")
        }
    }
}
