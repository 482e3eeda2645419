import CGMP
import Synchronization

/// A small futex-based lock for the runtime's own short critical sections
/// (scheduler state, timer heaps, wait queues).
///
/// It blocks the *thread*, not the G: hold it only for a few instructions and
/// never across a park. Built on `Atomic` with acquiring/releasing orderings,
/// so ThreadSanitizer understands it (it does not see `Synchronization.Mutex`
/// on Linux).
///
/// State of `word`: 0 unlocked, 1 locked, 2 locked and a thread may sleep in
/// the futex (the unlocker must wake one).
@usableFromInline package struct FutexLock: @unchecked Sendable {
    // @unchecked: the struct is a pointer to an atomic word; all access to it
    // goes through atomic operations.
    @usableFromInline let word: UnsafeMutablePointer<Atomic<UInt32>>

    /// Creates an unlocked lock. The word gets a cache line of its own (no
    /// false sharing between locks). The lock is a pointer, not an owner:
    /// whoever creates it frees it with `free()` once nobody can use it
    /// (a class does so in its `deinit`), or keeps it for the process's life.
    package init() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        word = raw.bindMemory(to: Atomic<UInt32>.self, capacity: 1)
        word.initialize(to: Atomic(0))
    }

    /// A lock whose word is a small allocation of its own (no cache line):
    /// for the many per-object locks (one per socket, per timer) where memory
    /// matters more than false sharing.
    package init(compact: Void) {
        word = .allocate(capacity: 1)
        word.initialize(to: Atomic(0))
    }

    /// Frees the word of a lock made by `init()` or `init(compact:)`. Only
    /// when the lock is unlocked and can no longer be reached.
    package func free() {
        word.deinitialize(count: 1)
        word.deallocate()
    }

    /// A lock whose word lives in memory the caller owns (e.g. next to the
    /// fields it guards, on one cache line). `word` must hold 0 and stay
    /// valid as long as the lock is used.
    package init(word: UnsafeMutableRawPointer) {
        self.word = word.bindMemory(to: Atomic<UInt32>.self, capacity: 1)
        self.word.initialize(to: Atomic(0))
    }

    @usableFromInline var address: UnsafeMutablePointer<UInt32> {
        UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.self)
    }

    /// Acquires the lock, spinning briefly and then sleeping in the kernel.
    @inlinable @inline(__always)
    package func lock() {
        if word.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { return }
        lockSlow()
    }

    @usableFromInline
    func lockSlow() {
        // Spin a little (as Go's lock2): look at the word only every 30
        // pauses, so a waiter does not keep pulling the cache line away from
        // the holder, which is about to release it; then yield the thread
        // once; then sleep in the kernel.
        for _ in 0..<4 {
            if word.pointee.load(ordering: .relaxed) == 0,
               word.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
                return
            }
            for _ in 0..<30 { gmp_cpu_relax() }
        }
        if word.pointee.load(ordering: .relaxed) == 0,
           word.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
            return
        }
        gmp_os_yield()
        while word.pointee.exchange(2, ordering: .acquiring) != 0 {
            _ = gmp_futex_wait(address, 2, -1)
        }
    }

    /// Tries to acquire the lock without waiting.
    @inlinable
    package func tryLock() -> Bool {
        word.pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged
    }

    /// Releases the lock, waking one sleeping thread if there is one.
    @inlinable @inline(__always)
    package func unlock() {
        if word.pointee.exchange(0, ordering: .releasing) == 2 {
            _ = gmp_futex_wake(address, 1)
        }
    }

    /// Runs `body` with the lock held.
    @inlinable @inline(__always)
    package func withLock<R>(_ body: () throws -> R) rethrows -> R {
        lock()
        defer { unlock() }
        return try body()
    }
}

/// A one-shot wake-up for one sleeping thread (Go's `note`).
///
/// `wakeup` may come before `sleep`; then `sleep` returns at once. `clear`
/// re-arms it; only the sleeper calls `clear`, and only when no `wakeup` can
/// be in flight.
///
/// State of `word`: 0 clear, 1 woken, 2 a thread sleeps (wakeup must futex-wake).
struct Note: @unchecked Sendable {
    // @unchecked: a pointer to an atomic word, accessed only atomically.
    let word: UnsafeMutablePointer<Atomic<UInt32>>

    init() {
        word = .allocate(capacity: 1)
        word.initialize(to: Atomic(0))
    }

    private var address: UnsafeMutablePointer<UInt32> {
        UnsafeMutableRawPointer(word).assumingMemoryBound(to: UInt32.self)
    }

    func clear() { word.pointee.store(0, ordering: .relaxed) }

    /// Frees the word. Only for notes whose owner is finished with them.
    func free() {
        word.deinitialize(count: 1)
        word.deallocate()
    }

    func wakeup() {
        if word.pointee.exchange(1, ordering: .releasing) == 2 {
            _ = gmp_futex_wake(address, 1)
        }
    }

    /// Sleeps until `wakeup`.
    func sleep() {
        _ = sleep(timeoutNanoseconds: -1)
    }

    /// Sleeps until `wakeup` or the time-out (< 0: none). Returns whether it was woken.
    func sleep(timeoutNanoseconds: Int64) -> Bool {
        if word.pointee.compareExchange(expected: 0, desired: 2, ordering: .acquiring).exchanged == false {
            return true // already woken
        }
        let deadline = timeoutNanoseconds >= 0 ? GMP.deadline(afterNanoseconds: timeoutNanoseconds) : -1
        while word.pointee.load(ordering: .acquiring) == 2 {
            var wait: Int64 = -1
            if deadline >= 0 {
                wait = deadline - gmp_nanotime()
                if wait <= 0 {
                    // Time-out: withdraw the sleeper mark unless a wakeup won.
                    if word.pointee.compareExchange(expected: 2, desired: 0, ordering: .acquiring).exchanged {
                        return false
                    }
                    return true
                }
            }
            _ = gmp_futex_wait(address, 2, wait)
        }
        return true
    }
}
