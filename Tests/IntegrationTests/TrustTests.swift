import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTLS
import NIOCore
import Testing
import UMSAPI
import UMSModel
import UMSTrust

/// Trust between systems on the real testbed, over mutual TLS: A and B pin each other and
/// migrate both ways (the other suites); here, what each identity may do, and a third system C
/// with its own identity, pinned by neither, refused by both in both directions.
@Suite("Mutual TLS and scoped credentials between systems", .enabled(if: Testbed.isUp && Testbed.kinds == nil))
struct TrustTests {
    /// A's identity as B's peer (`A_PEER_CERT`/`A_PEER_KEY` from `scripts/testbed up`).
    func asPeerA(_ testbed: Testbed) throws -> CoordinatorClient {
        let certificate = try #require(Testbed.environment["UMS_TESTBED_A_PEER_CERT"])
        let key = try #require(Testbed.environment["UMS_TESTBED_A_PEER_KEY"])
        return CoordinatorClient(baseURL: testbed.bURL, token: nil, http: try Testbed.coordinatorHTTP(certificate: certificate, key: key))
    }

    /// System C: an identity of its own, made the way `ums trust init` makes one.
    static let systemC: TrustDirectory = {
        let directory = TrustDirectory(FileManager.default.temporaryDirectory.appendingPathComponent("ums-system-c-\(getpid())").path)
        _ = try? directory.create(name: "tbc", hosts: ["198.18.0.254"], force: true)
        return directory
    }()

    @Test("a peer may call only the peer routes: the operator's routes are 403 for it, and nothing changes")
    func peerScope() async throws {
        let testbed = try Testbed()
        let peer = try asPeerA(testbed)
        // Other suites use the same systems at the same time: only what this test names is compared.
        let target = "trust-scope"
        try? await testbed.b.remove(target)
        _ = try await testbed.b.run(RunRequest(name: target, rootfs: testbed.rootfs, command: ["/bin/counter", "--port", "8080"], publish: ["18514:8080"]))
        _ = try await peer.system()
        for call in [
            { _ = try await peer.containers() },
            { _ = try await peer.migrations() },
            { _ = try await peer.endpoints() },
            { try await peer.remove(target) },
            { _ = try await peer.run(RunRequest(name: "trust-intruder", rootfs: testbed.rootfs, command: ["/bin/counter"])) },
            { _ = try await peer.migrate(MigrateRequest(container: target, destination: testbed.aURL)) },
        ] as [@Sendable () async throws -> Void] {
            let error = await #expect(throws: UMSError.self) { try await call() }
            #expect(error?.code == .forbidden, "\(error?.message ?? "")")
            #expect(error?.message.contains("may call only the peer routes") == true)
        }
        let names = try await testbed.names(on: testbed.b)
        #expect(names.contains(target), "not removed")
        #expect(!names.contains("trust-intruder"), "not created")
        #expect(try await testbed.b.container(target).container.migratingIn == nil, "not migrated")
        try? await testbed.b.remove(target)
    }

    @Test("a peer cannot touch a migration it did not start: 403, and the migration is left as it was")
    func otherPeersMigration() async throws {
        let testbed = try Testbed()
        let name = "trust-owned"
        await testbed.cleanUp(name)
        // B's operator runs a counter there, so B holds its image, and prepares an incoming
        // migration itself (owner: the operator, not peer A).
        let view = try await testbed.b.run(RunRequest(name: "\(name)-src", rootfs: testbed.rootfs, command: ["/bin/counter", "--port", "8080"], publish: ["18510:8080"]))
        let specification = Specification(name: name, image: view.container.specification.image, command: ["/bin/counter", "--port", "8080"], ports: [PortMapping(hostPort: 18511, containerPort: 8080)])
        _ = try await testbed.b.prepare(PrepareRequest(id: "m-trustowned", approach: .orchestrator, specification: specification, source: SystemRef(name: "op", url: testbed.bURL)))
        let peer = try asPeerA(testbed)
        for call in [
            { _ = try await peer.restore("m-trustowned", PeerRestoreRequest(postCopySource: nil)) },
            { _ = try await peer.commit("m-trustowned") },
            { try await peer.abort("m-trustowned") },
        ] as [@Sendable () async throws -> Void] {
            let error = await #expect(throws: UMSError.self) { try await call() }
            #expect(error?.code == .forbidden)
            #expect(error?.message.contains("belongs to another peer") == true, "\(error?.message ?? "")")
        }
        #expect(try await testbed.names(on: testbed.b).contains(name), "still prepared")
        try await testbed.b.abort("m-trustowned")
        #expect(try await testbed.names(on: testbed.b).contains(name) == false)
        try? await testbed.b.remove("\(name)-src")
    }

    @Test("system C (its own identity, pinned by neither) cannot reach A or B as a peer: the TLS handshake is refused")
    func unknownPeerRefused() async throws {
        let testbed = try Testbed()
        let c = Self.systemC
        let http = try Testbed.coordinatorHTTP(certificate: c.certificatePath, key: c.keyPath)
        for url in [testbed.aURL, testbed.bURL] {
            let client = CoordinatorClient(baseURL: url, token: nil, http: http)
            let error = await #expect(throws: UMSError.self) { _ = try await client.system() }
            #expect(error?.code == .unavailable, "\(url): \(error?.description ?? "")")
        }
    }

    @Test("A and B refuse to migrate to system C: its certificate is pinned by neither, the migration rolls back, the service keeps running")
    func unknownDestinationRefused() async throws {
        let testbed = try Testbed()
        // C serves the Coordinator API over TLS with its own identity, on the testbed's bridge.
        let c = Self.systemC
        var tls = try TLSSettings(directory: c).server()
        tls.certificateVerification = .none
        let router = Router()
        router.get("/v1/system") { _, _ in "{}" }
        let app = Application(router: router, server: try .tls(.http1(), tlsConfiguration: tls), configuration: .init(address: .hostname("198.18.0.254", port: 18599)))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService() }
            try await Task.sleep(for: .milliseconds(500))
            for (source, host, name, port) in [(testbed.a, testbed.aHost, "trust-c-a", 18512), (testbed.b, testbed.bHost, "trust-c-b", 18513)] {
                try? await source.remove(name)
                _ = try await source.run(RunRequest(name: name, rootfs: testbed.rootfs, command: ["/bin/counter", "--port", "8080"], publish: ["\(port):8080"]))
                _ = try await testbed.waitForCount(at: "\(host):\(port)", atLeast: 2)
                let record = try await testbed.migrated(MigrateRequest(container: name, destination: "https://198.18.0.254:18599"), by: source)
                #expect(record.status == .rolledBack, "\(record.error?.description ?? "")")
                #expect(record.step == .checkingDestination)
                #expect(try await source.container(name).container.state == .running)
                try? await source.remove(name)
            }
            group.cancelAll()
        }
    }

    @Test("plain HTTP to a Coordinator's TLS port gets no answer")
    func plainHTTPRefused() async throws {
        let testbed = try Testbed()
        let plain = CoordinatorClient(baseURL: testbed.bURL.replacingOccurrences(of: "https://", with: "http://"), token: nil, http: .shared)
        let error = await #expect(throws: UMSError.self) { _ = try await plain.system() }
        #expect(error?.code != nil)
    }
}
