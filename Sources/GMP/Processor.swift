import CGMP
import Synchronization

/// Status of a P (Go's `_Pidle`, `_Prunning`, ...).
enum PStatus: UInt32 {
    case idle = 0, running, syscall, stopped, dead
}

/// A logical processor. An M must hold a P to run Gs.
///
/// Ps are allocated once and never freed (a P removed by `setProcs` is kept,
/// dead, for a later resize), so `P` is a plain pointer: no reference counting.
///
/// Every field of `PState` itself is a `let` (atomics, or pointers to the
/// mutable parts), so other threads may read it while the owner works; each
/// mutable part lives in its own block, with its own rule:
/// - `own`: the M holding the P only (or anyone while the world is stopped);
/// - `timers`: guarded by `timerLock` (any M may run any P's timers);
/// - `sysmon`: the sysmon thread only;
/// - `link` (in `sched`): the idle-P list, guarded by the scheduler lock.
/// Counters are written by the owner only (relaxed load + store, no RMW) and
/// read by anyone for stats. (Keeping the blocks apart also keeps
/// ThreadSanitizer's Swift access checks exact: they see one access per block.)
struct PState: ~Copyable {
    let id: Int
    let runq = RunQueue()
    let status = Atomic<UInt32>(PStatus.stopped.rawValue)

    /// Incremented each time a G starts a new time slice here (not for `runnext`
    /// hand-offs that inherit the slice).
    let schedTick = Atomic<UInt32>(0)
    /// Incremented at every G switch here.
    let switchTick = Atomic<UInt32>(0)
    /// Incremented when the M holding this P enters a blocking call.
    let syscallTick = Atomic<UInt32>(0)
    /// Set by sysmon when one time slice has run over 10 ms: the next schedule
    /// demotes `runnext` so a ping-ponging pair cannot starve the queue.
    let sliceExpired = Atomic<Bool>(false)

    let timerLock = FutexLock()
    let timers: UnsafeMutablePointer<TimerHeap>
    /// Earliest `when` in the heap, 0 if empty.
    let timer0When = Atomic<Int64>(0)

    let own: UnsafeMutablePointer<POwned>
    let sysmon: UnsafeMutablePointer<PSysmon>
    let sched: UnsafeMutablePointer<PSched>

    let created = Atomic<Int>(0)
    let exited = Atomic<Int>(0)
    let parks = Atomic<Int>(0)
    let readies = Atomic<Int>(0)
    let steals = Atomic<Int>(0)

    init(id: Int) {
        self.id = id
        timers = .allocate(capacity: 1)
        timers.initialize(to: TimerHeap())
        own = .allocate(capacity: 1)
        own.initialize(to: POwned())
        sysmon = .allocate(capacity: 1)
        sysmon.initialize(to: PSysmon())
        sched = .allocate(capacity: 1)
        sched.initialize(to: PSched())
    }

    @inline(__always) var pstatus: PStatus { PStatus(rawValue: status.load(ordering: .acquiring))! }
}

/// The owner's part of a P: free lists and the goroutine id cache.
struct POwned {
    var gFree: ContiguousArray<G> = []
    var stackCache: ContiguousArray<Stack> = []
    var sudogCache: ContiguousArray<Sudog> = []
    var goidNext: Int64 = 0
    var goidEnd: Int64 = 0

    init() {
        gFree.reserveCapacity(64)
        stackCache.reserveCapacity(32)
    }
}

/// sysmon's observations of a P.
struct PSysmon {
    var schedTick: UInt32 = 0
    var switchTick: UInt32 = 0
    var syscallTick: UInt32 = 0
    var switchWhen: Int64 = 0
    var sliceWhen: Int64 = 0
    var syscallWhen: Int64 = 0
    var flagged = false
}

/// The scheduler's part of a P (guarded by the scheduler lock).
struct PSched {
    /// Link in the idle-P list.
    var link: P?
}

typealias P = UnsafeMutablePointer<PState>

extension UnsafeMutablePointer where Pointee == PState {
    // The mutable parts of a P, reached through a read of the P (so that a
    // write to one part is never seen as a write to the whole P).
    @inline(__always) var own: UnsafeMutablePointer<POwned> { pointee.own }
    @inline(__always) var timers: UnsafeMutablePointer<TimerHeap> { pointee.timers }
    @inline(__always) var sysmon: UnsafeMutablePointer<PSysmon> { pointee.sysmon }
    @inline(__always) var sched: UnsafeMutablePointer<PSched> { pointee.sched }
    /// A spare P, lent beyond GMPPROCS while a G keeps its own P (Spares.swift).
    @inline(__always) var isSpare: Bool { pointee.id >= Scheduler.maxProcs }
}

/// Owner-only counter increment: relaxed load + store (no RMW needed).
@inline(__always) func bump(_ c: borrowing Atomic<Int>, _ by: Int = 1) {
    c.store(c.load(ordering: .relaxed) &+ by, ordering: .relaxed)
}
@inline(__always) func bump(_ c: borrowing Atomic<UInt32>) {
    c.store(c.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
}

/// What a G asked its M to do when it switched to g0 (Go's `mcall(fn)`).
enum MAction: UInt8 {
    case none
    case parkUnlock    // status waiting, then unlock `actionLock`
    case parkUnlockAll // status waiting, then unlock every lock in `actionLocks`
    case yield         // back to the local run queue tail
    case exit          // the G is finished
    case sleep         // status waiting, then arm the G's timer for `actionWhen`
    case exitSyscall   // no P after a blocking call: queue globally, stop the M
    case resize        // stop the world and set GMPPROCS to `actionWhen`
}

/// A worker thread. Its own pthread stack is its g0, where the scheduler
/// loop runs. Ms are never destroyed (idle ones sleep on `park`), so `M` is a
/// plain pointer.
///
/// Fields are touched by the M's own thread, except `nextp` and `spinning`,
/// which `startm` writes before waking the M (the `Note` orders them), and
/// `link`, guarded by the scheduler lock.
struct MState {
    let id: Int
    let ctx: UnsafeMutablePointer<gmp_mctx>
    var p: P?
    var nextp: P?
    var oldp: P?
    var curg: G?
    var spinning = false
    let park = Note()
    var link: M?

    var action: MAction = .none
    var actionLock: FutexLock?
    var actionLocks: [FutexLock] = []
    var actionWhen: Int64 = 0

    init(id: Int) {
        self.id = id
        ctx = .allocate(capacity: 1)
        ctx.initialize(to: gmp_mctx())
    }
}

typealias M = UnsafeMutablePointer<MState>

/// The M running on this thread, or nil on a plain thread.
@inline(__always) func currentM() -> M? {
    gmp_get_m()?.assumingMemoryBound(to: MState.self)
}

/// The M and the G running the caller, when the caller is a G that holds a
/// P: the only place where it may park, sleep, yield or stop the world. Nil
/// on a plain thread, and inside `GMP.blocking`, where the M has left its P
/// and the body runs as a plain thread would (blocking operations there
/// block the thread).
@inline(__always) func currentGWithP() -> (M, G)? {
    guard let m = currentM(), let g = m.pointee.curg, m.pointee.p != nil else { return nil }
    return (m, g)
}
