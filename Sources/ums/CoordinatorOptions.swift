import ArgumentParser
import AsyncHTTPClient
import Foundation
import Synchronization
import UMSAPI
import UMSModel
import UMSTrust

/// Flags every command shares: which Coordinator, and how to authenticate to it.
struct CoordinatorOptions: ParsableArguments {
    @Option(name: .customLong("coordinator"), help: "The Coordinator's URL (default: $UMS_COORDINATOR).")
    var coordinator: String?

    @Option(name: .customLong("token-file"), help: "File with the Coordinator's bearer token (default: $UMS_TOKEN, then the credentials file).")
    var tokenFile: String?

    @Option(help: "The certificate(s) that verify an https Coordinator (default: $UMS_CA, then the credentials file).")
    var ca: String?

    func url() throws -> String {
        guard let url = coordinator ?? ProcessInfo.processInfo.environment["UMS_COORDINATOR"], !url.isEmpty else {
            throw ValidationError("no coordinator: pass --coordinator URL or set UMS_COORDINATOR (scripts/testbed up prints them)")
        }
        return url.hasSuffix("/") ? String(url.dropLast()) : url
    }

    func client() throws -> CoordinatorClient {
        let url = try url()
        guard url.hasPrefix("https://") else {
            return CoordinatorClient(baseURL: url, token: try Credentials.token(for: url, file: tokenFile), http: HTTPClient.shared)
        }
        let environment = ProcessInfo.processInfo.environment
        guard let ca = ca ?? environment["UMS_CA"].flatMap({ $0.isEmpty ? nil : $0 }) ?? Credentials.lookUpCA(url) else {
            throw ValidationError("no certificate to verify \(url): pass --ca FILE or set UMS_CA (scripts/testbed up prints CA=…)")
        }
        return CoordinatorClient(baseURL: url, token: try Credentials.token(for: url, file: tokenFile), http: try TLSClients.client(trusting: ca))
    }
}

/// Where tokens come from: a file given on the command line, the environment, or the
/// credentials file that maps Coordinator URLs to tokens.
enum Credentials {
    static func token(for url: String, file: String?) throws -> String? {
        if let file { return try read(file) }
        if let token = ProcessInfo.processInfo.environment["UMS_TOKEN"], !token.isEmpty { return token }
        return lookUp(url)
    }

    static func read(_ file: String) throws -> String {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8),
              let token = text.split(separator: "\n").first?.trimmingCharacters(in: .whitespaces), !token.isEmpty
        else { throw ValidationError("cannot read a token from \(file)") }
        return token
    }

    static var path: String {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["UMS_CREDENTIALS"], !path.isEmpty { return path }
        return "\(environment["HOME"] ?? "/root")/.config/ums/credentials"
    }

    /// The credentials line for `url`: `URL TOKEN [CAFILE]`.
    static func line(_ url: String) -> [String]? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            if (2...3).contains(fields.count), fields[0] == url || fields[0] == url + "/" { return fields }
        }
        return nil
    }

    static func lookUp(_ url: String) -> String? { line(url)?[1] }

    static func lookUpCA(_ url: String) -> String? {
        guard let fields = line(url), fields.count == 3 else { return nil }
        return fields[2]
    }
}

/// Prints a UMS error the way every command does, and exits non-zero.
func fail(_ error: any Error) -> ExitCode {
    let message = (error as? UMSError)?.description ?? "\(error)"
    FileHandle.standardError.write(Data("ums: \(message)\n".utf8))
    return ExitCode((error as? UMSError).map { $0.code == .notFound ? 3 : 1 } ?? 1)
}

enum Output {
    static let encoder = UMSJSON.encoder(pretty: true)

    static func json<Value: Encodable>(_ value: Value) throws {
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    /// Left-aligned columns.
    static func table(_ header: [String], _ rows: [[String]]) {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        for row in all {
            print(row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "   "))
        }
    }

    static func seconds(_ value: Double?) -> String {
        value.map { String(format: "%.3fs", $0) } ?? "-"
    }
}

/// HTTP clients that trust a CA file, one per file for the life of the process.
enum TLSClients {
    static let clients = Mutex<[String: HTTPClient]>([:])

    static func client(trusting ca: String) throws -> HTTPClient {
        try clients.withLock { clients in
            if let client = clients[ca] { return client }
            let configuration = HTTPClient.Configuration(tlsConfiguration: try TLSSettings.client(trusting: ca))
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            clients[ca] = client
            return client
        }
    }
}
