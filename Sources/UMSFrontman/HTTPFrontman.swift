import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization
import NIOHTTP1
import NIOPosix

/// The HTTP side of a Frontman: a Hummingbird server that passes each request to the gate's
/// target with AsyncHTTPClient. While the gate holds, requests wait (bounded); a request whose
/// connection the migration cut is sent again when that is safe (idempotent, or marked
/// `X-UMS-Retryable: true`) and answered `502` with the reason otherwise — never dropped silently.
struct HTTPFrontmanResponder: HTTPResponder {
    typealias Context = BasicRequestContext

    static let retryableHeader = HTTPField.Name("X-UMS-Retryable")!
    static let frontmanHeader = HTTPField.Name("X-UMS-Frontman")!
    /// How long (milliseconds) a request already waited at the Frontman that sends it on to
    /// another system's: the destination's paced release lets the longest-waiting go first.
    /// Not forwarded to a service. From any client it can only move a request forward in a
    /// release's queue, by at most the hold's bound.
    static let waitedHeader = HTTPField.Name("X-UMS-Waited-Ms")!
    /// Hop-by-hop headers (RFC 9110 §7.6.1) are the proxy's own business, not forwarded.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade",
    ]

    let service: String
    let publishedPort: Int
    let gate: FrontmanGate
    let http: HTTPClient
    let maxBodyBytes: Int
    let maxAttempts = 4
    let requestTimeout: TimeAmount = .seconds(120)
    let logger: Logger

    func respond(to request: Request, context: Context) async throws -> Response {
        // A body is buffered (it may be sent twice), so its room is reserved before it is read:
        // what it declares, or the per-request bound when it is chunked.
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        if let declared, declared > maxBodyBytes {
            return Self.plain(.contentTooLarge, "request body larger than the Frontman forwards (\(maxBodyBytes) bytes)\n")
        }
        let reserved = declared ?? (request.headers[.transferEncoding] == nil ? 0 : maxBodyBytes)
        let arrived = ContinuousClock.now - waited(request.headers)
        // Without a body to read first, the place and the route are had in one hop to the gate.
        var admitted: FrontmanAdmission?
        do {
            if reserved == 0 {
                admitted = try await gate.enterAndAdmit(waited: .now - arrived)
            } else {
                try await gate.enter(reserving: reserved)
            }
        } catch let refusal as FrontmanRefusal {
            return Self.refused(refusal, service: service, holdSeconds: gate.limits.seconds)
        } catch {
            return Self.plain(.serviceUnavailable, "\(service): \(error); retry later\n")
        }
        let (response, event) = await respondEntered(to: request, reserved: reserved, arrived: arrived, admitted: admitted)
        await gate.leave(releasing: reserved, counting: event)
        return response
    }

    /// What an earlier Frontman says the request waited there: a decimal number of
    /// milliseconds, bounded by this Frontman's hold; anything else counts as nothing.
    func waited(_ headers: HTTPFields) -> Duration {
        let values = headers[values: Self.waitedHeader]
        guard values.count == 1, let text = values.first, text.utf8.count <= 9, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
              let milliseconds = Int64(text)
        else { return .zero }
        return .milliseconds(min(milliseconds, Int64(gate.limits.seconds * 1000)))
    }

    /// The request, once it has its place: its answer, and what to count it as when it leaves.
    /// `admitted`: the first attempt's admission, when it came with the place.
    func respondEntered(
        to request: Request, reserved: Int, arrived: ContinuousClock.Instant, admitted: FrontmanAdmission?
    ) async -> (Response, FrontmanEvent?) {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: reserved)
        } catch {
            if let admitted { await gate.settle(admitted) }
            return (Self.plain(.contentTooLarge, "request body larger than it declared or than the Frontman forwards (\(maxBodyBytes) bytes)\n"), nil)
        }
        let retryable = [.get, .head, .options, .trace].contains(request.method)
            || request.headers[Self.retryableHeader]?.lowercased() == "true"
        var attempt = 0
        while true {
            attempt += 1
            let admission: FrontmanAdmission
            if attempt == 1, let admitted {
                admission = admitted
            } else {
                do {
                    admission = try await gate.admit(bytes: body.readableBytes, waited: .now - arrived)
                } catch let refusal as FrontmanRefusal {
                    return (Self.refused(refusal, service: service, holdSeconds: gate.limits.seconds), nil)
                } catch {
                    return (Self.plain(.serviceUnavailable, "\(service): \(error); retry later\n"), nil)
                }
            }
            let route = admission.route
            guard let endpoint = route.target.endpoint(forPublished: publishedPort) else {
                await gate.settle(admission)
                return (Self.plain(.badGateway, "\(service): port \(publishedPort) is not published at \(route.target.host)\n"), nil)
            }
            if case .redirect = route {
                await gate.settle(admission)
                let location = "http://\(endpoint.host):\(endpoint.port)\(request.uri.description)"
                return (Response(status: .temporaryRedirect, headers: [.location: location, Self.frontmanHeader: "redirected"]), .redirected)
            }
            // Settles the admission as the answer's head comes back or the attempt fails: a held
            // request may go next.
            let outcome = await forward(
                request, body: body, to: endpoint, admission: admission, reuse: route.target.reuseConnections, retryable: retryable, arrived: arrived
            )
            switch outcome {
            case .answered(let response) where response.status == .serviceUnavailable && response.headers[Self.frontmanHeader] == "closed":
                // Another Frontman (the destination's, after a rollback) refused it before it
                // reached any service: send it again to wherever this gate points now.
                guard attempt < maxAttempts else { return (response, nil) }
                await gate.count(.retried)
                try? await Task.sleep(for: .milliseconds(20 * attempt))
            case .answered(let response):
                return (response, .forwarded)
            case .notSent(let error):
                // Nothing reached the service (connection refused or timed out): safe to send
                // again whatever the method, a little later.
                guard attempt < maxAttempts else {
                    return (Self.plain(.badGateway, "\(service) is not reachable at \(endpoint.host):\(endpoint.port): \(error)\n"), nil)
                }
                await gate.count(.retried)
                try? await Task.sleep(for: .milliseconds(50 * attempt))
            case .cut(let error, let byMigration):
                guard retryable, attempt < maxAttempts else {
                    let why = byMigration ? "its connection was cut when \(service) migrated" : "its connection to \(service) failed (\(error))"
                    var response = Self.plain(.badGateway, "\(request.method.rawValue) \(request.uri.path) was in flight and \(why); it was not sent again because it is not idempotent (mark it X-UMS-Retryable: true if it may be)\n")
                    response.headers[Self.frontmanHeader] = "in-flight-not-retried"
                    return (response, .failedInFlight)
                }
                await gate.count(.retried)
            }
        }
    }

    enum Outcome {
        case answered(Response)
        case notSent(any Error)
        case cut(any Error, byMigration: Bool)
    }

    /// One attempt: the response head comes back, or it says why not (the admission settled
    /// either way). The body streams.
    func forward(
        _ request: Request, body: ByteBuffer, to endpoint: (host: String, port: Int), admission: FrontmanAdmission, reuse: Bool, retryable: Bool,
        arrived: ContinuousClock.Instant
    ) async -> Outcome {
        var outgoing = HTTPClientRequest(url: "http://\(endpoint.host):\(endpoint.port)\(request.uri.description)")
        outgoing.method = HTTPMethod(rawValue: request.method.rawValue)
        for field in request.headers where !Self.hopByHop.contains(field.name.canonicalName) && field.name != .contentLength && field.name != Self.waitedHeader {
            outgoing.headers.add(name: field.name.rawName, value: field.value)
        }
        outgoing.headers.add(name: "Via", value: "1.1 ums-frontman")
        if !reuse {
            // Another system's Frontman (the service's own connections are kept): it orders
            // its release by how long each request has waited in all.
            outgoing.headers.add(name: "Connection", value: "close")
            let waited = ContinuousClock.now - arrived
            outgoing.headers.add(name: Self.waitedHeader.rawName, value: String(waited.components.seconds * 1000 + waited.components.attoseconds / 1_000_000_000_000_000))
        }
        if body.readableBytes > 0 || [.post, .put, .patch].contains(request.method) {
            outgoing.body = .bytes(body)
        }
        let cut = CutFlag()
        let http = self.http
        let timeout = requestTimeout
        let attempt = Task { try await http.execute(outgoing, timeout: timeout) }
        let key = await gate.started(epoch: admission.route.epoch, retryable: retryable) { undelivered in
            cut.set(undelivered: undelivered)
            attempt.cancel()
        }
        let upstream: HTTPClientResponse
        do {
            upstream = try await withTaskCancellationHandler {
                try await attempt.value
            } onCancel: {
                attempt.cancel()
            }
            await gate.finished(key, settling: admission)
        } catch {
            await gate.finished(key, settling: admission)
            switch cut.state {
            case .undelivered: return .notSent(error)
            case .cut: return .cut(error, byMigration: true)
            case .none: break
            }
            return Self.isConnectFailure(error) ? .notSent(error) : .cut(error, byMigration: false)
        }
        var headers = HTTPFields()
        for (name, value) in upstream.headers where !Self.hopByHop.contains(name.lowercased()) {
            if let fieldName = HTTPField.Name(name) { headers.append(HTTPField(name: fieldName, value: value)) }
        }
        let status = HTTPResponse.Status(code: Int(upstream.status.code), reasonPhrase: upstream.status.reasonPhrase)
        return .answered(Response(status: status, headers: headers, body: ResponseBody(asyncSequence: upstream.body)))
    }

    static func isConnectFailure(_ error: any Error) -> Bool {
        if error is NIOConnectionError { return true }
        if let error = error as? HTTPClientError, error == .connectTimeout { return true }
        if let error = error as? IOError, [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH].contains(error.errnoCode) { return true }
        if let error = error as? ChannelError, case .connectTimeout = error { return true }
        return false
    }

    static func refused(_ refusal: FrontmanRefusal, service: String, holdSeconds: Double) -> Response {
        let why = switch refusal {
        case .overloaded: "\(service) is migrating and the Frontman holds as much as it may"
        case .holdTimedOut: "\(service) is migrating and did not come back within \(holdSeconds) s"
        case .closed: "\(service) is no longer served here"
        case .busy: "the Frontman of \(service) serves as many requests as it may"
        }
        var response = plain(.serviceUnavailable, "\(why); retry later\n")
        response.headers[.retryAfter] = "1"
        response.headers[frontmanHeader] = refusal == .closed ? "closed" : "hold-full"
        return response
    }

    static func plain(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Set once the gate cut a request, so its error reads as the migration's doing — or, when the
/// gate knows it never reached a service, as not sent at all.
final class CutFlag: Sendable {
    enum State: UInt8 { case none, cut, undelivered }
    private let value = Atomic<UInt8>(State.none.rawValue)

    func set(undelivered: Bool = false) {
        value.store((undelivered ? State.undelivered : .cut).rawValue, ordering: .releasing)
    }

    var state: State {
        State(rawValue: value.load(ordering: .acquiring)) ?? .none
    }
}
