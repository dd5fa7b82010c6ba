import Foundation
import Logging
import NIOCore
import UMSModel
import UMSOS

/// UMS's own containers on containerd: the embedded orchestrator's bundles, overlays and network
/// namespaces, with containerd (and its runc shim) running them through `ctr`, on its own socket
/// and in a namespace of its own. Their checkpoint through containerd is not wired (they move
/// with the service- or container-level approach).
public typealias ContainerdBundles = BundleOrchestrator<ContainerdRuntime>

/// The containerd adapter: UMS's own containers (`ContainerdBundles`) and the containers
/// `ctr run` made in containerd's `default` namespace, which it lists, adopts and moves with
/// containerd's own checkpoint/restore (orchestrator-level, between two containerd systems):
/// the task's CRIU images written where the stream sends them from, the root filesystem's
/// changes as containerd's layer, the image by its manifest digest. At the destination the
/// container is made the way `ctr run` makes one (containerd's defaults, the image's
/// configuration, the carried command, environment and working directory) — never from a spec
/// the peer sent — and containerd restores the task into it.
public actor ContainerdOrchestrator: Orchestrator, CheckpointingOrchestrator, LeftoverSweeping {
    /// What UMS remembers of a `ctr run` container while a migration holds it.
    struct Record: RegisteredContainer {
        var specification: Specification
        var lockedBy: String?
        /// Source: the image naming its root filesystem's changes, taken after the dump (kept
        /// for a rollback). Destination: nil.
        var changesRef: String?
        /// Destination: false until containerd restored it.
        var restored: Bool
    }

    public nonisolated let kind = OrchestratorKind.containerd
    public nonisolated let checkpointsOwnContainers = false
    nonisolated let bundles: ContainerdBundles
    /// `ctr` in the `default` namespace.
    let ctr: Ctr
    let runner: any CommandRunner
    let logger: Logger
    let directory: String
    var registry: ContainerRegistry<Record>

    public init(
        systemName: String, stateDirectory: String, advertiseHost: String, criu: CRIUInfo, runner: any CommandRunner, logger: Logger, ctr: Ctr,
        block: AddressBlock = .standard
    ) throws {
        bundles = try ContainerdBundles(
            systemName: systemName, stateDirectory: stateDirectory, advertiseHost: advertiseHost, criu: criu,
            runner: runner, logger: logger, block: block, runtime: { _ in ContainerdRuntime(ctr: ctr) }
        )
        self.ctr = ctr.adopted
        self.runner = runner
        self.logger = logger
        directory = "\(stateDirectory)/ctr-containers"
        registry = try ContainerRegistry(systemName: systemName, directory: "\(stateDirectory)/ctr-containers-index")
    }

    public func prepare() async throws { try await bundles.prepare() }
    public func runtimeVersion() async -> String { await bundles.runtimeVersion() }
    public nonisolated var criuVersion: String? { bundles.criuVersion }
    public func sweepLeftovers() async { await bundles.sweepLeftovers() }

    func work(_ name: String) -> String { "\(directory)/\(name)" }

    // MARK: Images: UMS's root filesystems in the bundles' store, `ctr run`'s in containerd's

    public func hasImage(_ image: ImageReference) async -> Bool {
        image.format == .engine ? await imageNames(image).isEmpty == false : await bundles.hasImage(image)
    }

    /// This system's names for a containerd image (by its manifest digest).
    func imageNames(_ image: ImageReference) async -> [String] {
        let text = (try? await runner.output(ctr.binary, ctr.imagesArguments())) ?? ""
        return Ctr.parseImages(text).filter { $0.digest == image.digest }.map(\.name)
    }

    /// containerd's own export (an OCI image layout) of the image, streamed from a file.
    public func exportImage(_ image: ImageReference, consume: @Sendable (ByteBuffer) async throws -> Void) async throws {
        guard image.format == .engine else { return try await bundles.exportImage(image, consume: consume) }
        guard let name = await imageNames(image).first else {
            throw UMSError(.notFound, "failed to export image \(image.digest): containerd holds no such image")
        }
        let file = "\(directory)/.export-\(UUID().uuidString).tar"
        try FileSystem.makeDirectory(directory)
        defer { FileSystem.remove(file) }
        try await runner.execute(ctr.binary, ctr.exportImageArguments(file: file, name: name))
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: file))
        defer { try? handle.close() }
        while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
            try await consume(ByteBuffer(data: data))
        }
    }

    /// A peer's image layout: unpacked, checked (only content-addressed blobs and one image,
    /// the announced one), its index rewritten to name the image as this system chooses
    /// (`localhost/ums-image:<digest>`: a peer never names, or renames, images here), imported;
    /// containerd checks every blob against its digest as it ingests it.
    public func importImage<Chunks: AsyncSequence & Sendable>(_ chunks: Chunks, expected: ImageReference) async throws -> ImageReference
        where Chunks.Element == ByteBuffer
    {
        guard expected.format == .engine else { return try await bundles.importImage(chunks, expected: expected) }
        try expected.validate()
        let staging = "\(directory)/.import-\(UUID().uuidString)"
        try FileSystem.makeDirectory(staging)
        defer { FileSystem.remove(staging) }
        let layout = "\(staging)/layout"
        try FileSystem.makeDirectory(layout)
        let summary = try await Archive.extract(chunks, into: layout, untrusted: true)
        try TreeCheck.verify(layout)
        let manifest = try CtrContainers.checkImageLayout(
            (try? FileSystem.read("\(layout)/index.json")) ?? Data(), expected: expected.digest
        )
        for entry in (try? FileSystem.contents(of: layout)) ?? [] where !["blobs", "index.json", "oci-layout"].contains(entry) {
            FileSystem.remove("\(layout)/\(entry)")
        }
        let name = Self.importedName(expected)
        var named = manifest
        named.annotations = ["io.containerd.image.name": name]
        try FileSystem.writeAtomically(try JSONEncoder().encode(CtrContainers.Index(manifests: [named])), to: "\(layout)/index.json")
        let archive = "\(staging)/layout.tar"
        try await runner.execute("tar", ["-C", layout, "-cf", archive, "."])
        try await runner.execute(ctr.binary, ctr.importArguments(file: archive))
        guard await imageNames(expected).contains(name) else {
            throw UMSError(.invalidArgument, "failed to receive image \(expected.digest): containerd holds another image under its name (corrupted transfer?)")
        }
        var received = expected
        received.sizeBytes = summary.bytes
        return received
    }

    static func importedName(_ image: ImageReference) -> String {
        "localhost/ums-image:\(image.digest.dropFirst("sha256:".count).prefix(32))"
    }

    public func importDirectory(_ directory: String) async throws -> ImageReference {
        try await bundles.importDirectory(directory)
    }

    // MARK: Containers

    /// `ctr run`'s containers UMS can name (a bundle's name wins).
    func adoptedNames() async -> [String] {
        let text = (try? await runner.output(ctr.binary, ctr.containerIDsArguments())) ?? ""
        let ours = Set(await bundles.names())
        return text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { id in
            !id.isEmpty && !ours.contains(id) && (try? ContainerName.validate(id)) != nil
        }
    }

    public func list() async throws -> [ContainerInfo] {
        let adopted = Set(await adoptedNames()).union(registry.names)
        return try await bundles.list() + inspectAll(adopted.sorted())
    }

    /// containerd's description of a `ctr run` container.
    func info(_ name: String) async throws -> (info: CtrContainerInfo, spec: Data) {
        let text: String
        do {
            text = try await runner.output(ctr.binary, ctr.containerInfoArguments(id: name))
        } catch {
            throw UMSError(.notFound, "no container named '\(name)' on this system (nor in containerd's default namespace)", cause: error)
        }
        let data = Data(text.utf8)
        guard data.count <= 1 << 20 else { throw UMSError(.invalidArgument, "failed to read '\(name)': containerd's description is over 1 MiB") }
        do {
            let info = try JSONDecoder().decode(CtrContainerInfo.self, from: data)
            let raw = try JSONDecoder().decode([String: JSONValue].self, from: data)
            return (info, try JSONEncoder().encode(raw["Spec"] ?? .null))
        } catch {
            throw UMSError(.internalError, "failed to read containerd's description of '\(name)'", cause: error)
        }
    }

    func adoptedSpecification(_ name: String, strict: Bool) async throws -> Specification {
        let (info, _) = try await info(name)
        let digest = Ctr.parseImages((try? await runner.output(ctr.binary, ctr.imagesArguments())) ?? "").first { $0.name == info.image }?.digest
        return try CtrContainers.specification(info, imageDigest: digest, strict: strict)
    }

    public func inspect(_ name: String) async throws -> ContainerInfo {
        if await bundles.owns(name) { return try await bundles.inspect(name) }
        let record = try? registry.record(name)
        if let record, !record.restored, record.changesRef == nil {
            // A destination's, before containerd restored it.
            return ContainerInfo(name: name, state: .created, specification: record.specification, migratingIn: record.lockedBy, orchestrator: kind)
        }
        var specification: Specification
        if let record {
            specification = record.specification
        } else {
            specification = try await adoptedSpecification(name, strict: false)
        }
        let task = Ctr.parseTasks((try? await runner.output(ctr.binary, ctr.tasksArguments())) ?? "", id: name)
        let state = task?.0 ?? .stopped
        if state == .running || state == .paused, let text = try? await runner.output(ctr.binary, ctr.processesArguments(id: name)) {
            specification.processCount = Ctr.parseProcessCount(text)
        }
        return ContainerInfo(
            name: name, state: state, specification: specification, pid: task?.1, endpoints: [],
            migratingIn: record?.lockedBy, orchestrator: kind
        )
    }

    public func specification(of name: String) async throws -> Specification {
        if await bundles.owns(name) { return try await bundles.specification(of: name) }
        var specification: Specification
        if registry.contains(name) {
            specification = try registry.record(name).specification
        } else {
            specification = try await adoptedSpecification(name, strict: true)
        }
        if let text = try? await runner.output(ctr.binary, ctr.processesArguments(id: name)) {
            specification.processCount = Ctr.parseProcessCount(text)
        }
        return specification
    }

    /// UMS's own go to the bundles. A `ctr run` container is made here only by a migration, for
    /// its restore: nothing exists in containerd until then.
    public func create(_ specification: Specification, start: Bool, migration: String?) async throws -> ContainerInfo {
        guard specification.engine?.madeBy == .containerd else {
            return try await bundles.create(specification, start: start, migration: migration)
        }
        guard !start, let migration else {
            throw UMSError(.invalidArgument, "failed to create '\(specification.name)': a container made with ctr is made here only by a migration's restore; use ctr run")
        }
        try registry.checkCreatable(specification, imageHeld: await hasImage(specification.image))
        guard await !bundles.owns(specification.name), (try? await runner.output(ctr.binary, ctr.containerInfoArguments(id: specification.name))) == nil else {
            throw UMSError(.exists, "failed to create container: '\(specification.name)' already exists on this system")
        }
        try registry.save(Record(specification: specification, lockedBy: migration, changesRef: nil, restored: false))
        return try await inspect(specification.name)
    }

    public func restart(_ name: String, migration: String?) async throws {
        if await bundles.owns(name) { return try await bundles.restart(name, migration: migration) }
        throw UMSError(.unsupported, "failed to restart '\(name)': it was made with ctr; restart it with ctr")
    }

    public func delete(_ name: String, migration: String?) async throws {
        if await bundles.owns(name) { return try await bundles.delete(name, migration: migration) }
        if registry.contains(name) {
            try registry.checkUnlocked(name, migration: migration, operation: "remove")
        } else {
            _ = try await info(name)  // notFound if containerd has none either
        }
        await removeEverything(name)
        logger.info("container deleted", metadata: ["container": "\(name)", "madeBy": "ctr"])
    }

    /// Kills and removes the container, its task and snapshot, the checkpoints UMS kept for it
    /// and its record. Idempotent.
    func removeEverything(_ name: String) async {
        _ = try? await runner.run(Command(ctr.binary, ctr.killArguments(id: name)))
        _ = try? await runner.run(Command(ctr.binary, ctr.deleteTaskArguments(id: name)))
        _ = try? await runner.run(Command(ctr.binary, ctr.deleteContainerArguments(id: name)))
        if let ref = (try? registry.record(name))?.changesRef {
            _ = try? await runner.run(Command(ctr.binary, ctr.removeImageArguments(ref)))
        }
        FileSystem.remove(work(name))
        registry.forget(name)
    }

    /// The control lock on a `ctr run` container adopts it: its Specification, checked
    /// strictly, into the registry.
    public func lock(_ name: String, migration: String) async throws {
        if await bundles.owns(name) { return try await bundles.lock(name, migration: migration) }
        if registry.contains(name) { return try registry.lock(name, migration: migration) }
        let specification = try await adoptedSpecification(name, strict: true)
        try registry.save(Record(specification: specification, lockedBy: migration, changesRef: nil, restored: true))
        logger.info("container adopted for a migration", metadata: ["container": "\(name)", "madeBy": "ctr", "migration.id": "\(migration)"])
    }

    /// Unlocked, a `ctr run` container is containerd's alone again (a rollback at the source,
    /// the end at the destination).
    public func unlock(_ name: String, migration: String) async throws {
        if await bundles.owns(name) { return try await bundles.unlock(name, migration: migration) }
        try registry.unlock(name, migration: migration)
        if let record = try? registry.record(name), record.lockedBy == nil {
            if let ref = record.changesRef { _ = try? await runner.run(Command(ctr.binary, ctr.removeImageArguments(ref))) }
            FileSystem.remove(work(name))
            registry.forget(name)
        }
    }

    // MARK: containerd's checkpoint/restore (`ctr run` containers only)

    func adoptedRecord(_ name: String, _ operation: String) async throws -> Record {
        if await bundles.owns(name) {
            throw UMSError(.unsupported, "failed to \(operation) '\(name)': containerd's own checkpoint is wired only for containers made with ctr run; UMS's own move with the service- or container-level approach")
        }
        return try registry.record(name)
    }

    /// The checkpoint is the freeze: containerd's checkpoint of a paused task fails, and with
    /// `--exit` the task stops at the dump.
    public func freeze(_ name: String) async throws {
        _ = try await adoptedRecord(name, "freeze")
    }

    /// The task's dump into the images directory (it exits with it), a copy of the images kept
    /// for a rollback (hard links), then its root filesystem's changes as containerd's layer.
    public func checkpoint(_ name: String, request: CheckpointRequest) async throws -> BackgroundProcess? {
        guard request.lazyPages == nil else {
            throw UMSError(.unsupported, "failed to checkpoint \(name): post-copy through containerd is not implemented; use stop-and-copy")
        }
        var record = try await adoptedRecord(name, "checkpoint")
        try FileSystem.makeDirectory(request.imagesDirectory)
        try FileSystem.makeDirectory(request.workDirectory)
        do {
            try await runner.execute(ctr.binary, ctr.checkpointTaskArguments(id: name, imagePath: request.imagesDirectory, workPath: request.workDirectory))
        } catch {
            throw UMSError.wrap(error, .internalError, "failed to checkpoint \(name)").withDetail(LogFile.tail("\(request.workDirectory)/dump.log"))
        }
        let kept = "\(work(name))/criu"
        FileSystem.remove(kept)
        try FileSystem.makeDirectory(kept)
        try await runner.execute("cp", ["-al", request.imagesDirectory + "/.", kept + "/"])
        _ = try await keepChanges(name, &record)
        return nil
    }

    /// Takes the container's root filesystem changes as a checkpoint of containerd's (named in
    /// the record before it is taken). containerd takes them only of a container without a task;
    /// the task that exited with the dump holds nothing any more.
    func keepChanges(_ name: String, _ record: inout Record) async throws -> String {
        _ = try? await runner.run(Command(ctr.binary, ctr.deleteStoppedTaskArguments(id: name)))
        let ref = "localhost/ums-changes:\(UUID().uuidString.lowercased())"
        record.changesRef = ref
        try registry.save(record)
        try await runner.execute(ctr.binary, ctr.checkpointChangesArguments(id: name, ref: ref))
        return ref
    }

    /// The layer of the container's root filesystem changes, as containerd wrote it (gzip).
    public func exportChanges(_ name: String, consume: @Sendable (ByteBuffer) async throws -> Void) async throws -> Int64 {
        let record = try await adoptedRecord(name, "send the changes of")
        guard let ref = record.changesRef else {
            throw UMSError(.invalidState, "failed to send the changes of '\(name)': it was not checkpointed")
        }
        let layer = try await changesLayer(ref)
        return try await Archive.stream(ctr.binary, ctr.contentArguments(digest: layer.digest), what: "read the changes of \(name)", consume: consume).bytes
    }

    /// The layer in a changes checkpoint this system made.
    func changesLayer(_ ref: String) async throws -> CtrContainers.Descriptor {
        guard let digest = Ctr.parseImages(try await runner.output(ctr.binary, ctr.imagesArguments())).first(where: { $0.name == ref })?.digest else {
            throw UMSError(.notFound, "failed to read checkpoint \(ref): containerd holds no such image")
        }
        let text = try await runner.output(ctr.binary, ctr.contentArguments(digest: digest))
        guard let index = try? JSONDecoder().decode(CtrContainers.Index.self, from: Data(text.utf8)),
              let layer = index.manifests.first(where: { $0.mediaType == CtrContainers.MediaType.layer })
        else {
            throw UMSError(.internalError, "failed to read checkpoint \(ref): it holds no layer")
        }
        return layer
    }

    /// A peer's changes: unpacked into a directory of this system's and checked (no device
    /// nodes, FIFOs or setuid files); the layer containerd applies is made from it here.
    public func importChanges<Chunks: AsyncSequence & Sendable>(_ name: String, _ chunks: Chunks) async throws -> StreamSummary
        where Chunks.Element == ByteBuffer
    {
        let record = try await adoptedRecord(name, "receive the changes of")
        guard !record.restored else { throw UMSError(.invalidState, "failed to import rootfs changes into '\(name)': it already runs") }
        let changes = "\(work(name))/changes"
        FileSystem.remove(changes)
        try FileSystem.makeDirectory(changes)
        let summary = try await Archive.extract(chunks, into: changes, untrusted: true, gzip: true)
        do {
            try TreeCheck.verify(changes)
        } catch {
            FileSystem.remove(changes)
            throw error
        }
        return summary
    }

    /// Destination: makes the container as `ctr run` would (to read the spec containerd gives
    /// it here), removes it again, and restores from a checkpoint composed here — the CRIU
    /// images that arrived, that spec, the checked changes — naming this system's copy of the
    /// image.
    public func restore(_ name: String, request: RestoreRequest) async throws -> ContainerInfo {
        guard !request.lazyPages else { throw UMSError(.unsupported, "failed to restore \(name): post-copy through containerd is not implemented") }
        var record = try await adoptedRecord(name, "restore")
        guard !record.restored else { throw UMSError(.invalidState, "failed to restore '\(name)': it already runs") }
        let specification = record.specification
        let images = Ctr.parseImages((try? await runner.output(ctr.binary, ctr.imagesArguments())) ?? "")
        let names = images.filter { $0.digest == specification.image.digest }.map(\.name)
        guard let local = names.first else {
            throw UMSError(.notFound, "failed to restore \(name): image \(specification.image.digest) is not on this system")
        }
        var imageName = local
        if let wanted = specification.engine?.imageName {
            if names.contains(wanted) {
                imageName = wanted
            } else if !images.contains(where: { $0.name == wanted }), (try? await runner.execute(ctr.binary, ctr.tagArguments(local, wanted))) != nil {
                imageName = wanted  // the name it ran by at the source, free here
            }
        }
        try await runner.execute(ctr.binary, ctr.createArguments(
            image: imageName, id: name, environment: specification.environment, workingDirectory: specification.workingDirectory,
            memoryBytes: specification.limits.memoryBytes, command: specification.command
        ))
        let spec: Data
        do {
            let made = try await info(name)
            let user = made.info.spec.process?.user.map { "\($0.uid):\($0.gid)" }
            guard user == specification.engine?.user else {
                throw UMSError(.unsupported, "failed to restore \(name): its image runs it as \(user ?? "root") here but it ran as \(specification.engine?.user ?? "root") (ctr run --user cannot be given again)")
            }
            spec = made.spec
        } catch {
            _ = try? await runner.run(Command(ctr.binary, ctr.deleteContainerArguments(id: name)))
            throw error
        }
        _ = try await runner.run(Command(ctr.binary, ctr.deleteContainerArguments(id: name)))
        // The layer containerd applies, made here from the checked tree (or empty).
        let changes = "\(work(name))/changes"
        try FileSystem.makeDirectory(changes)
        let layer = "\(work(name))/changes.tar.gz"
        try await runner.execute("tar", ["-C", changes, "--numeric-owner", "--xattrs", "--xattrs-include=*", "-czf", layer, "."])
        let ref = try await composeCheckpoint(name, images: request.imagesDirectory, spec: spec, changesLayer: layer, imageName: imageName)
        do {
            try await restoreTask(name, ref: ref, labels: specification.labels)
        } catch {
            await removeImage(ref)
            throw error
        }
        await removeImage(ref)
        record.restored = true
        try registry.save(record)
        let info = try await inspect(name)
        guard info.state == .running else {
            throw UMSError(.internalError, "failed to restore \(name): it is \(info.state.rawValue) after the restore")
        }
        return info
    }

    /// Rollback at the source: a task that still runs (the dump failed) is left alone; one that
    /// exited with the dump is restored in place from the images kept, its own spec and the
    /// changes checkpoint, as containerd restores any checkpoint.
    public func resume(_ name: String) async throws {
        var record = try await adoptedRecord(name, "resume")
        if Ctr.parseTasks((try? await runner.output(ctr.binary, ctr.tasksArguments())) ?? "", id: name)?.0 == .running { return }
        guard FileSystem.isDirectory("\(work(name))/criu") else {
            throw UMSError(.internalError, "failed to resume \(name): it stopped before its images were kept (the dump's own directory still holds them)")
        }
        // A Coordinator killed after the dump, before (or while) the changes were kept: kept now.
        let layer: CtrContainers.Descriptor
        if let ref = record.changesRef, let kept = try? await changesLayer(ref) {
            layer = kept
        } else {
            layer = try await changesLayer(try await keepChanges(name, &record))
        }
        let (info, spec) = try await info(name)
        let kept = "\(work(name))/changes-kept.tar.gz"
        try await write(digest: layer.digest, to: kept)
        let ref = try await composeCheckpoint(name, images: "\(work(name))/criu", spec: spec, changesLayer: kept, imageName: info.image)
        _ = try? await runner.run(Command(ctr.binary, ctr.deleteStoppedTaskArguments(id: name)))
        do {
            try await runner.execute(ctr.binary, ctr.deleteContainerArguments(id: name))
            try await restoreTask(name, ref: ref, labels: record.specification.labels)
        } catch {
            // The checkpoint stays (its image, `ref`): containerd can restore from it by hand.
            throw UMSError.wrap(error, .internalError, "failed to restore \(name) in place; its checkpoint is kept in containerd as \(ref)")
        }
        await removeImage(ref)
    }

    func removeImage(_ ref: String) async {
        _ = try? await runner.run(Command(ctr.binary, ctr.removeImageArguments(ref)))
    }

    /// A blob of containerd's content store into a file.
    func write(digest: String, to file: String) async throws {
        guard FileManager.default.createFile(atPath: file, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw UMSError(.internalError, "failed to write \(file)")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        defer { try? handle.close() }
        try await Archive.stream(ctr.binary, ctr.contentArguments(digest: digest), what: "read \(digest.prefix(19)) from containerd") { chunk in
            try handle.write(contentsOf: Data(buffer: chunk))
        }
    }

    /// containerd makes the container from the checkpoint and restores its task; the restored
    /// network namespace's loopback comes back down (runc restores it so), so it is raised.
    func restoreTask(_ name: String, ref: String, labels: [String: String]) async throws {
        do {
            try await runner.execute(ctr.binary, ctr.restoreArguments(id: name, ref: ref))
        } catch {
            _ = try? await runner.run(Command(ctr.binary, ctr.deleteContainerArguments(id: name)))
            throw UMSError.wrap(error, .internalError, "failed to restore \(name) through containerd")
        }
        guard let pid = Ctr.parseTasks(try await runner.output(ctr.binary, ctr.tasksArguments()), id: name)?.1 else {
            throw UMSError(.internalError, "failed to restore \(name): containerd shows no task after the restore")
        }
        try await runner.execute("nsenter", ["--target", String(pid), "--net", "ip", "link", "set", "lo", "up"])
        if !labels.isEmpty { _ = try? await runner.run(Command(ctr.binary, ctr.labelArguments(id: name, labels: labels))) }
    }

    /// Writes the checkpoint containerd restores from as an image layout and imports it under
    /// a name of its own: the CRIU images (a tar), the spec (a protobuf `Any`), the changes (a
    /// gzip layer, moved in), the index naming `imageName`.
    func composeCheckpoint(_ name: String, images: String, spec: Data, changesLayer: String, imageName: String) async throws -> String {
        let layout = "\(work(name))/layout"
        FileSystem.remove(layout)
        try FileSystem.makeDirectory("\(layout)/blobs/sha256")
        defer { FileSystem.remove(layout) }
        func blob(_ mediaType: String, from file: String) throws -> CtrContainers.Descriptor {
            let (digest, size) = try Archive.sha256(ofFile: file)
            try FileManager.default.moveItem(atPath: file, toPath: "\(layout)/blobs/sha256/\(digest)")
            return CtrContainers.Descriptor(mediaType: mediaType, digest: "sha256:\(digest)", size: size)
        }
        try await runner.execute("tar", ["-C", images, "-cf", "\(layout)/criu.part", "."])
        try FileManager.default.moveItem(atPath: changesLayer, toPath: "\(layout)/changes.part")
        try FileSystem.writeAtomically(CtrContainers.protobufAny(typeURL: CtrContainers.specTypeURL, value: spec), to: "\(layout)/spec.part")
        let index = CtrContainers.checkpointIndex(
            imageName: imageName,
            criu: try blob(CtrContainers.MediaType.criu, from: "\(layout)/criu.part"),
            config: try blob(CtrContainers.MediaType.config, from: "\(layout)/spec.part"),
            changes: try blob(CtrContainers.MediaType.layer, from: "\(layout)/changes.part")
        )
        try FileSystem.writeAtomically(try JSONEncoder().encode(index), to: "\(layout)/index.json")
        try FileSystem.writeAtomically(Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8), to: "\(layout)/oci-layout")
        let archive = "\(work(name))/checkpoint.tar"
        defer { FileSystem.remove(archive) }
        try await runner.execute("tar", ["-C", layout, "-cf", archive, "."])
        let ref = "localhost/ums-checkpoint:\(UUID().uuidString.lowercased())"
        try await runner.execute(ctr.binary, ctr.importArguments(file: archive, indexName: ref))
        return ref
    }
}

