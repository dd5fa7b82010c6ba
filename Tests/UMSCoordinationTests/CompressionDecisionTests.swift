import Testing
import UMSDecision
import UMSModel

@Suite("Compression: the decision")
struct CompressionDecisionTests {
    @Test("the requested policy where the destination reads version 2; the plain stream, saying why, where it does not", arguments: ImageCompression.allCases)
    func decide(requested: ImageCompression) {
        let modern = CompressionDecision.decide(requested, destination: "b", reads: [1, 2], approach: .orchestrator)
        #expect(modern.compression == requested)
        #expect(modern.reason.hasPrefix("\(requested.rawValue) — zero pages never sent"), "\(modern.reason)")
        for old in [nil, [1], [] as [Int]?] {
            let plain = CompressionDecision.decide(requested, destination: "b", reads: old, approach: .orchestrator)
            #expect(plain.compression == nil, "a destination reading \(String(describing: old)) gets the plain stream")
            #expect(plain.reason.contains("b reads only the image stream's version 1"))
        }
        let agents = CompressionDecision.decide(requested, destination: "b", reads: [2], approach: .service)
        #expect(agents.compression == requested && agents.reason.contains("agents' own stream"))
    }
}
