import GMP
import Synchronization

/// The state one waiting `select` shares among its sudogs and its time-out
/// timer: who won.
///
/// `done` goes 0 -> 1 exactly once: by the channel operation (or time-out)
/// that claims the select. The claimer then writes `winner` and readies the
/// waiting party, which reads `winner` after it wakes (ordered by park/ready).
/// `armLock` is held by the select until it is parked; the timer takes it
/// before claiming, so a time-out can never ready a G that is not yet parked
/// (channel wakers are held off by the channel locks in the same way).
/// Sudogs point to it unretained; the select and the timer hold it.
@usableFromInline final class SelectState: @unchecked Sendable {
    // @unchecked: `winner` is written once, by the claimer of `done`, before
    // the wake-up that orders it for the reader.
    @usableFromInline let done = Atomic<UInt32>(0)
    @exclusivity(unchecked) @usableFromInline var winner = -1
    let armLock = FutexLock(compact: ())
    let parker: Sudog
    let timeoutIndex: Int

    init(parker: Sudog, timeoutIndex: Int) {
        self.parker = parker
        self.timeoutIndex = timeoutIndex
    }

    deinit { armLock.free() } // the select and its timer are done with it

    /// The time-out fired.
    func timeout() {
        armLock.lock()
        let won = done.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged
        if won { winner = timeoutIndex }
        armLock.unlock()
        if won { parker.ready() }
    }
}

/// A FIFO of sudogs waiting on one channel (Go's `waitq`). Guarded by the
/// channel's lock.
@usableFromInline struct WaitQueue {
    @usableFromInline var first: Sudog?
    @usableFromInline var last: Sudog?

    @usableFromInline init() {}

    @inlinable var isEmpty: Bool { first == nil }

    /// How many sudogs are queued (a walk; for tests).
    var count: Int {
        var n = 0
        var sg = first
        while let s = sg {
            n += 1
            sg = s.s.pointee.next
        }
        return n
    }

    @inlinable mutating func enqueue(_ sg: Sudog) {
        sg.s.pointee.next = nil
        sg.s.pointee.prev = last
        if let l = last { l.s.pointee.next = sg } else { first = sg }
        last = sg
    }

    /// Removes and returns the first sudog whose party can still be woken:
    /// a sudog of a `select` that something else already claimed is dropped.
    @inlinable mutating func dequeue() -> Sudog? {
        while let sg = first {
            unlink(sg)
            if let sel = sg.s.pointee.select {
                let st = Unmanaged<SelectState>.fromOpaque(sel).takeUnretainedValue()
                if !st.done.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged {
                    continue
                }
                st.winner = sg.s.pointee.caseIndex
            }
            return sg
        }
        return nil
    }

    /// Removes `sg` if it is still queued here (a losing `select` case, a
    /// cancelled task); returns whether it was.
    @discardableResult
    mutating func remove(_ sg: Sudog) -> Bool {
        if sg.s.pointee.prev == nil && first != sg { return false } // not queued (already dequeued)
        unlink(sg)
        return true
    }

    @inlinable mutating func unlink(_ sg: Sudog) {
        let p = sg.s.pointee.prev
        let n = sg.s.pointee.next
        if let p { p.s.pointee.next = n } else { first = n }
        if let n { n.s.pointee.prev = p } else { last = p }
        sg.s.pointee.next = nil
        sg.s.pointee.prev = nil
    }
}
