import Foundation
import NIOSSL
import Testing
import UMSModel
@testable import UMSTrust
import X509

@Suite("Identities and pinned peers")
struct IdentityTests {
    func directory() -> TrustDirectory {
        TrustDirectory(FileManager.default.temporaryDirectory.appendingPathComponent("ums-trust-\(UUID().uuidString)").path)
    }

    @Test("ums trust init makes a private key (0600) in a private directory and a certificate naming the system and its address")
    func create() throws {
        let dir = directory()
        defer { try? FileManager.default.removeItem(atPath: dir.path) }
        let certificate = try dir.create(name: "edge", hosts: ["198.18.0.1", "edge.example"])
        #expect("\(certificate.subject)".contains("CN=edge"))
        let names = try #require(try certificate.extensions.subjectAlternativeNames)
        #expect(names.contains(.dnsName("edge.example")))
        #expect(names.contains(.ipAddress(.init(contentBytes: [198, 18, 0, 1]))))
        let keyMode = try #require(try FileManager.default.attributesOfItem(atPath: dir.keyPath)[.posixPermissions] as? NSNumber).intValue
        #expect(keyMode & 0o077 == 0)
        let dirMode = try #require(try FileManager.default.attributesOfItem(atPath: dir.path)[.posixPermissions] as? NSNumber).intValue
        #expect(dirMode == 0o700)
        #expect(throws: UMSError.self, "an existing identity is not replaced without --force") { try dir.create(name: "edge", hosts: []) }
        #expect(throws: UMSError.self, "a host that is not an address or a name") { try directory().create(name: "x", hosts: ["a b"]) }
    }

    @Test("a pinned peer is named by its certificate; an unknown one has no name; a readable key is refused")
    func pinning() throws {
        let (a, b, c) = (directory(), directory(), directory())
        defer { for d in [a, b, c] { try? FileManager.default.removeItem(atPath: d.path) } }
        try a.create(name: "a", hosts: ["198.18.0.1"])
        try b.create(name: "b", hosts: ["198.18.0.2"])
        try c.create(name: "c", hosts: ["198.18.0.3"])
        try a.addPeer(name: "b", certificatePEM: try String(contentsOfFile: b.certificatePath, encoding: .utf8))
        #expect(throws: UMSError.self) { try a.addPeer(name: "../x", certificatePEM: "") }
        #expect(throws: UMSError.self) { try a.addPeer(name: "junk", certificatePEM: "not a certificate") }
        let settings = try TLSSettings(directory: a, extraPeers: ["c": c.certificatePath])
        #expect(settings.peers.keys.sorted() == ["b", "c"])
        #expect(settings.peerName(of: try NIOSSLCertificate(file: b.certificatePath, format: .pem)) == "b")
        #expect(settings.peerName(of: try NIOSSLCertificate(file: c.certificatePath, format: .pem)) == "c")
        #expect(try TLSSettings(directory: a).peerName(of: try NIOSSLCertificate(file: c.certificatePath, format: .pem)) == nil)
        _ = try settings.server()
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: a.keyPath)
        #expect(throws: UMSError.self, "a key others can read") { _ = try settings.server() }
    }
}
