import Foundation
#if canImport(Glibc)
import Glibc
#endif
import UMSModel

/// A host directory a migrating container bind-mounts, made at the destination for a peer: only
/// below a root the operator allowed, never through a symbolic link that leads elsewhere, and
/// never one that exists already (so removing it again on an abort removes only what was made).
public enum HostDirectory {
    /// The path with every symbolic link resolved.
    static func resolved(_ path: String) -> String {
        URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    }

    /// Makes `path` (and missing parents, mode 0755). Fails if it exists, or if it would not be
    /// within one of `roots` once links are resolved.
    public static func create(_ path: String, within roots: [String]) throws(UMSError) {
        try MountPath.validate(path, what: "bind mount host path")
        let allowed = roots.map(resolved)
        func inside(_ candidate: String) -> Bool { allowed.contains { MountPath.isWithin(candidate, $0) } }
        // The deepest ancestor that exists decides where the path really leads.
        var ancestor = (path as NSString).deletingLastPathComponent
        while !FileSystem.exists(ancestor) && ancestor != "/" { ancestor = (ancestor as NSString).deletingLastPathComponent }
        let leadsTo = resolved(ancestor)
        // Either already inside an allowed root, or on the way to one that does not exist yet.
        guard inside(leadsTo) || allowed.contains(where: { MountPath.isWithin($0, leadsTo) }) else {
            throw UMSError(.forbidden, "admission refused (rule allowedBindPaths): \(path) leads outside the allowed paths")
        }
        do {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        } catch {
            throw UMSError(.internalError, "failed to create the parents of \(path)", cause: error)
        }
        guard mkdir(path, 0o755) == 0 else {
            let code = errno
            throw code == EEXIST
                ? UMSError(.exists, "failed to create \(path): it exists on this system")
                : UMSError(.internalError, "failed to create \(path): errno \(code)")
        }
        guard inside(resolved(path)) else {
            rmdir(path)
            throw UMSError(.forbidden, "admission refused (rule allowedBindPaths): \(path) leads outside the allowed paths")
        }
    }
}
