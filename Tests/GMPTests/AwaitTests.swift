import Foundation
import GMP
import GMPTestSupport
import Synchronization
import Testing

private struct Boom: Error, Equatable {}

@Suite(.serialized) struct AwaitTests {
    @Test("GMP.await parks only the G: on one P, another G keeps running while the task sleeps; the value comes back")
    func parksOnlyTheG() async {
        // Alone: another test's G waiting in GMP.await would show in the dump too.
        await alone {
            let r = await runG(procs: 1) { () -> (Int, Int, Bool)? in
                let ticks = Atomic<Int>(0)
                let stop = Atomic<Bool>(false)
                let sawAwait = Atomic<Bool>(false)
                let wg = WaitGroup(1)
                go {
                    while !stop.load(ordering: .relaxed) {
                        // The awaiting G shows as such in the goroutine dump.
                        if ticks.add(1, ordering: .relaxed).newValue >= 2 && !sawAwait.load(ordering: .relaxed)
                            && GMP.dump().contains(" [await") {
                            sawAwait.store(true, ordering: .relaxed)
                        }
                        GMP.sleep(for: .milliseconds(1))
                    }
                    wg.done()
                }
                guard let v = try? GMP.await({ () async throws -> Int in
                    // Out until the other G has ticked five times and seen us in
                    // the dump (at most 10 s): it can only if this G left the P.
                    let end = ContinuousClock.now + .seconds(10)
                    while (ticks.load(ordering: .relaxed) < 5 || !sawAwait.load(ordering: .relaxed)) && .now < end {
                        try await Task.sleep(for: .milliseconds(1))
                    }
                    return 42
                }) else { return nil }
                let seen = ticks.load(ordering: .relaxed)
                stop.store(true, ordering: .relaxed)
                wg.wait()
                return (v, seen, sawAwait.load(ordering: .relaxed))
            }
            guard let (v, ticks, sawAwait) = r ?? nil else {
                Issue.record("no value")
                return
            }
            #expect(v == 42)
            #expect(sawAwait, "no G in the dump waited in [await]")
            // With the P held by the awaiting G, the ticker could not have run at all.
            #expect(ticks >= 5, "the other G ticked \(ticks) times in 10 s")
        }
    }

    @Test("GMP.await rethrows the task's error, from a G and from a plain thread")
    func errorsRethrown() async {
        let fromG = await runG(procs: 2) { () -> Bool in
            do {
                _ = try GMP.await { () async throws -> Int in throw Boom() }
                return false
            } catch {
                return error as? Boom == Boom()
            }
        }
        #expect(fromG == true)
        let fromThread = await onThread(timeout: 10) {
            GMP.await { () async -> Int in await Task.yield(); return 7 } as Int?
        }
        #expect(fromThread == .some(.some(7)))
    }

    @Test("GMP.await keeps the closure's error type: none needs no try, a typed one is caught as that type")
    func typedThrows() async {
        let r = await runG(procs: 1) { () -> (Int, Boom?) in
            let plain: Int = GMP.await { 42 } // (does not compile if GMP.await throws untyped)
            do throws(Boom) {
                _ = try GMP.await { () async throws(Boom) -> Int in throw Boom() }
                return (plain, nil)
            } catch {
                return (plain, error) // `error` is a Boom, not `any Error`
            }
        }
        #expect(r?.0 == 42)
        #expect(r?.1 == Boom())
    }

    @Test("10,000 Gs await at once, each gets its own value")
    func tenThousand() async {
        let n = 10_000
        let sum = await runG(procs: 2, timeout: 60) { () -> Int in
            let total = Atomic<Int>(0)
            let wg = WaitGroup(n)
            for i in 0..<n {
                go {
                    let v = GMP.await { () async -> Int in
                        await Task.yield()
                        return i
                    }
                    total.add(v, ordering: .relaxed)
                    wg.done()
                }
            }
            wg.wait()
            return total.load(ordering: .relaxed)
        }
        #expect(sum == n * (n - 1) / 2)
    }

    @Test("A G awaiting a task is not a deadlock, though every G is parked for over a second")
    func notADeadlock() async {
        await #expect(processExitsWith: .success) {
            setenv("GMPPROCS", "1", 1)
            let v = GMP.run { () -> Int in
                (try? GMP.await { () async throws -> Int in
                    try await Task.sleep(for: .milliseconds(1500))
                    return 5
                }) ?? 0
            }
            exit(v == 5 ? 0 : 1)
        }
    }
}
