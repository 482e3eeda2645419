import Foundation
import GMP
import GMPTestSupport
import Synchronization
import Testing

/// GMP.executor: Swift tasks run as Gs (Executor.swift).
@Suite(.serialized) struct ExecutorTests {
    @Test("A task preferring GMP.executor runs in a G, before and after it suspends")
    func runsInGs() async throws {
        let r = try await bounded { await Task(executorPreference: GMP.executor) { () -> [Bool] in
            var seen = [GMP.inGoroutine]
            await Task.yield()
            seen.append(GMP.inGoroutine)
            try? await Task.sleep(for: .milliseconds(5))
            seen.append(GMP.inGoroutine)
            return seen
        }.value }
        #expect(r == [true, true, true])
        // Without the preference, a task runs on Swift's pool, not in a G.
        #expect(try await bounded { await Task { GMP.inGoroutine }.value } == false)
    }

    @Test("withTaskExecutorPreference(GMP.executor): child tasks (a task group, async let) run in Gs")
    func childrenInGs() async throws {
        let r = try await bounded { await withTaskExecutorPreference(GMP.executor) { () -> (Int, Bool) in
            async let first = GMP.inGoroutine
            let inGroup = await withTaskGroup(of: Bool.self) { g in
                for _ in 0..<100 { g.addTask { GMP.inGoroutine } }
                return await g.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            return (inGroup, await first)
        } }
        #expect(r?.0 == 100)
        #expect(r?.1 == true)
    }

    @Test("GMP.await's task runs as a G: from a G on one P it starts, finishes and hands back on that P")
    func awaitOnExecutor() async {
        let r = await runG(procs: 1) { () -> (Bool, Int?)? in
            GMP.await { () async -> (Bool, Int?) in (GMP.inGoroutine, GMP.currentProcessor) } as (Bool, Int?)?
        }
        #expect(r??.0 == true)
        #expect(r??.1 == 0)
    }

    @Test("GMP.blocking inside a task on GMP.executor leaves its P to a G that computes beside it, and the job still ends on its own thread")
    func blockingInJob() async {
        let r = await runG(procs: 1) { () -> (Int, Bool)? in
            let stop = Atomic<Bool>(false)
            let wg = WaitGroup(1)
            let spins = Atomic<Int>(0)
            go {
                // Computes without parking for up to 200 ms: the blocking
                // call leaves the P (sysmon hands it to this G), and the job
                // must wait for it on its own thread, not come back on another.
                let end = GMP.now + 200_000_000
                while !stop.load(ordering: .relaxed) && GMP.now < end { spins.add(1, ordering: .relaxed) }
                wg.done()
            }
            let v: (Int, Bool)? = GMP.await { () async -> (Int, Bool) in
                let before = pthread_self()
                _ = GMP.blocking { usleep(30_000) }
                let same = pthread_self() == before
                stop.store(true, ordering: .relaxed)
                await Task.yield()
                return (Array(0..<1000).reduce(0, +), same)
            }
            wg.wait()
            return v
        }
        #expect(r??.0 == 499_500)
        #expect(r??.1 == true)
    }

    @Test("GMP.blocking inside a task on GMP.executor runs its body as a plain thread: a WaitGroup wait, a contended Mutex, GMP.sleep and setProcs block the thread instead of trapping or hanging")
    func blockingBodyIsAPlainThread() async {
        await #expect(processExitsWith: .success) {
            let ok = runG(procs: 2) { () -> Bool in
                let wg = WaitGroup(1)
                let mu = Mutex()
                mu.lock()
                let inside = Atomic<Int>(0)
                go {
                    // Let the body block first on the WaitGroup, then on the Mutex.
                    guard waitFor({ inside.load(ordering: .relaxed) == 1 }) else { return }
                    wg.done()
                    guard waitFor({ inside.load(ordering: .relaxed) == 2 }) else { return }
                    mu.unlock()
                }
                let r = try? GMP.await { () async -> Bool in
                    let thread = pthread_self()
                    let plain = GMP.blocking { () -> Bool in
                        let noG = GMP.currentG == nil && !GMP.inGoroutine
                        inside.store(1, ordering: .relaxed)
                        wg.wait()
                        inside.store(2, ordering: .relaxed)
                        mu.lock()
                        mu.unlock()
                        GMP.sleep(for: .milliseconds(5))
                        GMP.yield()
                        GMP.setProcs(1) // stops the world, this call's P among the others
                        GMP.setProcs(2)
                        return noG
                    }
                    return plain && pthread_self() == thread && GMP.inGoroutine
                }
                return r == true
            }
            exit(ok == true ? 0 : 1)
        }
    }

    @Test("A G waiting for a task on GMP.executor that sleeps past the deadlock check's grace is not a deadlock")
    func noFalseDeadlock() async {
        await #expect(processExitsWith: .success) {
            let ok = GMP.run { () -> Bool in
                let wg = WaitGroup(1)
                Task(executorPreference: GMP.executor) {
                    try? await Task.sleep(for: .milliseconds(1_500)) // re-enqueued by Swift's timer, not ours
                    wg.done()
                }
                wg.wait()
                return true
            }
            exit(ok ? 0 : 1)
        }
    }

    @Test("Under GMP_CHAOS a task's job is never yielded away at a chaos point (an uncontended Mutex, a WaitGroup at zero)")
    func chaosSparesJobs() async {
        await #expect(processExitsWith: .success) {
            setenv("GMP_CHAOS", "5", 1)
            let n = GMP.run { () -> Int in
                (try? GMP.await { () async -> Int in
                    let mu = GMP.Mutex(), wg = WaitGroup(0)
                    var n = 0
                    for _ in 0..<1_000 {
                        mu.withLock { n += 1 }
                        wg.wait()
                    }
                    return n
                }) ?? -1
            }
            exit(n == 1_000 && GMP.chaosSeed == 5 ? 0 : 1)
        }
    }
}
