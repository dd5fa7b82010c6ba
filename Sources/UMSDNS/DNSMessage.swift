import Crypto
import Foundation
import UMSModel

/// A domain name as DNS carries it: labels of letters, digits, `-` and `_`, each 1–63 bytes, at
/// most 255 bytes on the wire. Compared and signed in lower case (RFC 4034 canonical form).
public struct DNSName: Sendable, Equatable, CustomStringConvertible {
    public let labels: [String]

    /// Labels known to be valid (this file's constants).
    private init(checked labels: [String]) {
        self.labels = labels
    }

    public init(_ text: String) throws(UMSError) {
        let trimmed = text.hasSuffix(".") ? String(text.dropLast()) : text
        let labels = trimmed.split(separator: ".", omittingEmptySubsequences: false).map { $0.lowercased() }
        guard !trimmed.isEmpty, labels.allSatisfy({ label in
            (1...63).contains(label.utf8.count)
                && label.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" }
        }), labels.reduce(1, { $0 + $1.utf8.count + 1 }) <= 255
        else { throw UMSError(.invalidArgument, "invalid DNS name '\(String(text.prefix(64)))': labels of a-z, 0-9, '-', '_' (1–63 each, 255 in all) expected") }
        self.labels = labels
    }

    /// The TSIG algorithm's name (RFC 8945).
    static let hmacSHA256 = DNSName(checked: ["hmac-sha256"])

    /// Whether this name is `zone` or below it.
    public func isWithin(_ zone: DNSName) -> Bool { labels.count >= zone.labels.count && Array(labels.suffix(zone.labels.count)) == zone.labels }

    /// Uncompressed wire form.
    public var wire: [UInt8] { labels.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) } + [0] }
    public var description: String { labels.joined(separator: ".") + "." }
}

/// A TSIG key (RFC 8945): its name and its HMAC-SHA256 secret.
public struct TSIGKey: Sendable {
    public let name: DNSName
    /// The secret's bytes (a `SymmetricKey` is made for each MAC: it is not `Sendable`).
    let secret: Data

    public init(name: DNSName, secret: Data) throws(UMSError) {
        guard (16...512).contains(secret.count) else { throw UMSError(.invalidArgument, "invalid TSIG key \(name): its secret must be 16–512 bytes") }
        self.name = name
        self.secret = secret
    }

    /// `hmac-sha256:NAME:BASE64` (the form `keymgr -t` and `knotc` print, and `kdig -y` takes).
    public init(parsing text: String) throws(UMSError) {
        let parts = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":", maxSplits: 2).map(String.init)
        guard parts.count == 3, parts[0] == "hmac-sha256", let secret = Data(base64Encoded: parts[2]) else {
            throw UMSError(.invalidArgument, "invalid TSIG key: expected hmac-sha256:NAME:BASE64-SECRET")
        }
        try self.init(name: try DNSName(parts[1]), secret: secret)
    }

    static let algorithm = DNSName.hmacSHA256

    func mac(_ data: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: secret)))
    }
}

/// RFC 2136 dynamic updates, signed with TSIG (RFC 8945, HMAC-SHA256).
public enum DNSUpdateMessage {
    static let typeA: UInt16 = 1, typeSOA: UInt16 = 6, typeTSIG: UInt16 = 250
    static let classIN: UInt16 = 1, classANY: UInt16 = 255
    static let opcodeUpdate: UInt16 = 5 << 11
    /// The server's clock may differ by this much (seconds) from ours.
    static let fudge: UInt16 = 300

    /// An update of `zone` replacing every A record of `name` by `address` with `ttl`: delete the
    /// RRset, add the one record (one message: the server applies both or neither).
    public static func replaceA(zone: DNSName, name: DNSName, address: String, ttl: UInt32, id: UInt16) throws(UMSError) -> [UInt8] {
        guard name.isWithin(zone) else { throw UMSError(.invalidArgument, "invalid DNS update: \(name) is not in zone \(zone)") }
        guard let octets = IPv4.octets(address) else { throw UMSError(.invalidArgument, "invalid DNS update: '\(String(address.prefix(40)))' is not an IPv4 address") }
        var message: [UInt8] = []
        message.append16(id)
        message.append16(opcodeUpdate)
        message.append16(1)  // zone
        message.append16(0)  // prerequisites
        message.append16(2)  // updates
        message.append16(0)  // additional
        message += zone.wire
        message.append16(typeSOA)
        message.append16(classIN)
        // Delete the RRset: class ANY, TTL 0, no data.
        message += name.wire
        message.append16(typeA)
        message.append16(classANY)
        message.append32(0)
        message.append16(0)
        // Add the record.
        message += name.wire
        message.append16(typeA)
        message.append16(classIN)
        message.append32(ttl)
        message.append16(4)
        message += octets
        return message
    }

    /// The TSIG variables (RFC 8945 §4.3.3) that the MAC covers after the message.
    static func variables(key: TSIGKey, time: UInt64, error: UInt16 = 0) -> [UInt8] {
        var bytes = key.name.wire
        bytes.append16(classANY)
        bytes.append32(0)
        bytes += TSIGKey.algorithm.wire
        bytes.append48(time)
        bytes.append16(fudge)
        bytes.append16(error)
        bytes.append16(0)  // other length
        return bytes
    }

