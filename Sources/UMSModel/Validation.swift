/// Bounds on what a Specification may say. Everything a peer or a client sends is checked
/// against them when it is decoded: a value that passed decoding is known to be in range, so no
/// later conversion traps and no string reaches a path, an argument vector or a rule file unchecked.
public enum SpecificationBounds {
    public static let maxCommandArguments = 256
    public static let maxArgumentBytes = 8192
    public static let maxEnvironmentEntries = 512
    public static let maxEnvironmentEntryBytes = 32_768
    public static let maxPorts = 64
    public static let maxLabels = 64
    public static let maxLabelKeyBytes = 128
    public static let maxLabelValueBytes = 1024
    public static let maxCapabilities = 41
    public static let maxMemoryBytes: Int64 = 1 << 40
    public static let maxCPUs = 1024.0
    public static let maxPids = 4_194_304
    public static let maxProcessCount = 1_000_000
    public static let maxPathBytes = 4096
    public static let maxVolumes = 32
    public static let maxPodMembers = 16
    public static let maxPlacementConstraints = 16
    public static let maxPlacementConstraintBytes = 256
}

/// A placement constraint, as cluster schedulers write them: `KEY==VALUE` or `KEY!=VALUE`, the
/// key a dotted name (`node.hostname`, `node.labels.zone`), the value printable without spaces.
public enum PlacementConstraint {
    public static func validate(_ constraint: String) throws(UMSError) {
        let shown = String(constraint.prefix(64))
        guard constraint.utf8.count <= SpecificationBounds.maxPlacementConstraintBytes else {
            throw UMSError(.invalidArgument, "invalid placement constraint '\(shown)…': longer than \(SpecificationBounds.maxPlacementConstraintBytes) bytes")
        }
        let separator = constraint.range(of: "==") ?? constraint.range(of: "!=")
        guard let separator else {
            throw UMSError(.invalidArgument, "invalid placement constraint '\(shown)': expected KEY==VALUE or KEY!=VALUE (e.g. node.hostname==worker-1)")
        }
        let key = constraint[..<separator.lowerBound], value = constraint[separator.upperBound...]
        func plain(_ text: Substring, _ extra: String) -> Bool {
            !text.isEmpty && text.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || extra.unicodeScalars.contains($0)) }
        }
        guard plain(key, "._-"), plain(value, "._-:/") else {
            throw UMSError(.invalidArgument, "invalid placement constraint '\(shown)': the key is letters, digits, '.', '_' and '-'; the value also ':' and '/'")
        }
    }
}

/// Checks a migration id: it names directories at the destination, so it is kept to `m-` and a
/// small alphabet.
public enum MigrationID {
    public static let maxLength = 48

    public static func validate(_ id: String) throws(UMSError) {
        let body = id.dropFirst(2)
        let allowed = body.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
        guard id.hasPrefix("m-"), !body.isEmpty, id.utf8.count <= maxLength, allowed else {
            throw UMSError(.invalidArgument, "invalid migration id '\(String(id.prefix(64)))': expected 'm-' and up to \(maxLength - 2) characters of a-z, 0-9 and '-'")
        }
    }
}

extension String {
    /// Free of NUL and line breaks: safe inside one line of a file or one argument.
    var isSingleLine: Bool { !unicodeScalars.contains { $0 == "\0" || $0 == "\n" || $0 == "\r" } }
}

extension ImageReference {
    public func validate() throws(UMSError) {
        let hex = digest.dropFirst("sha256:".count)
        guard digest.hasPrefix("sha256:"), hex.count == 64, hex.unicodeScalars.allSatisfy({ ("0"..."9").contains($0) || ("a"..."f").contains($0) }) else {
            throw UMSError(.invalidArgument, "invalid image digest '\(String(digest.prefix(80)))': expected sha256:<64 hex digits>")
        }
        if let sizeBytes, sizeBytes < 0 { throw UMSError(.invalidArgument, "invalid image size \(sizeBytes)") }
        if let source, source.utf8.count > SpecificationBounds.maxPathBytes || !source.isSingleLine {
            throw UMSError(.invalidArgument, "invalid image source: not a single line of at most \(SpecificationBounds.maxPathBytes) bytes")
        }
    }
}

