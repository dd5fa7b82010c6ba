import AsyncAlgorithms
import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import UMSModel

/// A client of one Coordinator's HTTP API: used by the CLI, and by a source Coordinator to talk
/// to its peer. Every failure is a `UMSError` whose message says what could not be done.
public struct CoordinatorClient: Sendable {
    public let baseURL: String
    let token: String?
    let http: HTTPClient
    let timeout: TimeAmount

    public init(baseURL: String, token: String?, http: HTTPClient, timeout: TimeAmount = .seconds(60)) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.http = http
        self.timeout = timeout
    }

    static let encoder = UMSJSON.encoder()
    static let decoder = UMSJSON.decoder()

    func request(_ method: HTTPMethod, _ path: String) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        request.headers.add(name: "Accept", value: "application/json")
        return request
    }

    /// Sends a request and decodes its JSON answer, mapping error bodies to `UMSError`.
    func send<Response: Decodable>(_ request: HTTPClientRequest, as: Response.Type, timeout: TimeAmount? = nil) async throws -> Response {
        let data = try await sendRaw(request, timeout: timeout)
        do {
            return try Self.decoder.decode(Response.self, from: data)
        } catch {
            throw UMSError(.internalError, "failed to read the answer of \(baseURL)", cause: error)
        }
    }

    func sendRaw(_ request: HTTPClientRequest, timeout: TimeAmount? = nil) async throws -> Data {
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeout ?? self.timeout)
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            throw UMSError(.timeout, "failed to reach coordinator \(baseURL): no answer in time", cause: error)
        } catch {
            throw UMSError(.unavailable, "failed to reach coordinator \(baseURL)", cause: error)
        }
        let body = try await response.body.collect(upTo: 64 << 20)
        let data = Data(buffer: body)
        guard (200..<300).contains(Int(response.status.code)) else {
            if let error = try? Self.decoder.decode(ErrorBody.self, from: data).error { throw error }
            throw UMSError(UMSError.Code(httpStatus: Int(response.status.code)),
                           "coordinator \(baseURL) answered \(response.status.code) \(response.status.reasonPhrase)")
        }
        return data
    }

    func json<Body: Encodable>(_ method: HTTPMethod, _ path: String, _ body: Body) throws -> HTTPClientRequest {
        var request = request(method, path)
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(data: try Self.encoder.encode(body)))
        return request
    }

    // MARK: Public API

    public func system() async throws -> SystemInfo {
        try await send(request(.GET, Routes.system), as: SystemInfo.self, timeout: .seconds(5))
    }

    public func endpoints() async throws -> [EndpointEntry] {
        try await send(request(.GET, Routes.endpoints), as: [EndpointEntry].self)
    }

    public func endpoint(_ service: String) async throws -> EndpointEntry {
        try await send(request(.GET, Routes.endpoint(service)), as: EndpointEntry.self)
    }

    public func frontmen() async throws -> [FrontmanView] {
        try await send(request(.GET, Routes.frontmen), as: [FrontmanView].self)
    }

    public func containers() async throws -> [ContainerView] {
        try await send(request(.GET, Routes.containers), as: [ContainerView].self)
    }

    public func container(_ name: String) async throws -> ContainerView {
        try await send(request(.GET, Routes.container(name)), as: ContainerView.self)
    }

    public func run(_ body: RunRequest) async throws -> ContainerView {
        try await send(try json(.POST, Routes.containers, body), as: ContainerView.self, timeout: .minutes(5))
    }

    public func remove(_ name: String) async throws {
        _ = try await sendRaw(request(.DELETE, Routes.container(name)))
    }

    public func restart(_ name: String) async throws -> ContainerView {
        try await send(request(.POST, Routes.restart(name)), as: ContainerView.self)
    }

    public func migrate(_ body: MigrateRequest) async throws -> MigrationRecord {
        try await send(try json(.POST, Routes.migrations, body), as: MigrationRecord.self)
    }

    public func plan(_ body: MigrateRequest) async throws -> MigrationPlan {
        try await send(try json(.POST, Routes.migrationPlan, body), as: MigrationPlan.self)
    }

    public func migrations() async throws -> [MigrationRecord] {
        try await send(request(.GET, Routes.migrations), as: [MigrationRecord].self)
    }

    public func migration(_ id: String) async throws -> MigrationRecord {
        try await send(request(.GET, Routes.migration(id)), as: MigrationRecord.self)
    }

    // MARK: Peer API

    public func hasImage(_ image: ImageReference) async throws -> Bool {
        do {
            _ = try await sendRaw(request(.GET, Routes.peerImage(image)))
            return true
        } catch let error as UMSError where error.code == .notFound {
            return false
        }
    }

    public func prepare(_ body: PrepareRequest) async throws -> PrepareResponse {
        try await send(try json(.POST, Routes.peerMigrations, body), as: PrepareResponse.self, timeout: .minutes(2))
    }

    public func restore(_ id: String, _ body: PeerRestoreRequest) async throws -> RestoreResponse {
        try await send(try json(.POST, Routes.peerRestore(id), body), as: RestoreResponse.self, timeout: .minutes(5))
    }

    /// Post-copy commits answer once every page has crossed, so they may take as long as the link needs.
    public func commit(_ id: String) async throws -> CommitResponse {
        try await send(request(.POST, Routes.peerCommit(id)), as: CommitResponse.self, timeout: .minutes(15))
    }

    public func abort(_ id: String) async throws {
        _ = try await sendRaw(request(.DELETE, Routes.peerMigration(id)), timeout: .minutes(2))
    }

    /// Where the destination's journal says migration `id` stands; nil if it has no record of it.
    public func status(_ id: String) async throws -> IncomingStatus? {
        do {
            return try await send(request(.GET, Routes.peerMigration(id)), as: IncomingStatus.self, timeout: .seconds(10))
        } catch let error as UMSError where error.code == .notFound {
            return nil
        }
    }

    /// The destination side's journal (operators).
    public func incoming() async throws -> [IncomingRecord] {
        try await send(request(.GET, Routes.incoming), as: [IncomingRecord].self)
    }

    /// An operator decides an unfinished migration on this system.
    public func resolve(_ id: String, _ body: ResolveRequest) async throws -> ResolveResponse {
        try await send(try json(.POST, Routes.resolve(id), body), as: ResolveResponse.self, timeout: .minutes(2))
    }

    /// Streams a body produced by `produce` (which hands chunks to its argument as it makes them)
    /// to `path` with PUT. Backpressure: `produce` waits while the connection is busy.
    public func upload(
        _ path: String,
        produce: @escaping @Sendable (@Sendable (ByteBuffer) async throws -> Void) async throws -> Void
    ) async throws -> UploadResponse {
        let channel = AsyncThrowingChannel<ByteBuffer, any Error>()
        var request = request(.PUT, path)
        request.headers.add(name: "Content-Type", value: "application/x-tar")
        request.body = .stream(channel, length: .unknown)
        let finalRequest = request
        let hasher = StreamHasher()
        let answer = try await withThrowingTaskGroup(of: UploadResponse?.self) { group in
            group.addTask {
                do {
                    try await produce { buffer in
                        await hasher.update(buffer)
                        await channel.send(buffer)
                    }
                    channel.finish()
                } catch {
                    channel.fail(error)
                    throw error
                }
                return nil
            }
            group.addTask {
                try await send(finalRequest, as: UploadResponse.self, timeout: .minutes(30))
            }
            var answer: UploadResponse?
            do {
                while let result = try await group.next() {
                    if let result { answer = result }
                }
            } catch {
                group.cancelAll()
                channel.fail(error)
                throw error
            }
            guard let answer else { throw UMSError(.internalError, "failed to upload to \(path): no answer") }
            return answer
        }
        let sent = await hasher.digest()
        if let received = answer.digest, received != sent {
            throw UMSError(.internalError, "failed to upload to \(baseURL)\(path): the receiver saw \(received), we sent \(sent) (corrupted transfer)")
        }
        return answer
    }
}

/// SHA-256 of everything an upload sent.
/// The SHA-256 of a stream as it passes (`sha256:<hex>`): what an upload's sender and receiver
/// compare.
public actor StreamHasher {
    var hasher = SHA256()

    public init() {}

    public func update(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
    }

    public func digest() -> String {
        "sha256:" + Array(hasher.finalize()).hex
    }
}
