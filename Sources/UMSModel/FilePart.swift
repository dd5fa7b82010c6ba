/// The parts of a checkpoint that cross, each as one stream.
public enum FilePart: String, Codable, Sendable, CaseIterable {
    /// The checkpoint's images (memory pages, process tree, fds, sockets, mounts, …), streamed
    /// while CRIU writes them.
    case images
    /// The container's own changes to its root filesystem (files it created or modified), as a tar
    /// stream taken while it is frozen.
    case changes
}
