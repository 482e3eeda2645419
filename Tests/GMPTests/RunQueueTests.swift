import Foundation
@testable import GMP
import Synchronization
import Testing

@Suite struct RunQueueTests {
    @Test("Ring: FIFO, runnext first, full at 256, takeHalf moves the oldest 128")
    func ringBasics() {
        let q = RunQueue()
        #expect(q.isEmpty)
        for i in 1...256 { #expect(q.pushTail(UInt(i))) }
        #expect(!q.pushTail(999))
        #expect(q.swapRunNext(1000) == 0)
        #expect(q.count == 257)
        #expect(q.takeHalf() == 128)
        #expect((0..<128).map { q.scratch[$0] } == (1...128).map { UInt($0) })
        #expect(q.get()! == (1000, true))
        #expect(q.get()! == (129, false))
        #expect(q.drain() == (130...256).map { UInt($0) })
        #expect(q.isEmpty)
    }

    @Test("Stress: one owner, three thieves; no item lost or taken twice")
    func stealStress() {
        let total = 2_000_000
        let seen = Counters(total + 1)
        let owner = RunQueue()
        let stop = Atomic<Bool>(false)
        let thieves = 3
        let finished = DispatchSemaphore(value: 0)
        for _ in 0..<thieves {
            Thread.detachNewThread {
                let mine = RunQueue()
                while true {
                    let done = stop.load(ordering: .acquiring)
                    if let item = owner.steal(into: mine, stealRunNext: true, ownerRunning: { false }) {
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
                let old = owner.swapRunNext(UInt(next))
                next += 1
                if old != 0 && !owner.pushTail(old) { seen.add(Int(old)) }
                continue
            }
            if owner.pushTail(UInt(next)) {
                next += 1
            } else if owner.takeHalf() > 0 {
                for i in 0..<128 { seen.add(Int(owner.scratch[i])) } // "to the global queue"
            }
            if next % 3 == 0, let (x, _) = owner.get() { seen.add(Int(x)) }
        }
        while let (x, _) = owner.get() { seen.add(Int(x)) }
        stop.store(true, ordering: .releasing)
        for _ in 0..<thieves { finished.wait() }
        while let (x, _) = owner.get() { seen.add(Int(x)) }
        var lost = 0, twice = 0
        for i in 1...total {
            if seen[i] == 0 { lost += 1 } else if seen[i] > 1 { twice += 1 }
        }
        #expect(lost == 0)
        #expect(twice == 0)
    }
}
