import Foundation
import Logging
import Testing
import UMSAPI
import UMSDNS
import UMSOS
@testable import UMSCoordination

/// The endpoint record with real files and a real hook program.
@Suite("Endpoint record")
struct EndpointRecordTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ums-endpoints-\(UUID().uuidString)").path

    func record(hook: String? = nil) throws -> EndpointRecord {
        try EndpointRecord(
            stateDirectory: directory, hostsFile: nil, hook: hook, system: "tba", runner: SubprocessRunner(logger: Logger(label: "test")),
            logger: Logger(label: "test")
        )
    }

    func entry(_ service: String, _ address: String) -> EndpointEntry {
        EndpointEntry(service: service, address: address, endpoints: ["\(address):8080"], system: "tbb", updatedAt: Date())
    }

    @Test("changes are written in hosts format and announced to the hook with the entry in its environment")
    func hostsFileAndHook() async throws {
        defer { FileSystem.remove(directory) }
        try FileSystem.makeDirectory(directory)
        let seen = "\(directory)/seen"
        let hook = "\(directory)/hook.sh"
        try FileSystem.writeAtomically(Data("#!/bin/sh\necho \"$UMS_EVENT $UMS_SERVICE $UMS_ADDRESS $UMS_ENDPOINTS $UMS_SYSTEM\" >> \(seen)\n".utf8), to: hook)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: hook)
        let record = try record(hook: hook)

        #expect(await record.set(entry("web", "198.18.0.1")) == nil)
        #expect(await record.set(entry("db", "198.18.0.1")) == nil)
        #expect(await record.set(entry("web", "198.18.0.2")) == nil)
        // The same place again changes nothing and runs no hook.
        #expect(await record.set(entry("web", "198.18.0.2")) == nil)
        let hosts = try String(contentsOfFile: "\(directory)/endpoints.hosts", encoding: .utf8)
        #expect(hosts.split(separator: "\n").filter { !$0.hasPrefix("#") } == ["198.18.0.1 db", "198.18.0.2 web"])
        #expect(record.entries().map(\.service) == ["db", "web"])

        await record.remove("db")
        #expect(try String(contentsOfFile: "\(directory)/endpoints.hosts", encoding: .utf8).contains(" db") == false)
        let calls = try String(contentsOfFile: seen, encoding: .utf8).split(separator: "\n")
        #expect(calls == [
            "updated web 198.18.0.1 198.18.0.1:8080 tbb", "updated db 198.18.0.1 198.18.0.1:8080 tbb",
            "updated web 198.18.0.2 198.18.0.2:8080 tbb", "removed db   tbb",
        ])
    }

    @Test("a failing hook is reported, and the record is updated anyway")
    func failingHook() async throws {
        defer { FileSystem.remove(directory) }
        let record = try record(hook: "/bin/false")
        let problem = await record.set(entry("web", "198.18.0.2"))
        #expect(problem?.contains("endpoint hook failed") == true)
        #expect(record.entry("web")?.address == "198.18.0.2")
    }
}

/// The endpoint record's DNS part: its settings checked, and a server that cannot be reached said
/// in the record's answer, never thrown (the migration completes; the record is written).
@Suite("Endpoint record: DNS")
struct EndpointRecordDNSTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ums-endpoints-dns-\(UUID().uuidString)").path

    func configuration(server: String? = "127.0.0.1:1", zone: String? = "ums.test", key: String? = nil, ttl: Int? = nil) -> CoordinatorConfiguration {
        var configuration = CoordinatorConfiguration(name: "tba", stateDir: directory)
        configuration.dnsServer = server
        configuration.dnsZone = zone
        configuration.dnsKeyFile = key
        configuration.dnsTTL = ttl
        return configuration
    }

    func keyFile(mode: Int = 0o600, text: String = "hmac-sha256:ums-key:" + Data(repeating: 3, count: 32).base64EncodedString()) throws -> String {
        let path = "\(directory)/dns-\(UUID().uuidString).key"
        try FileSystem.writeAtomically(Data(text.utf8), to: path)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        return path
    }

    @Test("settings: none means no DNS; all three make a publisher naming SERVICE.ZONE; partial, a key others can read, a bad key, a name for a server, a TTL out of range are refused")
    func settings() throws {
        try FileSystem.makeDirectory(directory)
        defer { FileSystem.remove(directory) }
        #expect(try configuration(server: nil, zone: nil).dnsPublisher() == nil)
        let publisher = try #require(try configuration(key: try keyFile()).dnsPublisher())
        #expect(try publisher.name(of: "web").description == "web.ums.test.")
        #expect(publisher.ttl == 5)
        #expect(publisher.updater.port == 1)
        for bad in [
            configuration(zone: nil, key: try keyFile()), configuration(key: try keyFile(mode: 0o644)),
            configuration(key: try keyFile(text: "not a key")), configuration(server: "dns.example.com", key: try keyFile()),
            configuration(server: "127.0.0.1:x", key: try keyFile()), configuration(key: try keyFile(), ttl: 0),
            configuration(zone: "bad zone", key: try keyFile()), configuration(key: "\(directory)/missing"),
        ] {
            #expect(throws: (any Error).self) { try bad.dnsPublisher() }
        }
    }

    @Test("a DNS server that does not answer: the entry is recorded and the hosts file written; the answer says the DNS update failed")
    func unreachable() async throws {
        try FileSystem.makeDirectory(directory)
        defer { FileSystem.remove(directory) }
        let publisher = try configuration(key: try keyFile()).dnsPublisher()
        let record = try EndpointRecord(
            stateDirectory: directory, hostsFile: nil, hook: nil, dns: publisher, system: "tba",
            runner: SubprocessRunner(logger: Logger(label: "test")), logger: Logger(label: "test")
        )
        let problem = await record.set(EndpointEntry(service: "web", address: "198.18.0.2", endpoints: ["198.18.0.2:8080"], system: "tbb", updatedAt: Date()))
        #expect(problem?.contains("DNS update failed") == true, "\(problem ?? "nil")")
        #expect(record.entry("web")?.address == "198.18.0.2")
    }
}
