import Crypto
import Foundation
import Hummingbird
import NIOCore
import NIOSSL
import Prometheus
import UMSAPI
import UMSMigration
import UMSModel
import UMSTrust

/// Turns any error into the JSON error body with the status its code maps to, so every failure
/// a client sees reads the same way.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as UMSError {
            return Self.response(error)
        } catch let error as DecodingError {
            return Self.response(UMSError(.invalidArgument, "malformed request body: \(Self.describe(error))"))
        } catch let error as HTTPError {
            let code = UMSError.Code(httpStatus: Int(error.status.code))
            return Self.response(UMSError(code, error.body ?? error.status.reasonPhrase.lowercased()))
        } catch {
            return Self.response(UMSError.wrap(error, .internalError, "internal error"))
        }
    }

    static func response(_ error: UMSError) -> Response {
        let body = (try? JSONAPI.encoder.encode(ErrorBody(error: error))) ?? Data("{}".utf8)
        return Response(
            status: HTTPResponse.Status(code: error.code.httpStatus),
            headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(data: body))
        )
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map(\.stringValue).joined(separator: ".")
            return keys.isEmpty ? context.debugDescription : "\(keys): \(context.debugDescription)"
        }
        switch error {
        case .keyNotFound(let key, _): return "missing field '\(key.stringValue)'"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context): return path(context)
        @unknown default: return "\(error)"
        }
    }
}

/// Who is calling, as the Coordinator authenticated it.
public enum Caller: Sendable, Equatable {
    /// A bearer token with every right (`--token-file`).
    case `operator`
    /// A bearer token that may only read (`--reader-token-file`): ps, records, endpoints, metrics.
    case reader
    /// A pinned peer system, identified by its TLS client certificate: the peer routes only, and
    /// only for migrations it started.
    case peer(String)

    /// The peer's name, when the caller is one.
    var peerName: String? {
        if case .peer(let name) = self { return name }
        return nil
    }
}

/// The Coordinator's request context: Hummingbird's, plus the connection (for its TLS peer
/// certificate) and the authenticated caller.
public struct CoordinatorRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel
    public var caller: Caller?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
        caller = nil
    }
}

/// Authenticates every request and enforces its scope. A pinned peer is known by its client
/// certificate (mutual TLS); anyone else presents `Authorization: Bearer <token>`: the operator's
/// token, or a reader's. Every credential presented must be valid. Peers may call only
/// `GET /v1/system` and the peer routes; readers only `GET`.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = CoordinatorRequestContext
    let operatorDigest: [UInt8]
    let readerDigests: [[UInt8]]
    let tls: TLSSettings?

    init(token: String, readerTokens: [String] = [], tls: TLSSettings? = nil) {
        operatorDigest = Array(SHA256.hash(data: Data(token.utf8)))
        readerDigests = readerTokens.map { Array(SHA256.hash(data: Data($0.utf8))) }
        self.tls = tls
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        var caller: Caller?
        if let tls, let certificate = try? await context.channel.nioSSL_peerCertificate().get(), let name = tls.peerName(of: certificate) {
            caller = .peer(name)
        }
        if let header = request.headers[.authorization] {
            guard header.hasPrefix("Bearer ") else { throw UMSError(.unauthenticated, "invalid authorization: expected a bearer token") }
            // Digests, not the strings, are compared: equal length, and the time taken says
            // nothing about the token.
            let presented = Array(SHA256.hash(data: Data(header.dropFirst("Bearer ".count).utf8)))
            if presented == operatorDigest {
                caller = caller ?? .operator
            } else if readerDigests.contains(presented) {
                caller = caller ?? .reader
            } else {
                throw UMSError(.unauthenticated, "invalid bearer token for this coordinator")
            }
        }
        guard let caller else {
            throw UMSError(.unauthenticated, "missing bearer token: pass --token-file or set UMS_TOKEN (peers authenticate with their pinned certificate)")
        }
        let path = request.uri.path
        switch caller {
        case .operator:
            break
        case .reader:
            guard request.method == .get else {
                throw UMSError(.forbidden, "failed to \(request.method) \(path): a reader's token may only read")
            }
        case .peer(let name):
            guard path.hasPrefix("/v1/peer/") || (request.method == .get && path == Routes.system) else {
                throw UMSError(.forbidden, "failed to \(request.method) \(path): peer \(name) may call only the peer routes")
            }
        }
        context.caller = caller
        return try await next(request, context)
    }
}

