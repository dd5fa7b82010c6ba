import UMSModel
import UMSOS

/// UMS's own containers on containerd live on networks UMS makes, so a container-level outer
/// container's connections are carried as on runc (its bundles' `ConnectionCarrying`, issue 16).
/// containerd's own checkpoint — the containers `ctr run` made, orchestrator-level — does not
/// carry them: `carriedApproaches` says container-level only, and the decision closes the others.
extension ContainerdOrchestrator: ConnectionCarrying {
    public nonisolated var containerNetwork: String { bundles.containerNetwork }
    public nonisolated var carriedApproaches: Set<Approach> { bundles.carriedApproaches }

    public func ensure(_ tunnel: MigrationTunnel) async throws {
        try await bundles.ensure(tunnel)
    }

    public func createKeeping(_ specification: Specification, address: String, tunnel: MigrationTunnel, migration: String) async throws -> ContainerInfo {
        try await bundles.createKeeping(specification, address: address, tunnel: tunnel, migration: migration)
    }

    public func createAlsoKeeping(_ specification: Specification, address: String, tunnel: MigrationTunnel, migration: String) async throws -> ContainerInfo {
        try await bundles.createAlsoKeeping(specification, address: address, tunnel: tunnel, migration: migration)
    }

    public func deliver(_ name: String) async throws {
        try await bundles.deliver(name)
    }

    public func carriedAddress(_ name: String) async -> String? {
        await bundles.carriedAddress(name)
    }

    public func establishedConnections(_ name: String) async -> Int? {
        await bundles.establishedConnections(name)
    }

    public func carryConnections(_ name: String, _ carry: Bool) async throws {
        // Only containerd's own checkpoint would read it, and that carries none.
        guard carry else { return }
        throw UMSError(.unsupported, "failed to carry the connections of \(name): containerd's own checkpoint does not carry them")
    }

    public func sendAway(_ name: String, through tunnel: MigrationTunnel) async throws {
        try await bundles.sendAway(name, through: tunnel)
    }

    public func silence(_ name: String, allowing: [AllowedFlow]) async throws {
        try await bundles.silence(name, allowing: allowing)
    }

    public func routeAway(_ name: String, through tunnel: MigrationTunnel) async throws {
        try await bundles.routeAway(name, through: tunnel)
    }

    public func bringBack(_ name: String) async throws {
        try await bundles.bringBack(name)
    }

    public func deleteKeepingNetwork(_ name: String, migration: String) async throws -> KeptNetwork {
        try await bundles.deleteKeepingNetwork(name, migration: migration)
    }

    public func release(_ kept: KeptNetwork) async {
        await bundles.release(kept)
    }
}
