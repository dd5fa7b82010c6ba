import Foundation
import Testing
import UMSOS

@Suite("Watching a growing log for a line")
struct LogWatchTests {
    @Test("the line is found when it appears, also across two looks, and only the appended part is read again")
    func growing() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ums-logwatch-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let watch = LogWatch(path: path, for: "Running status-ready scripts")
        #expect(!watch.appeared(), "no file yet")
        FileManager.default.createFile(atPath: path, contents: Data(String(repeating: "(00.1) dumping pages\n", count: 500).utf8))
        #expect(!watch.appeared())
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.seekToEnd()
        handle.write(Data("(00.2) Running status-re".utf8))
        #expect(!watch.appeared(), "half the line")
        handle.write(Data("ady scripts\n".utf8))
        try handle.close()
        #expect(watch.appeared(), "the rest of the line, across two looks")
    }
}
