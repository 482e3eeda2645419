import Foundation
@testable import GMP
import Synchronization
import Testing

/// Tests whose failure would wedge the runtime for every later test (a
/// resize that never ends, a P whose timers have stopped, an M that crashed):
/// each runs in a child process, which exits 1 when its own bound runs out,
/// so a regression fails one test instead of hanging or killing the run.
@Suite struct IsolatedTests {
    @Test("Concurrent setProcs calls take turns: two Gs, and a G with a plain thread, 20 rounds each")
    func concurrentSetProcs() async {
        await #expect(processExitsWith: .success) {
            for round in 0..<20 {
                let twoGs = runG(procs: 2, timeout: 20) { () -> Bool in
                    let wg = WaitGroup(2)
                    go { GMP.setProcs(3); wg.done() }
                    go { GMP.setProcs(1); wg.done() }
                    wg.wait()
                    return GMP.procs == 1 || GMP.procs == 3
                }
                guard twoGs == true else {
                    FileHandle.standardError.write(Data("two Gs: round \(round) hung\n".utf8))
                    exit(1)
                }
                let threadDone = DispatchSemaphore(value: 0)
                let t = Thread {
                    GMP.setProcs(round % 2 == 0 ? 3 : 1)
                    threadDone.signal()
                }
                t.start()
                let inG = runG(timeout: 20) { () -> Bool in
                    GMP.setProcs(2)
                    return true
                }
                guard inG == true, threadDone.wait(timeout: .now() + 20) == .success else {
                    FileHandle.standardError.write(Data("a G and a thread: round \(round) hung\n".utf8))
                    exit(1)
                }
            }
            exit(0)
        }
    }

    @Test("A timer reset to a deadline of 0 (or any past one) fires, and later timers on its P still do (1 P)")
    func timerAtZero() async {
        await #expect(processExitsWith: .success) {
            let fired = runG(procs: 1, timeout: 20) { () -> Int in
                let count = Counters(1)
                let t0 = Timer { count.add(0) }
                t0.reset(at: 0)
                GMP.sleep(for: .milliseconds(10)) // hung here: the P's heap read as empty
                let tNeg = Timer { count.add(0) }
                tNeg.reset(at: -5)
                GMP.sleep(for: .milliseconds(10))
                // A socket-deadline-like timer armed afterwards fires too.
                let later = Timer { count.add(0) }
                later.reset(afterNanoseconds: 1_000_000)
                GMP.sleep(for: .milliseconds(10))
                return count[0]
            }
            exit(fired == 3 ? 0 : 1)
        }
    }

    @Test("Sleeping Int64.max nanoseconds, or .seconds(Int64.max), sleeps (it neither returns at once nor traps)")
    func sleepForever() async {
        await #expect(processExitsWith: .success) {
            let woke = runG(procs: 2, timeout: 20) { () -> Int in
                let woke = Counters(2)
                go { GMP.sleep(nanoseconds: .max); woke.add(0) }
                go { GMP.sleep(for: .seconds(Int64.max)); woke.add(1) }
                GMP.sleep(for: .milliseconds(20)) // both had long returned if their deadlines wrapped
                return woke[0] + woke[1]
            }
            exit(woke == 0 ? 0 : 1)
        }
    }

    /// What keeps a waiting program from being a deadlock.
    enum NotDeadlocked: String, CaseIterable, Codable, Sendable { case sleeping, blockingCall, threadSeenBefore, checkOff }

    @Test("No deadlock is reported while a G sleeps, sits in a blocking call, waits for a thread the runtime has seen, or with GMP_DEADLOCK=off",
          arguments: NotDeadlocked.allCases)
    func notDeadlocked(_ c: NotDeadlocked) async {
        await #expect(processExitsWith: .success) { [c] in
            // Each waits 2.5 s: past the check's second of grace.
            switch c {
            case .sleeping:
                GMP.run { GMP.sleep(for: .milliseconds(2_500)) }
            case .blockingCall:
                GMP.run {
                    let wg = WaitGroup(1)
                    go {
                        GMP.blocking { _ = usleep(2_500_000) }
                        wg.done()
                    }
                    wg.wait()
                }
            case .threadSeenBefore:
                let wg = WaitGroup(1)
                let t = Thread {
                    go {} // this thread has started a G: it may well wake one later
                    usleep(2_500_000)
                    wg.done()
                }
                t.start()
                GMP.run { wg.wait() }
            case .checkOff:
                setenv("GMP_DEADLOCK", "off", 1)
                let wg = WaitGroup(1)
                let t = Thread {
                    usleep(2_500_000)
                    wg.done()
                }
                t.start()
                GMP.run { wg.wait() }
            }
            exit(0)
        }
    }

    @Test("Inside GMP.blocking the body runs as a plain thread: a contended Mutex, sleep, yield, setProcs, a nested blocking call")
    func parkingInsideBlocking() async {
        await #expect(processExitsWith: .success) {
            let ok = runG(procs: 2, timeout: 20) { () -> Bool in
                let mu = Mutex()
                mu.lock()
                let done = WaitGroup(1)
                let sawG = Counters(1) // counts sightings of a G inside the body
                go {
                    GMP.blocking {
                        if GMP.currentG != nil || GMP.inGoroutine { sawG.add(0) }
                        mu.lock() // contended: the main G holds it until we queue
                        mu.unlock()
                        GMP.sleep(nanoseconds: 100_000)
                        GMP.yield()
                        GMP.setProcs(1)
                        GMP.setProcs(2)
                        GMP.blocking { GMP.sleep(nanoseconds: 1_000) }
                    }
                    done.done()
                }
                guard waitFor({ mu.hasWaiters }) else { return false }
                mu.unlock()
                done.wait()
                return sawG[0] == 0 && GMP.procs == 2
            }
            exit(ok == true ? 0 : 1)
        }
    }

    @Test("GMP.park inside GMP.blocking traps with a message saying so")
    func parkInsideBlockingTraps() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            GMP.run {
                GMP.blocking {
                    let l = FutexLock()
                    l.lock()
                    GMP.park(unlocking: l)
                }
            }
        }
        let err = stderrText(r)
        #expect(err.contains("GMP.park called inside GMP.blocking"), "stderr: \(err)")
    }
}
