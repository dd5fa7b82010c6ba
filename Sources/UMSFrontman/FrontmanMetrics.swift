import Metrics

/// The Frontman's metrics (swift-metrics; umsd exports them at `/metrics` in Prometheus format),
/// one set per service.
public struct FrontmanMetrics: Sendable {
    /// Requests and connections that had to wait because the service was frozen.
    let held: Counter
    /// How long each waited (a histogram).
    let holdTime: Metrics.Timer
    /// Requests and connections passed to the service or its new location.
    let forwarded: Counter
    /// Refused beyond the hold's bounds (503 / closed) or because the Frontman went away.
    let rejected: Counter
    /// Idempotent requests sent again after the migration cut their connection.
    let retried: Counter
    /// Answered with a redirect to the new location.
    let redirected: Counter
    /// Cut by the migration and not retried (not idempotent): answered 502.
    let failedInFlight: Counter

    public init(service: String) {
        let dimensions = [("service", service)]
        held = Counter(label: "ums_frontman_held_total", dimensions: dimensions)
        holdTime = Metrics.Timer(label: "ums_frontman_hold_seconds", dimensions: dimensions, preferredDisplayUnit: .seconds)
        forwarded = Counter(label: "ums_frontman_forwarded_total", dimensions: dimensions)
        rejected = Counter(label: "ums_frontman_rejected_total", dimensions: dimensions)
        retried = Counter(label: "ums_frontman_retried_total", dimensions: dimensions)
        redirected = Counter(label: "ums_frontman_redirected_total", dimensions: dimensions)
        failedInFlight = Counter(label: "ums_frontman_failed_in_flight_total", dimensions: dimensions)
    }
}

extension Metrics.Timer {
    func recordSeconds(_ seconds: Double) {
        recordNanoseconds(Int64(seconds * 1e9))
    }
}