enum JSONAPI {
    static let encoder = UMSJSON.encoder()
    static let decoder = UMSJSON.decoder()

    static func response<Value: Encodable>(_ value: Value, status: HTTPResponse.Status = .ok) throws -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(data: try encoder.encode(value)))
        )
    }

    /// Decodes a JSON body (at most 1 MiB), mapping every failure to a 400 with the reason.
    static func decode<Value: Decodable>(_ type: Value.Type, from request: Request) async throws -> Value {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: 1 << 20)
        } catch {
            throw UMSError(.invalidArgument, "malformed request body: larger than 1 MiB or unreadable")
        }
        guard buffer.readableBytes > 0 else { throw UMSError(.invalidArgument, "malformed request body: it is empty") }
        do {
            return try decoder.decode(Value.self, from: Data(buffer: buffer))
        } catch let error as DecodingError {
            throw UMSError(.invalidArgument, "malformed request body: \(ErrorMiddleware<CoordinatorRequestContext>.describe(error))")
        } catch let error as UMSError {
            throw error
        } catch {
            throw UMSError(.invalidArgument, "malformed request body: not JSON")
        }
    }
}

extension Parameters {
    func require(_ name: String) throws -> String {
        guard let value = get(name) else { throw UMSError(.invalidArgument, "missing path parameter '\(name)'") }
        return value
    }
}

/// `?format=engine` on the image routes: an engine's own image, not a UMS root filesystem.
func imageFormat(_ request: Request) throws(UMSError) -> ImageFormat? {
    guard let text = request.uri.queryParameters["format"].map(String.init) else { return nil }
    guard let format = ImageFormat(rawValue: text) else {
        throw UMSError(.invalidArgument, "invalid image format '\(String(text.prefix(32)))': expected rootfs or engine")
    }
    return format
}

