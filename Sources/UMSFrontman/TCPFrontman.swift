import Logging
import NIOCore
import NIOPosix
import UMSOS

/// The TCP side of a Frontman: accepts connections and splices each to the gate's target.
/// While the gate holds, a new connection waits unread (its bytes stay in the kernel's buffers)
/// and is spliced to wherever the gate releases it; beyond the hold's bounds it is closed at
/// once, cleanly (FIN, no data), so the client sees a refusal rather than a hang.
struct TCPFrontman: Sendable {
    let service: String
    let publishedPort: Int
    let gate: FrontmanGate
    let logger: Logger
    let maxConnectAttempts = 5

    typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>

    static func bind(host: String) async throws -> NIOAsyncChannel<Connection, Never> {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: Int32(Frontman.listenBacklog))
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: host, port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Connection(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
    }

    func serve(_ server: NIOAsyncChannel<Connection, Never>) async {
        do {
            try await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        // A place per connection, taken before anything else: beyond the
                        // bound the connection is closed at once.
                        guard (try? await gate.enter()) != nil else {
                            try? await connection.executeThenClose { _, _ in }
                            continue
                        }
                        group.addTask {
                            await handle(connection)
                            await gate.leave()
                        }
                    }
                }
            }
        } catch {
            logger.debug("tcp frontman stopped", metadata: ["error": "\(error)"])
        }
    }

    func handle(_ client: Connection) async {
        var attempt = 0
        while true {
            attempt += 1
            let admission: FrontmanAdmission
            do {
                admission = try await gate.admit()
            } catch {
                try? await client.executeThenClose { _, _ in }
                return
            }
            let route = admission.route
            guard let endpoint = route.target.endpoint(forPublished: publishedPort) else {
                await gate.settle(admission)
                try? await client.executeThenClose { _, _ in }
                return
            }
            let connected: Result<Connection, any Error>
            do {
                connected = .success(
                    try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                        .channelOption(.allowRemoteHalfClosure, value: true)
                        .connectTimeout(.seconds(5))
                        .connect(host: endpoint.host, port: endpoint.port) { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try Connection(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                            }
                        })
            } catch {
                connected = .failure(error)
            }
            let upstream: Connection
            switch connected {
            case .success(let connection):
                upstream = connection
            case .failure(let error):
                // Not connected: a held connection may go next.
                await gate.settle(admission)
                // Nothing was sent yet: try again (the new location may be a moment from ready).
                if attempt < maxConnectAttempts {
                    await gate.count(.retried)
                    try? await Task.sleep(for: .milliseconds(50 * attempt))
                    continue
                }
                logger.warning("tcp frontman could not reach the service", metadata: ["service": "\(service)", "target": "\(endpoint.host):\(endpoint.port)", "error": "\(error)"])
                try? await client.executeThenClose { _, _ in }
                return
            }
            await gate.count(.forwarded)
            let (clientChannel, upstreamChannel) = (client.channel, upstream.channel)
            // In flight (and waiting for the service's first bytes) before it counts as settled:
            // a hold that starts in between sees it either way (`FrontmanGate.quiesce`).
            let answer = AnswerWatch()
            let key = await gate.started(epoch: route.epoch, answer: answer) { _ in
                clientChannel.close(promise: nil)
                upstreamChannel.close(promise: nil)
            }
            // Connected: a held connection may go next.
            await gate.settle(admission)
            await Connection.splice(client, upstream, forward: answer.asked, back: answer.answered)
            await gate.finished(key)
            return
        }
    }
}
