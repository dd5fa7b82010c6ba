import Foundation
import UMSModel

/// The tunnel two systems that agree to a migration network share (issue 16): the kernel's VXLAN
/// between their addresses, so that a service keeps its address wherever it runs and CRIU can
/// restore its established TCP connections (`--tcp-established`, TCP repair) — packets, never a
/// user-space relay. Layer 3 over it: no addresses on the tunnel, each side answers ARP for what
/// it routes (`proxy_arp`).
///
/// - The source, once the service left, routes the service's address into the tunnel; its
///   published port's DNAT and the Frontman's upstream connections keep their conntrack entries
///   and reach the service at the destination.
/// - The destination gives the service its address again and sends the replies of connections
///   that came through the tunnel back through it (a connection mark set on the way in, restored
///   on the replies, a routing rule on the mark), where the source's conntrack undoes its DNAT.
///
/// `MigrationTunnelMoveTests` moves an echo server with CRIU between namespaces with these
/// commands; `NetworkManager` applies them for the orchestrator-level approach on runc
/// (`docs/connections.md`).
public struct MigrationTunnel: Codable, Sendable, Equatable {
    /// The VXLAN device (`umsx` and the VNI in hex: at most 15 characters).
    public var device: String
    /// The VXLAN network identifier, the same at both ends (derived from the pair of addresses).
    public var vni: Int
    public var localAddress: String
    public var remoteAddress: String
    public var port: Int
    /// The connection mark and the routing table of the return path (one per tunnel).
    public var mark: UInt32
    public var table: Int

