import UMSModel

/// A network namespace the system prepares for one container, joined to the system's own
/// namespace by a veth pair on a private /30, so that the container can be reached and its
/// published ports forwarded. CRIU restores the service's sockets into whatever namespace the
/// destination prepared (it does not carry links or addresses), so every system builds these the
/// same way.
public struct ContainerNetwork: Codable, Sendable, Equatable {
    /// `ip netns` name (also `/run/netns/<name>`).
    public var namespace: String
    /// The veth end in the system's namespace.
    public var hostInterface: String
    public var hostAddress: String
    public var containerAddress: String

    public var namespacePath: String { "/run/netns/\(namespace)" }

    public init(namespace: String, hostInterface: String, hostAddress: String, containerAddress: String) {
        self.namespace = namespace
        self.hostInterface = hostInterface
        self.hostAddress = hostAddress
        self.containerAddress = containerAddress
    }

    /// The network for slot `slot` (0-based) of system `system`: addresses from 198.19.0.0/16
    /// (the benchmark range), a /30 per container, so up to 16384 containers per system.
    public static func forSlot(_ slot: Int, system: String, container: String) -> ContainerNetwork {
        let base = slot * 4
        let third = (base >> 8) & 0xFF
        let fourth = base & 0xFF
        return ContainerNetwork(
            namespace: "ums-\(system)-\(container)",
            hostInterface: "umsv\(slot)",
            hostAddress: "198.19.\(third).\(fourth + 1)",
            containerAddress: "198.19.\(third).\(fourth + 2)"
        )
    }

    /// Commands that create it (idempotence is the caller's: it removes a stale one first).
    public func setUpCommands() -> [Command] {
        [
            Command("ip", ["netns", "add", namespace]),
            Command("ip", ["-n", namespace, "link", "set", "lo", "up"]),
            Command("ip", ["link", "add", hostInterface, "type", "veth", "peer", "name", "eth0", "netns", namespace]),
            Command("ip", ["addr", "add", "\(hostAddress)/30", "dev", hostInterface]),
            Command("ip", ["link", "set", hostInterface, "up"]),
            Command("ip", ["-n", namespace, "addr", "add", "\(containerAddress)/30", "dev", "eth0"]),
            Command("ip", ["-n", namespace, "link", "set", "eth0", "up"]),
            Command("ip", ["-n", namespace, "route", "add", "default", "via", hostAddress]),
        ]
    }

    public func tearDownCommands() -> [Command] {
        [
            Command("ip", ["link", "del", hostInterface]),
            Command("ip", ["netns", "del", namespace]),
        ]
    }

    /// The iptables rule (without the -A/-D verb) that lets the container reach beyond its
    /// system under the system's address, as any host's containers can.
    public var egressRule: [String] {
        ["-t", "nat", "POSTROUTING", "-s", "\(containerAddress)/32", "!", "-d", "198.19.0.0/16", "-j", "MASQUERADE"]
    }

    /// iptables rules (without the -A/-D verb) that forward a published port of the system to the
    /// container: from other hosts (PREROUTING) and from the system itself (OUTPUT).
    public func forwardingRules(for port: PortMapping) -> [[String]] {
        let target = ["-p", port.proto, "--dport", String(port.hostPort), "-j", "DNAT", "--to-destination", "\(containerAddress):\(port.containerPort)"]
        return [
            ["-t", "nat", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL"] + target,
            ["-t", "nat", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "!", "-d", "127.0.0.0/8"] + target,
        ]
    }
}

/// Creates and removes container networks on the host.
public struct NetworkManager: Sendable {
    let runner: any CommandRunner

    public init(runner: any CommandRunner) {
        self.runner = runner
    }

    public func create(_ network: ContainerNetwork, ports: [PortMapping]) async throws {
        await remove(network, ports: ports)
        do {
            // Forwarding is per namespace; the system's namespace routes to its containers.
            try await runner.execute("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"])
            for command in network.setUpCommands() { _ = try await runner.run(command) }
            try await apply("-A", network.egressRule)
        } catch {
            await remove(network, ports: ports)
            throw UMSError.wrap(error, .internalError, "failed to prepare network namespace \(network.namespace)")
        }
    }

    /// Publishes ports; fails with `exists` when another container already publishes one of them.
    public func publish(_ network: ContainerNetwork, ports: [PortMapping]) async throws {
        for port in ports {
            for rule in network.forwardingRules(for: port) { try await apply("-A", rule) }
        }
    }

    public func unpublish(_ network: ContainerNetwork, ports: [PortMapping]) async {
        for port in ports {
            // Deleting a rule that is not there fails; that is the state we want.
            for rule in network.forwardingRules(for: port) { try? await apply("-D", rule) }
        }
    }

    /// Removes the namespace, its link and its rules; never fails (it is cleanup).
    public func remove(_ network: ContainerNetwork, ports: [PortMapping]) async {
        await unpublish(network, ports: ports)
        try? await apply("-D", network.egressRule)
        for command in network.tearDownCommands() { _ = try? await runner.run(command) }
    }

    /// Runs `iptables -w -t TABLE VERB CHAIN …` for a rule written as `[-t, TABLE, CHAIN, …]`.
    func apply(_ verb: String, _ rule: [String]) async throws {
        let (table, chain, rest) = (Array(rule[0..<2]), rule[2], Array(rule[3...]))
        try await runner.execute("iptables", ["-w"] + table + [verb, chain] + rest)
    }
}
