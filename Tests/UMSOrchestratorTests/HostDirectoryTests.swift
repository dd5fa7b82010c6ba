import Foundation
import Testing
import UMSModel
import UMSOS

/// Host directories a peer's container brings (bind mounts) are made only below an allowed root.
@Suite("Host directories for bind mounts")
struct HostDirectoryTests {
    @Test("made below an allowed root, never twice, never through a link that leads out, never outside")
    func create() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("ums-binds-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        let allowed = "\(base)/allowed", outside = "\(base)/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        // The root itself need not exist yet.
        try HostDirectory.create("\(allowed)/app/data", within: [allowed])
        #expect(FileSystem.isDirectory("\(allowed)/app/data"))
        let twice = #expect(throws: UMSError.self) { try HostDirectory.create("\(allowed)/app/data", within: [allowed]) }
        #expect(twice?.code == .exists)
        // A link inside the root that leads out.
        try FileManager.default.createSymbolicLink(atPath: "\(allowed)/evil", withDestinationPath: outside)
        let escaped = #expect(throws: UMSError.self) { try HostDirectory.create("\(allowed)/evil/x", within: [allowed]) }
        #expect(escaped?.code == .forbidden)
        #expect(!FileSystem.exists("\(outside)/x"), "nothing made where the link leads")
        let elsewhere = #expect(throws: UMSError.self) { try HostDirectory.create("\(base)/other/x", within: [allowed]) }
        #expect(elsewhere?.code == .forbidden)
        for bad in ["relative", "/", "\(allowed)/../x", "\(allowed)/a:b", "\(allowed)/./x"] {
            #expect(throws: UMSError.self, "\(bad)") { try HostDirectory.create(bad, within: [allowed]) }
        }
    }
}
