import CGMP
import Synchronization

/// A P's local run queue: a 256-slot ring plus the `runnext` slot (Go's
/// `runq`, `runqhead`, `runqtail`, `runnext`).
///
/// Items are opaque non-zero words (the scheduler stores `Unmanaged<G>` bit
/// patterns; the stress tests store plain numbers).
///
/// Who may call what:
/// - the *owner* (the M holding the P) pushes at the tail (`pushTail`), pops at
///   the head (`get`), sets `runnext` (`swapRunNext`), and moves half the ring
///   out on overflow (`takeHalf`);
/// - *thieves* (other Ms, for their own, empty queue) call `steal(into:)` and
///   may only clear `runnext`, never set it.
///
/// Invariants:
/// - `tail` is written only by the owner (release), `head` is advanced by the
///   owner and by thieves, always by CAS (release).
/// - `0 <= tail - head <= 256` (wrapping UInt32 arithmetic) as seen by the
///   owner; slots in `[head, tail)` hold items, the rest are free.
/// - The owner writes only free slots; a thief copies `[head, head+n)` and then
///   publishes its claim with one CAS on `head`, so a thief whose CAS fails has
///   only read values it throws away. Slots are relaxed atomics so that such a
///   discarded read is not a data race.
/// - An item is in at most one of: `runnext`, the ring.
///
/// A non-copyable struct (atomics inline): it lives inside a P, or behind a
/// pointer when shared (tests).
struct RunQueue: ~Copyable, @unchecked Sendable {
    // @unchecked: all shared state is atomic; `scratch` is touched only by the owner.
    static let capacity: UInt32 = 256

    private let head = Atomic<UInt32>(0)
    private let tail = Atomic<UInt32>(0)
    private let next = Atomic<UInt>(0)
    private let slots: UnsafeMutablePointer<Atomic<UInt>>
    /// Owner-only buffer for `takeHalf`: 128 items plus the overflowing one.
    let scratch: UnsafeMutablePointer<UInt>

    init() {
        slots = .allocate(capacity: Int(Self.capacity))
        for i in 0..<Int(Self.capacity) { (slots + i).initialize(to: Atomic(0)) }
        scratch = .allocate(capacity: Int(Self.capacity / 2 + 1))
    }

    deinit {
        slots.deinitialize(count: Int(Self.capacity))
        slots.deallocate()
        scratch.deallocate()
    }

    @inline(__always) private func slot(_ i: UInt32) -> UnsafeMutablePointer<Atomic<UInt>> {
        slots + Int(i & (Self.capacity - 1))
    }

    /// Owner: pushes `item` at the tail. Returns false when the ring is full.
    @inline(__always)
    func pushTail(_ item: UInt) -> Bool {
        let h = head.load(ordering: .acquiring)
        let t = tail.load(ordering: .relaxed)
        if t &- h < Self.capacity {
            slot(t).pointee.store(item, ordering: .relaxed)
            tail.store(t &+ 1, ordering: .releasing)
            return true
        }
        return false
    }

    /// Owner: puts `item` in `runnext` and returns what was there (0 if none).
    @inline(__always)
    func swapRunNext(_ item: UInt) -> UInt {
        next.exchange(item, ordering: .acquiringAndReleasing)
    }

    /// Owner, on a full ring: claims the oldest half of the ring, copies it to
    /// `scratch` and returns how many were taken (0 if a thief raced; retry
    /// `pushTail` then).
    func takeHalf() -> Int {
        let h = head.load(ordering: .acquiring)
        let t = tail.load(ordering: .relaxed)
        let n = (t &- h) / 2
        guard n == Self.capacity / 2 else { return 0 } // not full any more
        for i in 0..<n { scratch[Int(i)] = slot(h &+ i).pointee.load(ordering: .relaxed) }
        if head.compareExchange(expected: h, desired: h &+ n, ordering: .releasing).exchanged {
            return Int(n)
        }
        return 0
    }

    /// Owner: takes `runnext` if set (inheriting the time slice), else the head.
    @inline(__always)
    func get() -> (item: UInt, inheritTime: Bool)? {
        var n = next.load(ordering: .relaxed)
        while n != 0 {
            let r = next.compareExchange(expected: n, desired: 0, ordering: .acquiring)
            if r.exchanged { return (n, true) }
            n = r.original
        }
        return getHead().map { ($0, false) }
    }