extension PortMapping {
    public func validate() throws(UMSError) {
        guard (1...65535).contains(hostPort), (1...65535).contains(containerPort) else {
            throw UMSError(.invalidArgument, "invalid port mapping \(hostPort):\(containerPort): each port must be 1-65535")
        }
        guard proto == "tcp" else {
            throw UMSError(.invalidArgument, "invalid port protocol '\(String(proto.prefix(32)))': only tcp is supported")
        }
        guard application == nil || application == "http" else {
            throw UMSError(.invalidArgument, "invalid port application '\(String((application ?? "").prefix(32)))': expected http or none")
        }
    }
}

extension SecurityOptions {
    public func validate() throws(UMSError) {
        guard addCapabilities.count <= SpecificationBounds.maxCapabilities else {
            throw UMSError(.invalidArgument, "invalid security options: more than \(SpecificationBounds.maxCapabilities) capabilities")
        }
        for capability in addCapabilities {
            let name = capability.dropFirst(4)
            guard capability.hasPrefix("CAP_"), (1...32).contains(name.count), name.unicodeScalars.allSatisfy({ ("A"..."Z").contains($0) || $0 == "_" }) else {
                throw UMSError(.invalidArgument, "invalid capability '\(String(capability.prefix(48)))': expected CAP_ and upper-case letters")
            }
        }
    }
}

extension ResourceLimits {
    public func validate() throws(UMSError) {
        if let memoryBytes, !(1 << 20 ... SpecificationBounds.maxMemoryBytes).contains(memoryBytes) {
            throw UMSError(.invalidArgument, "invalid memory limit \(memoryBytes): expected 1 MiB to 1 TiB")
        }
        if let cpus, !(cpus.isFinite && cpus > 0 && cpus <= SpecificationBounds.maxCPUs) {
            throw UMSError(.invalidArgument, "invalid CPU limit \(cpus): expected more than 0 and at most \(Int(SpecificationBounds.maxCPUs))")
        }
        if let pids, !(1...SpecificationBounds.maxPids).contains(pids) {
            throw UMSError(.invalidArgument, "invalid PID limit \(pids): expected 1 to \(SpecificationBounds.maxPids)")
        }
    }
}

