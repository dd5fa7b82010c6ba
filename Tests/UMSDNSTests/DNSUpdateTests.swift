import Foundation
import Logging
import Testing
import UMSModel
import UMSOS
@testable import UMSDNS

@Suite("DNS dynamic updates (RFC 2136) signed with TSIG (RFC 8945)")
struct DNSUpdateTests {
    static let key = try! TSIGKey(parsing: "hmac-sha256:ums-key:" + Data(repeating: 7, count: 32).base64EncodedString())

    @Test("names: lower-cased, checked, within their zone")
    func names() throws {
        #expect(try DNSName("Svc.UMS.test.").description == "svc.ums.test.")
        #expect(try DNSName("svc.ums.test").wire == [3, 0x73, 0x76, 0x63, 3, 0x75, 0x6D, 0x73, 4, 0x74, 0x65, 0x73, 0x74, 0])
        #expect(try DNSName("svc.ums.test").isWithin(try DNSName("ums.test")))
        #expect(!(try DNSName("svc.other.test").isWithin(try DNSName("ums.test"))))
        for bad in ["", ".", "a..b", "a b", "a;rm", String(repeating: "a", count: 64) + ".test", Array(repeating: "abcdefgh", count: 40).joined(separator: "."), "ünï.test"] {
            #expect(throws: UMSError.self) { try DNSName(bad) }
        }
    }

    @Test("an update replaces the name's A records: zone SOA/IN, delete the RRset (class ANY, TTL 0), add the one record")
    func message() throws {
        let message = try DNSUpdateMessage.replaceA(zone: try DNSName("ums.test"), name: try DNSName("svc.ums.test"), address: "198.18.0.2", ttl: 5, id: 0x1234)
        #expect(Array(message[0..<12]) == [0x12, 0x34, 0x28, 0x00, 0, 1, 0, 0, 0, 2, 0, 0])
        let zone = try DNSName("ums.test").wire, name = try DNSName("svc.ums.test").wire
        #expect(Array(message[12..<(12 + zone.count)]) == zone)
        #expect(Array(message.suffix(4)) == [198, 18, 0, 2])
        #expect(message.count == 12 + zone.count + 4 + (name.count + 10) + (name.count + 10 + 4))
        #expect(throws: UMSError.self) { try DNSUpdateMessage.replaceA(zone: try DNSName("ums.test"), name: try DNSName("svc.other.test"), address: "198.18.0.2", ttl: 5, id: 1) }
        for bad in ["198.18.0", "198.18.0.256", "::1", "198.18.0.2 ", "example.com"] {
            #expect(throws: UMSError.self) { try DNSUpdateMessage.replaceA(zone: try DNSName("ums.test"), name: try DNSName("svc.ums.test"), address: bad, ttl: 5, id: 1) }
        }
    }

    @Test("signing appends one TSIG record (ARCOUNT 1) whose MAC is HMAC-SHA256 over the message and the TSIG variables; a response signed over the request's MAC verifies, a changed byte does not")
    func signAndVerify() throws {
        let message = try DNSUpdateMessage.replaceA(zone: try DNSName("ums.test"), name: try DNSName("svc.ums.test"), address: "198.18.0.2", ttl: 5, id: 0xBEEF)
        let (signed, mac) = DNSUpdateMessage.sign(message, key: Self.key, time: 1_800_000_000)
        #expect(signed[11] == 1)
        #expect(mac.count == 32)
        #expect(mac == Self.key.mac(message + DNSUpdateMessage.variables(key: Self.key, time: 1_800_000_000)))
        // A server's answer: the header with QR set and NOERROR, signed over the request's MAC.
        var answer = Array(message[0..<12])
        answer[2] |= 0x80
        answer[7] = 0; answer[9] = 0
        answer += Array(message[12..<(12 + (try DNSName("ums.test").wire.count) + 4)])
        let (signedAnswer, _) = Self.serverSign(answer, requestMAC: mac, time: 1_800_000_001)
        let response = try DNSUpdateResponse.parse(signedAnswer, id: 0xBEEF, requestMAC: mac, key: Self.key)
        #expect(response.rcode == 0 && response.verified)
        var tampered = signedAnswer
        tampered[3] |= 0x05  // REFUSED, signature unchanged
        #expect(try DNSUpdateResponse.parse(tampered, id: 0xBEEF, requestMAC: mac, key: Self.key).verified == false)
        #expect(throws: UMSError.self) { try DNSUpdateResponse.parse(signedAnswer, id: 0xBEEE, requestMAC: mac, key: Self.key) }
    }