    /// Owner: takes the head of the ring, ignoring `runnext`.
    func getHead() -> UInt? {
        var h = head.load(ordering: .acquiring)
        while true {
            let t = tail.load(ordering: .relaxed)
            if t == h { return nil }
            let item = slot(h).pointee.load(ordering: .relaxed)
            let r = head.compareExchange(expected: h, desired: h &+ 1, ordering: .releasing)
            if r.exchanged { return item }
            h = r.original
        }
    }

    /// Owner: moves `runnext` (if any) to the tail, so the next `get` takes the
    /// oldest G instead (used when a time slice has expired).
    func demoteRunNext() -> UInt? {
        let n = next.exchange(0, ordering: .acquiring)
        if n == 0 { return nil }
        return pushTail(n) ? nil : n
    }

    /// Anyone: whether both the ring and `runnext` look empty. Exact only for
    /// the owner and only in the absence of thieves.
    var isEmpty: Bool {
        while true {
            let h = head.load(ordering: .acquiring)
            let t = tail.load(ordering: .acquiring)
            let n = next.load(ordering: .acquiring)
            if t == tail.load(ordering: .acquiring) { return t == h && n == 0 }
        }
    }

    /// Anyone: approximate length including `runnext`.
    var count: Int {
        let h = head.load(ordering: .acquiring)
        let t = tail.load(ordering: .acquiring)
        let d = Int(Int32(bitPattern: t &- h))
        return max(0, min(d, Int(Self.capacity))) + (next.load(ordering: .relaxed) != 0 ? 1 : 0)
    }

    /// Thief: grabs half of this queue's items into the tail of `dst` (the
    /// thief's own, empty queue) and returns one of them to run, or nil.
    /// `runnext` is taken only when `stealRunNext` and the ring is empty; if
    /// `ownerRunning` says the owner is running, wait ~3 µs first (it is about
    /// to run it itself).
    func steal(into dst: borrowing RunQueue, stealRunNext: Bool, ownerRunning: () -> Bool) -> UInt? {
        let t = dst.tail.load(ordering: .relaxed)
        var n = grab(into: dst, at: t, stealRunNext: stealRunNext, ownerRunning: ownerRunning)
        if n == 0 { return nil }
        n -= 1
        let item = dst.slot(t &+ n).pointee.load(ordering: .relaxed)
        if n == 0 { return item }
        let h = dst.head.load(ordering: .acquiring)
        precondition(t &- h &+ n < Self.capacity, "runqsteal: dst overflow")
        dst.tail.store(t &+ n, ordering: .releasing)
        return item
    }

    private func grab(into dst: borrowing RunQueue, at dstTail: UInt32, stealRunNext: Bool,
                      ownerRunning: () -> Bool) -> UInt32 {
        while true {
            let h = head.load(ordering: .acquiring)
            let t = tail.load(ordering: .acquiring)
            var n = t &- h
            n = n &- n / 2
            if n == 0 {
                if stealRunNext {
                    let nx = next.load(ordering: .acquiring)
                    if nx != 0 {
                        if ownerRunning() { gmp_usleep(3) }
                        if !next.compareExchange(expected: nx, desired: 0, ordering: .acquiring).exchanged {
                            continue
                        }
                        dst.slot(dstTail).pointee.store(nx, ordering: .relaxed)
                        return 1
                    }
                }
                return 0
            }
            if n > Self.capacity / 2 { continue } // read an inconsistent h/t pair
            for i in 0..<n {
                let item = slot(h &+ i).pointee.load(ordering: .relaxed)
                dst.slot(dstTail &+ i).pointee.store(item, ordering: .relaxed)
            }
            if head.compareExchange(expected: h, desired: h &+ n, ordering: .releasing).exchanged {
                return n
            }
        }
    }

    /// Owner or stopped world: removes everything, `runnext` first.
    func drain() -> [UInt] {
        var out: [UInt] = []
        let n = next.exchange(0, ordering: .acquiring)
        if n != 0 { out.append(n) }
        while let item = getHead() { out.append(item) }
        return out
    }
}
