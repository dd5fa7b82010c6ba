import ArgumentParser
import UMSAPI

struct Endpoints: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the endpoint record: where each service this system knows of is reached.",
        discussion: "The same record is in hosts format in the system's endpoints file (umsd --endpoints-file)."
    )

    @OptionGroup var coordinator: CoordinatorOptions

    @Argument(help: "A service name.")
    var service: String?

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        do {
            let client = try coordinator.client()
            let entries: [EndpointEntry]
            if let service { entries = [try await client.endpoint(service)] } else { entries = try await client.endpoints() }
            if json {
                if service == nil { try Output.json(entries) } else { try Output.json(entries[0]) }
                return
            }
            Output.table(["SERVICE", "ADDRESS", "SYSTEM", "ENDPOINTS", "UPDATED"], entries.map {
                [$0.service, $0.address, $0.system, $0.endpoints.joined(separator: ","), "\($0.updatedAt)"]
            })
        } catch {
            throw fail(error)
        }
    }
}

struct Frontmen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show this system's Frontmen: what each does for its service, and what it held, forwarded and refused."
    )

    @OptionGroup var coordinator: CoordinatorOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        do {
            let views = try await coordinator.client().frontmen()
            if json { return try Output.json(views) }
            Output.table(["SERVICE", "ROLE", "MODE", "TARGET", "PORTS", "FORWARDED", "HELD", "REJECTED", "RETRIED", "LONGEST HOLD"], views.map {
                [$0.service, $0.role.rawValue, $0.mode.rawValue, $0.target ?? "-", $0.ports.map { "\($0.published)/\($0.kind.rawValue)" }.joined(separator: ","),
                 "\($0.counts.forwarded)", "\($0.counts.held)", "\($0.counts.rejected)", "\($0.counts.retried)",
                 Output.seconds($0.counts.longestHoldSeconds)]
            })
        } catch {
            throw fail(error)
        }
    }
}
