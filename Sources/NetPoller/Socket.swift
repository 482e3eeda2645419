import CGMP
import GMP
import Glibc
import Synchronization

/// Registers a fresh socket with the poller; closes it if that fails.
private func registerOrClose(_ fd: Int32) throws(NetError) -> PollDesc {
    do {
        return try PollDesc.open(fd)
    } catch {
        Glibc.close(fd)
        throw error
    }
}

/// Closes a socket once: wakes its waiters and deregisters it now; closes
/// the fd once no system call is using it any more (see `FDRef`).
private func closeSocket(_ fd: Int32, _ pd: PollDesc, _ ref: borrowing FDRef) {
    if ref.close(beforeClose: { pd.close() }) { Glibc.close(fd) }
}

/// Runs `body` (system calls on `fd`) holding a reference on the fd, so a
/// concurrent `close` cannot release the fd number under it.
/// - Throws: `.closed` if the socket is closed, or what `body` throws.
@inline(__always)
private func withFD<R>(_ fd: Int32, _ ref: borrowing FDRef, _ body: () throws(NetError) -> R) throws(NetError) -> R {
    guard ref.acquire() else { throw .closed }
    defer { if ref.release() { Glibc.close(fd) } }
    return try body()
}

/// A Unix domain socket address for `path`.
private func makeUnixAddress(_ path: String) throws(NetError) -> (storage: [UInt8], len: UInt32, family: Int32) {
    var storage = [UInt8](repeating: 0, count: 128)
    let len = storage.withUnsafeMutableBytes { gmp_make_unix_addr(path, $0.baseAddress) }
    if len == 0 { throw .badAddress(path) }
    return (storage, len, Int32(AF_UNIX))
}

/// Parses "127.0.0.1", "::1", "localhost" into a socket address.
private func makeAddress(_ host: String, _ port: Int) throws(NetError) -> (storage: [UInt8], len: UInt32, family: Int32) {
    guard (0...65535).contains(port) else { throw .badAddress("\(host):\(port)") }
    let ip = host == "localhost" ? "127.0.0.1" : host
    var storage = [UInt8](repeating: 0, count: 128)
    var family: Int32 = 0
    let len = storage.withUnsafeMutableBytes { gmp_make_addr(ip, UInt16(port), $0.baseAddress, &family) }
    if len == 0 { throw .badAddress(host) }
    return (storage, len, family)
}

/// A stream connection (TCP, or a Unix domain socket) whose reads and
/// writes park the calling G (or block a plain thread), never the M.
///
/// Reads and writes may run concurrently with each other (one reader, one
/// writer at a time). `close()` wakes a G blocked in either with `.closed`.
/// Deadlines are `GMP.Instant`s and may be changed while a G is blocked. TCP connections (dialled or accepted) start with TCP_NODELAY on,
/// as Go's do: a small write goes out at once (`setNoDelay(false)` for Nagle).
public final class Conn: @unchecked Sendable {
    // @unchecked: the fd is immutable; per-direction state lives in the
    // PollDesc under its lock; `ref` is atomic. Every system call on the fd
    // holds a reference on it, so a close on another G cannot release the
    // fd number while the call might still use it.
    /// The socket's file descriptor (owned by the connection: do not close it).
    public let fd: Int32
    let pd: PollDesc
    private let ref = FDRef()

    init(fd: Int32) throws(NetError) {
        self.fd = fd
        pd = try registerOrClose(fd)
    }

    deinit { close() }

    /// Connects to `host:port` (an IP literal or "localhost"), waiting at
    /// most `timeout` if given (then `.timeout` is thrown).
    public static func dial(_ host: String, _ port: Int, timeout: Duration? = nil) throws(NetError) -> Conn {
        let (addr, len, family) = try makeAddress(host, port)
        return try dial(addr, len, family, timeout.map(GMP.nanoseconds))
    }

    /// Connects to the Unix domain socket at `path`, waiting at most
    /// `timeout` if given.
    public static func dial(unixPath path: String, timeout: Duration? = nil) throws(NetError) -> Conn {
        let (addr, len, family) = try makeUnixAddress(path)
        return try dial(addr, len, family, timeout.map(GMP.nanoseconds))
    }

