import CGMP
import Synchronization

/// A FIFO of waiting sudogs (guarded by the owner's lock).
struct WaitQueue {
    private var items: ContiguousArray<Sudog> = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    var count: Int { items.count - head }

    mutating func push(_ w: Sudog) { items.append(w) }

    mutating func pop() -> Sudog? {
        if head == items.count { return nil }
        let w = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return w
    }

    mutating func removeAll() -> ContiguousArray<Sudog> {
        let out = ContiguousArray(items[head...])
        items.removeAll(keepingCapacity: true)
        head = 0
        return out
    }
}

/// A mutual-exclusion lock that parks the waiting G, never its M.
///
/// Uncontended `lock`/`unlock` are one CAS each. Under contention waiters
/// queue in FIFO order and `unlock` hands the lock directly to the first
/// one. Usable from plain threads too (they sleep on a futex). Not
/// reentrant; unlocking an unlocked mutex traps.
public final class GMPMutex: @unchecked Sendable {
    // @unchecked: `state` is atomic; `waiters` is guarded by `qlock` (so no
    // dynamic exclusivity check on it: `@exclusivity(unchecked)`).
    /// bit 0: locked; bit 1: the wait queue may be non-empty.
    private let state = Atomic<UInt32>(0)
    private let qlock = FutexLock()
    @exclusivity(unchecked) private var waiters = WaitQueue()

    /// Creates an unlocked mutex.
    public init() {}

    deinit { qlock.free() } // nobody can hold or wait on it any more

    /// Acquires the mutex, parking the G while another holds it.
    @inline(__always)
    public func lock() {
        GMP.chaosPoint()
        if state.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { return }
        lockSlow()
    }

    /// Acquires the mutex if it is free.
    public func tryLock() -> Bool {
        var s = state.load(ordering: .relaxed)
        while s & 1 == 0 {
            let r = state.compareExchange(expected: s, desired: s | 1, ordering: .acquiring)
            if r.exchanged { return true }
            s = r.original
        }
        return false
    }

    private func lockSlow() {
        for _ in 0..<20 {
            if tryLock() { return }
            gmp_cpu_relax()
        }
        let w = Sudog.acquire()
        qlock.lock()
        var s = state.load(ordering: .relaxed)
        while true {
            if s & 1 == 0 {
                let r = state.compareExchange(expected: s, desired: s | 1, ordering: .acquiring)
                if r.exchanged {
                    qlock.unlock()
                    w.release()
                    return
                }
                s = r.original
                continue
            }
            if s & 2 != 0 { break }
            let r = state.compareExchange(expected: s, desired: s | 2, ordering: .relaxed)
            if r.exchanged { break }
            s = r.original
        }
        waiters.push(w)
        w.s.pointee.reason = .mutex
        w.park(unlocking: qlock)
        // Woken by unlock: the mutex was handed to us (still locked).
        w.release()
        _ = state.load(ordering: .acquiring)
    }

    /// Releases the mutex, handing it to the longest waiter if there is one.
    @inline(__always)
    public func unlock() {
        if state.compareExchange(expected: 1, desired: 0, ordering: .releasing).exchanged { return }
        unlockSlow()
    }

    private func unlockSlow() {
        qlock.lock()
        let s = state.load(ordering: .relaxed)
        if s & 1 == 0 {
            qlock.unlock()
            gmp_fatal("fatal error: unlock of unlocked GMP.Mutex")
        }
        if let w = waiters.pop() {
            // Hand-off: stays locked, now owned by w.
            state.store(waiters.isEmpty ? 1 : 3, ordering: .releasing)
            qlock.unlock()
            w.ready()
        } else {
            state.store(0, ordering: .releasing)
            qlock.unlock()
        }
    }

    /// Runs `body` with the mutex held.
    public func withLock<R>(_ body: () throws -> R) rethrows -> R {
        lock()
        defer { unlock() }
        return try body()
    }

    /// Whether a G or thread is queued waiting for the mutex. For tests.
    var hasWaiters: Bool {
        qlock.lock()
        defer { qlock.unlock() }
        return !waiters.isEmpty
    }
}

/// Waits for a collection of Gs to finish (Go's `sync.WaitGroup`).
///
/// `add` and `done` are one atomic add each; `wait` parks the G (or
/// sleeps a plain thread) until the counter is zero. A negative counter traps.
public final class GMPWaitGroup: @unchecked Sendable {
    // @unchecked: `state` is atomic; `waiters` is guarded by `qlock` (so no
    // dynamic exclusivity check on it: `@exclusivity(unchecked)`).
    /// High 32 bits: counter; low 32 bits: number of waiters.
    private let state = Atomic<UInt64>(0)
    private let qlock = FutexLock()
    @exclusivity(unchecked) private var waiters = WaitQueue()

    /// Creates a wait group with counter `count`.
    public init(_ count: Int = 0) {
        if count > 0 { add(count) }
    }

    deinit { qlock.free() } // nobody can wait on it any more

    /// Adds `delta` (may be negative) to the counter; at zero every waiter wakes.
    public func add(_ delta: Int) {
        let d = UInt64(bitPattern: Int64(delta) << 32)
        let s = state.wrappingAdd(d, ordering: .acquiringAndReleasing).newValue
        let v = Int32(truncatingIfNeeded: Int64(bitPattern: s) >> 32)
        let w = UInt32(truncatingIfNeeded: s)
        if v < 0 { gmp_fatal("fatal error: sync: negative WaitGroup counter") }
        if v > 0 || w == 0 { return }
        // Counter hit zero with waiters: wake them all.
        qlock.lock()
        state.store(0, ordering: .releasing)
        let all = waiters.removeAll()
        qlock.unlock()
        for x in all { x.ready() }
    }

    /// Decrements the counter.
    @inline(__always)
    public func done() { add(-1) }

    /// The current counter.
    public var count: Int { Int(Int32(truncatingIfNeeded: Int64(bitPattern: state.load(ordering: .acquiring)) >> 32)) }

    /// Waits until the counter is zero.
    public func wait() {
        GMP.chaosPoint()
        var s = state.load(ordering: .acquiring)
        while true {
            if s >> 32 == 0 { return }
            qlock.lock()
            let r = state.compareExchange(expected: s, desired: s + 1, ordering: .acquiringAndReleasing)
            if r.exchanged {
                let w = Sudog.acquire()
                waiters.push(w)
                w.s.pointee.reason = .waitGroup
                w.park(unlocking: qlock)
                w.release()
                return
            }
            qlock.unlock()
            s = r.original
        }
    }
}

/// The G-aware mutex.
public typealias Mutex = GMPMutex
/// The G-aware wait group.
public typealias WaitGroup = GMPWaitGroup

/// The runtime's callback timer (`GMPTimer`, also `GMP.Timer`: importing
/// Foundation brings another `Timer`).
public typealias Timer = GMPTimer
