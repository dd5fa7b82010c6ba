/// The one error type of UMS. Every layer throws it; the Coordinator maps its `code` to an HTTP
/// status in exactly one place (`UMSError.Code.httpStatus`), and the CLI prints its `message`.
///
/// Messages are lowercase and shaped `"failed to <op>: <reason>"`, so that a chain of causes reads
/// as one sentence.
public struct UMSError: Error, Codable, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Codable, Sendable, CaseIterable {
        /// The request is malformed or names something impossible.
        case invalidArgument
        /// The caller did not present valid credentials.
        case unauthenticated
        /// The caller is known but may not do this (its scope, or the admission policy).
        case forbidden
        /// The named container, migration or image does not exist.
        case notFound
        /// Something with that name already exists.
        case exists
        /// The target is in a state that forbids the operation (e.g. it is migrating).
        case invalidState
        /// A peer, the runtime or CRIU cannot be reached or refused to serve.
        case unavailable
        /// An operation ran out of time.
        case timeout
        /// The system cannot do this (e.g. no approach fits, CRIU too old).
        case unsupported
        /// The operation was cancelled.
        case cancelled
        /// A bug or an unexpected failure of a command.
        case internalError

        /// The HTTP status for this code: the only place where that mapping lives.
        public var httpStatus: Int {
            switch self {
            case .invalidArgument: 400
            case .unauthenticated: 401
            case .forbidden: 403
            case .notFound: 404
            case .exists, .invalidState: 409
            case .unavailable: 503
            case .timeout: 504
            case .unsupported: 422
            case .cancelled: 499
            case .internalError: 500
            }
        }

        /// The code an HTTP status stands for, when a peer answered without a UMS error body.
        public init(httpStatus: Int) {
            self = Code.allCases.first { $0.httpStatus == httpStatus } ?? (httpStatus >= 500 ? .internalError : .invalidArgument)
        }
    }

    public var code: Code
    public var message: String
    /// The message of the error that caused this one, if any (kept as text so it crosses the wire).
    public var cause: String?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause.map { error in
            if let ums = error as? UMSError { return ums.description }
            return String(describing: error)
        }
    }

    public var description: String {
        if let cause, !cause.isEmpty { return "\(message): \(cause)" }
        return message
    }

    /// Wraps any error as a `UMSError`, keeping a `UMSError` as it is.
    public static func wrap(_ error: any Error, _ code: Code = .internalError, _ message: String) -> UMSError {
        if let ums = error as? UMSError { return ums }
        if error is CancellationError { return UMSError(.cancelled, message, cause: error) }
        return UMSError(code, message, cause: error)
    }
}
