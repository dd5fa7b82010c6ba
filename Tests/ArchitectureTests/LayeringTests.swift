import Foundation
import Testing

/// The layers of docs/architecture.md, bottom first: a target imports only targets of a lower
/// layer (two targets on one layer do not import each other); executables may import any.
let layers: [[String]] = [
    ["UMSModel"],
    ["UMSDNS"],
    ["UMSOS", "UMSLoad"],
    ["UMSTrust"],
    ["UMSOrchestrator", "UMSImage"],
    ["UMSCheckpoint"],
    ["UMSMigration", "UMSFrontman", "UMSDecision"],
    ["UMSAPI"],
    ["UMSCoordination"],
]
let executables: Set<String> = ["umsd", "ums", "ums-load"]
/// Modules of the toolchain, imported without a package dependency.
let toolchain: Set<String> = ["Foundation", "FoundationEssentials", "Glibc", "Musl", "Darwin", "Dispatch", "Synchronization", "System", "_Concurrency"]

let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// `import X` lines of every Swift file of a target (conditional ones included).
func imports(of target: String) throws -> Set<String> {
    let directory = root.appendingPathComponent("Sources/\(target)")
    guard let files = FileManager.default.enumerator(atPath: directory.path) else { return [] }
    var modules: Set<String> = []
    for case let file as String in files where file.hasSuffix(".swift") {
        let text = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ").map(String.init)
            // `import X`, `@testable import X`, `public import X`, `import struct X.Y`
            guard let index = words.firstIndex(of: "import"), index + 1 < words.count, words[..<index].allSatisfy({ $0.hasPrefix("@") || ["public", "internal", "package", "private", "fileprivate"].contains($0) })
            else { continue }
            let rest = words[(index + 1)...]
            let name = (["struct", "enum", "class", "protocol", "func", "typealias", "var", "let"].contains(rest.first ?? "") ? rest.dropFirst().first : rest.first) ?? ""
            modules.insert(String(name.split(separator: ".").first ?? ""))
        }
    }
    return modules
}

/// The package's targets and what each declares, from `swift package dump-package`.
struct Manifest: Decodable {
    struct Target: Decodable {
        struct Dependency: Decodable {
            var byName: [String?]?
            var product: [String?]?
            var target: [String?]?

            var name: String? { (byName ?? product ?? target)?.first ?? nil }
        }

        var name: String
        var type: String
        var dependencies: [Dependency]
    }

    var targets: [Target]

    /// Loads on a thread of its own: the child process would otherwise hold one of the few
    /// threads every concurrently running test shares.
    static func load() async throws -> Manifest {
        let result: Result<Manifest, any Error> = await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: Result { try loadBlocking() }) }.start()
        }
        return try result.get()
    }

    static func loadBlocking() throws -> Manifest {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        // Its own scratch path: the `swift test` running this holds the lock on `.build`.
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("ums-dump-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        process.arguments = ["swift", "package", "--package-path", root.path, "--scratch-path", scratch, "dump-package"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return try JSONDecoder().decode(Manifest.self, from: data)
    }
}

@Suite("The layers hold")
struct LayeringTests {
    func rank(_ target: String) -> Int? { layers.firstIndex { $0.contains(target) } }

    @Test("every library target is on a layer of docs/architecture.md, and the doc lists each")
    func everyTargetPlaced() async throws {
        let manifest = try await Manifest.load()
        let doc = try String(contentsOf: root.appendingPathComponent("docs/architecture.md"), encoding: .utf8)
        for target in manifest.targets where target.type == "regular" {
            #expect(rank(target.name) != nil, "\(target.name) is on no layer")
            #expect(doc.contains("`\(target.name)`"), "docs/architecture.md does not name \(target.name)")
        }
    }

    @Test("no target imports a target of its own layer or a higher one")
    func noUpwardImports() throws {
        let ours = Set(layers.joined())
        for target in layers.joined() {
            guard let own = rank(target) else { continue }
            for module in try imports(of: target) where ours.contains(module) {
                let theirs = rank(module) ?? .max
                #expect(theirs < own, "\(target) (layer \(own)) imports \(module) (layer \(theirs)): an upward or sideways import")
            }
        }
    }

    @Test("every module a target imports is declared in Package.swift")
    func importsDeclared() async throws {
        let manifest = try await Manifest.load()
        for target in manifest.targets where target.type != "test" {
            let declared = Set(target.dependencies.compactMap(\.name))
            for module in try imports(of: target.name) where !toolchain.contains(module) && module != target.name {
                #expect(declared.contains(module), "\(target.name) imports \(module) without declaring it")
            }
        }
    }

    @Test("the rule catches a violation: an upward import is seen")
    func catchesViolations() throws {
        // UMSOrchestrator importing UMSCheckpoint (above it) was the violation this test was
        // written for; the rank table says so.
        #expect(rank("UMSCheckpoint")! > rank("UMSOrchestrator")!)
        #expect(try imports(of: "UMSCoordination").contains("UMSMigration"))
    }
}
