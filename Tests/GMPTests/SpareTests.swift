import Foundation
@testable import GMP
import Synchronization
import Testing

/// Work that lands on a spare P (Spares.swift) is anyone's: stolen by the
/// real Ps once they are free, its timers seen by every M, its own hog
/// compensated in turn.
@Suite struct SpareTests {
    @Test("Gs queued and a timer armed on a spare P, whose own G then computes, run long before that G stops: on 2 Ps with both hogged, then freed")
    func workOnASpareIsNotStranded() async {
        let r = await alone(procs: 2) {
            await runG(timeout: 60) { () -> (onSpare: Bool, started: Int, woke: Bool, byCondition: Bool) in
                let hogsStop = Atomic<Bool>(false)
                let hogs = WaitGroup(2)
                for _ in 0..<2 {
                    go {
                        // Hogs both real Ps until the scenario is set up on a spare (bounded).
                        let end = GMP.now + 20_000_000_000
                        while !hogsStop.load(ordering: .relaxed) && GMP.now < end {}
                        hogs.done()
                    }
                }
                let started = Atomic<Int>(0)
                let woke = Atomic<Bool>(false)
                let onSpare = Atomic<Bool>(false)
                let byCondition = Atomic<Bool>(false)
                let done = WaitGroup(1)
                go {
                    // Woken by its timer while both Ps are hogged: only a spare can run it.
                    GMP.sleep(for: .milliseconds(100))
                    onSpare.store((GMP.currentProcessor ?? 0) >= Scheduler.maxProcs, ordering: .relaxed)
                    go {
                        GMP.sleep(for: .milliseconds(10)) // a timer on the spare's heap
                        woke.store(true, ordering: .relaxed)
                    }
                    for _ in 0..<20 { go { started.add(1, ordering: .relaxed) } } // the spare's queue
                    hogsStop.store(true, ordering: .relaxed) // the real Ps are free from now on
                    // Computes until the work behind it has run, at most 20 s.
                    let end = GMP.now + 20_000_000_000
                    while GMP.now < end {
                        if started.load(ordering: .relaxed) == 20 && woke.load(ordering: .relaxed) {
                            byCondition.store(true, ordering: .relaxed)
                            break
                        }
                    }
                    done.done()
                }
                done.wait()
                hogs.wait()
                return (onSpare.load(ordering: .relaxed), started.load(ordering: .relaxed),
                        woke.load(ordering: .relaxed), byCondition.load(ordering: .relaxed))
            }
        }
        #expect(r?.onSpare == true, "the G woken while both Ps were hogged ran on a spare")
        #expect(r?.byCondition == true,
                "the 20 Gs and the sleeper ran while the spare's own G computed (started \(String(describing: r?.started)), woke \(String(describing: r?.woke)))")
    }

    @Test("CPU-bound Gs do not fan out into a thread each: on 1 P, 8 Gs that compute 200 ms each run at most 2 at a time (the P and one spare)")
    func sparesAreBounded() async {
        // A spare lent for an earlier test is given back first: the Gs could
        // run on it, and no spare would be lent for this one.
        let r = await alone(procs: 1) {
            _ = waitFor(seconds: 10, every: 1_000_000) { GMP.stats.spareProcs == 0 }
            return await runG(timeout: 60) { () -> (most: Int, lends: Int) in
                let running = Atomic<Int>(0)
                let most = Atomic<Int>(0)
                let lendsBefore = GMP.stats.spareLends
                let done = WaitGroup(8)
                for _ in 0..<8 {
                    go {
                        let now = running.add(1, ordering: .relaxed).newValue
                        var m = most.load(ordering: .relaxed)
                        while now > m {
                            let (exchanged, original) = most.compareExchange(expected: m, desired: now, ordering: .relaxed)
                            if exchanged { break }
                            m = original
                        }
                        let end = GMP.now + 200_000_000
                        while GMP.now < end {}
                        running.subtract(1, ordering: .relaxed)
                        done.done()
                    }
                }
                done.wait()
                return (most.load(ordering: .relaxed), GMP.stats.spareLends - lendsBefore)
            }
        }
        #expect(r?.lends ?? 0 >= 1, "a spare was lent for the Gs queued behind the first")
        #expect(r?.most ?? 99 <= 2, "at most GMPPROCS spares beside the P: \(String(describing: r?.most)) ran at once")
    }
}
