import Foundation
import UMSAPI
import UMSDecision
import UMSMigration
import UMSImage
import UMSModel
import UMSOrchestrator
import UMSOS

/// The container part of a Coordinator: the system's containers as its users see them (with the
/// approaches that could move each), and the control operations on them. Migrations hold a
/// container's control lock; these operations are refused while one does.
public struct ContainerService: Sendable {
    let system: SystemContext
    let frontmen: Frontmen?
    let endpoints: Endpoints
    /// The outer image nested services run in (container-level), if this system has one.
    let hostImage: String?
    /// Host commands (composing nested images).
    let runner: any CommandRunner

    func view(_ info: ContainerInfo, profile: SystemProfile) -> ContainerView {
        let verdicts = ApproachDecision.evaluate(info.specification, source: profile, destination: nil)
        var container = info
        container.approaches = verdicts.filter(\.feasible).map(\.approach)
        container.endpoints = ServiceEndpoints.of(info)
        return ContainerView(container: container, approaches: verdicts)
    }

    public func list() async throws -> [ContainerView] {
        let profile = await system.profile()
        return try await system.orchestrator.list().map { view($0, profile: profile) }
    }

    public func get(_ name: String) async throws -> ContainerView {
        view(try await system.orchestrator.inspect(name), profile: await system.profile())
    }

    public func run(_ request: RunRequest) async throws -> ContainerView {
        try ContainerName.validate(request.name)
        guard !request.command.isEmpty else {
            throw UMSError(.invalidArgument, "failed to run '\(request.name)': no command given (put it after --)")
        }
        let ports = try (request.publish ?? []).map { text throws(UMSError) in try PortMapping(parsing: text) }
        if (try? await system.orchestrator.inspect(request.name)) != nil {
            throw UMSError(.exists, "failed to run '\(request.name)': a container with that name exists on system \(system.name)")
        }
        var rootfs = request.rootfs
        var nested: NestedImage.Manifest?
        if request.nested == true {
            // Container-level: the unchanged image goes nested into the outer host image.
            guard let hostImage else {
                throw UMSError(.unsupported, "failed to run '\(request.name)' nested: system \(system.name) has no host image (umsd --host-image; scripts/build-host-image builds one)")
            }
            rootfs = "\(system.stateDirectory)/compose/\(request.name)-\(UUID().uuidString.prefix(8))"
            nested = try await NestedImage.compose(hostImage: hostImage, service: request.rootfs, into: rootfs, runner: runner)
        }
        defer { if nested != nil { FileSystem.remove(rootfs) } }
        let image = try await system.orchestrator.importDirectory(rootfs)
        var specification = Specification(
            name: request.name, image: image, command: request.command, environment: request.environment ?? [],
            workingDirectory: request.workingDirectory ?? "/", ports: ports,
            limits: ResourceLimits(memoryBytes: request.memoryBytes), labels: request.labels ?? [:]
        )
        specification.placement = request.placement
        // A migratable image (one with the UMS agent) runs the command behind its agent, with
        // the privileges the agent needs: that is what makes the service-level approach feasible.
        if let nested {
            specification = NestedImage.specification(specification, manifest: nested, token: AgentApproach.secret())
        } else if let manifest = MigratableImage.manifest(rootfs: request.rootfs) {
            specification = MigratableImage.specification(specification, manifest: manifest, token: AgentApproach.secret())
        }
        let info = try await system.orchestrator.create(specification, start: true, migration: nil)
        await frontmen?.serve(info)
        await endpoints.record(info, at: system.advertiseHost)
        return view(info, profile: await system.profile())
    }

    public func remove(_ name: String) async throws {
        try await system.orchestrator.delete(name, migration: nil)
        await frontmen?.remove(name)
        await endpoints.remove(name)
    }

    public func restart(_ name: String) async throws -> ContainerView {
        try await system.orchestrator.restart(name, migration: nil)
        let info = try await system.orchestrator.inspect(name)
        await frontmen?.serve(info)
        return view(info, profile: await system.profile())
    }
}
