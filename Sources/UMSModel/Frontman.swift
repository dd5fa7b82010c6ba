/// What a published port speaks, so the Frontman can be as helpful as the protocol allows.
public enum FrontmanProtocol: String, Sendable, Codable, CaseIterable {
    /// Whole requests: held, retried when safe, 503 beyond bounds, redirect on request.
    case http
    /// A byte stream: held connections are spliced to wherever the service is.
    case tcp
}

/// What a Frontman has done, for `GET /v1/frontmen` and the tests; the same events go to the
/// metrics system.
public struct FrontmanStats: Sendable, Equatable, Codable {
    public var forwarded = 0
    public var held = 0
    public var released = 0
    public var rejected = 0
    public var retried = 0
    public var redirected = 0
    public var failedInFlight = 0
    public var holdingNow = 0
    public var longestHoldSeconds = 0.0

    public init() {}
}

/// What a Frontman is for on its system.
public enum FrontmanRole: String, Codable, Sendable, CaseIterable {
    /// In front of a service that runs here.
    case serving
    /// Its service is migrating away (holding from the freeze on).
    case migrating
    /// Its service runs elsewhere now; until the endpoint record settles.
    case forwarding
    /// Holding for a service that is arriving here.
    case incoming
}

/// What a Frontman does with what comes now.
public enum FrontmanState: String, Codable, Sendable, CaseIterable {
    case forwarding, redirecting, holding, closed
}
