import UMSModel
import UMSOS

/// What an adapter remembers about one of its containers beyond what the runtime knows.
protocol RegisteredContainer: Codable, Sendable {
    var specification: Specification { get }
    /// The migration holding the control lock (paper Step 8), if any.
    var lockedBy: String? { get set }
}

/// An adapter's containers by name, kept in memory and persisted as JSON, with the control lock
/// every adapter enforces the same way. Value type: the owning actor serialises access.
struct ContainerRegistry<Record: RegisteredContainer> {
    let systemName: String
    let store: JSONStore<Record>
    private(set) var records: [String: Record] = [:]

    init(systemName: String, directory: String) throws {
        self.systemName = systemName
        store = try JSONStore(directory: directory)
        for record in store.loadAll() { records[record.specification.name] = record }
    }

    var names: [String] { records.keys.sorted() }

    func contains(_ name: String) -> Bool { records[name] != nil }

    func record(_ name: String) throws(UMSError) -> Record {
        guard let record = records[name] else {
            throw UMSError(.notFound, "no container named '\(name)' on system \(systemName)")
        }
        return record
    }

    mutating func save(_ record: Record) throws {
        records[record.specification.name] = record
        try store.save(record, key: record.specification.name)
    }

    mutating func forget(_ name: String) {
        records[name] = nil
        store.delete(key: name)
    }

    /// Refuses a create that cannot succeed, before anything is made: a bad name, no command,
    /// a name or a host port already taken here, an image this system does not hold.
    func checkCreatable(_ specification: Specification, imageHeld: Bool) throws(UMSError) {
        guard !specification.command.isEmpty || !(specification.engine?.entrypoint.isEmpty ?? true) else {
            throw UMSError(.invalidArgument, "failed to create container \(specification.name): no command given")
        }
        try specification.validate()  // its name, command, ports, limits, … in range
        guard !contains(specification.name) else {
            throw UMSError(.exists, "failed to create container: '\(specification.name)' already exists on system \(systemName)")
        }
        guard imageHeld else {
            throw UMSError(.notFound, "failed to create container \(specification.name): image \(specification.image.digest) is not on system \(systemName)")
        }
        let taken = publishedPorts
        if let clash = specification.ports.first(where: { taken.contains($0.hostPort) }) {
            throw UMSError(.exists, "failed to create container \(specification.name): port \(clash.hostPort) is already published on system \(systemName)")
        }
    }

    /// Host ports already published by a container of this system.
    var publishedPorts: Set<Int> { Set(records.values.flatMap { $0.specification.ports.map(\.hostPort) }) }

    /// Refuses a control operation while another migration holds the lock.
    func checkUnlocked(_ name: String, migration: String?, operation: String) throws {
        if let holder = try record(name).lockedBy, holder != migration {
            throw UMSError(.invalidState, "failed to \(operation) '\(name)': it is migrating (migration \(holder)); try again when the migration has ended")
        }
    }

    mutating func lock(_ name: String, migration: String) throws {
        var record = try record(name)
        if let holder = record.lockedBy, holder != migration {
            throw UMSError(.invalidState, "failed to migrate '\(name)': it is already migrating (migration \(holder))")
        }
        record.lockedBy = migration
        try save(record)
    }

    mutating func unlock(_ name: String, migration: String) throws {
        var record = try record(name)
        guard record.lockedBy == migration else { return }
        record.lockedBy = nil
        try save(record)
    }
}
