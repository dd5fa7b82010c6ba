import Crypto
import Foundation
import NIOSSL
import SwiftASN1
import UMSModel
import UMSOS
import X509
#if canImport(Glibc)
import Glibc
#endif

/// A system's identity between autonomous systems: a P-256 key and a self-signed certificate
/// naming the system (its common name) and the addresses it is reached at. Peers pin the
/// certificate (`ums trust add-peer`); the key never leaves the system's trust directory.
///
/// Layout of a trust directory (0700): `key.pem` (0600), `cert.pem`, `peers/<name>.pem` — the
/// certificates of the systems this one trusts, each named by the peer it identifies.
public struct TrustDirectory: Sendable {
    public let path: String

    public init(_ path: String) {
        self.path = path
    }

    public var keyPath: String { "\(path)/key.pem" }
    public var certificatePath: String { "\(path)/cert.pem" }
    public var peersPath: String { "\(path)/peers" }

    /// Makes the system's key and certificate (`ums trust init`). Refuses to replace an existing
    /// identity unless `force`: peers that pinned the old one would no longer know this system.
    @discardableResult
    public func create(name: String, hosts: [String], force: Bool = false, now: Date = Date()) throws -> Certificate {
        try ContainerName.validate(name)
        guard force || !FileManager.default.fileExists(atPath: keyPath) else {
            throw UMSError(.exists, "failed to create an identity in \(path): one exists (its peers pinned it); pass --force to replace it")
        }
        for host in hosts { try HostAddress.validate(host) }
        try FileSystem.makePrivateDirectory(path)
        try FileSystem.makePrivateDirectory(peersPath)
        let key = P256.Signing.PrivateKey()
        let privateKey = Certificate.PrivateKey(key)
        let subject = try DistinguishedName {
            OrganizationName("UMS")
            CommonName(name)
        }
        let names: [GeneralName] = hosts.map { host in
            Self.addressBytes(host).map { .ipAddress(ASN1OctetString(contentBytes: ArraySlice($0))) } ?? .dnsName(host)
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            Critical(KeyUsage(digitalSignature: true, keyCertSign: true))
            try ExtendedKeyUsage([.serverAuth, .clientAuth])
            SubjectAlternativeNames(names)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: privateKey.publicKey,
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(10 * 365 * 24 * 3600),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: privateKey
        )
        try FileSystem.writeAtomically(Data((key.pemRepresentation + "\n").utf8), to: keyPath, secret: true)
        try FileSystem.writeAtomically(Data((try certificate.serializeAsPEM().pemString + "\n").utf8), to: certificatePath)
        return certificate
    }

    /// Pins a peer's certificate under `name` (`ums trust add-peer`).
    public func addPeer(name: String, certificatePEM: String) throws {
        try ContainerName.validate(name)
        let certificate: Certificate
        do {
            certificate = try Certificate(pemEncoded: certificatePEM)
        } catch {
            throw UMSError(.invalidArgument, "failed to add peer \(name): not a PEM certificate", cause: error)
        }
        try FileSystem.makePrivateDirectory(peersPath)
        try FileSystem.writeAtomically(Data((try certificate.serializeAsPEM().pemString + "\n").utf8), to: "\(peersPath)/\(name).pem")
    }

    /// The pinned peers by name.
    public func peers() throws -> [String: Certificate] {
        var result: [String: Certificate] = [:]
        for file in ((try? FileSystem.contents(of: peersPath)) ?? []).sorted() where file.hasSuffix(".pem") {
            let name = String(file.dropLast(4))
            guard (try? ContainerName.validate(name)) != nil else { continue }
            let text = try String(contentsOfFile: "\(peersPath)/\(file)", encoding: .utf8)
            do {
                result[name] = try Certificate(pemEncoded: text)
            } catch {
                throw UMSError(.invalidArgument, "failed to read the pinned certificate of peer \(name) (\(peersPath)/\(file))", cause: error)
            }
        }
        return result
    }

    /// The system's own certificate.
    public func certificate() throws -> Certificate {
        do {
            return try Certificate(pemEncoded: try String(contentsOfFile: certificatePath, encoding: .utf8))
        } catch {
            throw UMSError(.notFound, "failed to read this system's certificate \(certificatePath): run ums trust init", cause: error)
        }
    }

    /// The key and certificate NIOSSL presents, with the key file checked to be private.
    func nioIdentity() throws -> (NIOSSLCertificate, NIOSSLPrivateKey) {
        try FileSystem.checkPrivate(keyPath, what: "private key")
        do {
            let certificate = try NIOSSLCertificate(file: certificatePath, format: .pem)
            let key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
            return (certificate, key)
        } catch {
            throw UMSError(.invalidArgument, "failed to read this system's identity in \(path): run ums trust init", cause: error)
        }
    }

    static func addressBytes(_ host: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }
}
