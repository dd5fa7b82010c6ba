import Foundation
import Logging
import UMSAPI
import UMSDNS
import UMSModel
import UMSOS

/// Where each service this system knows of is reached (its own, and those that migrated away
/// from it): kept as JSON under the state directory, written in hosts format to `hostsFile` for a
/// DNS server or load balancer to follow, and announced to `hook` (run with the entry in its
/// environment) after every change, and — where the operator names an authoritative DNS server —
/// published there as `SERVICE.ZONE` (RFC 2136, signed with TSIG).
struct EndpointRecord: Sendable {
    let store: JSONStore<EndpointEntry>
    let hostsFile: String
    let hook: String?
    let dns: DNSPublisher?
    let system: String
    let runner: any CommandRunner
    let logger: Logger
    static let hookTimeout: Duration = .seconds(10)

    init(
        stateDirectory: String, hostsFile: String?, hook: String?, dns: DNSPublisher? = nil, system: String, runner: any CommandRunner, logger: Logger
    ) throws {
        self.store = try JSONStore(directory: "\(stateDirectory)/endpoints")
        self.hostsFile = hostsFile ?? "\(stateDirectory)/endpoints.hosts"
        self.hook = hook
        self.dns = dns
        self.system = system
        self.runner = runner
        self.logger = logger
    }

    func entries() -> [EndpointEntry] {
        store.loadAll().sorted { $0.service < $1.service }
    }

    func entry(_ service: String) -> EndpointEntry? {
        store.load(key: service)
    }

    /// What one change of the record did: what failed (DNS, the hook), and whether DNS now has
    /// the new place (with the TTL its records carry).
    struct Outcome: Sendable {
        var problem: String?
        var dnsTTL: Duration?
    }

    /// Records where `service` is now, rewrites the hosts file, updates DNS and runs the hook.
    /// Returns what failed of DNS and the hook, if anything (the record itself is updated either
    /// way).
    @discardableResult
    func set(_ entry: EndpointEntry) async -> String? {
        await update(entry).problem
    }

    func update(_ entry: EndpointEntry) async -> Outcome {
        do {
            try HostAddress.validate(entry.address)
            try ContainerName.validate(entry.service)
        } catch {
            logger.error("refused an endpoint entry", metadata: ["service": "\(entry.service.prefix(64))", "error": "\(error)"])
            return Outcome(problem: "refused the endpoint entry: \(error)")
        }
        if let old = store.load(key: entry.service), old.address == entry.address, old.endpoints == entry.endpoints {
            return Outcome()
        }
        do {
            try store.save(entry, key: entry.service)
            try writeHosts()
        } catch {
            logger.error("failed to write the endpoint record", metadata: ["service": "\(entry.service)", "error": "\(error)"])
            return Outcome(problem: "failed to write the endpoint record: \(error)")
        }
        let dnsProblem = await publish(entry)
        let problems = [dnsProblem, await runHook(entry, removed: false)].compactMap { $0 }
        return Outcome(
            problem: problems.isEmpty ? nil : problems.joined(separator: "; "),
            dnsTTL: dns != nil && dnsProblem == nil ? dns.map { .seconds(Int64($0.ttl)) } : nil
        )
    }

    /// The DNS update, if a server is configured: the failure said, never thrown.
    func publish(_ entry: EndpointEntry) async -> String? {
        guard let dns else { return nil }
        do {
            try await dns.publish(service: entry.service, address: entry.address)
            logger.info("DNS updated", metadata: ["service": "\(entry.service)", "address": "\(entry.address)"])
            return nil
        } catch {
            logger.warning("DNS update failed", metadata: ["service": "\(entry.service)", "error": "\(error)"])
            return "DNS update failed: \(error)"
        }
    }

    func remove(_ service: String) async {
        guard let entry = store.load(key: service) else { return }
        store.delete(key: service)
        try? writeHosts()
        await runHook(entry, removed: true)
    }

    func writeHosts() throws {
        var text = "# UMS endpoint record of system \(system): where each service is reached (hosts format).\n"
        // Only entries that are an address and a container name: a line is never built from a
        // string nobody checked (a record file could have been edited).
        for entry in entries() where (try? HostAddress.validate(entry.address)) != nil && (try? ContainerName.validate(entry.service)) != nil {
            text += "\(entry.address) \(entry.service)\n"
        }
        try FileSystem.writeAtomically(Data(text.utf8), to: hostsFile)
    }

    @discardableResult
    func runHook(_ entry: EndpointEntry, removed: Bool) async -> String? {
        guard let hook else { return nil }
        let command = Command(hook, [], environment: [
            "UMS_SERVICE": entry.service, "UMS_ADDRESS": removed ? "" : entry.address, "UMS_ENDPOINTS": removed ? "" : entry.endpoints.joined(separator: ","),
            "UMS_SYSTEM": entry.system, "UMS_HOSTS_FILE": hostsFile, "UMS_EVENT": removed ? "removed" : "updated",
        ])
        let runner = self.runner
        do {
            try await withTimeout(Self.hookTimeout, UMSError(.unavailable, "the endpoint hook did not finish within \(Self.hookTimeout)")) {
                _ = try await runner.run(command)
            }
            return nil
        } catch {
            logger.warning("endpoint hook failed", metadata: ["hook": "\(hook)", "service": "\(entry.service)", "error": "\(error)"])
            return "endpoint hook failed: \(error)"
        }
    }
}
