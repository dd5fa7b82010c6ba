import Foundation
import Logging
import Testing
import UMSAPI
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
