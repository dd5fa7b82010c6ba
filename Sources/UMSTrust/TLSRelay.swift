import Logging
import NIOCore
import NIOPosix
import UMSOS
import NIOSSL

/// Carries a plain TCP protocol that cannot speak TLS itself (CRIU's post-copy page traffic)
/// across systems inside mutual TLS: on the source, a TLS listener on the system's address that
/// forwards to the plain server bound to loopback; on the destination, a plain listener on
/// loopback that forwards over TLS. Both ends present their identity and accept only the other's
/// pinned certificate. Its accept loop is a task it owns, ended by `close()`.
public final class TLSRelay: Sendable {
    typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>

    /// Where it listens.
    public let port: Int
    private let server: any Channel
    private let task: Task<Void, Never>

    private init(port: Int, server: any Channel, task: Task<Void, Never>) {
        self.port = port
        self.server = server
        self.task = task
    }

    /// Stops accepting and ends every relayed connection.
    public func close() {
        server.close(promise: nil)
        task.cancel()
    }

    /// Source end: TLS in on `host` (any port), plain out to `target` (loopback).
    public static func tlsToPlain(host: String, tls: TLSConfiguration, target: (host: String, port: Int), logger: Logger) async throws -> TLSRelay {
        let context = try NIOSSLContext(configuration: tls)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: host, port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    return try Connection(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        return start(server, logger: logger) { try await plain(to: target) }
    }

    /// Plain in on `listenHost` (loopback unless a container must reach it), TLS out to `target`
    /// (the other system's relay).
    public static func plainToTLS(
        listenHost: String = "127.0.0.1", tls: TLSConfiguration, target: (host: String, port: Int), logger: Logger
    ) async throws -> TLSRelay {
        let context = try NIOSSLContext(configuration: tls)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: listenHost, port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Connection(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        return start(server, logger: logger) {
            try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .connectTimeout(.seconds(10))
                .connect(host: target.host, port: target.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                        return try Connection(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                    }
                }
        }
    }

    static func plain(to target: (host: String, port: Int)) async throws -> Connection {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connectTimeout(.seconds(10))
            .connect(host: target.host, port: target.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Connection(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
    }

    private static func start(
        _ server: NIOAsyncChannel<Connection, Never>, logger: Logger, connect: @escaping @Sendable () async throws -> Connection
    ) -> TLSRelay {
        let port = server.channel.localAddress?.port ?? 0
        let channel = server.channel
        let task = Task {
            do {
                try await server.executeThenClose { inbound in
                    try await withThrowingDiscardingTaskGroup { group in
                        for try await connection in inbound {
                            group.addTask {
                                do {
                                    await Connection.splice(connection, try await connect())
                                } catch {
                                    logger.warning("relay could not reach its target", metadata: ["error": "\(error)"])
                                    try? await connection.executeThenClose { _, _ in }
                                }
                            }
                        }
                    }
                }
            } catch {
                logger.debug("relay stopped", metadata: ["error": "\(error)"])
            }
        }
        return TLSRelay(port: port, server: channel, task: task)
    }
}
