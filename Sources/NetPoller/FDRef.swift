import Synchronization

/// The life of a socket's fd (a reduced form of Go's `fdMutex`): every
/// system call on the fd holds a reference, and the fd is closed only when
/// the last reference goes, after `close()`.
///
/// Without it, `close()` on one G could release the fd number while a
/// `read` on another G has passed its "closed?" check but not yet made its
/// system call; the kernel hands the number to the next socket opened, and
/// the read lands on that socket.
///
/// State: bit 63 is `closing`; the low bits count references in use.
/// Invariants:
/// - once `closing` is set no reference is taken (`acquire` fails);
/// - the fd is closed exactly once: by whoever drops the count to zero while
///   `closing` is set (`release` or `close` returns true to that one caller);
/// - `close` holds a reference of its own while it runs `beforeClose` (waking
///   the socket's waiters), so the fd number cannot be reused before that.
struct FDRef: ~Copyable {
    private static let closing: UInt64 = 1 << 63
    private let state = Atomic<UInt64>(0)

    init() {}

    /// Takes a reference for one system call; false once closing.
    @inline(__always)
    func acquire() -> Bool {
        var s = state.load(ordering: .relaxed)
        while s & Self.closing == 0 {
            let r = state.compareExchange(expected: s, desired: s + 1, ordering: .acquiring)
            if r.exchanged { return true }
            s = r.original
        }
        return false
    }

    /// Drops a reference; true if the caller must now close the fd.
    @inline(__always)
    func release() -> Bool {
        state.subtract(1, ordering: .acquiringAndReleasing).newValue == Self.closing
    }

    /// Marks the fd closing (once; later calls return false at once), runs
    /// `beforeClose` while holding a reference, then drops it; true if the
    /// caller must now close the fd (no call is using it any more).
    func close(beforeClose: () -> Void) -> Bool {
        var s = state.load(ordering: .relaxed)
        while true {
            if s & Self.closing != 0 { return false }
            let r = state.compareExchange(expected: s, desired: (s | Self.closing) + 1, ordering: .acquiringAndReleasing)
            if r.exchanged { break }
            s = r.original
        }
        beforeClose()
        return release()
    }

    /// True once `close` has started.
    var isClosing: Bool { state.load(ordering: .acquiring) & Self.closing != 0 }
}
