import Foundation
import Testing
import UMSModel

@Suite("Domain model")
struct ModelTests {
    @Test("error codes map to HTTP statuses in one place")
    func httpStatuses() {
        #expect(UMSError.Code.invalidArgument.httpStatus == 400)
        #expect(UMSError.Code.unauthenticated.httpStatus == 401)
        #expect(UMSError.Code.notFound.httpStatus == 404)
        #expect(UMSError.Code.invalidState.httpStatus == 409)
        #expect(UMSError.Code.exists.httpStatus == 409)
        #expect(UMSError.Code.unavailable.httpStatus == 503)
        #expect(UMSError.Code(httpStatus: 401) == .unauthenticated)
        #expect(UMSError.Code(httpStatus: 502) == .internalError)
    }

    @Test("ports parse from PORT and HOST:CONTAINER", arguments: [
        ("8080", PortMapping(hostPort: 8080, containerPort: 8080)),
        ("9000:80", PortMapping(hostPort: 9000, containerPort: 80)),
        ("443/tcp", PortMapping(hostPort: 443, containerPort: 443)),
        ("8080:80/http", PortMapping(hostPort: 8080, containerPort: 80, proto: "tcp", application: "http")),
    ])
    func portParsing(text: String, expected: PortMapping) throws {
        #expect(try PortMapping(parsing: text) == expected)
    }

    @Test("bad ports are refused", arguments: ["", "0", "70000", "a:b", "1:2:3", "53/udp", "8080:", "80/https", "80/"])
    func badPorts(text: String) {
        #expect(throws: UMSError.self) { try PortMapping(parsing: text) }
    }

    @Test("container names are kept to a safe alphabet", arguments: ["", "-x", "UPPER", "a/b", "a b", String(repeating: "x", count: 49), "../x"])
    func badNames(name: String) {
        #expect(throws: UMSError.self) { try ContainerName.validate(name) }
    }

    @Test("good names pass", arguments: ["counter", "web-1", "a_b", "x"])
    func goodNames(name: String) throws {
        try ContainerName.validate(name)
    }

    @Test("approach requests decode strictly")
    func approachRequest() throws {
        #expect(ApproachRequest(rawValue: "auto") == .auto)
        #expect(ApproachRequest(rawValue: "service") == .specific(.service))
        #expect(ApproachRequest(rawValue: "fast") == nil)
        let decoded = try JSONDecoder().decode([ApproachRequest].self, from: Data(#"["container"]"#.utf8))
        #expect(decoded == [.specific(.container)])
        #expect(throws: (any Error).self) { try JSONDecoder().decode([ApproachRequest].self, from: Data(#"["fast"]"#.utf8)) }
    }

    @Test("dates keep milliseconds through the UMS JSON coding")
    func dates() throws {
        let date = Date(timeIntervalSince1970: 1_800_000_000.123)
        let data = try UMSJSON.encoder().encode([date])
        let back = try UMSJSON.decoder().decode([Date].self, from: data)
        #expect(abs(back[0].timeIntervalSince1970 - date.timeIntervalSince1970) < 0.002)
    }

    @Test("a destination's agent intake is checked as it is decoded: it reaches the source agent's control line", arguments: [
        #"{"address": "198.18.0.2:27001", "secret": "0a1b2c"}"#,
        #"{"address": "198.18.0.2:27001 evil", "secret": "0a1b"}"#,
        #"{"address": "198.18.0.2:27001", "secret": "ab\nRESUME"}"#,
        #"{"address": "198.18.0.2:99999", "secret": "ab"}"#,
        #"{"address": "no-port", "secret": "ab"}"#,
        #"{"address": "a b:1", "secret": "ab"}"#,
        #"{"address": "198.18.0.2:1", "secret": ""}"#,
    ])
    func intake(json: String) throws {
        let decoded = try? JSONDecoder().decode(CheckpointIntake.self, from: Data(json.utf8))
        #expect((decoded != nil) == json.hasPrefix(#"{"address": "198.18.0.2:27001", "secret": "0a1b2c"}"#), "\(json)")
    }
}
