import Foundation
import GMP
import GMPTestSupport
import Synchronization
import Testing

/// GMP.executor: Swift tasks run as Gs (Executor.swift).
@Suite(.serialized) struct ExecutorTests {
    @Test("A task preferring GMP.executor runs in a G, before and after it suspends")
    func runsInGs() async {
        let r = await Task(executorPreference: GMP.executor) { () -> [Bool] in
            var seen = [GMP.inGoroutine]
            await Task.yield()
            seen.append(GMP.inGoroutine)
            try? await Task.sleep(for: .milliseconds(5))
            seen.append(GMP.inGoroutine)
            return seen
        }.value
        #expect(r == [true, true, true])
        // Without the preference, a task runs on Swift's pool, not in a G.
        #expect(await Task { GMP.inGoroutine }.value == false)
    }

    @Test("withTaskExecutorPreference(GMP.executor): child tasks (a task group, async let) run in Gs")
    func childrenInGs() async {
        let r = await withTaskExecutorPreference(GMP.executor) { () -> (Int, Bool) in
            async let first = GMP.inGoroutine
            let inGroup = await withTaskGroup(of: Bool.self) { g in
                for _ in 0..<100 { g.addTask { GMP.inGoroutine } }
                return await g.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            return (inGroup, await first)
        }
        #expect(r.0 == 100)
        #expect(r.1)
    }

    @Test("GMP.await's task runs as a G: from a G on one P it starts, finishes and hands back on that P")
    func awaitOnExecutor() {
        let r = runG(procs: 1) { () -> (Bool, Int?)? in
            try? GMP.await { () async -> (Bool, Int?) in (GMP.inGoroutine, GMP.currentProcessor) }
        }
        #expect(r??.0 == true)
        #expect(r??.1 == 0)
    }

    @Test("GMP.blocking inside a task on GMP.executor: on one P, while another G computes, the job ends on its own thread")
    func blockingInJob() {
        let r = runG(procs: 1) { () -> (Int, Bool)? in
            let stop = Atomic<Bool>(false)
            let wg = WaitGroup(1)
            let spins = Atomic<Int>(0)
            go {
                // Computes without parking for 200 ms: takes the P while the
                // task's blocking call is out, so none is free when it returns
                // (the job waits for the P on its own thread until then).
                let end = GMP.now + 200_000_000
                while !stop.load(ordering: .relaxed) && GMP.now < end { spins.add(1, ordering: .relaxed) }
                wg.done()
            }
            let v = try? GMP.await { () async -> (Int, Bool) in
                let before = pthread_self()
                GMP.blocking { usleep(30_000) }
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
}
