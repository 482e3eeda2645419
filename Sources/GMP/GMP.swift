import CGMP
import Glibc
import Synchronization

/// Starts a goroutine running `body`.
///
/// The G is queued on the current P's `runnext` (it runs soon, on this
/// core, as in Go), or on the global queue when called from a plain thread.
/// It gets its stack when it first runs. Cost: about one small allocation
/// the first time; pooled Gs are reused. `file` and `line` (the call site)
/// are what `GMP.dump()` shows as "created by".
public func go(_ body: consuming @escaping @Sendable () -> Void, file: StaticString = #fileID, line: UInt = #line) {
    Scheduler.shared.newproc(consume body, file: file, line: line)
}

/// The runtime's entry points.
///
/// Code inside a G is ordinary synchronous Swift. Blocking operations of
/// this package (`sleep`, `yield`, `Mutex.lock`, `WaitGroup.wait`, channel
/// operations, socket I/O) park the G, not the thread. Scheduling is
/// cooperative: a G that computes for a long time without parking, or calls
/// a blocking function outside `GMP.blocking`, keeps its P (sysmon counts it
/// in `Stats.longRuns`). The work queued behind it still runs: past its 10 ms
/// slice, sysmon lends a spare P to another thread for it (`Stats.spareLends`).
///
/// Inside the body of `GMP.blocking` the thread has left its P, so the body
/// runs as a plain thread does: the same operations block the thread instead
/// of parking the G (`currentG` is nil there).
public enum GMP {
    /// The G-aware mutex (also available as the top-level `Mutex`).
    public typealias Mutex = GMPMutex
    /// The G-aware wait group (also available as the top-level `WaitGroup`).
    public typealias WaitGroup = GMPWaitGroup
    /// The runtime's callback timer (Go's `time.AfterFunc`): `GMPTimer`.
    public typealias Timer = GMPTimer

    /// Runs `body` as a G and blocks the calling thread until it returns,
    /// handing back its value or rethrowing its error.
    ///
    /// Call it from a plain thread (e.g. `main`, a test) or inside
    /// `GMP.blocking`. Calling it from a G traps: use `go` with a `WaitGroup`
    /// or a channel there. If the G can never finish because every G is
    /// asleep with nothing left to wake one, and every thread the runtime
    /// does not own is provably blocked for good, the process reports the
    /// deadlock and exits with status 2 (`GMP_DEADLOCK`; see Deadlock.swift
    /// for the rule). While any other thread could still act, it waits.
    ///
    /// `body` is `sending`: it runs on another thread, so it must not be
    /// tied to the caller's actor. (Without it, a closure written at the top
    /// level of `main.swift` would be main-actor code, and closures inside it
    /// handed to the standard library, such as `sorted { }`, would trap on
    /// the G's thread in their main-thread check.)
    public static func run<T, E: Error>(_ body: sending () throws(E) -> T) throws(E) -> T {
        if inGoroutine {
            gmp_fatal("fatal error: GMP.run called from inside a goroutine; use go {} and a WaitGroup or channel")
        }
        let box = RunBox<T, E>()
        let s = Scheduler.shared
        let result: Result<T, E> = withoutActuallyEscaping(body) { escapable in
            box.body = escapable
            s.runWaiters.add(1, ordering: .sequentiallyConsistent)
            s.newproc({ box.run() }, fromRun: true)
            box.done.sleep()
            s.runWaiters.subtract(1, ordering: .sequentiallyConsistent)
            box.body = nil
            return box.result!
        }
        box.done.free()
        return try result.get()
    }

    /// Number of Ps (Go's `GOMAXPROCS`): how many Gs run in parallel.
    /// Initially `GMPPROCS` from the environment, or the number of cores.
    public static var procs: Int {
        Scheduler.shared.procs.load(ordering: .acquiring)
    }

