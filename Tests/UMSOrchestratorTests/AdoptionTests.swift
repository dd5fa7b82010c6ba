import Foundation
import Testing
import UMSModel
@testable import UMSOrchestrator

/// A container its engine made without UMS (`docker run`), read from the engine's inspect.
@Suite("Adopting engine containers")
struct AdoptionTests {
    static let image = "sha256:" + String(repeating: "ab", count: 32)

    /// Docker 20.10's inspect of `docker run -d --name cache --restart always -p 18110:8080 -e A=1 -u 999 --cap-add NET_ADMIN -m 64m IMAGE /bin/counter --port 8080`, the part UMS reads, and more.
    static func inspect(_ change: (inout [String: Any]) -> Void = { _ in }) throws -> DockerAPI.ContainerInspect {
        var json: [String: Any] = [
            "Id": String(repeating: "c", count: 64), "Name": "/cache", "Image": image,
            "State": ["Status": "running", "Pid": 4242],
            "Config": [
                "Cmd": ["/bin/counter", "--port", "8080"], "Entrypoint": NSNull(), "Env": ["A=1", "PATH=/usr/bin:/bin"],
                "WorkingDir": "", "User": "999", "Hostname": "c0ffee123456",
                "Labels": ["team": "x", "bad": "two\nlines"], "ExposedPorts": ["8080/tcp": [String: Any]()],
            ],
            "HostConfig": [
                "PortBindings": ["8080/tcp": [["HostIp": "", "HostPort": "18110"]]], "Privileged": false, "CapAdd": ["NET_ADMIN"],
                "NetworkMode": "default", "Devices": [Any](), "Memory": 64 << 20, "NanoCpus": 0, "PidsLimit": NSNull(),
                "RestartPolicy": ["Name": "always", "MaximumRetryCount": 0], "PidMode": "", "IpcMode": "private",
            ],
            "Mounts": [Any](),
            "NetworkSettings": ["IPAddress": "172.17.0.2"],
        ]
        change(&json)
        return try JSONDecoder().decode(DockerAPI.ContainerInspect.self, from: JSONSerialization.data(withJSONObject: json))
    }

    @Test("what the engine records becomes the Specification: image by ID, command, environment, user, ports, limits, capabilities, restart policy; labels UMS cannot carry stay behind")
    func specification() throws {
        let specification = try EngineOrchestrator.specification(adopting: try Self.inspect(), name: "cache", kind: .docker, strict: true)
        #expect(specification.image == ImageReference(digest: Self.image, source: "docker image", format: .engine))
        #expect(specification.command == ["/bin/counter", "--port", "8080"])
        #expect(specification.environment == ["A=1", "PATH=/usr/bin:/bin"])
        #expect(specification.workingDirectory == "/")
        #expect(specification.ports == [PortMapping(hostPort: 18110, containerPort: 8080)])
        #expect(specification.limits.memoryBytes == 64 << 20)
        #expect(specification.security?.addCapabilities == ["CAP_NET_ADMIN"])
        #expect(specification.labels == ["team": "x"])
        #expect(specification.engine == EngineConfiguration(madeBy: .docker, entrypoint: [], user: "999", hostname: "c0ffee123456", restartPolicy: .always))
        // It goes on the wire to the destination: it passes the peer's checks.
        let decoded = try JSONDecoder().decode(Specification.self, from: JSONEncoder().encode(specification))
        #expect(decoded == specification)
        // The destination's engine gets the same.
        let body = try EngineOrchestrator.createBody(specification, dialect: .docker, systemName: "b")
        #expect(body.image == Self.image)
        #expect(body.user == "999")
        #expect(body.hostConfig.capAdd == ["CAP_NET_ADMIN"] && body.hostConfig.capDrop == nil, "the engine's defaults, as at the source")
    }

