import Foundation
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

    /// Set when the container keeps the address it had at another system (a carried migration's
    /// destination): the address is the container's alone (`/32`), its gateway `gateway` (the
    /// same on every system, so the restored process's routes hold anywhere), and until the
    /// commit nothing reaches it or leaves it (`deliver`).
    public var tunnel: MigrationTunnel?

    /// Set when an ordinary container of this system's also holds the address a service had at
    /// another system (a carried container-level migration's destination: the outer container's
    /// agent talks over the container's own address, the restored service's connections over
    /// the carried one). Until the commit nothing reaches the carried address or leaves from it.
    public var carried: CarriedAddress?

    /// The gateway of containers that keep their address across systems.
    public static let gateway = "169.254.1.1"

    public var namespacePath: String { "/run/netns/\(namespace)" }

    public init(
        namespace: String, hostInterface: String, hostAddress: String, containerAddress: String, tunnel: MigrationTunnel? = nil, carried: CarriedAddress? = nil
    ) {
        self.carried = carried
        self.namespace = namespace
        self.hostInterface = hostInterface
        self.hostAddress = hostAddress
        self.containerAddress = containerAddress
        self.tunnel = tunnel
    }

    /// The network for slot `slot` (0-based) of system `system`: a /30 per container from the
    /// system's block (by default all of 198.19.0.0/16, 16384 containers). Systems that may carry
    /// each other's connections take disjoint blocks, so a service keeps its address anywhere.
    public static func forSlot(_ slot: Int, system: String, container: String, block: AddressBlock = .standard) -> ContainerNetwork {
        let base = block.base + UInt32(slot * 4)
        return ContainerNetwork(
            namespace: "ums-\(system)-\(container)",
            hostInterface: "umsv\(slot)",
            hostAddress: AddressBlock.dotted(base + 1),
            containerAddress: AddressBlock.dotted(base + 2)
        )
    }

    /// The network for slot `slot` of a container that keeps `address` from another system,
    /// whose connections cross `tunnel`. The address is checked to be outside this system's
    /// block (it is the peer's).
    public static func keeping(_ address: String, through tunnel: MigrationTunnel, slot: Int, system: String, container: String, block: AddressBlock) throws(UMSError) -> ContainerNetwork {
        try checkForeign(address, block: block)
        return ContainerNetwork(
            namespace: "ums-\(system)-\(container)", hostInterface: "umsv\(slot)", hostAddress: gateway, containerAddress: address, tunnel: tunnel
        )
    }

    /// The network for slot `slot`, which also holds `address` from another system, its
    /// connections through `tunnel` (checked as `keeping` checks it).
    public static func alsoKeeping(_ address: String, through tunnel: MigrationTunnel, slot: Int, system: String, container: String, block: AddressBlock) throws(UMSError) -> ContainerNetwork {
        try checkForeign(address, block: block)
        var network = forSlot(slot, system: system, container: container, block: block)
        network.carried = CarriedAddress(address: address, tunnel: tunnel)
        return network
    }

    /// A carried address: strict IPv4 inside 198.19.0.0/16, outside this system's block.
    static func checkForeign(_ address: String, block: AddressBlock) throws(UMSError) {
        guard let value = IPv4.containerAddress(address) else {
            throw UMSError(.invalidArgument, "invalid carried address '\(String(address.prefix(40)))': inside 198.19.0.0/16 expected")
        }
        guard !IPv4.contains((block.base, block.prefix), value) else {
            throw UMSError(.forbidden, "failed to keep the service's address \(address): it belongs to this system's own container network \(block)")
        }
    }

    /// `ip` commands that create it, in the system's namespace (after `ip netns add`), as lines
    /// of one `ip -batch`.
    public var hostSetUp: [String] {
        guard let tunnel else {
            let ordinary = [
                "link add \(hostInterface) type veth peer name eth0 netns \(namespace)",
                "addr add \(hostAddress)/30 dev \(hostInterface)",
                "link set \(hostInterface) up",
            ]
            // A carried address is held until the commit, as a kept one is.
            guard let carried else { return ordinary }
            return ordinary + ((try? carried.tunnel.holdArrivals(carried.address)) ?? [])
                + ((try? carried.tunnel.returnPath(address: carried.address, hostInterface: hostInterface).ip) ?? [])
        }
        // Held until the commit: a packet delivered into the namespace before its sockets are
        // restored would be answered with a reset.
        return [
            "link add \(hostInterface) type veth peer name eth0 netns \(namespace)",
            "addr add \(hostAddress)/32 dev \(hostInterface)",
            "link set \(hostInterface) up",
        ] + ((try? tunnel.holdArrivals(containerAddress)) ?? []) + ((try? tunnel.returnPath(address: containerAddress, hostInterface: hostInterface).ip) ?? [])
    }

    /// `ip -batch` lines that undo what `hostSetUp` made outside the namespace besides its link
    /// (`remove` deletes that); none for an ordinary network.
    public var hostTearDown: [String] {
        let (address, through) = tunnel.map { (containerAddress, $0) } ?? carried.map { ($0.address, $0.tunnel) } ?? ("", nil)
        guard let through, let path = try? through.returnPath(address: address, hostInterface: hostInterface) else { return [] }
        return path.ip.map { $0.replacingOccurrences(of: "rule add ", with: "rule del ") } + ["route del \(address)/32"]
    }

    /// `ip` commands that configure the inside, as lines of one `ip -n NAMESPACE -batch`.
    public var namespaceSetUp: [String] {
        guard tunnel != nil else {
            // A carried address after the container's own, which stays the source of what the
            // container opens.
            return [
                "link set lo up",
                "addr add \(containerAddress)/30 dev eth0",
            ] + (carried.map { ["addr add \($0.address)/32 dev eth0"] } ?? []) + [
                "link set eth0 up",
                "route add default via \(hostAddress)",
            ]
        }
        return [
            "link set lo up",
            "addr add \(containerAddress)/32 dev eth0",
            "link set eth0 up",
            "route add \(hostAddress) dev eth0",
            "route add default via \(hostAddress)",
        ]
    }

    /// iptables rules (without the verb) a network keeping its address has besides the egress
    /// rule: the return path's marks, and the silence until the commit.
    public var carriedRules: [[String]] {
        if let carried, let path = try? carried.tunnel.returnPath(address: carried.address, hostInterface: hostInterface) {
            return path.iptables + ((try? MigrationTunnel.silence(hostInterface: hostInterface, source: carried.address)).map { [$0] } ?? [])
        }
        guard let tunnel, let path = try? tunnel.returnPath(address: containerAddress, hostInterface: hostInterface) else { return [] }
        return path.iptables + ((try? MigrationTunnel.silence(hostInterface: hostInterface)).map { [$0] } ?? [])
    }

    /// The iptables rule (without the -A/-D verb) that lets the container reach beyond its
    /// system under the system's address, as any host's containers can.
    public var egressRule: [String] {
        // A carried connection's replies keep the service's address: the source undoes its own NAT.
        let carried = tunnel == nil ? [] : ["-m", "connmark", "!", "--mark", MigrationTunnel.marks]
        return ["-t", "nat", "POSTROUTING", "-s", "\(containerAddress)/32", "!", "-d", "198.19.0.0/16"] + carried + ["-j", "MASQUERADE"]
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

/// An address a container holds besides its own, carried from another system, and the tunnel its
/// connections cross.
public struct CarriedAddress: Codable, Sendable, Equatable {
    public var address: String
    public var tunnel: MigrationTunnel

    public init(address: String, tunnel: MigrationTunnel) {
        self.address = address
        self.tunnel = tunnel
    }
}

/// The addresses a system gives its containers: an aligned block inside 198.19.0.0/16 (the range
/// every rule of UMS treats as its containers'), a /16 to a /24.
public struct AddressBlock: Sendable, Equatable, CustomStringConvertible {
    public let base: UInt32
    public let prefix: Int

    public static let standard = AddressBlock(uncheckedBase: IPv4.containerRange.base, prefix: IPv4.containerRange.prefix)

    init(uncheckedBase base: UInt32, prefix: Int) {
        self.base = base
        self.prefix = prefix
    }

    /// `A.B.C.D/N`, checked: inside 198.19.0.0/16, N from 16 to 24, the address the block's first.
    public init(parsing text: String) throws(UMSError) {
        guard let (base, prefix) = IPv4.containerBlock(text) else {
            throw UMSError(.invalidArgument, "invalid container network '\(String(text.prefix(40)))': an aligned block inside 198.19.0.0/16, /16 to /24 (e.g. 198.19.128.0/17)")
        }
        self.init(uncheckedBase: base, prefix: prefix)
    }

    /// How many containers it holds (a /30 each).
    public var slots: Int { 1 << (32 - prefix - 2) }
    public var description: String { "\(Self.dotted(base))/\(prefix)" }

    static func dotted(_ value: UInt32) -> String {
        "\(value >> 24).\((value >> 16) & 0xFF).\((value >> 8) & 0xFF).\(value & 0xFF)"
    }
}

/// Creates and removes container networks on the host.
public struct NetworkManager: Sendable {
    let runner: any CommandRunner

    public init(runner: any CommandRunner) {
        self.runner = runner
    }

    /// Creates the namespace, its link and its egress rule: five commands, whatever the
    /// container (`ip` and `iptables-restore` take their lines in batches; every exec costs).
    public func create(_ network: ContainerNetwork, ports: [PortMapping]) async throws {
        if FileManager.default.fileExists(atPath: network.namespacePath) {
            await remove(network, ports: ports)
        }
        do {
            // Forwarding is per namespace; the system's namespace routes to its containers.
            if (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_forward", encoding: .utf8))?.hasPrefix("1") != true {
                try await runner.execute("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"])
            }
            try await runner.execute("ip", ["netns", "add", network.namespace])
            try await batch(["ip", "-batch"], network.hostSetUp)
            if network.tunnel != nil {
                // The namespace reaches its gateway through this end: it answers ARP for it.
                try NetworkManager.setting("net/ipv4/conf/\(network.hostInterface)/proxy_arp", "1")
                // …at once: a restored service's first packet waits for that answer.
                try NetworkManager.setting("net/ipv4/neigh/\(network.hostInterface)/proxy_delay", "0")
            }
            try await batch(["ip", "-n", network.namespace, "-batch"], network.namespaceSetUp)
            try await rules("-A", [network.egressRule] + network.carriedRules)
        } catch {
            await remove(network, ports: ports)
            throw UMSError.wrap(error, .internalError, "failed to prepare network namespace \(network.namespace)")
        }
    }

    /// Writes a kernel setting of this namespace (`/proc/sys/…`): no command to run.
    static func setting(_ key: String, _ value: String) throws {
        try Data((value + "\n").utf8).write(to: URL(fileURLWithPath: "/proc/sys/" + key))
    }

    /// Makes the tunnel to a peer unless it is there (its name derives from both addresses, so
    /// the same pair finds the same device). Tunnels stay once made: carried connections of
    /// several migrations share one.
    public func ensure(_ tunnel: MigrationTunnel) async throws {
        // Asked of `ip` in this process's network namespace: /sys/class/net shows the namespace
        // that mounted /sys, which need not be this one.
        if (try? await runner.output("ip", ["-o", "link", "show", "dev", tunnel.device])) == nil {
            do {
                try await batch(["ip", "-batch"], tunnel.setUp)
            } catch {
                _ = try? await runner.run(Command("ip", ["link", "del", tunnel.device]))
                throw UMSError.wrap(error, .internalError, "failed to make the migration tunnel \(tunnel.device) to \(tunnel.remoteAddress)")
            }
        }
        for line in tunnel.sysctls {
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            try Self.setting(parts[0].replacingOccurrences(of: ".", with: "/"), parts[1])
        }
    }

    /// Destination, at the commit: the kept address reaches the restored service, and what it
    /// sends leaves.
    public func deliver(_ network: ContainerNetwork) async throws {
        if let carried = network.carried {
            try await batch(["ip", "-batch"], try carried.tunnel.deliver(carried.address, hostInterface: network.hostInterface))
            await removeRules([try MigrationTunnel.silence(hostInterface: network.hostInterface, source: carried.address)])
            return
        }
        guard let tunnel = network.tunnel else { return }
        try await batch(["ip", "-batch"], try tunnel.deliver(network.containerAddress, hostInterface: network.hostInterface))
        await removeRules([try MigrationTunnel.silence(hostInterface: network.hostInterface)])
    }

    /// Source, from the freeze: nothing leaves the frozen copy's namespace any more, and its
    /// address lives at the peer (packets for it cross the tunnel, where the peer holds them
    /// until the commit).
    public func sendAway(_ network: ContainerNetwork, through tunnel: MigrationTunnel) async throws {
        try await silence(network, allowing: [])
        try await routeAway(network, through: tunnel)
    }

    /// Source: nothing leaves the frozen copy's namespace but `allowing` (a container-level
    /// service's agent, which dumps and streams it from inside).
    public func silence(_ network: ContainerNetwork, allowing: [AllowedFlow]) async throws {
        try await rules("-A", try MigrationTunnel.silence(hostInterface: network.hostInterface, allowing: allowing))
    }

    /// Source: the address lives at the peer (packets for it cross the tunnel).
    public func routeAway(_ network: ContainerNetwork, through tunnel: MigrationTunnel) async throws {
        try await batch(["ip", "-batch"], try tunnel.routeAway(network.containerAddress))
    }

    /// Source, on a rollback (or once the linger ended): the address is this system's again.
    public func bringBack(_ network: ContainerNetwork) async {
        // Only `sendAway` makes a /32 route for a container of this system's (its own route is
        // the /30 of its link).
        _ = try? await runner.run(Command("ip", ["route", "del", "\(network.containerAddress)/32"]))
        await removeSilences(network)
    }

    /// Every silence of the network's link and whatever it let out (each raw-table rule on a
    /// UMS link is one); the plain silence by its own rule if the table cannot be listed.
    func removeSilences(_ network: ContainerNetwork) async {
        if await !removeRawRules(onInterface: { $0 == network.hostInterface }), let rule = try? MigrationTunnel.silence(hostInterface: network.hostInterface) {
            await removeRules([rule])
        }
    }

    /// Deletes the raw table's PREROUTING rules on links `matching` (UMS's silences and their
    /// exceptions: `-A PREROUTING -i umsvN …`), as `iptables -S` lists them.
    @discardableResult
    func removeRawRules(onInterface matching: (String) -> Bool) async -> Bool {
        guard let listing = try? await runner.output("iptables", ["-w", "-t", "raw", "-S", "PREROUTING"]) else { return false }
        for line in listing.split(separator: "\n") {
            // (iptables lists a rule's matches in its own order: `-d` before `-i`.)
            let words = line.split(separator: " ").map(String.init)
            guard words.count >= 6, words[0] == "-A", words[1] == "PREROUTING", let option = words.firstIndex(of: "-i"), option + 1 < words.count,
                  words[option + 1].hasPrefix("umsv"), matching(words[option + 1]), ["DROP", "ACCEPT"].contains(words.last ?? "") else { continue }
            _ = try? await runner.run(Command("iptables", ["-w", "-t", "raw", "-D", "PREROUTING"] + words[2...]))
        }
        return true
    }

    /// At start-up: what carried migrations left for networks this system no longer has — routes
    /// of addresses into a tunnel, silences of links — none of `known`'s (addresses and host
    /// links of the containers it has). Never fails.
    public func sweepCarried(knownAddresses: Set<String>, knownInterfaces: Set<String>) async {
        if let routes = try? await runner.output("ip", ["-o", "route", "show"]) {
            for line in routes.split(separator: "\n") {
                let words = line.split(separator: " ").map(String.init)
                guard words.count >= 3, words[1] == "dev", words[2].hasPrefix("umsx"),
                      IPv4.containerAddress(words[0]) != nil, !knownAddresses.contains(words[0]) else { continue }
                _ = try? await runner.run(Command("ip", ["route", "del", "\(words[0])/32", "dev", words[2]]))
            }
        }
        await removeRawRules { !knownInterfaces.contains($0) }
    }

    /// Publishes ports (all rules in one atomic `iptables-restore`).
    public func publish(_ network: ContainerNetwork, ports: [PortMapping]) async throws {
        try await rules("-A", ports.flatMap(network.forwardingRules(for:)))
    }

    public func unpublish(_ network: ContainerNetwork, ports: [PortMapping]) async {
        await removeRules(ports.flatMap(network.forwardingRules(for:)))
    }

    /// Removes the namespace, its link and its rules; never fails (it is cleanup).
    public func remove(_ network: ContainerNetwork, ports: [PortMapping]) async {
        // Silences go by listing (a source's may still be there after a carried migration's
        // commit or the linger's end, with a container-level agent's exceptions; a destination's
        // went at the commit): one that is not there would fail the batch of the others.
        await removeRules((ports.flatMap(network.forwardingRules(for:)) + [network.egressRule] + network.carriedRules).filter { $0[1] != "raw" })
        await removeSilences(network)
        // The veth pair would go with its namespace — but only once nothing holds the namespace,
        // and the sockets of a service killed with open connections (closing, retransmitting
        // their FIN) hold it for up to a minute: its link would still be there, and the next
        // container given this slot fail on "File exists". Deleting this end deletes the pair now.
        let teardown = (network.tunnel == nil ? ["route del \(network.containerAddress)/32"] : []) + network.hostTearDown
            + ["link del \(network.hostInterface)"]
        for line in teardown { _ = try? await runner.run(Command("ip", line.split(separator: " ").map(String.init))) }
        _ = try? await runner.run(Command("ip", ["netns", "del", network.namespace]))
    }

    /// Deletes rules in one batch; if some were not there (the batch is atomic and fails),
    /// one by one, since a missing rule is the state we want.
    func removeRules(_ list: [[String]]) async {
        guard !list.isEmpty else { return }
        if (try? await rules("-D", list)) != nil { return }
        for rule in list { try? await apply("-D", rule) }
    }

    /// Applies rules written as `[-t, TABLE, CHAIN, …]` with one `iptables-restore --noflush`.
    func rules(_ verb: String, _ list: [[String]]) async throws {
        guard !list.isEmpty else { return }
        var tables: [String: [String]] = [:]
        for rule in list {
            let line = ([verb, rule[2]] + rule[3...].map(Self.quoted)).joined(separator: " ")
            tables[rule[1], default: []].append(line)
        }
        let text = tables.keys.sorted().map { table in (["*\(table)"] + tables[table]! + ["COMMIT"]).joined(separator: "\n") }
            .joined(separator: "\n") + "\n"
        try await batch(["iptables-restore", "-w", "--noflush"], text: text)
    }

    static func quoted(_ word: String) -> String {
        word.contains(" ") || word.isEmpty ? "\"\(word)\"" : word
    }

    /// Runs a batch-reading command with `lines` in a file given as its last argument.
    func batch(_ argv: [String], _ lines: [String]) async throws {
        try await batch(argv, text: lines.joined(separator: "\n") + "\n")
    }

    func batch(_ argv: [String], text: String) async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ums-batch-\(UUID().uuidString)").path
        try FileSystem.writeAtomically(Data(text.utf8), to: file)
        defer { FileSystem.remove(file) }
        try await runner.execute(argv[0], Array(argv.dropFirst()) + [file])
    }

    /// Runs `iptables -w -t TABLE VERB CHAIN …` for a rule written as `[-t, TABLE, CHAIN, …]`.
    func apply(_ verb: String, _ rule: [String]) async throws {
        let (table, chain, rest) = (Array(rule[0..<2]), rule[2], Array(rule[3...]))
        try await runner.execute("iptables", ["-w"] + table + [verb, chain] + rest)
    }
}

