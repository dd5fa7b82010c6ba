import Foundation
import Logging
import Testing
import UMSModel
import UMSOS

@Suite("The migration network's tunnel: commands")
struct MigrationTunnelTests {
    @Test("both ends derive the same VNI, device, mark and table from the pair of addresses; the device name fits 15 characters")
    func symmetric() throws {
        let a = try MigrationTunnel.between(local: "198.18.0.1", remote: "198.18.0.2")
        let b = try MigrationTunnel.between(local: "198.18.0.2", remote: "198.18.0.1")
        #expect(a.vni == b.vni && a.device == b.device && a.mark == b.mark && a.table == b.table)
        #expect((1...0xFF_FFFF).contains(a.vni))
        #expect(a.device.count <= 15)
        #expect(a.setUp.first == "link add \(a.device) type vxlan id \(a.vni) local 198.18.0.1 remote 198.18.0.2 dstport 4789")
        #expect(b.setUp.first?.hasSuffix("local 198.18.0.2 remote 198.18.0.1 dstport 4789") == true)
        let other = try MigrationTunnel.between(local: "198.18.0.1", remote: "198.18.0.3")
        #expect(other.vni != a.vni)
    }

    @Test("the source routes a moved service's address into the tunnel; the destination marks what comes through it and routes the replies back, and only the service's (never the tunnel's own packets)")
    func routes() throws {
        let tunnel = try MigrationTunnel.between(local: "198.18.0.2", remote: "198.18.0.1")
        #expect(try tunnel.routeAway("198.19.0.2") == ["route replace 198.19.0.2/32 dev \(tunnel.device)"])
        #expect(try tunnel.holdArrivals("198.19.0.2") == ["route replace blackhole 198.19.0.2/32"])
        #expect(try tunnel.deliver("198.19.0.2", hostInterface: "umsv0") == ["route replace 198.19.0.2/32 dev umsv0"])
        let path = try tunnel.returnPath(address: "198.19.0.2", hostInterface: "umsv0")
        let mark = "0x" + String(tunnel.mark, radix: 16)
        #expect(path.iptables == [
            ["-t", "mangle", "PREROUTING", "-i", tunnel.device, "-d", "198.19.0.2/32", "-j", "CONNMARK", "--set-mark", mark],
            ["-t", "mangle", "PREROUTING", "-i", "umsv0", "-s", "198.19.0.2/32", "-p", "tcp", "!", "--syn", "-m", "conntrack", "--ctstate", "NEW", "-j", "CONNMARK", "--set-mark", mark],
            ["-t", "mangle", "PREROUTING", "-i", "umsv0", "-j", "CONNMARK", "--restore-mark"],
        ])
        #expect(path.ip == ["rule add fwmark \(mark) iif umsv0 lookup \(tunnel.table)"])
        #expect(tunnel.setUp.contains("route replace default dev \(tunnel.device) table \(tunnel.table)"))
    }

    @Test("container-level: the source's silence lets only its agent's control answers and image stream out, the drop last; the destination's silences only the carried address, the outer container's own stays open")
    func containerLevelSilences() throws {
        let rules = try MigrationTunnel.silence(hostInterface: "umsv3", allowing: [.fromPort(7070), .to(host: "198.18.0.1", port: 34567)])
        #expect(rules == [
            ["-t", "raw", "PREROUTING", "-i", "umsv3", "-p", "tcp", "--sport", "7070", "-j", "ACCEPT"],
            ["-t", "raw", "PREROUTING", "-i", "umsv3", "-p", "tcp", "-d", "198.18.0.1/32", "--dport", "34567", "-j", "ACCEPT"],
            ["-t", "raw", "PREROUTING", "-i", "umsv3", "-j", "DROP"],
        ])
        #expect(try MigrationTunnel.silence(hostInterface: "umsv3", allowing: []) == [try MigrationTunnel.silence(hostInterface: "umsv3")])
        #expect(try MigrationTunnel.silence(hostInterface: "umsv3", source: "198.19.0.6") == ["-t", "raw", "PREROUTING", "-i", "umsv3", "-s", "198.19.0.6/32", "-j", "DROP"])
        // Hostile: what a peer or an image names never becomes an argument unchecked.
        for flow in [AllowedFlow.fromPort(0), .fromPort(65536), .to(host: "example.com", port: 80), .to(host: "198.18.0.1 -j ACCEPT", port: 80), .to(host: "198.18.0.1", port: -1)] {
            #expect(throws: UMSError.self) { try MigrationTunnel.silence(hostInterface: "umsv3", allowing: [flow]) }
        }
        #expect(throws: UMSError.self) { try MigrationTunnel.silence(hostInterface: "umsv3", source: "198.19.0.6/0") }
        #expect(throws: UMSError.self) { try MigrationTunnel.silence(hostInterface: "x; reboot", source: "198.19.0.6") }
    }

    @Test("container-level destination: an ordinary network of this system's that also holds the source's address — held until the commit, its connections' replies back through the tunnel, its own address the one the agent uses; the address must be the peer's")
    func alsoKeeping() throws {
        let tunnel = try MigrationTunnel.between(local: "198.18.0.2", remote: "198.18.0.1")
        let block = try AddressBlock(parsing: "198.19.128.0/17")
        let network = try ContainerNetwork.alsoKeeping("198.19.0.2", through: tunnel, slot: 1, system: "b", container: "svc", block: block)
        #expect(network.containerAddress == "198.19.128.6" && network.hostAddress == "198.19.128.5" && network.tunnel == nil)
        #expect(network.namespaceSetUp == [
            "link set lo up", "addr add 198.19.128.6/30 dev eth0", "addr add 198.19.0.2/32 dev eth0", "link set eth0 up", "route add default via 198.19.128.5",
        ])
        #expect(network.hostSetUp.suffix(2) == ["route replace blackhole 198.19.0.2/32", "rule add fwmark \(tunnel.markText) iif umsv1 lookup \(tunnel.table)"])
        #expect(network.carriedRules.last == ["-t", "raw", "PREROUTING", "-i", "umsv1", "-s", "198.19.0.2/32", "-j", "DROP"])
        #expect(network.carriedRules.count == 4)
        #expect(network.hostTearDown == ["rule del fwmark \(tunnel.markText) iif umsv1 lookup \(tunnel.table)", "route del 198.19.0.2/32"])
        // Its own egress is an ordinary container's: the carried address's replies are not in it.
        #expect(network.egressRule.contains("198.19.128.6/32") && !network.egressRule.contains("198.19.0.2/32"))
        #expect(throws: UMSError.self) { try ContainerNetwork.alsoKeeping("198.19.130.2", through: tunnel, slot: 1, system: "b", container: "svc", block: block) }
        #expect(throws: UMSError.self) { try ContainerNetwork.alsoKeeping("10.0.0.2", through: tunnel, slot: 1, system: "b", container: "svc", block: block) }
        #expect(throws: UMSError.self) { try ContainerNetwork.alsoKeeping("198.19.0.2/32", through: tunnel, slot: 1, system: "b", container: "svc", block: block) }
        // A record written before there were carried addresses reads as none.
        let old = try JSONDecoder().decode(ContainerNetwork.self, from: Data(#"{"namespace":"n","hostInterface":"umsv0","hostAddress":"198.19.0.1","containerAddress":"198.19.0.2"}"#.utf8))
        #expect(old.carried == nil && old.hostTearDown.isEmpty)
    }

    @Test("a rollback or the linger's end removes every silence rule of the link, its exceptions included, in whatever order iptables lists their matches; the start-up sweep those of links no container has; nothing else")
    func silencesRemoved() async throws {
        let listing = """
        -P PREROUTING ACCEPT
        -A PREROUTING -i umsv0 -p tcp -m tcp --sport 7079 -j ACCEPT
        -A PREROUTING -d 198.18.0.1/32 -i umsv0 -p tcp -m tcp --dport 45341 -j ACCEPT
        -A PREROUTING -i umsv0 -j DROP
        -A PREROUTING -i umsv1 -j DROP
        -A PREROUTING -s 198.19.0.6/32 -i umsv12 -j DROP
        -A PREROUTING -i eth0 -j DROP
        -A PREROUTING -i umsv0 -j CT --notrack
        """
        func deleted(_ run: (NetworkManager) async -> Void) async -> [[String]] {
            let runner = ScriptedRunner(outputs: ["-w": listing])
            await run(NetworkManager(runner: runner))
            return runner.commands.filter { $0.arguments.prefix(4) == ["-w", "-t", "raw", "-D"] }.map { Array($0.arguments.dropFirst(5)) }
        }
        let network = ContainerNetwork.forSlot(0, system: "a", container: "svc")
        #expect(await deleted { await $0.bringBack(network) } == [
            ["-i", "umsv0", "-p", "tcp", "-m", "tcp", "--sport", "7079", "-j", "ACCEPT"],
            ["-d", "198.18.0.1/32", "-i", "umsv0", "-p", "tcp", "-m", "tcp", "--dport", "45341", "-j", "ACCEPT"],
            ["-i", "umsv0", "-j", "DROP"],
        ])
        #expect(await deleted { await $0.sweepCarried(knownAddresses: [], knownInterfaces: ["umsv0"]) } == [
            ["-i", "umsv1", "-j", "DROP"], ["-s", "198.19.0.6/32", "-i", "umsv12", "-j", "DROP"],
        ])
    }

    @Test("hostile input: endpoints, addresses and interface names that are not what they claim are refused (they would become ip and iptables arguments)")
    func hostile() {
        for (local, remote) in [("198.18.0.1", "198.18.0.1"), ("198.18.0.1", "example.com"), ("1.2.3", "1.2.3.4"), ("01.2.3.4", "1.2.3.4"), ("1.2.3.256", "1.2.3.4"), ("1.2.3.4 dev x", "1.2.3.5"), ("", "1.2.3.4")] {
            #expect(throws: UMSError.self) { try MigrationTunnel.between(local: local, remote: remote) }
        }
        #expect(throws: UMSError.self) { try MigrationTunnel.between(local: "1.2.3.4", remote: "1.2.3.5", port: 80) }
        let tunnel = try? MigrationTunnel.between(local: "198.18.0.1", remote: "198.18.0.2")
        #expect(throws: UMSError.self) { try tunnel?.routeAway("198.19.0.2/0") }
        #expect(throws: UMSError.self) { try tunnel?.routeAway("198.19.0.2 table 1") }
        #expect(throws: UMSError.self) { try tunnel?.holdArrivals("default") }
        #expect(throws: UMSError.self) { try tunnel?.deliver("198.19.0.2", hostInterface: "lo table 5") }
        for name in ["", "eth0; rm -rf /", "a-very-long-interface-name", "UPPER", "x y"] {
            #expect(throws: UMSError.self) { try tunnel?.returnPath(address: "198.19.0.2", hostInterface: name) }
        }
    }
}

