import ArgumentParser
import Foundation
import UMSAPI
import UMSModel

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a container on the system's orchestrator (runc, Podman, Docker, containerd, or a Docker Swarm service).",
        discussion: "Example: ums run counter --rootfs /var/lib/ums/rootfs/counter --publish 8080 -- /bin/counter --port 8080"
    )

    @OptionGroup var coordinator: CoordinatorOptions

    @Argument(help: "The container's name.")
    var name: String

    @Option(help: "A directory on the Coordinator's host holding the root filesystem.")
    var rootfs: String

    @Option(help: "Publish a port: PORT or HOSTPORT:CONTAINERPORT (repeatable).")
    var publish: [String] = []

    @Option(name: [.customShort("e"), .customLong("env")], help: "KEY=VALUE for the service's environment (repeatable).")
    var environment: [String] = []

    @Option(help: "Memory limit in MiB.")
    var memory: Int64?

    @Option(help: "KEY=VALUE label (repeatable).")
    var label: [String] = []

    @Option(help: "Where a cluster may place it: KEY==VALUE or KEY!=VALUE, e.g. node.hostname==tba-n2 (repeatable; a swarm's constraints, ignored by a single host).")
    var placement: [String] = []

    @Flag(help: "Container-level: run the unchanged root filesystem nested in the system's outer host image, so that it can migrate without an agent in its image.")
    var nested = false

    @Flag(help: "Print the container as JSON.")
    var json = false

    @Argument(parsing: .postTerminator, help: "The command to run, after --.")
    var command: [String] = []

    func validate() throws {
        guard !command.isEmpty else { throw ValidationError("give the command to run after --, e.g. -- /bin/counter --port 8080") }
        for constraint in placement {
            do { try PlacementConstraint.validate(constraint) } catch { throw ValidationError(error.message) }
        }
    }

    func run() async throws {
        var labels: [String: String] = [:]
        for entry in label {
            let parts = entry.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { throw ValidationError("--label expects KEY=VALUE, got '\(entry)'") }
            labels[String(parts[0])] = String(parts[1])
        }
        let rootfsPath = rootfs.hasPrefix("/") ? rootfs : FileManager.default.currentDirectoryPath + "/" + rootfs
        let request = RunRequest(
            name: name, rootfs: rootfsPath, command: command, environment: environment, publish: publish,
            memoryBytes: memory.map { $0 << 20 }, labels: labels.isEmpty ? nil : labels, nested: nested ? true : nil,
            placement: placement.isEmpty ? nil : placement
        )
        do {
            let view = try await coordinator.client().run(request)
            if json {
                try Output.json(view)
            } else {
                let endpoints = view.container.endpoints.joined(separator: ", ")
                print("\(view.container.name) \(view.container.state.rawValue)\(endpoints.isEmpty ? "" : " at \(endpoints)")")
            }
        } catch {
            throw fail(error)
        }
    }
}

struct Ps: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the containers of a system (a Podman pod as one entry: POD OF names its containers), with the approaches that could migrate each."
    )

    @OptionGroup var coordinator: CoordinatorOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        do {
            let views = try await coordinator.client().containers()
            if json { return try Output.json(views) }
            // A cluster's containers also say which node runs them.
            let cluster = views.contains { $0.container.node != nil }
            Output.table(
                ["NAME", "STATE", "MADE BY", "POD OF"] + (cluster ? ["NODE"] : []) + ["PID", "ENDPOINTS", "APPROACHES", "MIGRATING"],
                views.map { view in
                    let container = view.container
                    return [
                        container.name, container.state.rawValue, container.specification.engine?.madeBy.rawValue ?? "ums",
                        container.specification.pod.map { $0.members.map(\.name).joined(separator: ",") } ?? "-",
                    ] + (cluster ? [container.node ?? "-"] : []) + [
                        container.pid.map(String.init) ?? "-",
                        container.endpoints.isEmpty ? "-" : container.endpoints.joined(separator: ","),
                        container.approaches.isEmpty ? "none" : container.approaches.map(\.rawValue).joined(separator: ","),
                        container.migratingIn ?? "-",
                    ]
                }
            )
        } catch {
            throw fail(error)
        }
    }
}

struct Rm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop and remove a container.")

    @OptionGroup var coordinator: CoordinatorOptions

    @Argument(help: "The container's name.")
    var name: String

    func run() async throws {
        do {
            try await coordinator.client().remove(name)
            print("\(name) removed")
        } catch {
            throw fail(error)
        }
    }
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show what a system is and can do.")

    @OptionGroup var coordinator: CoordinatorOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        do {
            let info = try await coordinator.client().system()
            if json { return try Output.json(info) }
            print("""
                system:        \(info.name) (\(info.url))
                orchestrator:  \(info.profile.orchestrator) \(info.profile.runtimeVersion)
                criu:          \(info.profile.criuVersion ?? "none")
                approaches:    \(info.profile.approaches.map(\.rawValue).joined(separator: ", "))
                """)
        } catch {
            throw fail(error)
        }
    }
}