/// Sends the traffic for published ports to the Frontmen listening for them, in the system's
/// namespace: a nat chain of REDIRECT rules, jumped to first from PREROUTING (other hosts) and
/// OUTPUT (the system itself), ahead of whatever the orchestrator installed for the same port
/// (UMS's DNAT rules, Docker's and CNI's chains), which stay as they are.
public struct FrontmanRedirects: Sendable {
    public static let chain = "UMS-FRONTMAN"
    let network: NetworkManager
    let runner: any CommandRunner

    public init(runner: any CommandRunner) {
        self.runner = runner
        self.network = NetworkManager(runner: runner)
    }

    /// Creates the chain, or empties what a previous run left in it, and puts the jumps first.
    public func prepare() async throws {
        try await network.batch(["iptables-restore", "-w", "--noflush"], text: "*nat\n:\(Self.chain) - [0:0]\nCOMMIT\n")
        try await ensureFirst()
    }

    /// Puts the jumps to the chain first in PREROUTING and OUTPUT again: an engine that adds its
    /// own jump at the top (CNI's portmap does) would otherwise take the port back.
    public func ensureFirst() async throws {
        for chain in ["PREROUTING", "OUTPUT"] {
            let listing = try await runner.output("iptables", ["-w", "-t", "nat", "-S", chain])
            let rules = listing.split(separator: "\n").filter { $0.hasPrefix("-A ") }
            let jump = "-A \(chain) -j \(Self.chain)"
            if rules.first.map(String.init) == jump { continue }
            for _ in rules.filter({ String($0) == jump }) {
                try await runner.execute("iptables", ["-w", "-t", "nat", "-D", chain, "-j", Self.chain])
            }
            try await runner.execute("iptables", ["-w", "-t", "nat", "-I", chain, "1", "-j", Self.chain])
        }
    }

    static func rule(published: Int, listening: Int) -> [String] {
        ["-t", "nat", chain, "-p", "tcp", "--dport", String(published), "-m", "addrtype", "--dst-type", "LOCAL",
         "-j", "REDIRECT", "--to-ports", String(listening)]
    }

    /// Redirects each published port to its listener (one atomic batch).
    public func add(_ ports: [(published: Int, listening: Int)]) async throws {
        try await network.rules("-A", ports.map { Self.rule(published: $0.published, listening: $0.listening) })
    }

    /// Hands the ports back to the orchestrator's rules; never fails (it is cleanup).
    public func remove(_ ports: [(published: Int, listening: Int)]) async {
        await network.removeRules(ports.map { Self.rule(published: $0.published, listening: $0.listening) })
    }
}
