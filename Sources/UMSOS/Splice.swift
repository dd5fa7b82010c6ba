import NIOCore

extension NIOAsyncChannel where Inbound == ByteBuffer, Outbound == ByteBuffer {
    /// Copies both ways between two connections until both sides have finished; a half-close
    /// passes through. Both are closed at the end. (The Frontman's TCP side, the TLS relays.)
    /// `forward` / `back` are told of each chunk from `a` / from `b`, before it is written on.
    public static func splice(
        _ a: NIOAsyncChannel, _ b: NIOAsyncChannel, forward: (@Sendable () -> Void)? = nil, back: (@Sendable () -> Void)? = nil
    ) async {
        try? await a.executeThenClose { aIn, aOut in
            try await b.executeThenClose { bIn, bOut in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for try await chunk in aIn {
                            forward?()
                            try await bOut.write(chunk)
                        }
                        bOut.finish()
                    }
                    group.addTask {
                        for try await chunk in bIn {
                            back?()
                            try await aOut.write(chunk)
                        }
                        aOut.finish()
                    }
                    try await group.waitForAll()
                }
            }
        }
    }
}
