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
/// Owner-only fields (the M holding the P, or anyone while the world is
/// stopped): `gFree`, `stackCache`, `goid*`. `m` and `link` are guarded by
/// the scheduler lock when the P is idle. Timer heap fields are guarded by
/// `timerLock`. The counters are written by the owner only (relaxed load +
/// store, no RMW) and read by anyone for stats. `sysmon*` fields belong to sysmon.
struct PState: ~Copyable {
    let id: Int
    let runq = RunQueue()
    let status = Atomic<UInt32>(PStatus.stopped.rawValue)
    var m: M?
    /// Link in the scheduler's idle-P list (guarded by the scheduler lock).
    var link: P?

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

    var sysmonSchedTick: UInt32 = 0
    var sysmonSwitchTick: UInt32 = 0
    var sysmonSyscallTick: UInt32 = 0
    var sysmonSwitchWhen: Int64 = 0
    var sysmonSliceWhen: Int64 = 0
    var sysmonSyscallWhen: Int64 = 0
    var sysmonFlagged = false

    let timerLock = FutexLock()
    var timers = TimerHeap()
    /// Earliest `when` in the heap, 0 if empty.
    let timer0When = Atomic<Int64>(0)

    var gFree: ContiguousArray<G> = []
    var stackCache: ContiguousArray<Stack> = []
    var goidNext: Int64 = 0
    var goidEnd: Int64 = 0

    let created = Atomic<Int>(0)
    let exited = Atomic<Int>(0)
    let parks = Atomic<Int>(0)
    let readies = Atomic<Int>(0)
    let steals = Atomic<Int>(0)

    init(id: Int) {
        self.id = id
        gFree.reserveCapacity(64)
        stackCache.reserveCapacity(32)
    }

    @inline(__always) var pstatus: PStatus { PStatus(rawValue: status.load(ordering: .acquiring))! }
}

typealias P = UnsafeMutablePointer<PState>

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
    case park          // status waiting, nothing else
    case parkUnlock    // status waiting, then unlock `actionLock`
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
