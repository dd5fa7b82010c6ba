import Foundation
import NIOCore
import UMSModel
import UMSOS

extension DockerAPI {
    /// `GET /volumes/{name}` (Docker and Podman's compatible API).
    public struct Volume: Codable, Sendable, Equatable {
        public var name: String
        public var mountpoint: String
        enum CodingKeys: String, CodingKey { case name = "Name", mountpoint = "Mountpoint" }
    }

    /// `POST /volumes/create`.
    public struct VolumeCreate: Codable, Sendable, Equatable {
        public var name: String
        enum CodingKeys: String, CodingKey { case name = "Name" }
    }
}

/// Named volumes: their data lives in a directory of the engine's own on this host, which UMS
/// archives and fills as it does a container's rootfs changes.
extension EngineOrchestrator: VolumeCarrying {
    /// Neither engine's checkpoint is relied on for volumes: Docker's leaves them out, and
    /// Podman's import would mount them at the source's host path; UMS sends them itself (and
    /// Podman's export leaves them out, `ignoreVolumes`).
    public nonisolated var checkpointCarriesVolumes: Bool { false }

    public func volumeExists(_ name: String) async -> Bool {
        (try? await mountpoint(name)) != nil
    }

    /// Where the engine keeps the volume's data, checked to be an absolute path of an existing
    /// directory (it comes from the engine, and UMS reads and writes there).
    func mountpoint(_ name: String) async throws -> String {
        try VolumeName.validate(name)
        let response = try await api.request(.GET, "/volumes/\(name)", operation: "inspect volume \(name)")
        let volume = try response.decode(DockerAPI.Volume.self, operation: "inspect volume \(name)")
        guard volume.mountpoint.hasPrefix("/"), !volume.mountpoint.split(separator: "/").contains(".."), FileSystem.isDirectory(volume.mountpoint) else {
            throw UMSError(.internalError, "failed to use volume \(name): the engine names '\(String(volume.mountpoint.prefix(80)))' as its data directory")
        }
        return volume.mountpoint
    }

    public func exportVolume(_ name: String, snapshot: String?, consume: @Sendable (ByteBuffer) async throws -> Void) async throws -> StreamSummary {
        try await Archive.create(directory: try await mountpoint(name), snapshot: snapshot, consume: consume)
    }

    public func volumeBytes(_ name: String) async throws -> Int64 {
        FileSystem.treeBytes(try await mountpoint(name))
    }

    public func importVolume<Chunks: AsyncSequence & Sendable>(_ name: String, _ chunks: Chunks) async throws -> StreamSummary
        where Chunks.Element == ByteBuffer
    {
        try await ensureVolume(name)
        let directory = try await mountpoint(name)
        let summary = try await Archive.extract(chunks, into: directory, untrusted: true, incremental: true)
        try TreeCheck.verify(directory)
        return summary
    }

    /// Creates the volume, empty, unless the engine has it.
    func ensureVolume(_ name: String) async throws {
        if await volumeExists(name) { return }
        try await api.request(.POST, "/volumes/create", json: DockerAPI.VolumeCreate(name: name), operation: "create volume \(name)")
    }

    public func removeVolume(_ name: String) async {
        guard (try? VolumeName.validate(name)) != nil else { return }
        _ = try? await api.request(.DELETE, "/volumes/\(name)", operation: "remove volume \(name)")
    }
}
