import Foundation
#if canImport(Glibc)
import Glibc
#endif
import UMSModel

/// Checks a tree a peer's tar stream made (a container's root filesystem changes) before
/// anything runs from it: no device nodes but overlayfs whiteouts (character 0:0), no setuid or
/// setgid files, and nothing that is not a regular file, directory, symlink or whiteout. GNU tar
/// itself refuses members with `..`, strips leading `/`, and never writes through a symlink the
/// same archive made; `Archive.extract(untrusted:)` keeps no `trusted.*` extended attribute but
/// overlayfs' own.
public enum TreeCheck {
    public static func verify(_ root: String) throws(UMSError) {
        guard let walker = FileManager.default.enumerator(atPath: root) else { return }
        for case let relative as String in walker {
            let path = "\(root)/\(relative)"
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            let type = info.st_mode & S_IFMT
            func refuse(_ what: String) -> UMSError {
                UMSError(.forbidden, "refused the rootfs changes: \(relative) \(what)")
            }
            switch type {
            case S_IFREG, S_IFDIR, S_IFLNK:
                break
            case S_IFCHR where info.st_rdev == 0:
                break  // an overlayfs whiteout: a file the container deleted
            case S_IFCHR, S_IFBLK:
                throw refuse("is a device node")
            default:
                throw refuse("is a FIFO or socket")
            }
            if type == S_IFREG, info.st_mode & (S_ISUID | S_ISGID) != 0 {
                throw refuse("is setuid or setgid")
            }
        }
    }
}
