import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import UMSModel

/// The HTTP API of a container engine on its Unix socket: Docker Engine's, or Podman's (`podman
/// system service`, whose Docker-compatible part takes the same requests). AsyncHTTPClient speaks
/// HTTP over the socket (`http+unix`).
public struct EngineAPI: Sendable {
    public let socketPath: String
    /// Path prefix of the API version, e.g. `/v1.41` (Docker 20.10) or `/v4.0.0` (Podman 4).
    public let versionPrefix: String
    let http: HTTPClient

    public init(socketPath: String, versionPrefix: String, http: HTTPClient) {
        self.socketPath = socketPath
        self.versionPrefix = versionPrefix
        self.http = http
    }

    public struct Response: Sendable {
        public var status: HTTPResponseStatus
        public var body: ByteBuffer

        public var text: String { String(buffer: body) }

        /// The body as `Value`; an engine that answers something else gets a clear error.
        public func decode<Value: Decodable>(_ type: Value.Type, operation: String) throws(UMSError) -> Value {
            do {
                return try JSONDecoder().decode(Value.self, from: Data(buffer: body))
            } catch {
                throw UMSError(.internalError, "failed to \(operation): the engine's answer is not what its API documents", cause: error)
            }
        }

        /// The engine's error message, or the body as text.
        var message: String {
            ((try? JSONDecoder().decode(DockerAPI.ErrorBody.self, from: Data(buffer: body)))?.message ?? text)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    func url(_ path: String) throws(UMSError) -> String {
        guard let url = URL(httpURLWithSocketPath: socketPath, uri: versionPrefix + path) else {
            throw UMSError(.invalidArgument, "invalid engine request path \(path)")
        }
        return url.absoluteString
    }

    /// Sends a request and writes the response body to `file` as it arrives (a checkpoint export,
    /// which the synchronization module streams onward while it grows).
    public func download(_ method: HTTPMethod, _ path: String, to file: String, timeout: TimeAmount = .seconds(600), operation: String) async throws {
        var request = HTTPClientRequest(url: try url(path))
        request.method = method
        request.headers.replaceOrAdd(name: "Host", value: "localhost")
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeout)
        } catch {
            throw UMSError(.unavailable, "failed to \(operation): the engine at \(socketPath) is not reachable", cause: error)
        }
        guard response.status == .ok else {
            let answer = Response(status: response.status, body: try await response.body.collect(upTo: 1 << 20))
            throw UMSError(.internalError, "failed to \(operation): the engine answered \(response.status.code): \(answer.message)")
        }
        guard FileManager.default.createFile(atPath: file, contents: nil), let handle = FileHandle(forWritingAtPath: file) else {
            throw UMSError(.internalError, "failed to \(operation): cannot write \(file)")
        }
        defer { try? handle.close() }
        for try await chunk in response.body {
            try handle.write(contentsOf: Data(buffer: chunk))
        }
    }

    /// Sends a request; `expect` lists the statuses that are success. Engine errors (`{"message": …}`)
    /// become UMSErrors with the engine's message.
    @discardableResult
    public func request(
        _ method: HTTPMethod, _ path: String, json: (any Encodable & Sendable)? = nil, body: HTTPClientRequest.Body? = nil,
        contentType: String? = nil, expect: Set<UInt> = [200, 201, 204], timeout: TimeAmount = .seconds(60), operation: String
    ) async throws -> Response {
        var request = HTTPClientRequest(url: try url(path))
        request.method = method
        // Go's HTTP servers (dockerd, podman) refuse requests without a Host header.
        request.headers.replaceOrAdd(name: "Host", value: "localhost")
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: try JSONEncoder().encode(json)))
        } else if let body {
            request.body = body
            if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeout)
        } catch {
            throw UMSError(.unavailable, "failed to \(operation): the engine at \(socketPath) is not reachable", cause: error)
        }
        let collected = try await response.body.collect(upTo: 64 << 20)
        let result = Response(status: response.status, body: collected)
        guard expect.contains(response.status.code) else {
            let code: UMSError.Code = switch response.status.code {
            case 404: .notFound
            case 409: .exists
            case 400: .invalidArgument
            default: .internalError
            }
            throw UMSError(code, "failed to \(operation): the engine answered \(response.status.code): \(result.message)")
        }
        return result
    }
}