    /// What a server does (RFC 8945 §4.3.3): the MAC over the request's MAC, the answer and the
    /// variables; the TSIG record appended.
    static func serverSign(_ answer: [UInt8], requestMAC: [UInt8], time: UInt64) -> ([UInt8], [UInt8]) {
        var covered: [UInt8] = []
        covered.append16(UInt16(requestMAC.count))
        covered += requestMAC + answer + DNSUpdateMessage.variables(key: key, time: time)
        let mac = key.mac(covered)
        var rdata = TSIGKey.algorithm.wire
        rdata.append48(time); rdata.append16(300); rdata.append16(UInt16(mac.count)); rdata += mac
        rdata += answer[0..<2]; rdata.append16(0); rdata.append16(0)
        var signed = answer
        signed[11] += 1
        signed += key.name.wire
        signed.append16(250); signed.append16(255); signed.append32(0); signed.append16(UInt16(rdata.count))
        return (signed + rdata, mac)
    }

    @Test("hostile answers: too short, not an answer, records past the end, a compression pointer loop, a TSIG record that is not last or not whole — refused or unverified, never a trap")
    func hostile() throws {
        let mac = [UInt8](repeating: 1, count: 32)
        let header: [UInt8] = [0xBE, 0xEF, 0x80, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]
        for bad: [UInt8] in [
            [], [0xBE, 0xEF], [0xBE, 0xEF, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0],
            header,  // a zone and a TSIG record announced, none there
            header + [0xC0, 12, 0, 6, 0, 1] + [0xC0, 18, 0, 250],  // TSIG cut short
            [0xBE, 0xEF, 0x80, 0x00, 0, 0, 0, 0, 0, 0xFF, 0, 0] + Array(repeating: 0x3F, count: 40),  // records past the end
            header + Array(repeating: 0xC0, count: 300),
        ] {
            #expect(throws: UMSError.self) { try DNSUpdateResponse.parse(bad, id: 0xBEEF, requestMAC: mac, key: Self.key) }
        }
        // An unsigned answer parses, unverified (the updater refuses it).
        let unsigned: [UInt8] = [0xBE, 0xEF, 0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]
        #expect(try DNSUpdateResponse.parse(unsigned, id: 0xBEEF, requestMAC: mac, key: Self.key).verified == false)
        #expect(throws: UMSError.self) { try TSIGKey(parsing: "hmac-md5:k:" + Data(count: 32).base64EncodedString()) }
        #expect(throws: UMSError.self) { try TSIGKey(parsing: "hmac-sha256:k:short") }
        #expect(throws: UMSError.self) { try DNSUpdater(host: "dns.example.com", port: 53, zone: try DNSName("ums.test"), key: Self.key) }
    }
}

@Suite("DNS queries for A records")
struct DNSQueryTests {
    @Test("a query asks for one name's A records without recursion; an answer's A records and their smallest TTL are read, other types skipped, a compressed name followed")
    func query() throws {
        let name = try DNSName("svc.ums.test")
        let query = DNSQuery.a(name, id: 0x0102)
        #expect(Array(query[0..<12]) == [1, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(Array(query.suffix(4)) == [0, 1, 0, 1])
        var answer = Array(query)
        answer[2] = 0x84  // QR, AA
        answer[7] = 3     // three answers
        let pointer: [UInt8] = [0xC0, 12]
        answer += pointer + [0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0, 0]                // a CNAME-ish record: skipped
        answer += pointer + [0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 198, 18, 0, 2]       // A 198.18.0.2, TTL 30
        answer += pointer + [0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 198, 18, 0, 3]        // A 198.18.0.3, TTL 5
        let (addresses, ttl) = try DNSQuery.addresses(in: answer, id: 0x0102)
        #expect(addresses == ["198.18.0.2", "198.18.0.3"])
        #expect(ttl == 5)
    }