    /// The message with its TSIG record appended (ARCOUNT + 1), and the MAC (a response's is
    /// computed over it).
    public static func sign(_ message: [UInt8], key: TSIGKey, time: UInt64) -> (signed: [UInt8], mac: [UInt8]) {
        let mac = key.mac(message + variables(key: key, time: time))
        var rdata = TSIGKey.algorithm.wire
        rdata.append48(time)
        rdata.append16(fudge)
        rdata.append16(UInt16(mac.count))
        rdata += mac
        rdata += message[0..<2]  // original ID
        rdata.append16(0)  // error
        rdata.append16(0)  // other length
        var signed = message
        let additional = UInt16(message[10]) << 8 | UInt16(message[11])
        signed[10] = UInt8((additional + 1) >> 8)
        signed[11] = UInt8((additional + 1) & 0xFF)
        signed += key.name.wire
        signed.append16(typeTSIG)
        signed.append16(classANY)
        signed.append32(0)
        signed.append16(UInt16(rdata.count))
        signed += rdata
        return (signed, mac)
    }
}

/// What a server answered to an update, checked: the ID, the response code, and the server's
/// TSIG signature over the answer (RFC 8945 §5.3: a client accepts only a signed answer).
public struct DNSUpdateResponse: Sendable, Equatable {
    public var rcode: UInt8
    /// The TSIG error the server reported (16 BADSIG, 17 BADKEY, 18 BADTIME), if any.
    public var tsigError: UInt16?
    /// Whether the answer carried a valid signature by the key.
    public var verified: Bool

    public var meaning: String {
        let codes: [UInt8: String] = [
            0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET",
            8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
        ]
        let tsig: [UInt16: String] = [16: "BADSIG", 17: "BADKEY", 18: "BADTIME"]
        return (codes[rcode] ?? "RCODE \(rcode)") + (tsigError.flatMap { $0 == 0 ? nil : " (TSIG \(tsig[$0] ?? String($0)))" } ?? "")
    }

    /// Reads a response to the request `id` signed with `requestMAC`; everything bounded, nothing
    /// trusted (a name's compression pointers only point backwards).
    public static func parse(_ bytes: [UInt8], id: UInt16, requestMAC: [UInt8], key: TSIGKey) throws(UMSError) -> DNSUpdateResponse {
        guard (12...65535).contains(bytes.count) else { throw UMSError(.invalidArgument, "invalid DNS response: \(bytes.count) bytes") }
        var reader = Reader(bytes: bytes)
        guard let answerID = reader.u16(), answerID == id, let flags = reader.u16(), flags & 0x8000 != 0,
              let zones = reader.u16(), let prerequisites = reader.u16(), let updates = reader.u16(), let additional = reader.u16()
        else { throw UMSError(.invalidArgument, "invalid DNS response: not an answer to update \(id)") }
        let rcode = UInt8(flags & 0x0F)
        for _ in 0..<zones { guard reader.skipName(), reader.skip(4) else { throw Self.malformed } }
        for _ in 0..<(Int(prerequisites) + Int(updates) + max(Int(additional) - 1, 0)) {
            guard reader.skipRecord() else { throw Self.malformed }
        }
        guard additional > 0 else { return DNSUpdateResponse(rcode: rcode, tsigError: nil, verified: false) }
        // The last record must be the TSIG one.
        let tsigStart = reader.offset
        guard reader.skipName(), let type = reader.u16(), type == DNSUpdateMessage.typeTSIG, reader.skip(6),
              let length = reader.u16(), reader.offset + Int(length) == bytes.count,
              reader.skipName(), let timeHigh = reader.u16(), let timeLow = reader.u32(), reader.skip(2),
              let macSize = reader.u16(), macSize <= 64, let mac = reader.take(Int(macSize)), reader.skip(2), let error = reader.u16()
        else { throw Self.malformed }
        // The MAC covers the request's MAC, the answer without its TSIG record (ARCOUNT one
        // less) and the TSIG variables as the server sent them.
        var unsigned = Array(bytes[..<tsigStart])
        unsigned[10] = UInt8((additional - 1) >> 8)
        unsigned[11] = UInt8((additional - 1) & 0xFF)
        let time = UInt64(timeHigh) << 32 | UInt64(timeLow)
        var covered: [UInt8] = []
        covered.append16(UInt16(requestMAC.count))
        covered += requestMAC + unsigned + DNSUpdateMessage.variables(key: key, time: time, error: error)
        let verified = !mac.isEmpty && key.mac(covered) == mac
        return DNSUpdateResponse(rcode: rcode, tsigError: error, verified: verified)
    }

    static let malformed = UMSError(.invalidArgument, "invalid DNS response: malformed records")

    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func take(_ count: Int) -> [UInt8]? {
            guard count >= 0, offset + count <= bytes.count else { return nil }
            defer { offset += count }
            return Array(bytes[offset..<offset + count])
        }
        mutating func skip(_ count: Int) -> Bool { take(count) != nil }
        mutating func u16() -> UInt16? { take(2).map { UInt16($0[0]) << 8 | UInt16($0[1]) } }
        mutating func u32() -> UInt32? { take(4).map { $0.reduce(0) { $0 << 8 | UInt32($1) } } }

        /// A name: labels up to a zero byte, or ending in a compression pointer (two bytes).
        mutating func skipName() -> Bool {
            for _ in 0..<128 {
                guard let length = take(1)?.first else { return false }
                if length == 0 { return true }
                if length & 0xC0 == 0xC0 { return skip(1) }
                guard length <= 63, skip(Int(length)) else { return false }
            }
            return false
        }

        mutating func skipRecord() -> Bool {
            guard skipName(), skip(8), let length = u16() else { return false }
            return skip(Int(length))
        }
    }
}

extension [UInt8] {
    mutating func append16(_ value: UInt16) { append(contentsOf: [UInt8(value >> 8), UInt8(value & 0xFF)]) }
    mutating func append32(_ value: UInt32) { append16(UInt16(value >> 16)); append16(UInt16(value & 0xFFFF)) }
    mutating func append48(_ value: UInt64) { append16(UInt16((value >> 32) & 0xFFFF)); append32(UInt32(value & 0xFFFF_FFFF)) }
}
