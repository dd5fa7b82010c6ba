import UMSModel

/// How a migration's checkpoint images will cross (issue 17), and why. Pure, so every rule is
/// unit-tested; the driver follows it and `ums migrate --dry-run` shows it.
public enum CompressionDecision {
    public struct Outcome: Sendable, Equatable {
        /// The policy the stream uses; nil: the plain stream (version 1), every byte as read.
        public var compression: ImageCompression?
        public var reason: String
    }

    /// `requested` (default auto) when the destination reads the stream's version 2; the plain
    /// stream otherwise. `versions`: what the destination's `GET /v1/system` lists.
    public static func decide(_ requested: ImageCompression, destination: String, reads versions: [Int]?, approach: Approach?) -> Outcome {
        guard versions?.contains(2) == true else {
            return Outcome(compression: nil, reason: "plain — \(destination) reads only the image stream's version 1, so every byte goes as read")
        }
        let what = switch requested {
        case .auto: "zstd where a run of pages shrinks by a tenth (judged on a 64 KiB sample)"
        case .zstd: "every run tried with zstd, kept where smaller"
        case .lz4: "every run tried with lz4, kept where smaller"
        case .off: "the rest as read"
        }
        let agents = approach == .service || approach == .container
            ? " (the agents' own stream; an agent of an image made before agent version 2 sends it plain)" : ""
        return Outcome(compression: requested, reason: "\(requested.rawValue) — zero pages never sent, \(what)\(agents)")
    }
}