/// The tunnel for real: namespaces this test makes (a client, systems A and B joined by an
/// underlay link, the service's namespace at A and again at B), the commands above, and CRIU
/// moving an echo server with its established connection (`--tcp-established`) from A to B
/// while the client keeps writing on it.
@Suite("The migration network's tunnel: an established connection across a CRIU move", .serialized, .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")))
struct MigrationTunnelMoveTests {
    static let server = """
    import socket
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 9000)); s.listen(4)
    count = 0
    while True:
        c, _ = s.accept(); f = c.makefile("rwb", buffering=0)
        for line in f:
            count += 1; f.write(b"%d %s" % (count, line))
    """
    /// Writes a line every 10 ms for `seconds` on one connection; prints how many replies, the
    /// last (the server's count) and the longest wait; exits 1 on any error or a reply out of
    /// sequence.
    static let client = """
    import socket, sys, time
    c = socket.create_connection((sys.argv[1], 9000), timeout=20); f = c.makefile("rwb", buffering=0)
    end = time.time() + float(sys.argv[2]); n = 0; worst = 0
    while time.time() < end:
        t = time.time(); f.write(b"ping\\n"); r = f.readline()
        if not r or int(r.split()[0]) != n + 1: print("broken after", n, r); sys.exit(1)
        worst = max(worst, time.time() - t); n += 1; time.sleep(0.01)
    print(n, "%.3f" % worst)
    """

    let runner = SubprocessRunner(logger: Logger(label: "tunnel-test"))
    let id = String(ProcessInfo.processInfo.processIdentifier % 100_000)
    var names: (client: String, a: String, b: String, service: String, moved: String) {
        ("umt\(id)c", "umt\(id)a", "umt\(id)b", "umt\(id)s", "umt\(id)m")
    }

    func ip(_ namespace: String, _ lines: [String]) async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ums-tunnel-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        try await runner.execute("ip", ["-n", namespace, "-batch", file])
    }

    func inside(_ namespace: String, _ command: [String]) -> Command {
        Command("nsenter", ["--net=/run/netns/\(namespace)"] + command)
    }

    func sysctl(_ namespace: String, _ settings: [String]) async throws {
        try await runner.execute("nsenter", ["--net=/run/netns/\(namespace)", "sysctl", "-q", "-w"] + settings)
    }

    func iptables(_ namespace: String, _ rule: [String]) async throws {
        // [-t, TABLE, CHAIN, …] → iptables -t TABLE -A CHAIN …
        try await runner.execute("nsenter", ["--net=/run/netns/\(namespace)", "iptables", rule[0], rule[1], "-A"] + rule.dropFirst(2))
    }

    func cleanUp() async {
        let n = names
        for namespace in [n.client, n.a, n.b, n.service, n.moved] {
            if let pids = try? await runner.output("ip", ["netns", "pids", namespace]) {
                for pid in pids.split(separator: "\n") { _ = try? await runner.run(Command("kill", ["-9", String(pid)])) }
            }
            _ = try? await runner.run(Command("ip", ["netns", "del", namespace]))
        }
    }

    @Test("an echo client's one TCP connection through A's published port survives the server's move to B: no error, every reply in sequence (the server's count carried), A routing the service's address through the tunnel and B the replies back")
    func connectionSurvives() async throws {
        try await isolated(move)
    }

    @Test("what the source sends to a moved address before the destination routes it waits in the source's neighbour queue and leaves within 0.4 s of the delivery (the kernel's defaults: 0.7–1.8 s)")
    func queuedUntilDelivered() async throws {
        try await isolated(queued)
    }

    /// Runs `body` between two clean-ups of every namespace the suite makes, also when it throws.
    func isolated(_ body: () async throws -> Void) async throws {
        await cleanUp()
        do {
            try await body()
        } catch {
            await cleanUp()
            throw error
        }
        await cleanUp()
    }

    /// Systems A and B on an underlay link, each with its end of the tunnel.
    func systems() async throws -> (atA: MigrationTunnel, atB: MigrationTunnel) {
        let n = names
        try await runner.execute("ip", ["link", "add", "ab", "netns", n.a, "type", "veth", "peer", "name", "ba", "netns", n.b])
        try await ip(n.a, ["addr add 198.18.251.1/24 dev ab", "link set ab up", "link set lo up"])
        try await ip(n.b, ["addr add 198.18.251.2/24 dev ba", "link set ba up", "link set lo up"])
        let atA = try MigrationTunnel.between(local: "198.18.251.1", remote: "198.18.251.2")
        let atB = try MigrationTunnel.between(local: "198.18.251.2", remote: "198.18.251.1")
        try await ip(n.a, atA.setUp)
        try await ip(n.b, atB.setUp)
        try await sysctl(n.a, atA.sysctls)
        try await sysctl(n.b, atB.sysctls)
        return (atA, atB)
    }

    /// The service's namespace at a system: its address /32, a gateway every system has.
    func attach(_ namespace: String, address: String, to system: String, interface: String) async throws {
        try await runner.execute("ip", ["link", "add", "eth0", "netns", namespace, "type", "veth", "peer", "name", interface, "netns", system])
        try await ip(namespace, ["addr add \(address)/32 dev eth0", "link set eth0 up", "link set lo up", "route add 169.254.1.1 dev eth0", "route add default via 169.254.1.1"])
        try await ip(system, ["addr add 169.254.1.1/32 dev \(interface)", "link set \(interface) up"])
        try await sysctl(system, ["net.ipv4.conf.\(interface).proxy_arp=1"])
    }

    func queued() async throws {
        let n = names
        for namespace in [n.a, n.b, n.moved] { try await runner.execute("ip", ["netns", "add", namespace]) }
        let service = "198.19.250.11"
        let (atA, atB) = try await systems()
        try await attach(n.moved, address: service, to: n.b, interface: "svb")
        try await ip(n.b, try atB.holdArrivals(service))
        try await ip(n.a, try atA.routeAway(service))

        let output = FileManager.default.temporaryDirectory.appendingPathComponent("ums-tunnel-queued-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let listener = BackgroundProcess(
            Command("sh", ["-c", "exec nsenter --net=/run/netns/\(n.moved) /usr/bin/python3 -c \"$0\" > \(output) 2>&1",
                           "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 9001)); s.settimeout(8)\ns.recv(16); print('%.3f' % time.time())"]),
            logFile: output
        )
        try await Task.sleep(for: .milliseconds(300))
        // Sent while B still holds the address: A asks the tunnel for it, nobody answers yet.
        try await runner.execute("nsenter", ["--net=/run/netns/\(n.a)", "/usr/bin/python3", "-c",
                                             "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'knock', ('\(service)', 9001))"])
        try await Task.sleep(for: .milliseconds(300))
        try await ip(n.b, try atB.deliver(service, hostInterface: "svb"))
        let delivered = Date().timeIntervalSince1970
        try await listener.finish(timeout: .seconds(10))
        let arrived = try #require(Double(try String(contentsOfFile: output, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        print("tunnel: the queued datagram arrived \(String(format: "%.3f", arrived - delivered)) s after the delivery")
        #expect(arrived - delivered < 0.4, "it arrived \(arrived - delivered) s after B delivered the address")
    }

    func move() async throws {
        let n = names
        for namespace in [n.client, n.a, n.b, n.service] { try await runner.execute("ip", ["netns", "add", namespace]) }
        let service = "198.19.250.10"
        // The client reaches A; A and B share an underlay link; the service sits behind A.
        try await runner.execute("ip", ["link", "add", "c\(id)", "netns", n.client, "type", "veth", "peer", "name", "ac", "netns", n.a])
        try await ip(n.client, ["addr add 198.18.250.2/24 dev c\(id)", "link set c\(id) up", "link set lo up"])
        try await ip(n.a, ["addr add 198.18.250.1/24 dev ac", "link set ac up", "link set lo up"])
        let (atA, atB) = try await systems()
        try await attach(n.service, address: service, to: n.a, interface: "sva")
        try await ip(n.a, ["route replace \(service)/32 dev sva"])
        try await iptables(n.a, ["-t", "nat", "PREROUTING", "-d", "198.18.250.1", "-p", "tcp", "--dport", "9000", "-j", "DNAT", "--to-destination", "\(service):9000"])

        // Killed by the dump (its process ends there); restored at B detached from this test.
        _ = BackgroundProcess(inside(n.service, ["/usr/bin/python3", "-c", Self.server]), logFile: "/dev/null")
        try await Task.sleep(for: .milliseconds(500))
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("ums-tunnel-client-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let client = BackgroundProcess(
            Command("sh", ["-c", "exec nsenter --net=/run/netns/\(n.client) /usr/bin/python3 -c \"$0\" 198.18.250.1 5 > \(output) 2>&1", Self.client]),
            logFile: output
        )
        try await Task.sleep(for: .seconds(1.5))

        // The move: CRIU dumps the server with its connection, B gives the service its address
        // and the return path, A routes the address into the tunnel, CRIU restores at B.
        let pid = try #require(try await runner.output("ip", ["netns", "pids", n.service]).split(separator: "\n").first.map(String.init))
        let images = FileManager.default.temporaryDirectory.appendingPathComponent("ums-tunnel-images-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: images) }
        try await runner.execute("nsenter", ["--net=/run/netns/\(n.service)", "criu", "dump", "-t", pid, "-D", images, "--tcp-established", "-o", "dump.log"])
        try await runner.execute("ip", ["netns", "add", n.moved])
        try await attach(n.moved, address: service, to: n.b, interface: "svb")
        let path = try atB.returnPath(address: service, hostInterface: "svb")
        for rule in path.iptables { try await iptables(n.b, rule) }
        try await ip(n.b, path.ip + (try atB.holdArrivals(service)))
        try await ip(n.a, ["link del sva"] + (try atA.routeAway(service)))
        try await runner.execute("nsenter", ["--net=/run/netns/\(n.moved)", "criu", "restore", "-D", images, "--tcp-established", "-d", "-o", "restore.log"])
        try await ip(n.b, try atB.deliver(service, hostInterface: "svb"))

        try await client.finish(timeout: .seconds(30))
        let result = try String(contentsOfFile: output, encoding: .utf8).split(separator: " ")
        let replies = Int(result.first ?? "") ?? 0
        #expect(replies > 100, "the client got \(replies) replies in sequence over one connection")
        print("tunnel move: \(replies) replies in sequence, longest wait \(result.dropFirst().first ?? "?") s")
        #expect(try await runner.output("ip", ["netns", "pids", n.moved]) == pid, "the server runs at B, its PID kept")
    }
}
