import CGMP
import Synchronization

/// A one-shot timer on the runtime's per-P timer heaps.
///
/// `sleep(for:)`, `select` time-outs and socket deadlines are timers. When a
/// timer fires, its callback runs on the M that noticed it (on g0 or in the
/// scheduler, never on a G's stack): it must be short and must not block.
/// Readying a G from it is the intended use.
///
/// Deadlines are `GMP.Instant`s (inside, `GMP.now` nanoseconds). Any instant
/// is a valid deadline: one at or before now fires at the next look at the
/// heap, and `distantFuture` (`Int64.max`, what a duration too long for the
/// clock comes to, as with Go's `when()`) never fires. Inside the heaps every `when` is at
/// least 1, because a P's `timer0When` of 0 means "no timers".
///
/// Re-arming or stopping never searches a heap: each arm bumps `seq`, and a
/// heap entry is live only while its `seq` matches and the timer is armed.
/// Dead entries are dropped when they reach the top or when the heap is
/// cleaned (amortised, when it doubles).
public final class GMPTimer: @unchecked Sendable {
    // @unchecked: `when`, `seq` and `armed` are guarded by `lock` (and so
    // `@exclusivity(unchecked)`); `g` and
    // `callback` are set before the timer is first armed and not changed while armed.
    let lock = FutexLock(compact: ())
    @exclusivity(unchecked) var when: Int64 = 0
    @exclusivity(unchecked) var seq: UInt64 = 0
    @exclusivity(unchecked) var armed = false
    /// For sleep timers: the G to ready.
    let g: G?
    let callback: (@Sendable () -> Void)?

    /// Creates a stopped timer that calls `callback` when it fires.
    public init(_ callback: @escaping @Sendable () -> Void) {
        self.g = nil
        self.callback = callback
    }

    init(readying g: G) {
        self.g = g
        self.callback = nil
    }

    deinit { lock.free() } // no heap entry holds the timer any more

    /// Arms (or re-arms) the timer to fire at `deadline` (one already past
    /// fires at once; ``GMP/Instant/distantFuture`` never fires).
    /// - Complexity: O(log n) in the timers on the current P's heap.
    public func reset(at deadline: GMP.Instant) {
        reset(at: deadline.nanoseconds)
    }

    /// Arms (or re-arms) the timer to fire after `duration` (zero or
    /// negative: at once; a duration too long for the clock: never).
    /// - Complexity: O(log n) in the timers on the current P's heap.
    public func reset(after duration: Duration) {
        reset(at: GMP.deadline(afterNanoseconds: GMP.nanoseconds(duration)))
    }

    /// `reset(at:)` on the raw `GMP.now` time base (for the package's own
    /// deadlines, kept as nanoseconds).
    package func reset(at deadline: Int64) {
        Scheduler.shared.addTimer(self, when: deadline)
    }

    /// `reset(after:)` in nanoseconds (clamped: `Int64.max` never fires).
    package func reset(afterNanoseconds nanoseconds: Int64) {
        reset(at: GMP.deadline(afterNanoseconds: nanoseconds))
    }

    /// Stops the timer. Returns true if it was armed (and so will not fire now).
    @discardableResult
    public func stop() -> Bool {
        lock.lock()
        let was = armed
        armed = false
        seq &+= 1
        lock.unlock()
        return was
    }

    /// Claims the firing of entry `seq`: true if it is still live.
    func claim(_ s: UInt64) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if armed && seq == s {
            armed = false
            return true
        }
        return false
    }

    func isLive(_ s: UInt64) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return armed && seq == s
    }
}

/// A heap entry. It owns one reference to its timer, taken by
/// `TimerHeap.push` and dropped by whoever removes the entry (`popFirst`'s
/// caller via `release()`, or `clean`), so moving entries in the heap does
/// no reference counting.
struct TimerEntry {
    var when: Int64
    var seq: UInt64
    var ref: Unmanaged<GMPTimer>

    init(when: Int64, seq: UInt64, timer: Timer) {
        self.when = when
        self.seq = seq
        self.ref = Unmanaged.passUnretained(timer)
    }

    @inline(__always) var timer: Timer { ref.takeUnretainedValue() }
    func release() { ref.release() }
}

/// A 4-ary min-heap of timer entries by `when` (Go uses 4-ary heaps too:
/// shallower than binary, and sift-down touches one cache line of children).
struct TimerHeap {
    var items: ContiguousArray<TimerEntry> = []
    /// Clean dead entries when the heap reaches this size.
    var cleanAt = 64

    var count: Int { items.count }
    var first: TimerEntry? { items.first }

    mutating func push(_ e: TimerEntry) {
        _ = e.ref.retain()
        items.append(e)
        siftUp(items.count - 1)
    }

