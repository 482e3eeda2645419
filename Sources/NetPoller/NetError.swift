import Glibc

/// Errors of socket operations.
public enum NetError: Error, Equatable, CustomStringConvertible {
    /// The peer closed its side: no more data will come.
    case endOfStream
    /// A deadline passed.
    case timeout
    /// The operation's context was cancelled (Contexts: `Conn.read(into:context:)`).
    case canceled
    /// The socket was closed (by this process) while or before the operation ran.
    case closed
    /// The peer reset the connection (ECONNRESET, EPIPE).
    case connectionReset
    /// Nobody listens at the address (ECONNREFUSED).
    case connectionRefused
    /// The address is taken (EADDRINUSE).
    case addressInUse
    /// The process or system ran out of file descriptors (EMFILE, ENFILE).
    case tooManyOpenFiles
    /// The address could not be parsed.
    case badAddress(String)
    /// Any other failure of a system call.
    case system(op: String, errno: Int32)

    init(errno e: Int32, op: String) {
        switch e {
        case ECONNRESET, EPIPE: self = .connectionReset
        case ECONNREFUSED: self = .connectionRefused
        case EADDRINUSE: self = .addressInUse
        case EMFILE, ENFILE: self = .tooManyOpenFiles
        case ETIMEDOUT: self = .timeout
        default: self = .system(op: op, errno: e)
        }
    }

    /// The errno behind the error, if it came from one.
    public var errno: Int32? {
        switch self {
        case .connectionReset: return ECONNRESET
        case .connectionRefused: return ECONNREFUSED
        case .addressInUse: return EADDRINUSE
        case .tooManyOpenFiles: return EMFILE
        case .timeout: return ETIMEDOUT
        case .system(_, let e): return e
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .endOfStream: return "end of stream"
        case .timeout: return "i/o timeout"
        case .canceled: return "operation was canceled"
        case .closed: return "use of closed network connection"
        case .connectionReset: return "connection reset by peer"
        case .connectionRefused: return "connection refused"
        case .addressInUse: return "address already in use"
        case .tooManyOpenFiles: return "too many open files"
        case .badAddress(let a): return "bad address: \(a)"
        case .system(let op, let e): return "\(op): \(String(cString: strerror(e))) (errno \(e))"
        }
    }
}
