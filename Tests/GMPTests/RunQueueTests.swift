import Foundation
@testable import GMP
import Synchronization
import Testing

/// A run queue shared by pointer between the owner and the thieves.
final class SharedQueue: @unchecked Sendable {
    // @unchecked: RunQueue's own contract (owner/thief roles) makes the sharing safe.
    let q: UnsafeMutablePointer<RunQueue>
    init() {
        q = .allocate(capacity: 1)
        q.initialize(to: RunQueue())
    }
    deinit {
        q.deinitialize(count: 1)
        q.deallocate()
    }
}

@Suite struct RunQueueTests {
    @Test("Ring: FIFO, runnext first, full at 256, takeHalf moves the oldest 128")
    func ringBasics() {
        let q = RunQueue()
        // (#expect cannot take a non-copyable receiver: results go through locals.)
        let emptyAtStart = q.isEmpty
        #expect(emptyAtStart)
        var pushed = 0
        for i in 1...256 where q.pushTail(UInt(i)) { pushed += 1 }
        #expect(pushed == 256)
        let pushedWhenFull = q.pushTail(999)
        #expect(!pushedWhenFull)
        let oldNext = q.swapRunNext(1000)
        #expect(oldNext == 0)
        let count = q.count
        #expect(count == 257)
        let half = q.takeHalf()
        #expect(half == 128)
        let moved = (0..<128).map { q.scratch[$0] }
        #expect(moved == (1...128).map { UInt($0) })
        let first = q.get()
        #expect(first?.item == 1000 && first?.inheritTime == true)
        let second = q.get()
        #expect(second?.item == 129 && second?.inheritTime == false)
        let rest = q.drain()
        #expect(rest == (130...256).map { UInt($0) })
        let emptyAtEnd = q.isEmpty
        #expect(emptyAtEnd)
    }

    @Test("A steal takes half of the victim's queue (the older half, rounded up), not all of it; runnext only when asked",
          arguments: [10, 7, 1])
    func stealTakesHalf(n: Int) {
        let victim = RunQueue()
        let thief = RunQueue()
        for i in 1...n { _ = victim.pushTail(UInt(i)) }
        let runNextBefore = victim.swapRunNext(999)
        #expect(runNextBefore == 0)
        let taken = n - n / 2
        let first = victim.steal(into: thief, stealRunNext: false, ownerRunning: { false })
        #expect(first == UInt(taken), "the thief runs the newest item it took")
        let thiefHas = thief.drain()
        #expect(thiefHas == (1..<taken).map { UInt($0) })
        let left = victim.drain()
        #expect(left == [999] + (taken + 1 ..< n + 1).map { UInt($0) })
        // An empty ring: runnext goes only in a round that may take it.
        _ = victim.swapRunNext(7)
        let none = victim.steal(into: thief, stealRunNext: false, ownerRunning: { false })
        #expect(none == nil)
        let next = victim.steal(into: thief, stealRunNext: true, ownerRunning: { false })
        #expect(next == 7)
    }

    @Test("Stress: one owner, three thieves; no item lost or taken twice")
    func stealStress() {
        let total = 2_000_000
        let seen = Counters(total + 1)
        let shared = SharedQueue()
        let owner = shared.q
        let stop = Atomic<Bool>(false)
        let thieves = 3
        let finished = DispatchSemaphore(value: 0)
        for _ in 0..<thieves {
            Thread.detachNewThread {
                let mine = RunQueue()
                while true {
                    let done = stop.load(ordering: .acquiring)
                    if let item = shared.q.pointee.steal(into: mine, stealRunNext: true, ownerRunning: { false }) {
                        seen.add(Int(item))
                        while let (x, _) = mine.get() { seen.add(Int(x)) }
                    } else if done {
                        break
                    }
                }
                finished.signal()
            }
        }
        var next = 1
        while next <= total {
            if next % 7 == 0 {
                let old = owner.pointee.swapRunNext(UInt(next))
                next += 1
                if old != 0 && !owner.pointee.pushTail(old) { seen.add(Int(old)) }
                continue
            }
            if owner.pointee.pushTail(UInt(next)) {
                next += 1
            } else if owner.pointee.takeHalf() > 0 {
                for i in 0..<128 { seen.add(Int(owner.pointee.scratch[i])) } // "to the global queue"
            }
            if next % 3 == 0, let (x, _) = owner.pointee.get() { seen.add(Int(x)) }
        }
        while let (x, _) = owner.pointee.get() { seen.add(Int(x)) }
        stop.store(true, ordering: .releasing)
        for _ in 0..<thieves { finished.wait() }
        while let (x, _) = owner.pointee.get() { seen.add(Int(x)) }
        var lost = 0, twice = 0
        for i in 1...total {
            if seen[i] == 0 { lost += 1 } else if seen[i] > 1 { twice += 1 }
        }
        #expect(lost == 0)
        #expect(twice == 0)
    }
}
