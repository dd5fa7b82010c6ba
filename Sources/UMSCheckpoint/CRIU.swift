import Foundation
import Logging
import UMSModel
import UMSOS

/// Probes CRIU once, before the first checkpoint, and fails with a message that says what to do.
public enum CRIUProbe {
    /// CRIU 4.2 is the first that dumps TCP/UDP sockets on kernels >= 6.16 (older ones fail with
    /// `Can't get 1:16 opt`), and 4.1 the first that understands the `[vvar_vclock]` area.
    public static let minimumVersion = "4.2"

    /// Finds the CRIU to use: `explicitPath`, else `/usr/local/sbin/criu` (what scripts/setup
    /// installs), else `criu` on PATH.
    public static func probe(explicitPath: String? = nil, runner: any CommandRunner, logger: Logger) async throws -> CRIUInfo {
        let candidates = explicitPath.map { [$0] } ?? ["/usr/local/sbin/criu", "criu"]
        var problems: [String] = []
        for candidate in candidates {
            if candidate.hasPrefix("/"), !FileSystem.exists(candidate) {
                problems.append("\(candidate): not found")
                continue
            }
            let versionText: String
            do {
                versionText = try await runner.output(candidate, ["--version"])
            } catch {
                problems.append("\(candidate): \(error)")
                continue
            }
            guard let version = parseVersion(versionText) else {
                problems.append("\(candidate): cannot read version from '\(versionText)'")
                continue
            }
            guard isAtLeast(version, minimumVersion) else {
                problems.append("\(candidate): version \(version) is older than \(minimumVersion), which is needed to checkpoint TCP/UDP sockets on this kernel")
                continue
            }
            do {
                _ = try await runner.run(Command(candidate, ["check"]))
            } catch {
                problems.append("\(candidate): 'criu check' failed: \(error)")
                continue
            }
            logger.info("criu probed", metadata: ["criu.path": "\(candidate)", "criu.version": "\(version)"])
            return CRIUInfo(path: candidate, version: version)
        }
        throw UMSError(
            .unsupported,
            "failed to find a usable CRIU (>= \(minimumVersion)); run scripts/setup as root to install one",
            cause: CommandFailure(problems.joined(separator: "; "))
        )
    }

    /// Reads `Version: 4.2.1` (first line of `criu --version`).
    public static func parseVersion(_ text: String) -> String? {
        for line in text.split(separator: "\n") where line.hasPrefix("Version:") {
            let version = line.dropFirst("Version:".count).trimmingCharacters(in: .whitespaces)
            return version.isEmpty ? nil : version
        }
        return nil
    }

    /// Compares dotted version numbers numerically.
    public static func isAtLeast(_ version: String, _ minimum: String) -> Bool {
        let lhs = version.split(separator: ".").map { Int($0.prefix { $0.isNumber }) ?? 0 }
        let rhs = minimum.split(separator: ".").map { Int($0) ?? 0 }
        for index in 0..<max(lhs.count, rhs.count) {
            let (a, b) = (index < lhs.count ? lhs[index] : 0, index < rhs.count ? rhs[index] : 0)
            if a != b { return a > b }
        }
        return true
    }
}
