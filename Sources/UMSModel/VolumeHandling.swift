/// What a migration does with the container's named volumes and bind-mounted host directories.
public enum VolumeHandling: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    /// Their contents move with the service: the bulk while it still runs, what changed after the
    /// freeze; at the destination they are made with the same names and paths (which must not
    /// exist there yet), and the source's are removed once the service runs there.
    case copy
    /// Left where they are: the destination mounts its own volumes of the same names (made empty
    /// when missing) and host directories that must already exist; nothing is removed anywhere.
    case skip

    public var description: String { rawValue }
}
