import Foundation
import Metrics
import UMSModel

/// What happened to established connections (issue 16), exported at `/metrics`:
/// `ums_connections_carried_total{service}` (restored at the destination with their state),
/// `ums_connections_closed_total{service,when}` (`migration`: cut by a move that could not carry
/// them; `linger`: still open through the tunnel when the source's linger ended). The Frontman's
/// `ums_frontman_held_total` counts what was held during the freeze.
enum ConnectionMetrics {
    static func carried(_ service: String) -> Counter {
        Counter(label: "ums_connections_carried_total", dimensions: [("service", service)])
    }

    static func closed(_ service: String, when: String) -> Counter {
        Counter(label: "ums_connections_closed_total", dimensions: [("service", service), ("when", when)])
    }

    /// Established TCP connections to or from `address` in this system's connection tracking
    /// (`/proc/net/nf_conntrack`, bounded read); nil when the kernel does not show it.
    static func established(to address: String, limit: Int = 64 << 20) -> Int? {
        guard IPv4.value(address) != nil, let handle = FileHandle(forReadingAtPath: "/proc/net/nf_conntrack") else { return nil }
        defer { try? handle.close() }
        guard let data = try? handle.read(upToCount: limit) else { return nil }
        let needles = ["src=\(address) ", "dst=\(address) "]
        return String(decoding: data, as: UTF8.self).split(separator: "\n").filter { line in
            line.contains(" tcp ") && line.contains(" ESTABLISHED ") && needles.contains { line.contains($0) }
        }.count
    }
}
