import Foundation
import NIOSSL
import SwiftASN1
import UMSModel
import X509

/// How a Coordinator speaks TLS: TLS 1.3 only; as a server it presents its identity and accepts
/// client certificates only from pinned peers (clients without one — operators and the CLI —
/// authenticate with a bearer token inside the channel); as a client to a peer it presents its
/// identity and trusts exactly the pinned peers' certificates.
public struct TLSSettings: Sendable {
    public let directory: TrustDirectory
    /// Pinned peers by name, and the DER of each certificate (to name a connection's peer).
    public let peers: [String: Certificate]
    let peerDER: [[UInt8]: String]

    /// `extraPeers`: certificates pinned in the configuration (name → PEM file), besides those
    /// in the trust directory.
    public init(directory: TrustDirectory, extraPeers: [String: String] = [:]) throws {
        self.directory = directory
        var peers = try directory.peers()
        for (name, path) in extraPeers {
            try ContainerName.validate(name)
            do {
                peers[name] = try Certificate(pemEncoded: try String(contentsOfFile: path, encoding: .utf8))
            } catch {
                throw UMSError(.invalidArgument, "failed to read the pinned certificate of peer \(name) (\(path))", cause: error)
            }
        }
        self.peers = peers
        var der: [[UInt8]: String] = [:]
        for (name, certificate) in peers {
            var serializer = DER.Serializer()
            try serializer.serialize(certificate)
            der[serializer.serializedBytes] = name
        }
        peerDER = der
    }

    func pinned() throws -> [NIOSSLCertificate] {
        try peerDER.keys.map { try NIOSSLCertificate(bytes: $0, format: .der) }
    }

    /// `peersOnly`: every client must present a pinned certificate (the post-copy relay); else a
    /// client without one may authenticate by token inside (the Coordinator API).
    public func server(peersOnly: Bool = false) throws -> TLSConfiguration {
        let (certificate, key) = try directory.nioIdentity()
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(certificate)], privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv13
        // Peers must present a pinned certificate; a client without one authenticates by token.
        configuration.certificateVerification = peersOnly ? .noHostnameVerification : .optionalVerification
        configuration.trustRoots = .certificates(try pinned())
        configuration.sendCANameList = false
        return configuration
    }

    /// For this Coordinator's calls to its peers.
    public func client() throws -> TLSConfiguration {
        let (certificate, key) = try directory.nioIdentity()
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.certificateChain = [.certificate(certificate)]
        configuration.privateKey = .privateKey(key)
        configuration.trustRoots = .certificates(try pinned())
        // Pinned: exactly these certificates are trusted, whatever name the URL uses.
        configuration.certificateVerification = .noHostnameVerification
        return configuration
    }

    /// The pinned peer a connection's certificate belongs to.
    public func peerName(of certificate: NIOSSLCertificate) -> String? {
        guard let der = try? certificate.toDERBytes() else { return nil }
        return peerDER[der]
    }

    /// A client that trusts the servers whose certificates are in `caFile` (the CLI, tests),
    /// optionally presenting an identity.
    public static func client(trusting caFile: String, certificate: String? = nil, key: String? = nil) throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        do {
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            if let certificate, let key {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
        } catch {
            throw UMSError(.invalidArgument, "failed to read the TLS trust file \(caFile)", cause: error)
        }
        configuration.certificateVerification = .noHostnameVerification
        return configuration
    }
}