    mutating func popFirst() -> TimerEntry? {
        guard !items.isEmpty else { return nil }
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            siftDown(0)
        }
        return top
    }

    private mutating func siftUp(_ i0: Int) {
        var i = i0
        let e = items[i]
        while i > 0 {
            let parent = (i - 1) / 4
            if items[parent].when <= e.when { break }
            items[i] = items[parent]
            i = parent
        }
        items[i] = e
    }

    private mutating func siftDown(_ i0: Int) {
        var i = i0
        let n = items.count
        let e = items[i]
        while true {
            let c = 4 * i + 1
            if c >= n { break }
            var best = c
            var j = c + 1
            while j < min(c + 4, n) {
                if items[j].when < items[best].when { best = j }
                j += 1
            }
            if items[best].when >= e.when { break }
            items[i] = items[best]
            i = best
        }
        items[i] = e
    }

    /// Moves every entry out (the references go with them).
    mutating func takeAll() -> ContiguousArray<TimerEntry> {
        let all = items
        items.removeAll()
        return all
    }

    /// Adds an entry whose reference the caller already owns.
    mutating func pushOwned(_ e: TimerEntry) {
        items.append(e)
        siftUp(items.count - 1)
    }

    /// Removes dead entries and rebuilds the heap.
    mutating func clean() {
        items.removeAll {
            if $0.timer.isLive($0.seq) { return false }
            $0.release()
            return true
        }
        var i = items.count / 4
        while i >= 0 {
            if !items.isEmpty { siftDown(i) }
            i -= 1
        }
        cleanAt = max(64, items.count * 2)
    }
}

extension GMP {
    /// The deadline `nanoseconds` from now (`GMP.now` base), clamped to
    /// `Int64.max` ("never") instead of wrapping; a negative duration is now.
    package static func deadline(afterNanoseconds nanoseconds: Int64) -> Int64 {
        let (d, overflow) = gmp_nanotime().addingReportingOverflow(max(0, nanoseconds))
        return overflow ? .max : d
    }

    /// `duration` in whole nanoseconds, clamped to `Int64.min...Int64.max`
    /// (a duration of `.seconds(Int64.max)` is `Int64.max`: "forever").
    package static func nanoseconds(_ duration: Duration) -> Int64 {
        let (s, a) = duration.components
        let (ns, overflow) = s.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return s < 0 ? .min : .max }
        let (sum, overflow2) = ns.addingReportingOverflow(a / 1_000_000_000)
        return overflow2 ? (s < 0 ? .min : .max) : sum
    }
}

extension Scheduler {
    /// Arms `t` for `when` on the current P's heap (or P 0's from a plain
    /// thread), waking the poller if this is now the earliest timer.
    func addTimer(_ t: Timer, when deadline: Int64) {
        let when = max(deadline, 1) // 0 is the heaps' "empty"; both are in the past
        t.lock.lock()
        t.seq &+= 1
        t.when = when
        t.armed = true
        let seq = t.seq
        t.lock.unlock()
        let m = currentM()
        let p = m?.pointee.p ?? allP(0)
        p.pointee.timerLock.lock()
        p.timers.pointee.push(TimerEntry(when: when, seq: seq, timer: t))
        if p.timers.pointee.count >= p.timers.pointee.cleanAt { p.timers.pointee.clean() }
        let first = p.timers.pointee.first?.when ?? 0
        p.pointee.timer0When.store(first, ordering: .releasing)
        p.pointee.timerLock.unlock()
        if first == when { wakeNetPoller(when) }
    }

    /// Runs the timers of `p` that are due at `now`. Any M may run any P's
    /// timers (stealing does). Returns how many fired.
    @discardableResult
    func runTimers(_ p: P, now: Int64? = nil) -> Int {
        let w = p.pointee.timer0When.load(ordering: .acquiring)
        if w == 0 { return 0 }
        let now = now ?? gmp_nanotime()
        if w > now { return 0 }
        var ran = 0
        p.pointee.timerLock.lock()
        while let e = p.timers.pointee.first, e.when <= now {
            _ = p.timers.pointee.popFirst()
            guard e.timer.claim(e.seq) else {
                e.release()
                continue
            }
            p.pointee.timer0When.store(p.timers.pointee.first?.when ?? 0, ordering: .releasing)
            p.pointee.timerLock.unlock()
            fire(e.timer)
            e.release()
            ran += 1
            p.pointee.timerLock.lock()
        }
        p.pointee.timer0When.store(p.timers.pointee.first?.when ?? 0, ordering: .releasing)
        p.pointee.timerLock.unlock()
        return ran
    }

    @inline(__always) func fire(_ t: Timer) {
        if let g = t.g {
            ready(g)
        } else {
            t.callback?()
        }
    }

    /// Earliest timer over all Ps, 0 if none.
    func earliestTimer() -> Int64 {
        var best: Int64 = 0
        let n = procs.load(ordering: .acquiring)
        for i in 0..<(n + nsparesMade.load(ordering: .acquiring)) { // (a lent spare's heap too)
            let w = anyP(i, nprocs: n).pointee.timer0When.load(ordering: .acquiring)
            if w != 0 && (best == 0 || w < best) { best = w }
        }
        return best
    }

    /// Number of timer entries on all heaps (live and not yet dropped).
    func timerCount() -> Int {
        var c = 0
        for i in 0..<procs.load(ordering: .acquiring) {
            let p = allP(i)
            p.pointee.timerLock.lock()
            c += p.timers.pointee.count
            p.pointee.timerLock.unlock()
        }
        return c
    }
}
