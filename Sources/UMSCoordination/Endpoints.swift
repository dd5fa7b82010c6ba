import Foundation
import UMSAPI
import UMSMigration
import UMSImage
import UMSModel

/// The endpoint part of a Coordinator: where each service this system knows of is reached.
public struct Endpoints: Sendable {
    let system: String
    let record: EndpointRecord

    public func all() -> [EndpointEntry] {
        record.entries()
    }

    public func entry(_ service: String) throws -> EndpointEntry {
        guard let entry = record.entry(service) else {
            throw UMSError(.notFound, "no endpoint recorded for '\(service)' on system \(system)")
        }
        return entry
    }

    /// The record says `info`'s service runs here, at `host`.
    func record(_ info: ContainerInfo, at host: String) async {
        let endpoints = ServiceEndpoints.of(info)
        guard !endpoints.isEmpty else { return }
        await record.set(EndpointEntry(service: info.name, address: host, endpoints: endpoints, system: system, updatedAt: Date()))
    }

    /// The record says the service moved to `system` at `host`: what failed (DNS, the hook), and
    /// the TTL of the DNS record that now has the new place, if DNS was updated.
    func moved(_ service: String, to host: String, endpoints: [String], system: String) async -> EndpointRecord.Outcome {
        await record.update(EndpointEntry(service: service, address: host, endpoints: endpoints, system: system, updatedAt: Date()))
    }

    func remove(_ service: String) async {
        await record.remove(service)
    }
}
