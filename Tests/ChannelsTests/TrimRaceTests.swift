import CGMP
import Channels
import Foundation
@testable import GMP
import Synchronization
import Testing

/// 48 bytes: more than a sudog's slot holds, so a G that sends or receives
/// one parks with the value's slot on its own stack (the stack is pinned
/// while it waits). A value read from, or written into, a stack whose pages
/// were given back fails `intact` (zeros, or garbage).
struct Checked: Sendable {
    var a, b, c, d, e: UInt64
    var sum: UInt64

    init(_ seed: UInt64) {
        a = seed &* 0x9E37_79B9_7F4A_7C15
        b = a ^ 0x5555_AAAA_5555_AAAA
        c = a &+ seed &* 17
        d = ~a
        e = seed
        sum = 0
        sum = checksum
    }

    var checksum: UInt64 { (a &* 3) ^ (b &* 5) ^ (c &* 7) ^ (d &* 11) ^ (e &* 13) ^ 0xABC_DEF0 }
    var intact: Bool { sum == checksum }
}

/// Idle stack trimming against channel values on the waiting G's stack.
@Suite(.serialized)
struct TrimRaceTests {
    /// Pairs of Gs, each sleeping a random 1–3 ms (a wait whose stack may be
    /// trimmed) and then exchanging a checksummed 48-byte value (a wait whose
    /// stack must not be), trimmed after 1 ms, with sysmon made to wait 2 ms
    /// between its first look at a G and its claim: a G seen asleep has time
    /// to wake and park in the exchange before the claim. Every value must
    /// arrive intact. Half the pairs exchange through `select` (a send case
    /// pins the stack too). Meanwhile a thread takes goroutine dumps, which
    /// read trimmed Gs' saved copies: every G must find its stack whole
    /// (trim word NONE) each time it runs again.
    @Test("Values over 32 bytes exchanged by Gs that sleep between exchanges arrive intact under trimming after 1 ms, with the trimmer's look-to-claim window widened")
    func bigValuesUnderTrimming() async {
        // Alone: it sets GMP.stackTrimAfter and the trimmer's claim delay, which
        // are process-wide, and counts GMP.stats.stackTrims over a baseline.
        await alone {
            let saved = GMP.stackTrimAfter
            GMP.stackTrimAfter = .milliseconds(1)
            GMP.trimClaimDelayForTesting = 2_000
            defer {
                GMP.trimClaimDelayForTesting = 0
                GMP.stackTrimAfter = saved
            }
            let pairs = GMP.isThreadSanitized ? 60 : 200
            let seconds: Int64 = GMP.isThreadSanitized ? 2 : 4
            let trimsBefore = GMP.stats.stackTrims
            let r = await runG(timeout: 120) { () -> (rounds: Int, bad: Int, notWhole: Int) in
                let rounds = Atomic<Int>(0)
                let bad = Atomic<Int>(0)
                let notWhole = Atomic<Int>(0)
                // BUSY on a running G can be sysmon's claim of a G it saw asleep
                // (2 ms ago, with the window widened), about to find it awake
                // and give the claim back (NONE): wait for that verdict, within
                // a bound. A G trimmed while it runs would end at DONE instead.
                let whole: @Sendable () -> Void = {
                    let ctx = GMP.currentG!.ctxUnread
                    var state = gmp_trim_state(ctx)
                    let giveUp = GMP.now + 1_000_000_000
                    while state == GMP_TRIM_BUSY && GMP.now < giveUp {
                        sched_yield()
                        state = gmp_trim_state(ctx)
                    }
                    if state != GMP_TRIM_NONE { notWhole.add(1, ordering: .relaxed) }
                }
                let dumping = Atomic<Bool>(true)
                let dumperEnded = WaitGroup(1)
                let dumper = Thread {
                    while dumping.load(ordering: .relaxed) { _ = GMP.dump() }
                    dumperEnded.done()
                }
                dumper.start()
                let done = WaitGroup(pairs)
                let end = GMP.now + seconds * 1_000_000_000
                let nap: @Sendable () -> Void = { GMP.sleep(nanoseconds: 1_000_000 + Int64(GMP.fastrand() % 2_000_000)) }
                for k in 0..<pairs {
                    let c = Chan<Checked>()
                    let never = Chan<Int>()
                    let viaSelect = k % 2 == 1
                    go {
                        var i: UInt64 = 0
                        while GMP.now < end {
                            nap()
                            whole()
                            i += 1
                            let v = Checked(UInt64(k) << 32 | i)
                            if viaSelect {
                                select { s in
                                    if s.send(c, v) {}
                                    if s.receive(never) != nil {}
                                }
                            } else {
                                c.send(v)
                            }
                            whole()
                        }
                        c.close()
                    }
                    go {
                        var want: UInt64 = 1
                        while true {
                            nap()
                            whole()
                            guard case .value(let v) = c.receive() else { break }
                            whole()
                            if !v.intact || v.e != (UInt64(k) << 32 | want) { bad.add(1, ordering: .relaxed) }
                            want += 1
                            rounds.add(1, ordering: .relaxed)
                        }
                        done.done()
                    }
                }
                done.wait()
                dumping.store(false, ordering: .relaxed)
                dumperEnded.wait() // (no dump of ours may run into the next test)
                return (rounds.load(ordering: .relaxed), bad.load(ordering: .relaxed), notWhole.load(ordering: .relaxed))
            }
            guard let r else {
                Issue.record("timed out")
                return
            }
            #expect(r.bad == 0, "\(r.bad) of \(r.rounds) values arrived corrupt")
            #expect(r.notWhole == 0, "\(r.notWhole) times a G ran with its stack not restored")
            #expect(r.rounds > pairs, "\(r.rounds) values exchanged")
            #expect(GMP.stats.stackTrims > trimsBefore, "stacks were trimmed meanwhile")
        }
    }
}