extension Specification {
    /// Everything in range (see `SpecificationBounds`); called whenever one is decoded.
    public func validate() throws(UMSError) {
        typealias Bounds = SpecificationBounds
        try ContainerName.validate(name)
        try image.validate()
        // An adopted container may run its image's entrypoint alone.
        let minimum = (engine?.entrypoint.isEmpty ?? true) ? 1 : 0
        guard (minimum...Bounds.maxCommandArguments).contains(command.count),
              command.allSatisfy({ $0.utf8.count <= Bounds.maxArgumentBytes && !$0.unicodeScalars.contains("\0") })
        else {
            throw UMSError(.invalidArgument, "invalid command: 1-\(Bounds.maxCommandArguments) arguments of at most \(Bounds.maxArgumentBytes) bytes, without NUL")
        }
        guard environment.count <= Bounds.maxEnvironmentEntries else {
            throw UMSError(.invalidArgument, "invalid environment: more than \(Bounds.maxEnvironmentEntries) entries")
        }
        for entry in environment {
            let name = entry.prefix { $0 != "=" }
            let validName = name.first.map { $0 == "_" || $0.isASCII && $0.isLetter } ?? false
                && name.unicodeScalars.allSatisfy { $0 == "_" || ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
            guard validName, name.count < entry.count, entry.utf8.count <= Bounds.maxEnvironmentEntryBytes, !entry.unicodeScalars.contains("\0") else {
                throw UMSError(.invalidArgument, "invalid environment entry '\(String(entry.prefix(48)))': expected NAME=VALUE, NAME of letters, digits and '_'")
            }
        }
        guard workingDirectory.hasPrefix("/"), workingDirectory.utf8.count <= Bounds.maxPathBytes, workingDirectory.isSingleLine,
              !workingDirectory.split(separator: "/").contains("..")
        else {
            throw UMSError(.invalidArgument, "invalid working directory '\(String(workingDirectory.prefix(64)))': expected an absolute path without '..'")
        }
        guard ports.count <= Bounds.maxPorts else { throw UMSError(.invalidArgument, "invalid ports: more than \(Bounds.maxPorts)") }
        for port in ports { try port.validate() }
        guard Set(ports.map(\.hostPort)).count == ports.count else {
            throw UMSError(.invalidArgument, "invalid ports: a host port is published twice")
        }
        try limits.validate()
        guard (0...Bounds.maxProcessCount).contains(processCount) else {
            throw UMSError(.invalidArgument, "invalid process count \(processCount)")
        }
        guard labels.count <= Bounds.maxLabels else { throw UMSError(.invalidArgument, "invalid labels: more than \(Bounds.maxLabels)") }
        for (key, value) in labels { try Self.validateLabel(key, value) }
        try security?.validate()
        try engine?.validate()
        let volumes = self.volumes ?? []
        guard volumes.count <= Bounds.maxVolumes else { throw UMSError(.invalidArgument, "invalid volumes: more than \(Bounds.maxVolumes)") }
        for volume in volumes { try volume.validate() }
        guard Set(volumes.map(\.name)).count == volumes.count, Set(volumes.map(\.destination)).count == volumes.count else {
            throw UMSError(.invalidArgument, "invalid volumes: a name or a mount point twice")
        }
        let binds = self.binds ?? []
        guard binds.count <= Bounds.maxVolumes else { throw UMSError(.invalidArgument, "invalid bind mounts: more than \(Bounds.maxVolumes)") }
        for bind in binds {
            try MountPath.validate(bind.hostPath, what: "bind mount host path")
            try MountPath.validate(bind.destination, what: "bind mount point")
        }
        let tmpfs = self.tmpfs ?? []
        guard tmpfs.count <= Bounds.maxVolumes else { throw UMSError(.invalidArgument, "invalid tmpfs mounts: more than \(Bounds.maxVolumes)") }
        for mount in tmpfs {
            try MountPath.validate(mount.destination, what: "tmpfs mount point")
            guard (mount.sizeBytes ?? 0) >= 0, (0...0o7777).contains(mount.mode ?? 0) else {
                throw UMSError(.invalidArgument, "invalid tmpfs mount \(mount.destination): a size of 0 or more bytes, a mode of at most 7777 (octal)")
            }
        }
        guard pod != nil || Set(tmpfs.map(\.destination) + binds.map(\.destination) + volumes.map(\.destination)).count == tmpfs.count + binds.count + volumes.count else {
            throw UMSError(.invalidArgument, "invalid tmpfs mounts: a mount point twice")
        }
        let placement = self.placement ?? []
        guard placement.count <= Bounds.maxPlacementConstraints else {
            throw UMSError(.invalidArgument, "invalid placement: more than \(Bounds.maxPlacementConstraints) constraints")
        }
        for constraint in placement {
            try PlacementConstraint.validate(constraint)
        }
        // A pod's own lists gather its members' (each checked on its own, below).
        guard pod != nil || (Set(binds.map(\.hostPath)).count == binds.count
              && Set(binds.map(\.destination) + volumes.map(\.destination)).count == binds.count + volumes.count)
        else {
            throw UMSError(.invalidArgument, "invalid bind mounts: a host path or a mount point twice")
        }
        if let pod {
            guard (1...Bounds.maxPodMembers).contains(pod.members.count) else {
                throw UMSError(.invalidArgument, "invalid pod: 1-\(Bounds.maxPodMembers) containers")
            }
            guard pod.sharedNamespaces.allSatisfy(PodSpecification.sharable.contains), Set(pod.sharedNamespaces).count == pod.sharedNamespaces.count else {
                throw UMSError(.invalidArgument, "invalid pod: shared namespaces are some of \(PodSpecification.sharable.sorted().joined(separator: ", "))")
            }
            guard Set(pod.members.map(\.name)).count == pod.members.count else {
                throw UMSError(.invalidArgument, "invalid pod: a container name twice")
            }
            for member in pod.members {
                guard member.pod == nil else { throw UMSError(.invalidArgument, "invalid pod: a pod inside a pod") }
                try member.validate()
            }
        }
    }
}

extension VolumeMount {
    public func validate() throws(UMSError) {
        try VolumeName.validate(name)
        try MountPath.validate(destination, what: "volume mount point")
    }
}

/// A path in a mount: absolute, not `/`, without `..`, `.` or `:` (which would split a bind
/// string), single-line, bounded.
public enum MountPath {
    public static func validate(_ path: String, what: String) throws(UMSError) {
        let parts = path.split(separator: "/")
        guard path.hasPrefix("/"), !parts.isEmpty, path.utf8.count <= SpecificationBounds.maxPathBytes, path.isSingleLine,
              !path.unicodeScalars.contains("\0"), !parts.contains(".."), !parts.contains("."), !path.contains(":")
        else {
            throw UMSError(.invalidArgument, "invalid \(what) '\(String(path.prefix(64)))': expected an absolute path other than / without '..', '.' or ':'")
        }
    }

