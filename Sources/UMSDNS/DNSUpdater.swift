import Foundation
import NIOCore
import NIOPosix
import UMSModel

/// Sends signed RFC 2136 updates to one authoritative server over TCP (each message after its
/// two-byte length), and accepts only an answer signed with the same key.
public struct DNSUpdater: Sendable {
    public let host: String
    public let port: Int
    public let zone: DNSName
    public let key: TSIGKey
    public let timeout: Duration

    public init(host: String, port: Int, zone: DNSName, key: TSIGKey, timeout: Duration = .seconds(5)) throws(UMSError) {
        guard IPv4.octets(host) != nil, (1...65535).contains(port) else {
            throw UMSError(.invalidArgument, "invalid DNS server '\(String(host.prefix(40))):\(port)': an IPv4 address and a port expected (no name is resolved)")
        }
        self.host = host
        self.port = port
        self.zone = zone
        self.key = key
        self.timeout = timeout
    }

    /// Makes `name` (in the zone) resolve to `address` alone, with `ttl`. Throws what the server
    /// said when it did not apply it (a wrong key: NOTAUTH with TSIG BADKEY or BADSIG).
    public func replaceA(_ name: DNSName, address: String, ttl: UInt32) async throws {
        let id = UInt16.random(in: 0...UInt16.max)
        let message = try DNSUpdateMessage.replaceA(zone: zone, name: name, address: address, ttl: ttl, id: id)
        let (signed, mac) = DNSUpdateMessage.sign(message, key: key, time: UInt64(Date().timeIntervalSince1970))
        let answer = try await exchange(signed)
        let response = try DNSUpdateResponse.parse(answer, id: id, requestMAC: mac, key: key)
        guard response.rcode == 0 else {
            throw UMSError(.unavailable, "DNS server \(host):\(port) refused the update of \(name): \(response.meaning)")
        }
        guard response.verified else {
            throw UMSError(.unavailable, "DNS server \(host):\(port) answered the update of \(name) without a valid signature by key \(key.name)")
        }
    }

    func exchange(_ message: [UInt8]) async throws -> [UInt8] {
        try await DNSTransport.exchange(message, host: host, port: port, timeout: timeout)
    }
}

/// One DNS message to a server over TCP (after its two-byte length) and its answer.
enum DNSTransport {
    static func exchange(_ message: [UInt8], host: String, port: Int, timeout: Duration) async throws -> [UInt8] {
        try await withTimeout(timeout, UMSError(.timeout, "DNS server \(host):\(port) did not answer in \(timeout)")) {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                }
            return try await channel.executeThenClose { inbound, outbound in
                var framed = ByteBuffer()
                framed.writeInteger(UInt16(message.count))
                framed.writeBytes(message)
                try await outbound.write(framed)
                var received = ByteBuffer()
                for try await chunk in inbound {
                    var chunk = chunk
                    received.writeBuffer(&chunk)
                    guard received.readableBytes <= 65537 else { break }
                    if let length = received.getInteger(at: received.readerIndex, as: UInt16.self), received.readableBytes >= 2 + Int(length) {
                        return received.getBytes(at: received.readerIndex + 2, length: Int(length)) ?? []
                    }
                }
                throw UMSError(.unavailable, "DNS server \(host):\(port) closed the connection without a whole answer")
            }
        }
    }
}

/// What the endpoint record publishes: each service as `SERVICE.ZONE`, one A record, a short TTL
/// (clients follow a move within it).
public struct DNSPublisher: Sendable {
    public let updater: DNSUpdater
    public let ttl: UInt32

    public init(updater: DNSUpdater, ttl: UInt32) {
        self.updater = updater
        self.ttl = ttl
    }

    public func name(of service: String) throws(UMSError) -> DNSName {
        try DNSName("\(service).\(updater.zone)")
    }

    public func publish(service: String, address: String) async throws {
        try await updater.replaceA(try name(of: service), address: address, ttl: ttl)
    }
}
