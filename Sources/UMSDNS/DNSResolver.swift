import Foundation
import Synchronization
import UMSModel

/// A standard query for a name's A records, and the addresses in the answer.
public enum DNSQuery {
    /// The query (recursion not asked for: the server is authoritative).
    public static func a(_ name: DNSName, id: UInt16) -> [UInt8] {
        var message: [UInt8] = []
        message.append16(id)
        message.append16(0)  // standard query, no recursion
        message.append16(1)
        message.append16(0)
        message.append16(0)
        message.append16(0)
        message += name.wire
        message.append16(DNSUpdateMessage.typeA)
        message.append16(DNSUpdateMessage.classIN)
        return message
    }

    /// The A records of an answer to query `id` and their smallest TTL; NXDOMAIN and an empty
    /// answer are errors. Everything bounded (a hostile answer cannot trap or loop).
    public static func addresses(in bytes: [UInt8], id: UInt16) throws(UMSError) -> (addresses: [String], ttl: UInt32) {
        var reader = DNSUpdateResponse.Reader(bytes: bytes)
        guard bytes.count >= 12, let answerID = reader.u16(), answerID == id, let flags = reader.u16(), flags & 0x8000 != 0,
              let questions = reader.u16(), let answers = reader.u16(), reader.skip(4)
        else { throw UMSError(.invalidArgument, "invalid DNS answer: not an answer to query \(id)") }
        guard flags & 0x0F == 0 else { throw UMSError(.notFound, "DNS answered RCODE \(flags & 0x0F)") }
        for _ in 0..<questions { guard reader.skipName(), reader.skip(4) else { throw DNSUpdateResponse.malformed } }
        var addresses: [String] = []
        var ttl = UInt32.max
        for _ in 0..<answers {
            guard reader.skipName(), let type = reader.u16(), let rclass = reader.u16(), let recordTTL = reader.u32(),
                  let length = reader.u16(), let data = reader.take(Int(length))
            else { throw DNSUpdateResponse.malformed }
            guard type == DNSUpdateMessage.typeA, rclass == DNSUpdateMessage.classIN, data.count == 4 else { continue }
            addresses.append(data.map(String.init).joined(separator: "."))
            ttl = min(ttl, recordTTL)
        }
        guard !addresses.isEmpty else { throw UMSError(.notFound, "DNS has no A record") }
        return (addresses, ttl)
    }
}

/// Resolves names through one server, keeping each answer for its TTL (at most `maxTTL`): a
/// client that follows DNS, as `ums-load --dns-server` does.
public final class DNSResolver: Sendable {
    public let host: String
    public let port: Int
    let maxTTL: Duration
    let timeout: Duration
    private let cache = Mutex<[String: (address: String, until: ContinuousClock.Instant)]>([:])

    public init(server: String, maxTTL: Duration = .seconds(60), timeout: Duration = .seconds(2)) throws(UMSError) {
        let parts = server.split(separator: ":", maxSplits: 1).map(String.init)
        guard let host = parts.first, IPv4.octets(host) != nil, let port = parts.count == 2 ? Int(parts[1]) : 53, (1...65535).contains(port) else {
            throw UMSError(.invalidArgument, "invalid DNS server '\(String(server.prefix(60)))': IP[:PORT] expected (no name is resolved to reach it)")
        }
        self.host = host
        self.port = port
        self.maxTTL = maxTTL
        self.timeout = timeout
    }

    public func resolve(_ name: String) async throws -> String {
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0[name] }), cached.until > now { return cached.address }
        let id = UInt16.random(in: 0...UInt16.max)
        let answer = try await DNSTransport.exchange(DNSQuery.a(try DNSName(name), id: id), host: host, port: port, timeout: timeout)
        let (addresses, ttl) = try DNSQuery.addresses(in: answer, id: id)
        let address = addresses[0]
        let keep = min(Duration.seconds(Int64(ttl)), maxTTL)
        cache.withLock { $0[name] = (address, now + keep) }
        return address
    }
}