    @Test("what cannot move to another system is refused with every reason, before anything freezes", arguments: [
        ("privileged", "privileged"), ("host network", "shares a network namespace"), ("a device", "host devices"),
        ("a host file", "mounts a host file"), ("a random host port", "a port its engine chose"), ("no image ID", "not a sha256 digest"),
    ])
    func refusals(_ what: String, _ reason: String) throws {
        let inspect = try Self.inspect { json in
            var host = json["HostConfig"] as! [String: Any]
            switch what {
            case "privileged": host["Privileged"] = true
            case "host network": host["NetworkMode"] = "host"
            case "a device": host["Devices"] = [["PathOnHost": "/dev/fuse"]]
            case "a host file": json["Mounts"] = [["Type": "bind", "Source": "/etc/hostname", "Destination": "/etc/hostname", "RW": true]]
            case "a random host port": host["PortBindings"] = ["8080/tcp": [["HostIp": "", "HostPort": ""]]]
            default: json["Image"] = "../../etc"
            }
            json["HostConfig"] = host
        }
        let error = #expect(throws: UMSError.self) {
            try EngineOrchestrator.specification(adopting: inspect, name: "cache", kind: .docker, strict: true)
        }
        #expect(error?.code == .unsupported)
        #expect(error?.message.contains(reason) == true, "\(error?.message ?? "")")
        // Listed all the same (not strict): `ums ps` shows it, the migration refuses it.
        #expect((try? EngineOrchestrator.specification(adopting: inspect, name: "cache", kind: .docker, strict: false)) != nil || what == "no image ID")
    }

    @Test("tmpfs mounts are carried (mount point, size, mode) and made anew at the destination; unreadable options are refused, hostile mount points never carried")
    func tmpfs() throws {
        let inspect = try Self.inspect { json in
            var host = json["HostConfig"] as! [String: Any]
            host["Tmpfs"] = ["/scratch": "size=64m,mode=1777,noexec", "/run/app": ""]
            json["HostConfig"] = host
        }
        let specification = try EngineOrchestrator.specification(adopting: inspect, name: "cache", kind: .docker, strict: true)
        #expect(specification.tmpfs == [TmpfsMount(destination: "/run/app"), TmpfsMount(destination: "/scratch", sizeBytes: 64 << 20, mode: 0o1777)])
        #expect(try EngineOrchestrator.createBody(specification, dialect: .docker, systemName: "b").hostConfig.tmpfs == ["/run/app": "", "/scratch": "size=67108864,mode=1777"])
        #expect(try EngineOrchestrator.libpodCreateBody(specification, systemName: "b").mounts?.first == .init(destination: "/run/app", type: "tmpfs", source: "tmpfs", options: []))
        let unreadable = try Self.inspect { json in
            var host = json["HostConfig"] as! [String: Any]
            host["Tmpfs"] = ["/scratch": "size=lots"]
            json["HostConfig"] = host
        }
        let error = #expect(throws: UMSError.self) { try EngineOrchestrator.specification(adopting: unreadable, name: "cache", kind: .docker, strict: true) }
        #expect(error?.message.contains("its tmpfs at /scratch") == true)
        #expect(TmpfsMount.parse(destination: "/x", options: "size=9999999999999g") == nil, "an overflowing size is not read")
        for destination in ["relative", "/a/../../etc", "/x:/y"] {
            var bad = specification
            bad.tmpfs = [TmpfsMount(destination: destination)]
            #expect(throws: UMSError.self, "\(destination)") { try bad.validate() }
        }
    }

    @Test("named volumes are carried: name, mount point, read-only; the destination's engine mounts the same")
    func volumes() throws {
        let inspect = try Self.inspect { json in
            json["Mounts"] = [["Type": "volume", "Name": "cachedata", "Source": "/var/lib/docker/volumes/cachedata/_data", "Destination": "/data", "RW": true],
                              ["Type": "volume", "Name": "conf", "Destination": "/etc/app", "RW": false]]
        }
        let specification = try EngineOrchestrator.specification(adopting: inspect, name: "cache", kind: .docker, strict: true)
        #expect(specification.volumes == [VolumeMount(name: "cachedata", destination: "/data"), VolumeMount(name: "conf", destination: "/etc/app", readOnly: true)])
        let body = try EngineOrchestrator.createBody(specification, dialect: .docker, systemName: "b")
        #expect(body.hostConfig.binds == ["cachedata:/data", "conf:/etc/app:ro"])
        let podman = try EngineOrchestrator.libpodCreateBody(specification, systemName: "b")
        #expect(podman.volumes == [.init(name: "cachedata", dest: "/data", options: []), .init(name: "conf", dest: "/etc/app", options: ["ro"])])
        // A host directory (bind mount) is carried too, to the same path.
        let directory = FileManager.default.temporaryDirectory.path + "/ums-bind-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let withBind = try EngineOrchestrator.specification(adopting: try Self.inspect { json in
            json["Mounts"] = [["Type": "bind", "Source": directory, "Destination": "/srv", "RW": false]]
        }, name: "cache", kind: .docker, strict: true)
        #expect(withBind.binds == [BindMount(hostPath: directory, destination: "/srv", readOnly: true)])
        #expect(try EngineOrchestrator.createBody(withBind, dialect: .docker, systemName: "b").hostConfig.binds == ["\(directory):/srv:ro"])
        #expect(try EngineOrchestrator.libpodCreateBody(withBind, systemName: "b").mounts == [.init(destination: "/srv", type: "bind", source: directory, options: ["rbind", "ro"])])
        // A hostile name or mount point never reaches a path or a bind string.
        for (name, destination) in [("../x", "/data"), ("a/b", "/data"), ("ok", "/data:/etc"), ("ok", "relative"), ("ok", "/a/../../etc")] {
            var bad = specification
            bad.volumes = [VolumeMount(name: name, destination: destination)]
            #expect(throws: UMSError.self, "\(name) \(destination)") { try bad.validate() }
        }
    }

    @Test("hostile engine values are refused, never carried: a user with a newline, an entrypoint with NUL")
    func hostile() throws {
        for change in [
            { (json: inout [String: Any]) in var c = json["Config"] as! [String: Any]; c["User"] = "root\n-A INPUT"; json["Config"] = c },
            { (json: inout [String: Any]) in var c = json["Config"] as! [String: Any]; c["Entrypoint"] = ["/bin/sh\u{0}x"]; json["Config"] = c },
        ] {
            let inspect = try Self.inspect(change)
            #expect(throws: UMSError.self) { try EngineOrchestrator.specification(adopting: inspect, name: "cache", kind: .docker, strict: true) }
        }
        var hostile = try EngineOrchestrator.specification(adopting: try Self.inspect(), name: "cache", kind: .docker, strict: true)
        hostile.engine?.user = "a b"
        #expect(throws: (any Error).self) { try JSONDecoder().decode(Specification.self, from: JSONEncoder().encode(hostile)) }
    }
}
