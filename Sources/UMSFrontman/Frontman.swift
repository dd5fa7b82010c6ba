import AsyncHTTPClient
import Hummingbird
import Logging
import NIOCore
import UMSModel
import ServiceLifecycle

/// One published port a Frontman listens for.
public struct FrontmanPort: Sendable, Equatable, Codable {
    public var published: Int
    public var kind: FrontmanProtocol
    /// Where the Frontman itself listens (the system redirects `published` there).
    public var listening: Int

    public init(published: Int, kind: FrontmanProtocol, listening: Int = 0) {
        self.published = published
        self.kind = kind
        self.listening = listening
    }
}

/// The Frontman of one service on one system (paper §III-B, steps 8 and 14): listeners for its
/// published ports that share one gate. The Coordinator puts it in front of the service, tells it
/// to hold when the service freezes, and where to send everything once the destination confirms.
/// How traffic for a published port reaches the listeners is the host's business (UMSOS).
public final class Frontman: Sendable {
    public let service: String
    public let gate: FrontmanGate
    public let ports: [FrontmanPort]
    private let tasks: [Task<Void, Never>]
    private let groups: [ServiceGroup]
    private let servers: [any Channel]

    /// The listen backlog of a Frontman's ports: what a source's Frontman sends ahead (every
    /// request it held, up to the hold's bound, at once) must not overrun the accept queue —
    /// a connection dropped there waits a second for its SYN's retransmission. The kernel caps
    /// it at `net.core.somaxconn` (4096 here).
    static let listenBacklog = 4096

    private init(
        service: String, gate: FrontmanGate, ports: [FrontmanPort], tasks: [Task<Void, Never>], groups: [ServiceGroup], servers: [any Channel]
    ) {
        self.service = service
        self.gate = gate
        self.ports = ports
        self.tasks = tasks
        self.groups = groups
        self.servers = servers
    }

    /// Starts listeners on ephemeral ports of `host` for each published port.
    public static func start(
        service: String, ports: [(published: Int, kind: FrontmanProtocol)], target: FrontmanTarget?, limits: HoldLimits,
        http: HTTPClient, host: String = "0.0.0.0", maxBodyBytes: Int = 8 << 20, logger: Logger
    ) async throws -> Frontman {
        let gate = FrontmanGate(target: target, limits: limits, metrics: FrontmanMetrics(service: service))
        var started: [FrontmanPort] = []
        // Owned by the Frontman, cancelled by `stop`: the expiry of what is held, and the listeners.
        var tasks: [Task<Void, Never>] = [Task { await gate.expireHeld() }]
        var groups: [ServiceGroup] = []
        var servers: [any Channel] = []
        do {
            for port in ports {
                switch port.kind {
                case .tcp:
                    let server = try await TCPFrontman.bind(host: host)
                    servers.append(server.channel)
                    let listening = server.channel.localAddress?.port ?? 0
                    let frontman = TCPFrontman(service: service, publishedPort: port.published, gate: gate, logger: logger)
                    tasks.append(Task { await frontman.serve(server) })
                    started.append(FrontmanPort(published: port.published, kind: .tcp, listening: listening))
                case .http:
                    let responder = HTTPFrontmanResponder(
                        service: service, publishedPort: port.published, gate: gate, http: http, maxBodyBytes: maxBodyBytes, logger: logger
                    )
                    let (stream, continuation) = AsyncStream.makeStream(of: Int.self)
                    let app = Application(
                        responder: responder, configuration: .init(address: .hostname(host, port: 0), serverName: nil, backlog: Frontman.listenBacklog),
                        onServerRunning: { channel in
                            continuation.yield(channel.localAddress?.port ?? 0)
                            continuation.finish()
                        },
                        logger: logger
                    )
                    // Its own group, so that `stop` shuts it down gracefully (answers in progress
                    // finish) rather than cancelling it.
                    let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
                    groups.append(group)
                    let task = Task {
                        do {
                            try await group.run()
                        } catch {
                            logger.warning("http frontman stopped", metadata: ["service": "\(service)", "error": "\(error)"])
                        }
                        continuation.finish()
                    }
                    tasks.append(task)
                    var iterator = stream.makeAsyncIterator()
                    guard let listening = await iterator.next(), listening > 0 else {
                        throw FrontmanStartFailure(service: service, port: port.published)
                    }
                    started.append(FrontmanPort(published: port.published, kind: .http, listening: listening))
                }
            }
        } catch {
            for task in tasks { task.cancel() }
            throw error
        }
        return Frontman(service: service, gate: gate, ports: started, tasks: tasks, groups: groups, servers: servers)
    }

    /// Stops accepting and closes idle connections; what is in flight finishes (the HTTP side
    /// shuts down gracefully, the TCP side's spliced connections go on until they end).
    public func drain() async {
        for group in groups { await group.triggerGracefulShutdown() }
        for server in servers { server.close(promise: nil) }
    }

    /// Refuses anything still held, cuts what is in flight and closes the listeners.
    public func stop() async {
        await gate.close()
        await gate.cutAll()
        await drain()
        for task in tasks { task.cancel() }
    }
}

public struct FrontmanStartFailure: Error, CustomStringConvertible {
    public let service: String
    public let port: Int

    public var description: String { "failed to start the Frontman of \(service) for port \(port)" }
}
