import NetPoller
import GMP

// Socket operations that follow a context.
//
// For the length of the call the context's deadline is the socket's
// deadline in that direction, and a cancellation wakes the G at once: a
// callback on the context sets the deadline in the past (as Go code does
// with `context.AfterFunc` and `SetDeadline`). The error then says why:
// `.canceled` for a cancelled context, `.timeout` for a passed deadline.
// When the call returns, no deadline is left set in that direction (one set
// before the call is replaced, then cleared), even if the cancellation's
// callback runs on another thread just then (`ended`).

extension Conn {
    /// Reads up to `buffer.count` bytes, as `read(into:)`, until `context`
    /// is cancelled (`.canceled`) or its deadline passes (`.timeout`).
    public func read(into buffer: UnsafeMutableRawBufferPointer, context: Context) throws(NetError) -> Int {
        try following(context, read: true) { () throws(NetError) -> Int in try read(into: buffer) }
    }

    /// Reads up to `max` bytes into a new array, as `read(max:)`, until
    /// `context` is cancelled (`.canceled`) or its deadline passes (`.timeout`).
    public func read(max: Int = 4096, context: Context) throws(NetError) -> [UInt8] {
        try following(context, read: true) { () throws(NetError) -> [UInt8] in try read(max: max) }
    }

    /// Writes all of `bytes`, as `write(_:)`, until `context` is cancelled
    /// (`.canceled`) or its deadline passes (`.timeout`); some bytes may
    /// have gone out by then.
    public func write(_ bytes: [UInt8], context: Context) throws(NetError) {
        try following(context, read: false) { () throws(NetError) in try write(bytes) }
    }

    /// Writes all of `data`, as `write(_:)`, bounded by `context` (see above).
    public func write(_ data: UnsafeRawBufferPointer, context: Context) throws(NetError) {
        try following(context, read: false) { () throws(NetError) in try write(data) }
    }

    private func following<R>(_ context: Context, read: Bool,
                              _ op: () throws(NetError) -> R) throws(NetError) -> R {
        if let e = context.err { throw e.netError }
        let set = read ? setReadDeadline : setWriteDeadline
        set(context.deadline)
        // The callback may run on another thread while the call ends: `ended`
        // (under its lock) keeps it from setting a deadline after the clear.
        let ended = Ended()
        let stop = context.onDone { ended.unlessEnded { set(GMP.Instant(nanoseconds: 1)) } } // long past: wakes a waiting G now
        defer {
            _ = stop()
            ended.end { set(nil) }
        }
        do {
            return try op()
        } catch .timeout {
            throw context.err?.netError ?? .timeout
        }
    }
}

extension ContextError {
    /// The socket error for an operation ended by this.
    var netError: NetError { self == .canceled ? .canceled : .timeout }
}

/// Whether a socket call that follows a context has ended, for the
/// context's callback (see the top of the file).
private final class Ended: @unchecked Sendable {
    // @unchecked: `ended` is guarded by `lock`.
    private let lock = FutexLock(compact: ())
    private var ended = false

    deinit { lock.free() }

    /// Runs `f` under the lock, unless the call has ended.
    func unlessEnded(_ f: () -> Void) {
        lock.withLock { if !ended { f() } }
    }

    /// Marks the call ended and runs `f`, under the lock.
    func end(_ f: () -> Void) {
        lock.withLock {
            ended = true
            f()
        }
    }
}
