import UMSAPI
import UMSModel

/// The destination as a running migration speaks to it: every call is watched by a heartbeat
/// (`GET /v1/system` every `interval`), and fails once the destination has not answered for
/// `silence` — a cut link otherwise leaves a call waiting for its whole deadline (minutes for a
/// restore). A short cut the connection survives (TCP retransmits) does not end the call.
struct WatchedPeer: PeerCoordinator {
    let peer: any PeerCoordinator
    var silence: Duration = .seconds(20)
    var interval: Duration = .seconds(2)

    var baseURL: String { peer.baseURL }

    func watched<Value: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let (peer, silence, interval) = (peer, silence, interval)
        return try await withThrowingTaskGroup(of: Value?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                var lastHeard = ContinuousClock.now
                while true {
                    try await Task.sleep(for: interval)
                    if (try? await peer.system()) != nil {
                        lastHeard = .now
                    } else if ContinuousClock.now - lastHeard >= silence {
                        throw UMSError(.unavailable, "failed to \(what): destination \(peer.baseURL) did not answer for \(Int(silence.seconds)) s")
                    }
                }
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let value = next { return value }
            }
            throw UMSError(.internalError, "failed to \(what): no answer")
        }
    }

    func system() async throws -> SystemInfo { try await peer.system() }

    func hasImage(_ image: ImageReference) async throws -> Bool {
        try await watched("ask for image") { try await peer.hasImage(image) }
    }

    func sendImage(_ image: ImageReference, produce: @escaping ChunkProducer) async throws -> UploadResponse {
        try await watched("send image") { try await peer.sendImage(image, produce: produce) }
    }

    func prepare(_ body: PrepareRequest) async throws -> PrepareResponse {
        try await watched("prepare") { try await peer.prepare(body) }
    }

    func sendFiles(_ id: String, part: FilePart, produce: @escaping ChunkProducer) async throws -> UploadResponse {
        try await watched("send \(part.rawValue)") { try await peer.sendFiles(id, part: part, produce: produce) }
    }

    func sendVolume(_ id: String, volume: String, produce: @escaping ChunkProducer) async throws -> UploadResponse {
        try await watched("send volume \(volume)") { try await peer.sendVolume(id, volume: volume, produce: produce) }
    }

    func sendBind(_ id: String, index: Int, produce: @escaping ChunkProducer) async throws -> UploadResponse {
        try await watched("send host directory \(index)") { try await peer.sendBind(id, index: index, produce: produce) }
    }

    func restore(_ id: String, _ body: PeerRestoreRequest) async throws -> RestoreResponse {
        try await watched("restore") { try await peer.restore(id, body) }
    }

    func commit(_ id: String) async throws -> CommitResponse {
        try await watched("commit") { try await peer.commit(id) }
    }

    func abort(_ id: String) async throws {
        try await watched("abort") { try await peer.abort(id) }
    }

    func status(_ id: String) async throws -> IncomingStatus? {
        try await peer.status(id)
    }
}
