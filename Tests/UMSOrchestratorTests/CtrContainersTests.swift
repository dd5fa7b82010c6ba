import Foundation
import Testing
import UMSModel
@testable import UMSOrchestrator

/// Containers made with `ctr run`, read from `ctr containers info` (containerd 1.6's output for
/// `ctr run -d --null-io localhost/ums/redis:latest cache`, the part UMS reads and more).
@Suite("Adopting ctr run containers (containerd)")
struct CtrContainersTests {
    static let digest = "sha256:" + String(repeating: "f8", count: 32)
    static let capabilities = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
        "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    ]

    static func info(_ change: (inout [String: Any], inout [String: Any]) -> Void = { _, _ in }) throws -> CtrContainerInfo {
        var spec: [String: Any] = [
            "ociVersion": "1.0.2-dev",
            "process": [
                "user": ["uid": 0, "gid": 0, "additionalGids": [0]],
                "args": ["redis-server", "--bind", "0.0.0.0", "--dir", "/data"],
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
                "cwd": "/", "capabilities": ["bounding": capabilities, "effective": capabilities],
                "rlimits": [["type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024]], "noNewPrivileges": true,
            ],
            "root": ["path": "rootfs"],
            "mounts": ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/run"].map { ["destination": $0, "type": "tmpfs", "source": "x"] },
            "linux": [
                "resources": ["devices": [["allow": false, "access": "rwm"]], "cpu": ["shares": 1024]],
                "cgroupsPath": "/default/cache",
                "namespaces": [["type": "pid"], ["type": "ipc"], ["type": "uts"], ["type": "mount"], ["type": "network"]],
                "maskedPaths": ["/proc/acpi"],
            ],
        ]
        var json: [String: Any] = [
            "ID": "cache", "Image": "localhost/ums/redis:latest",
            "Labels": ["io.containerd.image.config.stop-signal": "SIGTERM", "org.opencontainers.image.title": "redis", "team": "x", "ums.agent": "1"],
            "Runtime": ["Name": "io.containerd.runc.v2", "Options": ["type_url": "containerd.runc.v1.Options"]],
            "SnapshotKey": "cache", "Snapshotter": "overlayfs", "CreatedAt": "2026-12-01T18:51:22Z",
        ]
        change(&json, &spec)
        json["Spec"] = spec
        return try JSONDecoder().decode(CtrContainerInfo.self, from: JSONSerialization.data(withJSONObject: json))
    }

    @Test("a plain ctr run container: its command, environment, working directory, user and image (by manifest digest and the name it ran by); the image's labels and any ums.* label left out")
    func plain() throws {
        let specification = try CtrContainers.specification(try Self.info(), imageDigest: Self.digest, strict: true)
        #expect(specification.name == "cache")
        #expect(specification.command == ["redis-server", "--bind", "0.0.0.0", "--dir", "/data"])
        #expect(specification.environmentValue("LANG") == "C.UTF-8")
        #expect(specification.image == ImageReference(digest: Self.digest, source: "containerd image", format: .engine))
        #expect(specification.engine?.madeBy == .containerd)
        #expect(specification.engine?.user == "0:0")
        #expect(specification.engine?.imageName == "localhost/ums/redis:latest")
        #expect(specification.labels == ["team": "x"], "ums.* would steer the decision; image labels come back from the image")
        #expect(specification.limits.memoryBytes == nil)
    }

    @Test("a memory limit (ctr run --memory-limit) is carried")
    func memoryLimit() throws {
        let info = try Self.info { _, spec in
            var linux = spec["linux"] as! [String: Any]
            linux["resources"] = ["memory": ["limit": 64 << 20]]
            spec["linux"] = linux
        }
        #expect(try CtrContainers.specification(info, imageDigest: Self.digest, strict: true).limits.memoryBytes == 64 << 20)
    }

    @Test("what the destination cannot give it again is refused with every reason: host network, a joined namespace, extra mounts, capabilities not containerd's, devices, a terminal, another runtime or snapshotter, an image not in the store")
    func refusals() throws {
        let info = try Self.info { json, spec in
            json["Runtime"] = ["Name": "io.containerd.runsc.v1"]
            json["Snapshotter"] = "native"
            var linux = spec["linux"] as! [String: Any]
            linux["namespaces"] = [["type": "pid"], ["type": "ipc", "path": "/proc/1/ns/ipc"], ["type": "uts"], ["type": "mount"]]
            linux["devices"] = [["path": "/dev/kvm", "type": "c", "major": 10, "minor": 232]]
            spec["linux"] = linux
            var mounts = spec["mounts"] as! [[String: Any]]
            mounts.append(["destination": "/host", "type": "bind", "source": "/"])
            spec["mounts"] = mounts
            var process = spec["process"] as! [String: Any]
            process["capabilities"] = ["bounding": Self.capabilities + ["CAP_SYS_ADMIN"]]
            process["terminal"] = true
            spec["process"] = process
        }
        let error = #expect(throws: UMSError.self) { try CtrContainers.specification(info, imageDigest: nil, strict: true) }
        #expect(error?.code == .unsupported)
        for reason in ["runsc", "native snapshot", "--net-host", "--with-ns", "/host", "CAP_SYS_ADMIN", "--device", "--tty", "not in containerd's image store"] {
            #expect(error?.message.contains(reason) == true, "\(reason): \(error?.message ?? "")")
        }
        // Listing (not strict) still describes it.
        #expect((try? CtrContainers.specification(try Self.info(), imageDigest: Self.digest, strict: false)) != nil)
    }

    @Test("a dropped default capability is refused too (the destination's ctr would give it back)")
    func dropped() throws {
        let info = try Self.info { _, spec in
            var process = spec["process"] as! [String: Any]
            process["capabilities"] = ["bounding": Array(Self.capabilities.dropLast())]
            spec["process"] = process
        }
        let error = #expect(throws: UMSError.self) { try CtrContainers.specification(info, imageDigest: Self.digest, strict: true) }
        #expect(error?.message.contains("dropped: CAP_AUDIT_WRITE") == true)
    }

    @Test("hostile descriptions: an ID UMS cannot name, a command with a NUL, a negative memory limit, an image name with a newline")
    func hostile() throws {
        #expect(throws: UMSError.self) { try CtrContainers.specification(try Self.info { json, _ in json["ID"] = "../../etc" }, imageDigest: Self.digest, strict: false) }
        #expect(throws: (any Error).self) {
            try CtrContainers.specification(try Self.info { _, spec in
                var process = spec["process"] as! [String: Any]
                process["args"] = ["redis-server\u{0}--evil"]
                spec["process"] = process
            }, imageDigest: Self.digest, strict: false)
        }
        let negative = try Self.info { _, spec in
            var linux = spec["linux"] as! [String: Any]
            linux["resources"] = ["memory": ["limit": -1]]
            spec["linux"] = linux
        }
        #expect(try CtrContainers.specification(negative, imageDigest: Self.digest, strict: true).limits.memoryBytes == nil)
        let badName = try Self.info { json, _ in json["Image"] = "evil\nname" }
        #expect(try CtrContainers.specification(badName, imageDigest: Self.digest, strict: true).engine?.imageName == nil)
        // A description that is not one: decoding fails, nothing traps.
        #expect(throws: (any Error).self) { try JSONDecoder().decode(CtrContainerInfo.self, from: Data(#"{"ID":1}"#.utf8)) }
    }

    @Test("containerd's spec as a protobuf Any: type URL (field 1) and value (field 2), lengths as varints")
    func protobufAny() {
        let small = CtrContainers.protobufAny(typeURL: "t/x", value: Data("{}".utf8))
        #expect(Array(small) == [0x0A, 3] + Array("t/x".utf8) + [0x12, 2] + Array("{}".utf8))
        let large = CtrContainers.protobufAny(typeURL: "t", value: Data(repeating: 0x41, count: 200))
        #expect(Array(large.prefix(6)) == [0x0A, 1, 0x74, 0x12, 0xC8, 0x01], "200 = 0xC8 0x01 as a varint")
        #expect(large.count == 6 + 200)
    }

    @Test("the checkpoint index names the image, runtime and snapshotter containerd's restore reads")
    func checkpointIndex() throws {
        let blob = CtrContainers.Descriptor(mediaType: CtrContainers.MediaType.criu, digest: Self.digest, size: 10)
        let index = CtrContainers.checkpointIndex(imageName: "localhost/ums-image:f8", criu: blob, config: blob, changes: blob)
        #expect(index.schemaVersion == 2)
        #expect(index.annotations?["org.opencontainers.image.ref.name"] == "localhost/ums-image:f8")
        #expect(index.annotations?["io.containerd.checkpoint.runtime"] == "io.containerd.runc.v2")
        #expect(index.annotations?["io.containerd.checkpoint.snapshotter"] == "overlayfs")
    }

    @Test("a peer's image layout: exactly the announced image, one manifest of a known type and a bounded size; anything else refused")
    func imageLayout() throws {
        func layout(_ manifests: [[String: Any]]) throws -> Data { try JSONSerialization.data(withJSONObject: ["schemaVersion": 2, "manifests": manifests]) }
        let good: [String: Any] = ["mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": Self.digest, "size": 424]
        #expect(try CtrContainers.checkImageLayout(try layout([good]), expected: Self.digest).size == 424)
        var other = good
        other["digest"] = "sha256:" + String(repeating: "00", count: 32)
        var huge = good
        huge["size"] = 1 << 40
        var index = good
        index["mediaType"] = "application/vnd.oci.image.index.v1+json"
        for bad in [try layout([good, good]), try layout([other]), try layout([huge]), try layout([index]), try layout([]), Data("not json".utf8), Data(count: 70_000)] {
            #expect(throws: UMSError.self) { try CtrContainers.checkImageLayout(bad, expected: Self.digest) }
        }
    }

    @Test("ctr's image list: names and manifest digests; headers and malformed rows ignored")
    func images() {
        let text = """
        REF                        TYPE                                                 DIGEST                                                                  SIZE      PLATFORMS   LABELS
        localhost/ums/redis:latest application/vnd.docker.distribution.manifest.v2+json \(Self.digest) 121.9 MiB linux/amd64 -
        broken
        x y notadigest
        """
        let images = Ctr.parseImages(text)
        #expect(images.count == 1)
        #expect(images.first?.name == "localhost/ums/redis:latest")
        #expect(images.first?.digest == Self.digest)
    }

    @Test("ctr run's containers are adopted from the default namespace; the task's checkpoint exits it into UMS's images directory")
    func arguments() {
        let adopted = Ctr(address: "/run/tb/a/engine.sock", namespace: "ums-tba").adopted
        #expect(adopted.containerIDsArguments() == ["--address", "/run/tb/a/engine.sock", "--namespace", "default", "containers", "list", "--quiet"])
        #expect(adopted.checkpointTaskArguments(id: "c", imagePath: "/i", workPath: "/w").suffix(7) == ["checkpoint", "--exit", "--image-path", "/i", "--work-path", "/w", "c"])
        #expect(adopted.restoreArguments(id: "c", ref: "r").suffix(5) == ["restore", "--live", "--rw", "c", "r"])
        #expect(adopted.createArguments(image: "img", id: "c", environment: ["A=1"], workingDirectory: "/", memoryBytes: nil, command: ["--x"]).suffix(9)
            == ["create", "--env", "A=1", "--cwd", "/", "--", "img", "c", "--x"], "a command starting with -- is not taken for a flag")
    }
}