    private static func dial(_ addr: [UInt8], _ len: UInt32, _ family: Int32,
                             _ timeoutNanoseconds: Int64?) throws(NetError) -> Conn {
        let fd = gmp_socket(family)
        if fd < 0 { throw NetError(errno: Int32(-fd), op: "socket") }
        let conn = try Conn(fd: fd)
        if family != Int32(AF_UNIX) { conn.setNoDelay(true) } // as Go: no Nagle delay by default
        let r = addr.withUnsafeBytes { gmp_connect(fd, $0.baseAddress, len) }
        if r == 0 { return conn }
        if -r != EINPROGRESS {
            conn.close()
            throw NetError(errno: Int32(-r), op: "connect")
        }
        if let t = timeoutNanoseconds { conn.pd.setDeadline(.write, GMP.deadline(afterNanoseconds: t)) }
        do {
            try conn.pd.wait(.write)
        } catch {
            conn.close()
            throw error
        }
        let err = gmp_socket_error(fd)
        if err != 0 {
            conn.close()
            throw NetError(errno: err, op: "connect")
        }
        conn.pd.setDeadline(.write, 0)
        return conn
    }

    /// After a failed call with error `e`: waits for readiness (EAGAIN), or
    /// returns for a retry (EINTR), or throws.
    private func waitOrThrow(_ e: Int32, _ mode: PollDesc.Mode, op: String) throws(NetError) {
        if e == EAGAIN || e == EWOULDBLOCK {
            try pd.wait(mode)
        } else if e == EINTR {
            return
        } else if e == EBADF && pd.closing {
            throw .closed
        } else {
            throw NetError(errno: e, op: op)
        }
    }