    /// Sets the number of Ps and returns the previous number (Go's
    /// `GOMAXPROCS(n)`). Stops the world: waits until every running G parks
    /// (scheduling is cooperative), moves the queues and timers of removed Ps,
    /// then restarts. Callable from a G or a plain thread; concurrent calls
    /// take turns (a G waiting for its turn parks, so its P can stop).
    /// - Parameter n: 1...1024.
    @discardableResult
    public static func setProcs(_ n: Int) -> Int {
        precondition(n >= 1 && n <= Scheduler.maxProcs, "GMP.setProcs: \(n) is not in 1...\(Scheduler.maxProcs)")
        let s = Scheduler.shared
        s.resizeMutex.lock()
        defer { s.resizeMutex.unlock() }
        let old = s.procs.load(ordering: .acquiring)
        if n == old { return old }
        // Read after the lock: a G that waited for it may be on another M now.
        // On a spare P (which a stop does not count) it resizes as a thread would.
        if let (m, g) = currentGWithP(), !m.pointee.p!.isSpare {
            m.pointee.action = .resize
            m.pointee.actionWhen = Int64(n)
            gmp_mcall(g.ctx, m.pointee.ctx)
        } else {
            s.resize(to: n, m: nil)
        }
        return old
    }

    /// Yields the processor: the current G goes to the back of its P's run
    /// queue and others run. On a plain thread it yields the OS thread
    /// (`sched_yield`).
    public static func yield() {
        guard let (m, g) = currentGWithP() else {
            gmp_os_yield()
            return
        }
        m.pointee.action = .yield
        gmp_mcall(g.ctx, m.pointee.ctx)
    }

    /// Sleeps at least `duration`. In a G this parks the G on a timer (the
    /// timer is armed only after the G is parked); on a plain thread it sleeps
    /// the thread. A duration too long for the clock sleeps forever.
    public static func sleep(for duration: Duration) {
        sleep(nanoseconds: nanoseconds(duration))
    }

    /// Sleeps at least `nanoseconds` (`Int64.max`: forever).
    package static func sleep(nanoseconds: Int64) {
        guard let (m, g) = currentGWithP() else {
            if nanoseconds > 0 {
                var req = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
                var rem = timespec()
                while nanosleep(&req, &rem) != 0 && errno == EINTR { req = rem }
            }
            return
        }
        if nanoseconds <= 0 {
            yield()
            return
        }
        if g.s.pointee.sleepTimer == nil { g.s.pointee.sleepTimer = Timer(readying: g) }
        g.noteWait(.sleep)
        m.pointee.action = .sleep
        m.pointee.actionWhen = deadline(afterNanoseconds: nanoseconds)
        gmp_mcall(g.ctx, m.pointee.ctx)
    }

