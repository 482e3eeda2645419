import CGMP
import Foundation
@testable import GMP
import Synchronization
import Testing

/// Recurses `depth` frames, each with bytes of its own written with a
/// pattern; parks at the bottom; on the way back checks every frame's bytes.
/// True if all were intact.
@inline(never) func deepPark(_ depth: Int, _ seed: Int, _ park: () -> Void) -> Bool {
    var local: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)
    return withUnsafeMutableBytes(of: &local) { buf -> Bool in
        for i in 0..<buf.count { buf[i] = UInt8(truncatingIfNeeded: seed &* 7 &+ depth &* 31 &+ i) }
        let below = depth == 0 ? { park(); return true }() : deepPark(depth - 1, seed, park)
        var same = true
        for i in 0..<buf.count where buf[i] != UInt8(truncatingIfNeeded: seed &* 7 &+ depth &* 31 &+ i) { same = false }
        return below && same
    }
}

/// Gs, under a G-aware lock (which TSan sees through; Synchronization's
/// futex-based Mutex it does not).
final class Registry: @unchecked Sendable {
    // @unchecked: `gs` is only touched under `lock`.
    private let lock = Mutex()
    private var gs: [G] = []
    func add(_ g: G) { lock.lock(); gs.append(g); lock.unlock() }
    func all<T>(_ body: ([G]) -> T) -> T { lock.lock(); defer { lock.unlock() }; return body(gs) }
}

/// Idle stack trimming (Trim.swift): part of the serialized scheduler suite.
extension SchedulerTests {
    @Test("A G parked past stackTrimAfter gives its stack pages back; the dump still shows its stack; it wakes to its frames intact")
    func trimmedGsResume() async {
        // Alone: it changes trimming for the whole process and counts its trims.
        await alone(procs: 2) { await trimmedGsResumeAlone() }
    }

    private func trimmedGsResumeAlone() async {
        let saved = GMP.stackTrimAfter
        // Off until all of them have parked, so that sysmon's next pass finds
        // them together: how many passes a slow start spreads them over is
        // not what the system-call count below is about.
        GMP.stackTrimAfter = nil
        defer { GMP.stackTrimAfter = saved }
        let n = 200
        let r = await runG(timeout: 60) { () -> (intact: Int, trimmed: Bool, dump: String, trims: Int, calls: Int) in
            let gate = WaitGroup(1)
            let done = WaitGroup(n)
            let intact = Atomic<Int>(0)
            let gs = Registry()
            for i in 0..<n {
                go {
                    gs.add(GMP.currentG!)
                    if deepPark(8, i, { gate.wait() }) { intact.add(1, ordering: .relaxed) }
                    done.done()
                }
            }
            let parked = waitFor(seconds: 20) {
                gs.all { list in list.count == n && list.allSatisfy { $0.parkedSince().0 == .waiting } }
            }
            let before = GMP.stats
            GMP.stackTrimAfter = .milliseconds(5)
            // Every one of them, not just some G of another test.
            let trimmed = parked && waitFor(seconds: 20) {
                gs.all { list in list.count == n && list.allSatisfy { gmp_trim_state($0.ctxUnread) == GMP_TRIM_DONE } }
            }
            let after = GMP.stats
            let dump = GMP.dump()
            gate.done()
            done.wait()
            return (intact.load(ordering: .relaxed), trimmed, dump,
                    after.stackTrims - before.stackTrims, after.trimCalls - before.trimCalls)
        }
        guard let r else {
            Issue.record("timed out")
            return
        }
        #expect(r.trimmed, "all \(n) parked Gs trimmed")
        // Batched: neighbours share a range, ranges share a system call.
        #expect(r.trims >= n && r.calls * 4 <= r.trims, "\(r.trims) trims in \(r.calls) system calls")
        #expect(r.intact == n, "frames intact after the wake-up")
        #expect(r.dump.contains("\(n) goroutines [WaitGroup") && r.dump.contains("    deepPark(_:_:_:)\n"),
                "the stacks of trimmed Gs, read from their saved copies:\n\(r.dump.prefix(3000))")
    }

    @Test("Trims race wake-ups: Gs sleeping and waiting on a Mutex for random short times on 2 Ps, trimmed after 1 ms, always wake to their frames intact")
    func trimStress() async {
        // Alone: it changes trimming for the whole process and counts its trims.
        await alone(procs: 2) { await trimStressAlone() }
    }

    private func trimStressAlone() async {
        let saved = GMP.stackTrimAfter
        GMP.stackTrimAfter = .milliseconds(1)
        defer { GMP.stackTrimAfter = saved }
        let n = GMP.isThreadSanitized ? 200 : 1_000
        let rounds = GMP.isThreadSanitized ? 10 : 30
        let trimsBefore = GMP.stats.stackTrims
        let r = await runG(timeout: 120) { () -> Int in
            let done = WaitGroup(n)
            let intact = Atomic<Int>(0)
            let mu = Mutex()
            for i in 0..<n {
                go {
                    var ok = 0
                    for round in 0..<rounds {
                        let park: () -> Void
                        if (i + round) % 2 == 0 {
                            // Woken by a timer (sysmon or an M firing it).
                            park = { GMP.sleep(nanoseconds: Int64(200_000 + Int(GMP.fastrand() % 3_000_000))) }
                        } else {
                            // Woken by another G's unlock (runnext), which held it for a while.
                            park = {
                                mu.lock()
                                GMP.sleep(nanoseconds: Int64(GMP.fastrand() % 200_000))
                                mu.unlock()
                            }
                        }
                        if deepPark(4 + (i % 5), i &+ round, park) { ok += 1 }
                    }
                    if ok == rounds { intact.add(1, ordering: .relaxed) }
                    done.done()
                }
            }
            done.wait()
            return intact.load(ordering: .relaxed)
        }
        #expect(r == n, "Gs whose frames were intact after every wake-up")
        #expect(GMP.stats.stackTrims > trimsBefore, "stacks were trimmed meanwhile")
        #expect(GMP.stats.trimmedBytes >= 0)
    }

    @Test("GMP_TRIM_AFTER parses off, milliseconds, ms and s; anything else is refused")
    func trimAfterParsing() {
        #expect(Scheduler.parseTrimAfter("off") == 0)
        #expect(Scheduler.parseTrimAfter("0") == 0)
        #expect(Scheduler.parseTrimAfter("250") == 250_000_000)
        #expect(Scheduler.parseTrimAfter("250ms") == 250_000_000)
        #expect(Scheduler.parseTrimAfter("2s") == 2_000_000_000)
        #expect(Scheduler.parseTrimAfter("soon") == nil)
        #expect(Scheduler.parseTrimAfter("-5") == nil)
        #expect(Scheduler.parseTrimAfter("") == nil)
        #expect(Scheduler.parseTrimAfter("99999999999s") == nil)
    }
}