    /// Reads up to `buffer.count` bytes; returns how many (at least 1).
    /// Throws `.endOfStream` when the peer has closed its side, `.timeout`
    /// once the read deadline has passed (even if data is waiting, as Go).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(NetError) -> Int {
        try withFD(fd, ref) { () throws(NetError) -> Int in
            try pd.checkDeadline(.read)
            while true {
                if ref.isClosing { throw .closed }
                let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
                if n > 0 { return n }
                if n == 0 { throw buffer.isEmpty ? .system(op: "read", errno: EINVAL) : .endOfStream }
                try waitOrThrow(errno, .read, op: "read")
            }
        }
    }

    /// Reads up to `max` bytes into a new array. Allocates only once data is
    /// there (a G parked waiting holds no buffer), and no more than arrived.
    public func read(max: Int = 4096) throws(NetError) -> [UInt8] {
        let ready = try withFD(fd, ref) { () throws(NetError) -> Int32 in
            try pd.checkDeadline(.read)
            while true {
                if ref.isClosing { throw .closed }
                let ready = gmp_readable(fd)
                if ready > 0 { return ready }
                if ready == 0 { throw max == 0 ? .system(op: "read", errno: EINVAL) : .endOfStream }
                try waitOrThrow(-ready, .read, op: "read")
            }
        }
        var out = [UInt8](repeating: 0, count: Swift.min(max, Int(ready)))
        let r: Result<Int, NetError> = out.withUnsafeMutableBytes { b in Result { () throws(NetError) in try read(into: b) } }
        let n = try r.get()
        out.removeSubrange(n...)
        return out
    }

    /// Writes all of `data`, parking as often as the socket buffer needs.
    /// Throws `.timeout` once the write deadline has passed (some bytes may
    /// have gone out by then).
    public func write(_ data: UnsafeRawBufferPointer) throws(NetError) {
        try withFD(fd, ref) { () throws(NetError) in
            try pd.checkDeadline(.write)
            var off = 0
            while off < data.count {
                if ref.isClosing { throw .closed }
                let n = send(fd, data.baseAddress! + off, data.count - off, Int32(MSG_NOSIGNAL))
                if n >= 0 {
                    off += n
                    continue
                }
                try waitOrThrow(errno, .write, op: "write")
            }
        }
    }

    /// Writes all of `bytes`.
    public func write(_ bytes: [UInt8]) throws(NetError) {
        let r: Result<Void, NetError> = bytes.withUnsafeBytes { b in Result { () throws(NetError) in try write(b) } }
        try r.get()
    }

    /// Writes the UTF-8 bytes of `string`.
    public func write(_ string: String) throws(NetError) {
        try write(Array(string.utf8))
    }

    /// The peer's address ("ip:port", "[ip]:port" or "unix"), or "?" if unknown.
    public var remoteAddress: String {
        var buf = [CChar](repeating: 0, count: 80)
        let ok = (try? withFD(fd, ref) { () throws(NetError) -> Bool in gmp_peer_name(fd, &buf, Int32(buf.count)) == 0 }) ?? false
        guard ok else { return "?" }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Sets the read deadline; nil clears it. A deadline already past makes
    /// reads throw `.timeout` at once (a blocked read wakes with it).
    public func setReadDeadline(_ at: GMP.Instant?) { pd.setDeadline(.read, at.map { Swift.max($0.nanoseconds, 1) } ?? 0) }

    /// Sets the write deadline; nil clears it. A deadline already past makes
    /// writes throw `.timeout` at once (a blocked write wakes with it).
    public func setWriteDeadline(_ at: GMP.Instant?) { pd.setDeadline(.write, at.map { Swift.max($0.nanoseconds, 1) } ?? 0) }

    /// Shuts down the write side (the peer reads end of stream).
    public func closeWrite() throws(NetError) {
        try withFD(fd, ref) { () throws(NetError) in
            if shutdown(fd, Int32(SHUT_WR)) < 0 { throw NetError(errno: errno, op: "shutdown") }
        }
    }

    /// Shuts down the read side.
    public func closeRead() throws(NetError) {
        try withFD(fd, ref) { () throws(NetError) in
            if shutdown(fd, Int32(SHUT_RD)) < 0 { throw NetError(errno: errno, op: "shutdown") }
        }
    }

    /// TCP_NODELAY on or off.
    public func setNoDelay(_ on: Bool) {
        _ = try? withFD(fd, ref) { () throws(NetError) in
            _ = gmp_set_int_option(fd, Int32(IPPROTO_TCP), TCP_NODELAY, on ? 1 : 0)
        }
    }

    /// SO_KEEPALIVE on or off.
    public func setKeepAlive(_ on: Bool) {
        _ = try? withFD(fd, ref) { () throws(NetError) in
            _ = gmp_set_int_option(fd, SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0)
        }
    }

    /// The first half of a lingering close: shuts the socket for writing
    /// (the peer reads end of stream after what was written), then reads and
    /// drops whatever the peer still sends, until it closes or `timeout`
    /// passes. A `close()` afterwards finds no unread input:
    /// closing with unread input makes the kernel send a reset, and a reset
    /// can destroy the last bytes written before the peer has read them.
    public func lingeringShutdown(timeout: Duration = .seconds(1)) {
        try? closeWrite()
        setReadDeadline(.after(timeout))
        while (try? read(max: 16384)) != nil {}
    }

    /// Closes the connection. A G blocked in `read` or `write` wakes with
    /// `.closed`. Closing twice is harmless.
    public func close() {
        closeSocket(fd, pd, ref)
    }
}

/// A listening socket (TCP, or a Unix domain socket).
public final class Listener: @unchecked Sendable {
    // @unchecked: as Conn; `onAcceptRetry` is set before the first accept
    // (its contract) and only read afterwards.
    /// The listening socket's file descriptor (owned by the listener).
    public let fd: Int32
    /// The port it listens on (useful with port 0); 0 for a Unix socket.
    public let port: Int
    /// TCP (not a Unix socket): accepted connections get TCP_NODELAY.
    private let isTCP: Bool
    let pd: PollDesc
    private let ref = FDRef()
    /// Called (on the accepting G) for every error `accept` retries by
    /// itself, with the back-off it is about to wait (0: retried at once), so
    /// a server can log "out of file descriptors" and the like (Go's
    /// http.Server logs its "Accept error ... retrying in"). Set it before the
    /// first `accept`.
    public var onAcceptRetry: (@Sendable (NetError, _ backoff: Duration) -> Void)?