    /// Runs a blocking system call (or any call that may block the thread)
    /// without holding up other Gs: the P is left to sysmon, which hands it to
    /// another M if the call takes more than a tick (20 µs and up) and there is
    /// other work. On a plain thread it just runs `body`.
    ///
    /// The body runs as on a plain thread: `Mutex.lock`, channel operations,
    /// `select`, `sleep`, `yield`, socket I/O and `setProcs` work there and
    /// block the thread (the G stays put); `currentG` is nil. Only
    /// `park(unlocking:)`, which needs a G with a P, traps.
    ///
    /// In a G running a Swift task's job (`GMP.executor`) the same holds,
    /// but the job must end on the thread it began on (Swift keeps the
    /// running task in thread-local state): if its P was handed on during
    /// the call, the thread waits for a P to come back to, instead of
    /// queueing the G for whichever M is free.
    public static func blocking<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        guard let (m, g) = currentGWithP() else { return try body() }
        let s = Scheduler.shared
        s.nsyscall.add(1, ordering: .relaxed) // (for the deadlock check: this G can still act)
        g.noteWait(.unknown) // (the dump shows "blocking call")
        g.s.pointee.waitSince = s.coarseNow.load(ordering: .relaxed)
        s.entersyscall(m)
        let r = Result<T, E> { () throws(E) -> T in try body() }
        // We may be on the same M (the thread never changed during the call).
        s.exitsyscall(m, g)
        s.nsyscall.subtract(1, ordering: .relaxed)
        return try r.get()
    }

    /// Monotonic clock in nanoseconds (`GMP.Instant.now.nanoseconds`: the time
    /// base of every deadline).
    package static var now: Int64 { gmp_nanotime() }

    /// The running G, or nil on a plain thread (and inside `GMP.blocking`,
    /// which runs as a plain thread).
    package static var currentG: G? { currentGWithP()?.1 }

    /// Index of the P running the caller, or nil on a plain thread (or during
    /// a blocking call). A spare P, lent while a G keeps its own P past its
    /// time slice, has an index of 1024 or more. For tests and diagnostics.
    public static var currentProcessor: Int? { currentM()?.pointee.p?.pointee.id }

    /// Whether the caller runs in a G (false inside `GMP.blocking`).
    public static var inGoroutine: Bool { currentGWithP() != nil }

    /// Parks the current G and then releases `lock`, on the scheduler's stack,
    /// once the G is off its own stack (so a waker that takes `lock` can never
    /// ready a G that is still running). The G resumes after `ready(_:)`.
    /// Must be called from a G (not inside `GMP.blocking`), with `lock` held.
    package static func park(unlocking lock: FutexLock) {
        guard let (m, g) = currentGWithP() else { parkOutsideG() }
        m.pointee.action = .parkUnlock
        m.pointee.actionLock = lock
        gmp_mcall(g.ctx, m.pointee.ctx)
    }

    /// Parks the current G and then releases every lock in `locks` (see
    /// `park(unlocking:)`). For operations that hold several locks, as `select`.
    package static func park(unlocking locks: [FutexLock]) {
        guard let (m, g) = currentGWithP() else { parkOutsideG() }
        m.pointee.action = .parkUnlockAll
        m.pointee.actionLocks = locks
        gmp_mcall(g.ctx, m.pointee.ctx)
    }

    private static func parkOutsideG() -> Never {
        if currentM()?.pointee.curg != nil {
            gmp_fatal("fatal error: GMP.park called inside GMP.blocking (the thread has no P there; "
                      + "wait on a Sudog, which blocks the thread, or park outside the blocking call)")
        }
        gmp_fatal("fatal error: GMP.park called outside a goroutine")
    }

    /// Parks the current G forever (Go's `select {}` or a receive from a nil
    /// channel). On a plain thread, sleeps forever.
    public static func parkForever() -> Never {
        let lock = FutexLock()
        lock.lock()
        if let g = currentG {
            g.noteWait(.forever)
            park(unlocking: lock)
        } else {
            let n = Note()
            n.sleep()
        }
        gmp_fatal("fatal error: a G parked forever was woken")
    }

    /// A cheap per-thread random number (for `select`'s case order).
    package static func fastrand() -> UInt32 { gmp_fastrand() }

    /// `park(unlocking:)` for a G that waits on a socket: the dump shows it
    /// as "IO wait".
    package static func parkForIO(unlocking lock: FutexLock) {
        currentG?.noteWait(.ioWait)
        park(unlocking: lock)
    }

    /// Makes a G parked by `park(unlocking:)` runnable (Go's `goready`). From
    /// a G it runs next on the caller's P.
    package static func ready(_ g: G) {
        Scheduler.shared.ready(g)
    }

    /// Installs the poller the scheduler blocks in when idle (NetPoller's epoll).
    package static func install(poller: any Poller) {
        Scheduler.shared.install(poller)
    }

    /// Size of a G stack in bytes (`GMP_STACK_SIZE`, default 256 KiB).
    public static var stackSize: Int { Scheduler.shared.stackPool.stackSize }

    /// Whether this build runs under ThreadSanitizer.
    package static var isThreadSanitized: Bool { gmp_tsan_enabled() }

    /// Whether this build runs under AddressSanitizer.
    package static var isAddressSanitized: Bool { gmp_asan_enabled() }

    /// A snapshot of the scheduler's counters.
    public static var stats: Stats { Stats.capture(Scheduler.shared) }

    /// Releases the memory of cached free stacks beyond `keep` (stacks stay
    /// reserved for reuse). The runtime bounds its caches by itself; this is
    /// for programs that want memory back right after a burst of Gs.
    public static func trimStacks(keep: Int = 0) {
        Scheduler.shared.stackPool.scavenge(keep: keep)
    }
}

/// Carries `GMP.run`'s closure and result between the calling thread and the G.
private final class RunBox<T, E: Error>: @unchecked Sendable {
    // @unchecked: the caller writes `body` before `go`, which publishes it to
    // the G; the G writes `result` before `done.wakeup()` (release) and the
    // caller reads it after `done.sleep()` (acquire). The caller is blocked
    // in between, so nothing is accessed concurrently.
    @exclusivity(unchecked) var body: (() throws(E) -> T)?
    @exclusivity(unchecked) var result: Result<T, E>?
    let done = Note()

    func run() {
        result = Result { () throws(E) -> T in try body!() }
        done.wakeup()
    }
}