    /// Whether `path` is `root` or below it, component by component.
    public static func isWithin(_ path: String, _ root: String) -> Bool {
        let (p, r) = (path.split(separator: "/"), root.split(separator: "/"))
        return p.count >= r.count && Array(p.prefix(r.count)) == r
    }
}

/// A volume's name: it names a directory and an engine object at the destination.
public enum VolumeName {
    public static func validate(_ name: String) throws(UMSError) {
        let allowed = name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "_.-".unicodeScalars.contains($0) }
        guard (1...128).contains(name.utf8.count), allowed, let first = name.unicodeScalars.first, first != ".", first != "-" else {
            throw UMSError(.invalidArgument, "invalid volume name '\(String(name.prefix(64)))': 1-128 characters of a-z, A-Z, 0-9, '_', '.', '-', not starting with '.' or '-'")
        }
    }
}

extension Specification {
    /// An engine's labels as a Specification carries them: informational, so those UMS cannot
    /// carry (multi-line values, odd keys) stay behind, and at most `maxLabels` come along.
    public static func carriableLabels(_ labels: [String: String]) -> [String: String] {
        var carried: [String: String] = [:]
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) where carried.count < SpecificationBounds.maxLabels {
            if (try? validateLabel(key, value)) != nil { carried[key] = value }
        }
        return carried
    }

    /// One label: a key of letters, digits and `._-/`, a single-line value, both bounded.
    public static func validateLabel(_ key: String, _ value: String) throws(UMSError) {
        typealias Bounds = SpecificationBounds
        let keyOK = (1...Bounds.maxLabelKeyBytes).contains(key.utf8.count)
            && key.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "._-/".unicodeScalars.contains($0) }
        guard keyOK, value.utf8.count <= Bounds.maxLabelValueBytes, value.isSingleLine else {
            throw UMSError(.invalidArgument, "invalid label '\(String(key.prefix(48)))': keys of letters, digits and ._-/, single-line values of at most \(Bounds.maxLabelValueBytes) bytes")
        }
    }
}

