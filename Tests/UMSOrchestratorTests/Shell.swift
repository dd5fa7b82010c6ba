import Foundation
import UMSModel

/// Runs a shell script on a thread of its own (never holding the threads tests share); throws
/// when it exits non-zero. The tar suites build and damage their archives with it.
func sh(_ script: String) async throws {
    let status: Int32 = await withCheckedContinuation { continuation in
        Thread {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-ec", script]
            guard (try? process.run()) != nil else { return continuation.resume(returning: -1) }
            process.waitUntilExit()
            continuation.resume(returning: process.terminationStatus)
        }.start()
    }
    guard status == 0 else { throw UMSError(.internalError, "script failed: \(script)") }
}
