/// Where a fault can be plugged into a migration: a step of the source's driver (entered, before
/// it acts), or a step of the destination's incoming migration.
public enum FaultPoint: Hashable, Sendable, CustomStringConvertible {
    case source(MigrationStep)
    case destination(IncomingStep)

    /// `checkpointing`, `restoring`, … for the source's steps; `incoming.prepare`,
    /// `incoming.restore`, … for the destination's.
    public init(parsing text: String) throws(UMSError) {
        if text.hasPrefix("incoming."), let step = IncomingStep(rawValue: String(text.dropFirst("incoming.".count))) {
            self = .destination(step)
        } else if let step = MigrationStep(rawValue: text) {
            self = .source(step)
        } else {
            let names = MigrationStep.allCases.map(\.rawValue) + IncomingStep.allCases.map { "incoming.\($0.rawValue)" }
            throw UMSError(.invalidArgument, "invalid fault point '\(text)': expected one of \(names.joined(separator: ", "))")
        }
    }

    public var description: String {
        switch self {
        case .source(let step): step.rawValue
        case .destination(let step): "incoming.\(step.rawValue)"
        }
    }
}

/// What a plugged-in fault does at its point.
public enum FaultAction: Sendable, Hashable, CustomStringConvertible {
    /// The step throws, as if what it called had failed.
    case fail
    /// The destination's received checkpoint is damaged before its restore, so the real restore
    /// (CRIU's) fails the way a damaged transfer would make it fail.
    case corruptImages
    /// One byte of the checkpoint stream is flipped as it arrives at the destination (after the
    /// TLS connection, so only the stream's own end-to-end digest can notice).
    case corruptStream
    /// The step waits this long before it acts: the fault matrix's way to be at a step when it
    /// kills a Coordinator or cuts the link.
    case delay(Duration)

    public static let names = ["fail", "corrupt-images", "corrupt-stream", "delay:SECONDS"]

    public init(parsing text: String) throws(UMSError) {
        switch text {
        case "fail": self = .fail
        case "corrupt-images": self = .corruptImages
        case "corrupt-stream": self = .corruptStream
        default:
            if text.hasPrefix("delay:"), let seconds = Double(text.dropFirst("delay:".count)), seconds > 0, seconds <= 3600 {
                self = .delay(.milliseconds(Int64(seconds * 1000)))
            } else {
                throw UMSError(.invalidArgument, "invalid fault action '\(text)': expected one of \(Self.names.joined(separator: ", "))")
            }
        }
    }

    public var description: String {
        switch self {
        case .fail: "fail"
        case .corruptImages: "corrupt-images"
        case .corruptStream: "corrupt-stream"
        case .delay(let duration): "delay:\(duration.seconds)"
        }
    }
}

/// The fault seam: the migration driver and the approaches ask it at each step whether to fail
/// there. Production runs `NoFaults`; tests and `umsd --fault` plug in `ScheduledFaults`.
public protocol FaultInjector: Sendable {
    func fault(at point: FaultPoint) async -> FaultAction?
}

extension FaultInjector {
    /// Throws when a `fail` fault is plugged in at `point`.
    public func check(_ point: FaultPoint) async throws(UMSError) {
        switch await fault(at: point) {
        case .fail:
            throw UMSError(.internalError, "failed at \(point): fault injected")
        case .delay(let duration):
            try? await Task.sleep(for: duration)
        default:
            break
        }
    }

    /// Whether the checkpoint stream is to be damaged in transfer.
    public func corruptsStream() async -> Bool {
        await fault(at: .destination(.receive)) == .corruptStream
    }

    /// Whether the destination's checkpoint is to be damaged before its restore.
    public func corruptsImages() async -> Bool {
        await fault(at: .destination(.restore)) == .corruptImages
    }
}

/// The production seam: no faults.
public struct NoFaults: FaultInjector {
    public init() {}
    public func fault(at point: FaultPoint) async -> FaultAction? { nil }
}

/// Faults by point, fixed when the Coordinator starts (`umsd --fault POINT=ACTION`).
public struct ScheduledFaults: FaultInjector {
    public let faults: [FaultPoint: FaultAction]

    public init(_ faults: [FaultPoint: FaultAction]) {
        self.faults = faults
    }

    /// `POINT=ACTION` entries, e.g. `incoming.restore=corrupt-images`, `checkpointing=fail`.
    public init(parsing entries: [String]) throws(UMSError) {
        var faults: [FaultPoint: FaultAction] = [:]
        for entry in entries {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else {
                throw UMSError(.invalidArgument, "invalid fault '\(entry)': expected POINT=ACTION, ACTION one of \(FaultAction.names.joined(separator: ", "))")
            }
            let action = try FaultAction(parsing: parts[1])
            let point = try FaultPoint(parsing: parts[0])
            if action == .corruptImages && point != .destination(.restore) {
                throw UMSError(.invalidArgument, "invalid fault '\(entry)': corrupt-images applies only at incoming.restore")
            }
            if action == .corruptStream && point != .destination(.receive) {
                throw UMSError(.invalidArgument, "invalid fault '\(entry)': corrupt-stream applies only at incoming.receive")
            }
            faults[point] = action
        }
        self.faults = faults
    }

    public func fault(at point: FaultPoint) async -> FaultAction? { faults[point] }
}