/// The Coordinator's routes (the same as `docs/openapi.yaml`).
public func buildRouter(
    coordinator: Coordinator, token: String, readerTokens: [String] = [], tls: TLSSettings? = nil, metrics: PrometheusCollectorRegistry? = nil
) -> Router<CoordinatorRequestContext> {
    let router = Router(context: CoordinatorRequestContext.self)
    router.add(middleware: ErrorMiddleware())
    router.add(middleware: AuthMiddleware(token: token, readerTokens: readerTokens, tls: tls))

    router.get(RouterPath(Routes.system)) { _, _ in try JSONAPI.response(await coordinator.systemInfo()) }

    router.get(RouterPath(Routes.containers)) { _, _ in try JSONAPI.response(try await coordinator.containers.list()) }
    router.post(RouterPath(Routes.containers)) { request, _ in
        let body = try await JSONAPI.decode(RunRequest.self, from: request)
        return try JSONAPI.response(try await coordinator.containers.run(body), status: .created)
    }
    router.get("/v1/containers/:name") { _, context in
        try JSONAPI.response(try await coordinator.containers.get(try context.parameters.require("name")))
    }
    router.delete("/v1/containers/:name") { _, context in
        try await coordinator.containers.remove(try context.parameters.require("name"))
        return Response(status: .noContent)
    }
    router.post("/v1/containers/:name/restart") { _, context in
        try JSONAPI.response(try await coordinator.containers.restart(try context.parameters.require("name")))
    }

    router.get(RouterPath(Routes.migrations)) { _, _ in try JSONAPI.response(await coordinator.outgoing.all()) }
    router.post(RouterPath(Routes.migrations)) { request, _ in
        let body = try await JSONAPI.decode(MigrateRequest.self, from: request)
        return try JSONAPI.response(try await coordinator.outgoing.migrate(body), status: .accepted)
    }
    router.post(RouterPath(Routes.migrationPlan)) { request, _ in
        let body = try await JSONAPI.decode(MigrateRequest.self, from: request)
        return try JSONAPI.response(try await coordinator.outgoing.plan(body))
    }
    router.get("/v1/migrations/:id") { _, context in
        try JSONAPI.response(try await coordinator.outgoing.record(try context.parameters.require("id")))
    }
    router.post("/v1/migrations/:id/resolve") { request, context in
        let body = try await JSONAPI.decode(ResolveRequest.self, from: request)
        return try JSONAPI.response(try await coordinator.resolve(try context.parameters.require("id"), body))
    }
    router.get(RouterPath(Routes.incoming)) { _, _ in try JSONAPI.response(await coordinator.incoming.all()) }

    router.get(RouterPath(Routes.endpoints)) { _, _ in try JSONAPI.response(coordinator.endpoints.all()) }
    router.get("/v1/endpoints/:service") { _, context in
        try JSONAPI.response(try coordinator.endpoints.entry(try context.parameters.require("service")))
    }
    router.get(RouterPath(Routes.frontmen)) { _, _ in try JSONAPI.response(await coordinator.frontmanViews()) }
    router.get(RouterPath(Routes.metrics)) { _, _ in
        var text: [UInt8] = []
        metrics?.emit(into: &text)
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: text)))
    }

    // Peer routes: the destination side of a migration.
    router.get("/v1/peer/images/:digest") { request, context in
        let digest = try context.parameters.require("digest")
        guard await coordinator.incoming.hasImage(digest, format: try imageFormat(request)) else { throw UMSError(.notFound, "image \(digest) is not on this system") }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: "{}")))
    }
    router.put("/v1/peer/images/:digest") { request, context in
        try JSONAPI.response(try await coordinator.incoming.receiveImage(try context.parameters.require("digest"), format: try imageFormat(request), request.body))
    }
    router.post(RouterPath(Routes.peerMigrations)) { request, context in
        let body = try await JSONAPI.decode(PrepareRequest.self, from: request)
        return try JSONAPI.response(
            try await coordinator.incoming.prepare(
                body, by: context.caller?.peerName,
                // An IPv4 peer on a dual-stack listener shows as ::ffff:A.B.C.D.
                from: context.channel.remoteAddress?.ipAddress.map { $0.hasPrefix("::ffff:") ? String($0.dropFirst(7)) : $0 }
            ),
            status: .created
        )
    }
    router.put("/v1/peer/migrations/:id/files/:part") { request, context in
        let partName = try context.parameters.require("part")
        guard let part = FilePart(rawValue: partName) else {
            throw UMSError(.invalidArgument, "unknown file part '\(partName)': expected \(FilePart.allCases.map(\.rawValue).joined(separator: " or "))")
        }
        return try JSONAPI.response(try await coordinator.incoming.receiveFiles(try context.parameters.require("id"), part: part, request.body, by: context.caller?.peerName))
    }
    router.put("/v1/peer/migrations/:id/volumes/:volume") { request, context in
        try JSONAPI.response(try await coordinator.incoming.receiveVolume(
            try context.parameters.require("id"), volume: try context.parameters.require("volume"), request.body, by: context.caller?.peerName
        ))
    }
    router.put("/v1/peer/migrations/:id/binds/:index") { request, context in
        try JSONAPI.response(try await coordinator.incoming.receiveBind(
            try context.parameters.require("id"), index: try context.parameters.require("index"), request.body, by: context.caller?.peerName
        ))
    }
    router.post("/v1/peer/migrations/:id/restore") { request, context in
        // The body is optional: an empty one means stop-and-copy.
        let buffer = try await request.body.collect(upTo: 1 << 16)
        let body = buffer.readableBytes == 0
            ? PeerRestoreRequest(postCopySource: nil)
            : try JSONAPI.decoder.decode(PeerRestoreRequest.self, from: Data(buffer: buffer))
        return try JSONAPI.response(try await coordinator.incoming.restore(try context.parameters.require("id"), body, by: context.caller?.peerName))
    }
    router.post("/v1/peer/migrations/:id/commit") { _, context in
        try JSONAPI.response(try await coordinator.incoming.commit(try context.parameters.require("id"), by: context.caller?.peerName))
    }
    router.get("/v1/peer/migrations/:id") { _, context in
        try JSONAPI.response(try await coordinator.incoming.status(try context.parameters.require("id"), by: context.caller?.peerName))
    }
    router.delete("/v1/peer/migrations/:id") { _, context in
        try await coordinator.incoming.abort(try context.parameters.require("id"), by: context.caller?.peerName)
        return Response(status: .noContent)
    }
    return router
}