    /// The tunnel between this system's address and the peer's (dotted IPv4, checked), with the
    /// same VNI computed at both ends.
    public static func between(local: String, remote: String, port: Int = 4789) throws(UMSError) -> MigrationTunnel {
        guard let localValue = IPv4.value(local), let remoteValue = IPv4.value(remote), localValue != remoteValue else {
            throw UMSError(.invalidArgument, "invalid tunnel endpoints '\(String(local.prefix(40)))' and '\(String(remote.prefix(40)))': two different IPv4 addresses expected")
        }
        guard (1024...65535).contains(port) else { throw UMSError(.invalidArgument, "invalid tunnel port \(port)") }
        // Order-independent, so both systems derive the same VNI; never 0.
        let (low, high) = (min(localValue, remoteValue), max(localValue, remoteValue))
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in withUnsafeBytes(of: (UInt64(low) << 32 | UInt64(high)).bigEndian, Array.init) {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        let vni = Int(hash % 0xFF_FFFE) + 1
        return MigrationTunnel(
            device: "umsx" + String(vni, radix: 16), vni: vni, localAddress: local, remoteAddress: remote, port: port,
            mark: 0x0055_0000 | UInt32(vni & 0xFFFF), table: 20000 + vni % 10000
        )
    }

    static func checkAddress(_ address: String) throws(UMSError) {
        guard IPv4.value(address) != nil else { throw UMSError(.invalidArgument, "invalid service address '\(String(address.prefix(40)))'") }
    }

    /// `ip -batch` lines that make it (idempotent through `tearDown` first).
    public var setUp: [String] {
        [
            "link add \(device) type vxlan id \(vni) local \(localAddress) remote \(remoteAddress) dstport \(port)",
            "link set \(device) up",
            "route replace default dev \(device) table \(table)",
        ]
    }

    /// sysctl settings: answer ARP for what this side routes, no reverse-path filter on the
    /// tunnel (replies arrive on it for addresses routed elsewhere) — and the neighbour settings
    /// that decide how soon carried connections flow again (`neighbourSysctls`).
    public var sysctls: [String] {
        ["net.ipv4.conf.\(device).proxy_arp=1", "net.ipv4.conf.\(device).rp_filter=0", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.ip_forward=1"]
            + Self.neighbourSysctls(device)
    }

    /// How ARP behaves on a link where an address moves. Once the source routes the service's
    /// address into the tunnel it asks the peer for it (ARP), and the peer answers only once it
    /// routes the address itself — at the commit. Meanwhile the carried connections' packets
    /// wait in the source's neighbour queue, and they leave the moment the answer comes, without
    /// waiting for TCP's retransmission. The kernel's defaults made that last up to 1.8 s after
    /// the commit (measured: a request sent at the freeze answered 1.5 s after it): it asks again
    /// only every second, and answers for another address (proxy ARP) after a random delay of up
    /// to 0.8 s. Here: no delay, asked again every 0.1 s, for up to 3 s before it gives up (then
    /// TCP's next retransmission asks anew), and room for 4 MiB of waiting packets.
    public static func neighbourSysctls(_ device: String) -> [String] {
        [
            "net.ipv4.neigh.\(device).proxy_delay=0", "net.ipv4.neigh.\(device).retrans_time_ms=100",
            "net.ipv4.neigh.\(device).mcast_solicit=30", "net.ipv4.neigh.\(device).unres_qlen_bytes=4194304",
        ]
    }

    public var tearDown: [String] { ["link del \(device)"] }

    /// Source: the service's address lives at the peer now.
    public func routeAway(_ address: String) throws(UMSError) -> [String] {
        try Self.checkAddress(address)
        return ["route replace \(address)/32 dev \(device)"]
    }

    /// Destination, before the restore: packets for the service's address are dropped here until
    /// its sockets exist again — delivered into an empty namespace they would be answered with a
    /// reset, which ends the very connections being carried (their clients retransmit instead).
    public func holdArrivals(_ address: String) throws(UMSError) -> [String] {
        try Self.checkAddress(address)
        return ["route replace blackhole \(address)/32"]
    }

    /// Destination, once restored: the service's address is delivered to its namespace.
    public func deliver(_ address: String, hostInterface: String) throws(UMSError) -> [String] {
        try Self.checkAddress(address)
        try Self.checkInterface(hostInterface)
        return ["route replace \(address)/32 dev \(hostInterface)"]
    }

    static func checkInterface(_ name: String) throws(UMSError) {
        guard (1...15).contains(name.utf8.count),
              name.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" })
        else { throw UMSError(.invalidArgument, "invalid interface name '\(String(name.prefix(20)))'") }
    }

    /// Destination: connections to the service at `address` (behind `hostInterface`) that came
    /// through the tunnel are marked, and their replies routed back through it. A carried
    /// connection whose first packet here comes from the service (a retransmission of the restored
    /// socket, before the client sent anything) is new to this system's conntrack without being a
    /// SYN: marked too. iptables rules (without the verb) and `ip -batch` lines.
    public func returnPath(address: String, hostInterface: String) throws(UMSError) -> (iptables: [[String]], ip: [String]) {
        try Self.checkAddress(address)
        try Self.checkInterface(hostInterface)
        let mark = markText
        return (
            [
                ["-t", "mangle", "PREROUTING", "-i", device, "-d", "\(address)/32", "-j", "CONNMARK", "--set-mark", mark],
                ["-t", "mangle", "PREROUTING", "-i", hostInterface, "-s", "\(address)/32", "-p", "tcp", "!", "--syn", "-m", "conntrack", "--ctstate", "NEW",
                 "-j", "CONNMARK", "--set-mark", mark],
                ["-t", "mangle", "PREROUTING", "-i", hostInterface, "-j", "CONNMARK", "--restore-mark"],
            ],
            // Only what comes from the service: the tunnel's own encapsulated packets carry the
            // mark too, and must not be routed into the tunnel again.
            ["rule add fwmark \(mark) iif \(hostInterface) lookup \(table)"]
        )
    }

    public var markText: String { "0x" + String(mark, radix: 16) }

    /// Every mark a tunnel uses, as `VALUE/MASK` (a carried connection's replies are never
    /// masqueraded: the source's conntrack undoes its own NAT).
    public static let marks = "0x550000/0xffff0000"

    /// Drops everything that leaves a service's namespace through `hostInterface`: at the source
    /// from the freeze (the frozen copy's sockets still live in its kernel, and a reset from them
    /// would end the very connections the destination restores), at the destination until the
    /// commit (nothing from the restored copy reaches a client before the source gave it up).
    public static func silence(hostInterface: String) throws(UMSError) -> [String] {
        try checkInterface(hostInterface)
        return ["-t", "raw", "PREROUTING", "-i", hostInterface, "-j", "DROP"]
    }

    /// The silence of a container-level service's source (its outer container's link), which
    /// lets its agent's own traffic pass: the agent answers the Coordinator on its control port
    /// and streams the images while the service is frozen. The exceptions come first (each a
    /// raw-table `ACCEPT`, which only ends the raw table's own traversal), then the drop.
    public static func silence(hostInterface: String, allowing flows: [AllowedFlow]) throws(UMSError) -> [[String]] {
        try checkInterface(hostInterface)
        var rules: [[String]] = []
        for flow in flows {
            switch flow {
            case .fromPort(let port):
                guard (1...65535).contains(port) else { throw UMSError(.invalidArgument, "invalid port \(port) to let out of a silenced link") }
                rules.append(["-t", "raw", "PREROUTING", "-i", hostInterface, "-p", "tcp", "--sport", String(port), "-j", "ACCEPT"])
            case .to(let host, let port):
                guard (1...65535).contains(port) else { throw UMSError(.invalidArgument, "invalid port \(port) to let out of a silenced link") }
                try checkAddress(host)
                rules.append(["-t", "raw", "PREROUTING", "-i", hostInterface, "-p", "tcp", "-d", "\(host)/32", "--dport", String(port), "-j", "ACCEPT"])
            }
        }
        return rules + [try silence(hostInterface: hostInterface)]
    }

    /// The silence of an address a container holds besides its own (a container-level
    /// destination's: the outer container is an ordinary one of this system's, its agent talks
    /// over its own address): only what leaves from the carried address is dropped.
    public static func silence(hostInterface: String, source address: String) throws(UMSError) -> [String] {
        try checkInterface(hostInterface)
        try checkAddress(address)
        return ["-t", "raw", "PREROUTING", "-i", hostInterface, "-s", "\(address)/32", "-j", "DROP"]
    }
}

/// Traffic a silenced link still lets out (`MigrationTunnel.silence(hostInterface:allowing:)`).
public enum AllowedFlow: Sendable, Equatable {
    /// TCP from this port of the container (a server's answers: the agent's control port).
    case fromPort(Int)
    /// TCP to this address and port (a connection the container opens: the agent's image stream).
    case to(host: String, port: Int)
}
