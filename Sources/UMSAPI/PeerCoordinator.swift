import NIOCore
import UMSModel

/// Hands a stream's chunks, as they are made, to the upload that sends them.
public typealias ChunkProducer = @Sendable (@Sendable (ByteBuffer) async throws -> Void) async throws -> Void

/// The destination Coordinator as the source's migration driver speaks to it (the peer routes).
/// `CoordinatorClient` is the real one; tests put a fake behind it to drive every branch of a
/// migration without a second system.
public protocol PeerCoordinator: Sendable {
    /// The destination's URL, for messages.
    var baseURL: String { get }
    func system() async throws -> SystemInfo
    func hasImage(_ image: ImageReference) async throws -> Bool
    /// Streams a root filesystem image the destination lacks.
    func sendImage(_ image: ImageReference, produce: @escaping ChunkProducer) async throws -> UploadResponse
    func prepare(_ body: PrepareRequest) async throws -> PrepareResponse
    /// Streams one part of the checkpoint of migration `id`.
    func sendFiles(_ id: String, part: FilePart, produce: @escaping ChunkProducer) async throws -> UploadResponse
    /// Streams the contents of one of the container's named volumes.
    func sendVolume(_ id: String, volume: String, produce: @escaping ChunkProducer) async throws -> UploadResponse
    /// Streams the contents of the container's `index`-th bind-mounted host directory.
    func sendBind(_ id: String, index: Int, produce: @escaping ChunkProducer) async throws -> UploadResponse
    func restore(_ id: String, _ body: PeerRestoreRequest) async throws -> RestoreResponse
    func commit(_ id: String) async throws -> CommitResponse
    func abort(_ id: String) async throws
    /// Where the destination's journal says migration `id` stands (nil: it has no record of it).
    func status(_ id: String) async throws -> IncomingStatus?
}

extension CoordinatorClient: PeerCoordinator {
    public func sendImage(_ image: ImageReference, produce: @escaping ChunkProducer) async throws -> UploadResponse {
        try await upload(Routes.peerImage(image), produce: produce)
    }

    public func sendBind(_ id: String, index: Int, produce: @escaping ChunkProducer) async throws -> UploadResponse {
        try await upload(Routes.peerBind(id, index), produce: produce)
    }

    public func sendVolume(_ id: String, volume: String, produce: @escaping ChunkProducer) async throws -> UploadResponse {
        try await upload(Routes.peerVolume(id, volume), produce: produce)
    }

    public func sendFiles(_ id: String, part: FilePart, produce: @escaping ChunkProducer) async throws -> UploadResponse {
        try await upload(Routes.peerFiles(id, part: part.rawValue), produce: produce)
    }
}