    /// Listens on `host:port` (IPv4 or IPv6 literal, or "localhost"; port 0
    /// picks a free one), with SO_REUSEADDR and the given backlog.
    public convenience init(host: String = "127.0.0.1", port: Int, backlog: Int32 = 511) throws(NetError) {
        let (addr, len, family) = try makeAddress(host, port)
        try self.init(addr, len, family, backlog)
    }

    /// Listens on a Unix domain socket at `path` (which must not exist yet;
    /// `close()` does not remove it).
    public convenience init(unixPath path: String, backlog: Int32 = 511) throws(NetError) {
        let (addr, len, family) = try makeUnixAddress(path)
        try self.init(addr, len, family, backlog)
    }

    private init(_ addr: [UInt8], _ len: UInt32, _ family: Int32, _ backlog: Int32) throws(NetError) {
        let fd = gmp_socket(family)
        if fd < 0 { throw NetError(errno: Int32(-fd), op: "socket") }
        let r = addr.withUnsafeBytes { gmp_bind_listen(fd, $0.baseAddress, len, backlog) }
        if r < 0 {
            Glibc.close(fd)
            throw NetError(errno: Int32(-r), op: "listen")
        }
        self.fd = fd
        self.port = family == Int32(AF_UNIX) ? 0 : Int(gmp_local_port(fd))
        isTCP = family != Int32(AF_UNIX)
        pd = try registerOrClose(fd)
    }

    deinit { close() }

    /// Accepts a connection, parking until one arrives.
    ///
    /// Errors that concern one connection, not the listener, are skipped: a
    /// connection aborted before it was accepted, and the network errors that
    /// Linux reports from accept(2) for a pending connection (EPROTO,
    /// ENETDOWN, EHOSTUNREACH, ...: accept(2) says to retry them). When the
    /// process is out of file descriptors or memory, or the poller cannot
    /// register one more socket, it backs off (5 ms doubling to 1 s) and tries
    /// again rather than failing or spinning.
    /// - Throws: `.closed` once closed; another `NetError` only for an error
    ///   of the listening socket itself (such as EBADF or EINVAL).
    public func accept() throws(NetError) -> Conn {
        var backoff = Duration.milliseconds(5)
        func backOff(_ error: NetError) {
            onAcceptRetry?(error, backoff)
            GMP.sleep(for: backoff)
            backoff = Swift.min(backoff * 2, .seconds(1))
        }
        while true {
            let c = try withFD(fd, ref) { () throws(NetError) -> Int32 in
                while true {
                    if ref.isClosing { throw .closed }
                    let c = gmp_accept(fd)
                    if c >= 0 { return c }
                    let e = Int32(-c)
                    if e == EAGAIN || e == EWOULDBLOCK {
                        try pd.wait(.read)
                    } else if Listener.skippable.contains(e) {
                        if e != EINTR { onAcceptRetry?(NetError(errno: e, op: "accept"), .zero) }
                    } else if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM {
                        backOff(NetError(errno: e, op: "accept"))
                    } else {
                        throw NetError(errno: e, op: "accept")
                    }
                }
            }
            let conn: Conn
            do {
                conn = try Conn(fd: c) // closes c if it cannot be registered
            } catch {
                backOff(error) // epoll_ctl: ENOMEM, or ENOSPC (max_user_watches)
                continue
            }
            if isTCP { conn.setNoDelay(true) } // as Go: no Nagle delay by default
            return conn
        }
    }

    /// accept(2) errors about one pending connection (EINTR aside): retry at once.
    private static let skippable: Set<Int32> = [
        EINTR, ECONNABORTED, EPROTO, ENETDOWN, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP,
        ENETUNREACH, EPERM, ENOSR, ESOCKTNOSUPPORT, EPROTONOSUPPORT, ETIMEDOUT, // the last four: accept(2)'s "other errors"
    ]

    /// Stops listening; a G blocked in `accept` wakes with `.closed`.
    public func close() {
        closeSocket(fd, pd, ref)
    }
}
