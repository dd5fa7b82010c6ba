/// What the Coordinator learned about the host's CRIU at start-up (`CRIUProbe`, in the
/// checkpoint layer, finds it; the runtimes below hand it to their own checkpoint code).
public struct CRIUInfo: Codable, Sendable, Equatable {
    public var path: String
    public var version: String

    public init(path: String, version: String) {
        self.path = path
        self.version = version
    }
}