/// containerd runs the bundles.
public struct ContainerdRuntime: BundleRuntime {
    public static let kind = OrchestratorKind.containerd
    public static let absoluteRoot = true
    public static let carriedApproaches: Set<Approach> = [.container]
    public let ctr: Ctr

    public init(ctr: Ctr) {
        self.ctr = ctr
    }

    public func version(runner: any CommandRunner) async throws -> String {
        do {
            return Ctr.parseServerVersion(try await runner.output(ctr.binary, ctr.versionArguments()))
        } catch {
            throw UMSError(.unavailable, "failed to reach containerd at \(ctr.address); start it (scripts/testbed does) or give --engine-socket", cause: error)
        }
    }

    public func start(_ name: String, bundle: String, log: String, runner: any CommandRunner) async throws {
        _ = try await runner.run(Command(ctr.binary, ctr.runArguments(id: name, config: "\(bundle)/config.json"), discardOutput: true))
    }

    public func killAndDelete(_ name: String, runner: any CommandRunner) async {
        _ = try? await runner.run(Command(ctr.binary, ctr.killArguments(id: name)))
        _ = try? await runner.run(Command(ctr.binary, ctr.deleteTaskArguments(id: name)))
        _ = try? await runner.run(Command(ctr.binary, ctr.deleteContainerArguments(id: name)))
    }

    public func state(_ name: String, runner: any CommandRunner) async -> (ContainerInfo.State, pid: Int?)? {
        let tasks = (try? await runner.output(ctr.binary, ctr.tasksArguments())) ?? ""
        return Ctr.parseTasks(tasks, id: name).map { ($0.0, $0.1) }
    }

    public func processCount(_ name: String, runner: any CommandRunner) async -> Int? {
        (try? await runner.output(ctr.binary, ctr.processesArguments(id: name))).map(Ctr.parseProcessCount)
    }
}