    @Test("hostile answers: another ID, not an answer, NXDOMAIN, no A record, a record longer than the answer, an A record of 5 bytes — errors, never a trap")
    func hostile() throws {
        let query = DNSQuery.a(try DNSName("svc.ums.test"), id: 7)
        var base = Array(query)
        base[2] = 0x80
        var nxdomain = base; nxdomain[3] = 3
        var empty = base
        empty[7] = 0
        var long = base; long[7] = 1
        long += [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0xFF, 0xFF, 1, 2]
        var five = base; five[7] = 1
        five += [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 5, 1, 2, 3, 4, 5]
        for bad in [Array(query), nxdomain, empty, long, five, [], Array(repeating: 0xFF, count: 600)] {
            #expect(throws: UMSError.self) { try DNSQuery.addresses(in: bad, id: 7) }
        }
        #expect(throws: UMSError.self) { try DNSQuery.addresses(in: base, id: 8) }
        for server in ["dns.example.com", "127.0.0.1:0", "127.0.0.1:99999", ""] {
            #expect(throws: UMSError.self) { try DNSResolver(server: server) }
        }
    }
}

/// Against a real authoritative server: Knot (from Debian's packages) on loopback, serving a
/// local test zone only, started and stopped by this test.
@Suite("DNS updates against a real Knot server", .serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/sbin/knotd")))
struct KnotUpdateTests {
    let runner = SubprocessRunner(logger: Logger(label: "knot-test"))

    @Test("a signed update makes the name resolve to the new address (kdig asks Knot); the same update with a wrong key is refused (NOTAUTH, TSIG BADKEY) and changes nothing")
    func updatesKnot() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ums-knot-\(UUID().uuidString)").path
        // Knot keeps its journal (where updates go) under the database directory, which must exist.
        try FileManager.default.createDirectory(atPath: "\(directory)/db", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let port = Int.random(in: 20000...29999)
        let secret = Data((0..<32).map { _ in UInt8.random(in: 0...255) })
        let zone = """
        $ORIGIN ums.test.
        $TTL 5
        @ SOA ns.ums.test. admin.ums.test. 1 60 60 3600 5
        @ NS ns.ums.test.
        ns A 127.0.0.1
        svc A 198.18.0.1

        """
        try zone.write(toFile: "\(directory)/ums.test.zone", atomically: true, encoding: .utf8)
        let config = """
        server:
            listen: 127.0.0.1@\(port)
            rundir: \(directory)
            user: root:root
        database:
            storage: \(directory)/db
        key:
          - id: ums-key
            algorithm: hmac-sha256
            secret: \(secret.base64EncodedString())
        acl:
          - id: update
            key: ums-key
            action: update
        zone:
          - domain: ums.test
            storage: \(directory)
            file: ums.test.zone
            acl: update
            zonefile-sync: -1

        """
        try config.write(toFile: "\(directory)/knot.conf", atomically: true, encoding: .utf8)
        let knot = BackgroundProcess(Command("/usr/sbin/knotd", ["-c", "\(directory)/knot.conf"]), logFile: "/dev/null")
        defer { knot.cancel() }
        func resolve() async -> String {
            (try? await runner.output("kdig", ["@127.0.0.1", "-p", String(port), "+short", "+tcp", "svc.ums.test", "A"])) ?? ""
        }
        for _ in 0..<100 where await resolve() != "198.18.0.1" { try await Task.sleep(for: .milliseconds(50)) }
        #expect(await resolve() == "198.18.0.1", "Knot serves the zone")

        let key = try TSIGKey(name: try DNSName("ums-key"), secret: secret)
        let updater = try DNSUpdater(host: "127.0.0.1", port: port, zone: try DNSName("ums.test"), key: key)
        let resolver = try DNSResolver(server: "127.0.0.1:\(port)")
        #expect(try await resolver.resolve("svc.ums.test") == "198.18.0.1")
        try await updater.replaceA(try DNSName("svc.ums.test"), address: "198.18.0.2", ttl: 5)
        #expect(await resolve() == "198.18.0.2", "the name follows the service")
        #expect(try await resolver.resolve("svc.ums.test") == "198.18.0.1", "a resolver keeps an answer for its TTL")
        #expect(try await DNSResolver(server: "127.0.0.1:\(port)").resolve("svc.ums.test") == "198.18.0.2")

        let wrong = try TSIGKey(name: try DNSName("ums-key"), secret: Data(repeating: 9, count: 32))
        let refused = try DNSUpdater(host: "127.0.0.1", port: port, zone: try DNSName("ums.test"), key: wrong)
        let error = await #expect(throws: UMSError.self) { try await refused.replaceA(try DNSName("svc.ums.test"), address: "198.18.0.9", ttl: 5) }
        #expect(error?.message.contains("NOTAUTH") == true, "\(error?.message ?? "")")
        #expect(await resolve() == "198.18.0.2", "a wrong key changes nothing")
    }
}
