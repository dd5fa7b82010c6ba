import ArgumentParser
import Foundation
import UMSModel
import UMSTrust

struct Trust: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage this system's identity and the peers it trusts (mutual TLS between Coordinators).",
        discussion: """
            A Coordinator presents its certificate to clients and peers, and accepts peer connections only from \
            certificates pinned with add-peer. Example, on system A and B:
              ums trust init --dir /var/lib/ums/tls --name a --host 198.18.0.1
              ums trust add-peer --dir /var/lib/ums/tls b b-cert.pem    (B's cert.pem, copied over)
            """,
        subcommands: [TrustInit.self, TrustAddPeer.self, TrustShow.self]
    )
}

struct TrustInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Make this system's key and certificate.")

    @Option(help: "The trust directory (umsd --tls-dir; default STATE_DIR/tls).")
    var dir: String

    @Option(help: "The system's name (its certificate's common name).")
    var name: String

    @Option(name: .customLong("host"), help: "An address or DNS name the system is reached at (repeatable).")
    var hosts: [String] = []

    @Flag(help: "Replace an existing identity (its peers must pin the new certificate).")
    var force = false

    func run() async throws {
        do {
            try TrustDirectory(dir).create(name: name, hosts: hosts, force: force)
            print(TrustDirectory(dir).certificatePath)
        } catch {
            throw fail(error)
        }
    }
}

struct TrustAddPeer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add-peer", abstract: "Pin a peer system's certificate under its name.")

    @Option(help: "The trust directory.")
    var dir: String

    @Argument(help: "The peer's name (how this system knows it).")
    var name: String

    @Argument(help: "The peer's certificate (its cert.pem).")
    var certificate: String

    func run() async throws {
        do {
            guard let text = try? String(contentsOfFile: certificate, encoding: .utf8) else {
                throw UMSError(.invalidArgument, "failed to read \(certificate)")
            }
            try TrustDirectory(dir).addPeer(name: name, certificatePEM: text)
        } catch {
            throw fail(error)
        }
    }
}

struct TrustShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show this system's certificate and its pinned peers.")

    @Option(help: "The trust directory.")
    var dir: String

    @Flag(help: "JSON output.")
    var json = false

    struct View: Codable {
        var subject: String
        var notValidAfter: Date
        var peers: [String: String]
    }

    func run() async throws {
        do {
            let directory = TrustDirectory(dir)
            let certificate = try directory.certificate()
            let peers = try directory.peers().mapValues { "\($0.subject)" }
            let view = View(subject: "\(certificate.subject)", notValidAfter: certificate.notValidAfter, peers: peers)
            if json {
                try Output.json(view)
            } else {
                print("identity: \(view.subject), valid until \(view.notValidAfter)")
                Output.table(["PEER", "SUBJECT"], peers.sorted { $0.key < $1.key }.map { [$0.key, $0.value] })
            }
        } catch {
            throw fail(error)
        }
    }
}