extension EngineConfiguration {
    public func validate() throws(UMSError) {
        typealias Bounds = SpecificationBounds
        guard entrypoint.count <= Bounds.maxCommandArguments,
              entrypoint.allSatisfy({ $0.utf8.count <= Bounds.maxArgumentBytes && !$0.unicodeScalars.contains("\0") })
        else {
            throw UMSError(.invalidArgument, "invalid entrypoint: at most \(Bounds.maxCommandArguments) arguments of at most \(Bounds.maxArgumentBytes) bytes, without NUL")
        }
        if let user {
            let parts = user.split(separator: ":", omittingEmptySubsequences: false)
            let ok = (1...2).contains(parts.count) && parts.allSatisfy { part in
                (1...64).contains(part.count) && part.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0) }
            }
            guard ok else { throw UMSError(.invalidArgument, "invalid user '\(String(user.prefix(48)))': expected NAME or UID[:GROUP]") }
        }
        if let hostname { try HostAddress.validate(hostname) }
        if let imageName { try Self.validateImageName(imageName) }
    }

    /// `[registry/]path[:tag]` of letters, digits and `._-/:` (no digest, no leading `-` or `/`),
    /// at most 255 bytes: what may name an image on an engine.
    public static func validateImageName(_ name: String) throws(UMSError) {
        let ok = (1...255).contains(name.utf8.count) && !name.hasPrefix("-") && !name.hasPrefix("/") && !name.contains("..") && !name.contains("//")
            && name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "._-/:".unicodeScalars.contains($0) }
        guard ok else { throw UMSError(.invalidArgument, "invalid image name '\(String(name.prefix(64)))': expected [registry/]path[:tag]") }
    }
}

/// Checks a host a peer names (where a migrated service now runs): it goes into the hosts file
/// and the endpoint hook's environment, so it must be an IP address or a DNS name, nothing else.
public enum HostAddress {
    public static func validate(_ host: String) throws(UMSError) {
        let scalars = host.unicodeScalars
        let ipv6 = host.contains(":") && scalars.allSatisfy { ("0"..."9").contains($0) || ("a"..."f").contains($0) || ("A"..."F").contains($0) || $0 == ":" || $0 == "." }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        let name = !host.contains(":") && labels.allSatisfy { label in
            (1...63).contains(label.count) && label.first != "-" && label.last != "-"
                && label.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
        }
        guard (1...253).contains(host.utf8.count), ipv6 || name else {
            throw UMSError(.invalidArgument, "invalid host '\(String(host.prefix(64)))': expected an IP address or a DNS name")
        }
    }
}

/// A dotted IPv4 address, strictly: four decimal octets without leading zeros or anything else.
public enum IPv4 {
    public static func octets(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var octets: [UInt8] = []
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy(\.isASCII), let byte = UInt8(part), String(byte) == part else { return nil }
            octets.append(byte)
        }
        return octets
    }

    public static func value(_ text: String) -> UInt32? {
        octets(text).map { $0.reduce(0) { $0 << 8 | UInt32($1) } }
    }
}

extension IPv4 {
    /// `A.B.C.D/N` inside 198.19.0.0/16 (UMS's container range), N from 16 to 24, the address
    /// the block's first: its first address and prefix length; nil otherwise.
    /// 198.19.0.0/16: the range every rule of UMS treats as its containers'.
    public static let containerRange: (base: UInt32, prefix: Int) = (0xC613_0000, 16)

    /// Whether `address` (dotted, strict) lies in UMS's container range; its value if so.
    public static func containerAddress(_ address: String) -> UInt32? {
        value(address).flatMap { contains(containerRange, $0) ? $0 : nil }
    }

    public static func containerBlock(_ text: String) -> (base: UInt32, prefix: Int)? {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2, let base = value(parts[0]), let prefix = Int(parts[1]), (16...24).contains(prefix),
              contains(containerRange, base), base & ~(UInt32.max << UInt32(32 - prefix)) == 0
        else { return nil }
        return (base, prefix)
    }

    /// Whether `address` lies in the block starting at `base` with `prefix` bits.
    public static func contains(_ block: (base: UInt32, prefix: Int), _ address: UInt32) -> Bool {
        let mask = block.prefix == 0 ? 0 : UInt32.max << UInt32(32 - block.prefix)
        return address & mask == block.base
    }
}
