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

    public var namespacePath: String { "/run/netns/\(namespace)" }

    public init(namespace: String, hostInterface: String, hostAddress: String, containerAddress: String) {
        self.namespace = namespace
        self.hostInterface = hostInterface
        self.hostAddress = hostAddress
        self.containerAddress = containerAddress
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

    /// `ip` commands that create it, in the system's namespace (after `ip netns add`), as lines
    /// of one `ip -batch`.
    public var hostSetUp: [String] {
        [
            "link add \(hostInterface) type veth peer name eth0 netns \(namespace)",
            "addr add \(hostAddress)/30 dev \(hostInterface)",
            "link set \(hostInterface) up",
        ]
    }

    /// `ip` commands that configure the inside, as lines of one `ip -n NAMESPACE -batch`.
    public var namespaceSetUp: [String] {
        [
            "link set lo up",
            "addr add \(containerAddress)/30 dev eth0",
            "link set eth0 up",
            "route add default via \(hostAddress)",
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

/// The addresses a system gives its containers: an aligned block inside 198.19.0.0/16 (the range
/// every rule of UMS treats as its containers'), a /16 to a /24.
public struct AddressBlock: Sendable, Equatable, CustomStringConvertible {
    public let base: UInt32
    public let prefix: Int

    public static let standard = AddressBlock(uncheckedBase: 0xC613_0000, prefix: 16)

    init(uncheckedBase base: UInt32, prefix: Int) {
        self.base = base
        self.prefix = prefix
    }

    /// `A.B.C.D/N`, checked: inside 198.19.0.0/16, N from 16 to 24, the address the block's first.
    public init(parsing text: String) throws(UMSError) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2, let base = IPv4.value(parts[0]), let prefix = Int(parts[1]), (16...24).contains(prefix),
              base & 0xFFFF_0000 == 0xC613_0000, base & ~(UInt32.max << UInt32(32 - prefix)) == 0
        else {
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
            try await batch(["ip", "-n", network.namespace, "-batch"], network.namespaceSetUp)
            try await rules("-A", [network.egressRule])
        } catch {
            await remove(network, ports: ports)
            throw UMSError.wrap(error, .internalError, "failed to prepare network namespace \(network.namespace)")
        }
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
        await removeRules(ports.flatMap(network.forwardingRules(for:)) + [network.egressRule])
        // Deleting the namespace deletes the veth pair with it.
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
