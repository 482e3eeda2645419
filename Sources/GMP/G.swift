import CGMP
import Synchronization

/// What a G is doing. Written by the M that runs or parks it and by the one
/// that readies it; the hand-over between them is ordered by the run queues
/// and locks, so a plain field suffices.
enum GStatus: UInt8 {
    case idle, runnable, running, waiting, syscall, dead
}

/// Why a G waits, for the goroutine dump (`GMP.dump()`). Set when it parks.
@usableFromInline package enum WaitReason: UInt8, Sendable {
    case unknown, chanReceive, chanSend, select, sleep, ioWait, mutex, waitGroup, forever, await

    /// The words Go's traceback uses.
    package var description: String {
        switch self {
        case .unknown: return "waiting"
        case .chanReceive: return "chan receive"
        case .chanSend: return "chan send"
        case .select: return "select"
        case .sleep: return "sleep"
        case .ioWait: return "IO wait"
        case .mutex: return "Mutex"
        case .waitGroup: return "WaitGroup"
        case .forever: return "select (no cases)"
        case .await: return "await"
        }
    }
}

/// A goroutine's state, in memory the runtime owns (allocated once, pooled,
/// never moved). Only the scheduler, and the G itself while it runs, touch it.
struct GState {
    // Laid out so that what making, running and ending a G touches is in
    // the first 64 bytes, and the whole is 89 bytes (the switch state starts
    // at 96, as before the dump's fields came): a G moves between cores, so
    // each cache line it spans is a transfer (spawn was 15% slower when these
    // fields took 144 bytes). The stack's bounds live in `ctx` only.
    /// Switch state (raw memory: never an `inout` on a class property across a switch).
    let ctx: UnsafeMutablePointer<gmp_gctx>
    var id: Int64 = 0
    var fn: (() -> Void)?
    /// Link in the global run queue and in `GList`s.
    var schedlink: G?
    var param: UnsafeMutableRawPointer?
    var status: GStatus = .idle
    var hasStack = false
    /// For the dump: why it waits (and since when, below, by sysmon's
    /// coarse clock), where its `go` statement is, its index in the registry.
    var waitReason = WaitReason.unknown
    /// Another party will copy into or out of this G's stack while it waits.
    var stackPinned = false
    var goLine: UInt32 = 0
    /// The `go` statement's file: a `StaticString`'s UTF-8 bytes and count.
    var goFile: UnsafePointer<UInt8>?
    var goFileCount: UInt32 = 0
    var allgIndex: Int32 = -1
    /// The timer used by `sleep`, made on first use and kept with the G.
    var sleepTimer: Timer?
    var waitSince: Int64 = 0
    /// Set while the G runs a Swift task's job (Executor.swift): it must not
    /// switch away until the job returns. Past the 88 bytes above, in the
    /// padding before the switch state (which still starts at 96).
    var runsJob = false

    /// The stack it holds (valid while `hasStack`), from the switch state.
    var stack: Stack {
        Stack(lo: ctx.pointee.stack_lo, hi: ctx.pointee.stack_hi, guardLo: ctx.pointee.guard_lo,
              guardHi: ctx.pointee.guard_hi)
    }
}

/// A goroutine: a stackful task with its own small stack.
///
/// `G` is a handle (a pointer to runtime-owned state): copying it costs
/// nothing and involves no reference counting, which keeps the scheduler's
/// hot paths free of atomic reference-count traffic. G states are pooled
/// (per P and globally) and reused; a G's stack is taken when it first runs
/// and given back when it ends. A handle is valid while its G is alive
/// (parked, runnable or running): do not keep one past the G's end.
@usableFromInline package struct G: Hashable, @unchecked Sendable {
    // @unchecked: a G is handed between Ms only through the scheduler's
    // queues and the park/ready protocol, which order every access to its state.
    let s: UnsafeMutablePointer<GState>

    @inline(__always) init(_ s: UnsafeMutablePointer<GState>) { self.s = s }

    /// Allocates a new G state.
    /// Offset of the switch state within a G's one allocation.
    private static let ctxOffset = (MemoryLayout<GState>.stride + 15) & ~15

    /// Allocates a new G: its state and its switch state in one block.
    static func make() -> G {
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: ctxOffset + MemoryLayout<gmp_gctx>.stride, alignment: 16)
        let ctx = (raw + ctxOffset).bindMemory(to: gmp_gctx.self, capacity: 1)
        ctx.initialize(to: gmp_gctx())
        let s = raw.bindMemory(to: GState.self, capacity: 1)
        s.initialize(to: GState(ctx: ctx))
        return G(s)
    }

    /// Frees a G state that is on no list and runs nowhere.
    func free() {
        gmp_release_ctx(s.pointee.ctx)
        s.deinitialize(count: 1)
        UnsafeMutableRawPointer(s).deallocate()
    }

    /// Goroutine id, unique for the process lifetime (pooled Gs get new ids).
    package var id: Int64 { s.pointee.id }

    /// Scratch word for park/ready protocols built on the runtime (Go's
    /// `g.param`): the waker stores here before `ready`, the G reads it after
    /// it resumes.
    package var param: UnsafeMutableRawPointer? {
        get { s.pointee.param }
        nonmutating set { s.pointee.param = newValue }
    }

    @inline(__always) var ctx: UnsafeMutablePointer<gmp_gctx> { s.pointee.ctx }
    /// `ctx` without reading the state (its place is fixed by `make`): for
    /// threads that do not own the G (sysmon, the dump), whose read of the
    /// field would race, to TSan, with the owner's writes to the state.
    @inline(__always) var ctxUnread: UnsafeMutablePointer<gmp_gctx> {
        (UnsafeMutableRawPointer(s) + G.ctxOffset).assumingMemoryBound(to: gmp_gctx.self)
    }

    @inline(__always) var bits: UInt { UInt(bitPattern: s) }

    @inline(__always) static func from(bits: UInt) -> G {
        G(UnsafeMutablePointer<GState>(bitPattern: bits)!)
    }
}

/// An intrusive singly linked list of Gs (through each G's `schedlink`),
/// for the global run queue and for batches of Gs made ready by a poller
/// (`Poller.poll` returns one). A G may be on at most one list at a time;
/// push and pop are O(1) and allocate nothing.
package struct GList {
    var head: G?
    var tail: G?
    /// Number of Gs on the list.
    package private(set) var count = 0

    /// An empty list.
    package init() {}

    /// Whether the list is empty.
    package var isEmpty: Bool { head == nil }

    /// Appends `g` at the tail.
    package mutating func push(_ g: G) {
        g.s.pointee.schedlink = nil
        if let t = tail { t.s.pointee.schedlink = g } else { head = g }
        tail = g
        count += 1
    }

    /// Removes and returns the head, or nil when empty.
    package mutating func pop() -> G? {
        guard let g = head else { return nil }
        head = g.s.pointee.schedlink
        if head == nil { tail = nil }
        g.s.pointee.schedlink = nil
        count -= 1
        return g
    }

    mutating func append(_ other: GList) {
        guard let oh = other.head else { return }
        if let t = tail { t.s.pointee.schedlink = oh } else { head = oh }
        tail = other.tail
        count += other.count
    }
}
