import CGMP
import Synchronization

/// What a G is doing. Written by the M that runs or parks it and by the one
/// that readies it; the hand-over between them is ordered by the run queues
/// and locks, so a plain field suffices.
enum GStatus: UInt8 {
    case idle, runnable, running, waiting, syscall, dead
}

/// A goroutine: a stackful task with its own small stack.
///
/// G objects are pooled (per P and globally) and reused; a G's stack is taken
/// when it first runs and given back when it ends. The runtime holds one
/// strong reference to every live or pooled G (taken at creation,
/// `Unmanaged.passRetained`); queues and back-pointers hold it unretained.
public final class G: @unchecked Sendable {
    // @unchecked: a G is handed between Ms only through the scheduler's
    // queues and the park/ready protocol, which order every access to its
    // fields; fields other Ms may read concurrently are atomic.

    /// Switch state in raw memory (never an `inout` on a class property across a switch).
    let ctx: UnsafeMutablePointer<gmp_gctx>
    /// Goroutine id, unique for the process lifetime (ids of pooled Gs are renewed).
    public internal(set) var id: Int64 = 0
    var fn: (() -> Void)?
    var status: GStatus = .idle
    var stack: Stack?
    /// Link in the global run queue and free lists.
    var schedlink: Unmanaged<G>?
    /// The timer used by `sleep`, made on first use and kept with the G.
    var sleepTimer: Timer?
    /// Scratch word for park/ready protocols built on the runtime (Go's
    /// `g.param`): the waker stores here before `ready`, the G reads it after
    /// it resumes.
    public var param: UnsafeMutableRawPointer?
    /// For `select`-like protocols: set once by whichever waker wins.
    public let selectDone = Atomic<UInt32>(0)

    init() {
        ctx = .allocate(capacity: 1)
        ctx.initialize(to: gmp_gctx())
    }

    deinit {
        gmp_release_ctx(ctx)
        ctx.deallocate()
    }

    @inline(__always) var bits: UInt { UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque()) }

    @inline(__always) static func from(bits: UInt) -> Unmanaged<G> {
        Unmanaged<G>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!)
    }
}

/// An intrusive singly linked list of Gs (through `schedlink`), for the
/// global run queue, free lists and batches of Gs made ready by a poller.
public struct GList {
    var head: Unmanaged<G>?
    var tail: Unmanaged<G>?
    public private(set) var count = 0

    public init() {}

    public var isEmpty: Bool { head == nil }

    public mutating func push(_ g: G) {
        push(Unmanaged.passUnretained(g))
    }

    @inline(__always) mutating func push(_ u: Unmanaged<G>) {
        unowned(unsafe) let g = u.takeUnretainedValue()
        g.schedlink = nil
        if let t = tail { t.takeUnretainedValue().schedlink = u } else { head = u }
        tail = u
        count += 1
    }

    public mutating func pop() -> G? {
        popRef()?.takeUnretainedValue()
    }

    @inline(__always) mutating func popRef() -> Unmanaged<G>? {
        guard let h = head else { return nil }
        unowned(unsafe) let g = h.takeUnretainedValue()
        head = g.schedlink
        if head == nil { tail = nil }
        g.schedlink = nil
        count -= 1
        return h
    }

    mutating func append(_ other: GList) {
        guard let oh = other.head else { return }
        if let t = tail { t.takeUnretainedValue().schedlink = oh } else { head = oh }
        tail = other.tail
        count += other.count
    }
}
