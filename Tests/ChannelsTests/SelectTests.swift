@testable import Channels
import Foundation
import GMP
import Synchronization
import Testing

/// Go's select tests (test/chan/select*.go, runtime/chan_test.go) in Swift.
@Suite(.serialized)
struct SelectTests {
    @Test("test/chan/select.go: a select with two ready cases picks both, randomly", arguments: procCounts)
    func randomChoice(procs: Int) async {
        let counts = await runG(procs: procs) { () -> [Int] in
            let a = Chan<Int>(capacity: 1), b = Chan<Int>(capacity: 1)
            var n = [0, 0]
            for _ in 0..<10_000 {
                _ = a.trySend(1)
                _ = b.trySend(2)
                select { s in
                    if s.receive(a) != nil { n[0] += 1 }
                    if s.receive(b) != nil { n[1] += 1 }
                }
            }
            return n
        }
        #expect((counts?[0] ?? 0) > 4_000 && (counts?[1] ?? 0) > 4_000, "\(counts ?? [])")
    }

    @Test("TestSelectFairness: 3 ready channels each win within 5% of a third", arguments: procCounts)
    func fairness(procs: Int) async {
        let counts = await runG(procs: procs) { () -> [Int] in
            let trials = 30_000
            let c1 = Chan<UInt8>(capacity: trials + 1), c2 = Chan<UInt8>(capacity: trials + 1)
            let c3 = Chan<UInt8>(capacity: trials + 1)
            for _ in 0..<(trials + 1) { c1.send(1); c2.send(2); c3.send(3) }
            let c4 = Chan<UInt8>() // never ready
            var cnt = [0, 0, 0, 0]
            for _ in 0..<trials {
                select { s in
                    if s.receive(c3) != nil { cnt[2] += 1 }
                    if s.receive(c4) != nil { cnt[3] += 1 }
                    if s.receive(c1) != nil { cnt[0] += 1 }
                    if s.receive(c2) != nil { cnt[1] += 1 }
                }
            }
            return cnt
        }
        guard let counts else { Issue.record("timed out"); return }
        // Go's test: each count within [trials/3 * (1-0.05), trials/3 * (1+0.05)]
        // (a binomial bound loose enough to fail only once in a very long while).
        for i in 0..<3 { #expect(counts[i] > 9_500 && counts[i] < 10_500, "\(counts)") }
        #expect(counts[3] == 0)
    }

    @Test("test/chan/select3.go: what blocks and what does not", arguments: procCounts)
    func select3(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            let nilChan: Chan<Int>? = nil
            // Nil-channel cases are never ready: only the time-out or default can fire.
            var fired = ""
            select { s in
                if s.receive(nilChan) != nil { fired = "recv" }
                if s.send(nilChan, 1) { fired = "send" }
                if s.timeout(afterNanoseconds: 1_000_000) { fired = "timeout" }
            }
            guard fired == "timeout" else { return false }
            select { s in
                if s.receive(nilChan) != nil { fired = "recv" }
                if s.otherwise() { fired = "default" }
            }
            guard fired == "default" else { return false }
            // A closed channel's receive never blocks.
            let closed = Chan<Int>()
            closed.close()
            select { s in
                if let r = s.receive(closed) { fired = r == .closed ? "closed" : "value" }
                if s.timeout(afterNanoseconds: 10_000_000_000) { fired = "timeout" }
            }
            guard fired == "closed" else { return false }
            // An unbuffered send with no receiver blocks (default taken); buffered with room does not.
            let unbuf = Chan<Int>(), buf = Chan<Int>(capacity: 1)
            select { s in
                if s.send(unbuf, 1) { fired = "sent" }
                if s.otherwise() { fired = "default" }
            }
            guard fired == "default" else { return false }
            select { s in
                if s.send(buf, 1) { fired = "sent" }
                if s.otherwise() { fired = "default" }
            }
            return fired == "sent" && buf.receive() == .value(1)
        }
        #expect(ok == true)
    }

    @Test("select5-style generated cases: every mix of send/receive, ready or not, with and without default")
    func generated() async {
        let ok = await runG(procs: 2) { () -> Bool in
            // For each shape: case kind (send/recv), buffered or not, ready or not, default or not.
            for isSend in [false, true] {
                for cap in [0, 1] {
                    for ready in [false, true] {
                        for withDefault in [false, true] {
                            let c = Chan<Int>(capacity: cap)
                            let partner = Chan<Int>(capacity: 1)
                            if ready {
                                if isSend {
                                    if cap == 0 { go { partner.send(c.receive().value ?? -1) } } // receiver waits
                                } else {
                                    if cap == 0 { go { c.send(42) } } else { c.send(42) }
                                }
                            }
                            if ready && cap == 0 {
                                // The partner must be parked on the channel first.
                                guard waitFor({ isSend ? c.hasWaitingReceiver : c.hasWaitingSender }) else {
                                    print("select case isSend=\(isSend): the partner never parked")
                                    return false
                                }
                            }
                            var result = "none"
                            select { s in
                                if isSend {
                                    if s.send(c, 42) { result = "sent" }
                                } else {
                                    if let r = s.receive(c) { result = r == .value(42) ? "recv42" : "recv?" }
                                }
                                if withDefault, s.otherwise() { result = "default" }
                                if !withDefault, s.timeout(afterNanoseconds: 5_000_000) { result = "timeout" }
                            }
                            let canGo = ready || (isSend && cap == 1)
                            let expected = canGo ? (isSend ? "sent" : "recv42") : (withDefault ? "default" : "timeout")
                            if result != expected {
                                print("select case isSend=\(isSend) cap=\(cap) ready=\(ready) default=\(withDefault): \(result) != \(expected)")
                                return false
                            }
                            if isSend && ready && cap == 0 && partner.receive() != .value(42) { return false }
                        }
                    }
                }
            }
            return true
        }
        #expect(ok == true)
    }

    @Test("test/chan/select6.go: a failed select case does not corrupt the queue of other waiters (Go issue 2075)", arguments: procCounts)
    func select6(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            let c1 = Chan<Bool>(), c2 = Chan<Bool>(), c3 = Chan<Bool>()
            let bad = Counter()
            go { _ = c1.receive() }
            go {
                select { s in
                    if s.receive(c1) != nil { bad.add() }
                    if s.receive(c2) != nil { c3.send(true) }
                }
                _ = c1.receive()
            }
            go { c2.send(true) }
            _ = c3.receive()
            c1.send(true)
            c1.send(true)
            return bad.value == 0
        }
        #expect(ok == true)
    }

    @Test("test/chan/select7.go: receive and send inside selects against plain operations", arguments: procCounts)
    func select7(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            // recv1: plain receive; recv2: select receive; recv3: select with a dummy case.
            let dummy = Chan<Int>()
            for mode in 0..<3 {
                let c = Chan<Int>()
                go { c.send(1) }
                var v = 0
                switch mode {
                case 0: v = c.receive().value ?? 0
                case 1: select { s in if let r = s.receive(c) { v = r.value ?? 0 } }
                default:
                    select { s in
                        if let r = s.receive(c) { v = r.value ?? 0 }
                        if s.receive(dummy) != nil { v = -1 }
                    }
                }
                guard v == 1 else { return false }
                // The same three ways to send.
                let d = Chan<Int>()
                let got = Chan<Int>(capacity: 1)
                go { got.send(d.receive().value ?? 0) }
                switch mode {
                case 0: d.send(2)
                case 1: select { s in if s.send(d, 2) {} }
                default:
                    select { s in
                        _ = s.send(d, 2)
                        if s.send(dummy, 3) { v = -1 }
                    }
                }
                guard got.receive() == .value(2), v == 1 else { return false }
            }
            return true
        }
        #expect(ok == true)
    }

    @Test("TestSelfSelect: a G selecting to send and receive on the same channel never pairs with itself", arguments: procCounts)
    func selfSelect(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            for cap in [0, 10] {
                let c = Chan<Int>(capacity: cap)
                let wg = WaitGroup(2)
                let bad = Counter()
                for p in 0..<2 {
                    go {
                        for i in 0..<1000 {
                            if p == 0 || i % 2 == 0 {
                                select { s in
                                    if s.send(c, p) {}
                                    if let r = s.receive(c), cap == 0, r.value == p { bad.add() }
                                }
                            } else {
                                select { s in
                                    if let r = s.receive(c), cap == 0, r.value == p { bad.add() }
                                    if s.send(c, p) {}
                                }
                            }
                        }
                        wg.done()
                    }
                }
                wg.wait()
                if bad.value != 0 { return false }
            }
            return true
        }
        #expect(ok == true)
    }

    @Test("TestSelectDuplicateChannel: the same channel in several cases, then its queue still works", arguments: procCounts)
    func duplicateChannel(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            let c = Chan<Int>(), d = Chan<Int>(), e = Chan<Int>()
            // A: select on c twice and d.
            go {
                select { s in
                    if s.receive(c) != nil {}
                    if s.receive(c) != nil {}
                    if s.receive(d) != nil {}
                }
                e.send(9)
            }
            guard waitFor({ c.waitingReceivers == 2 }) else { return false } // A is queued on c first, twice
            // B: a plain receive on c, queued behind A's two sudogs.
            let got = Chan<Int>(capacity: 1)
            go { got.send(c.receive().value ?? -1) }
            guard waitFor({ c.waitingReceivers == 3 }) else { return false }
            d.send(7)   // wakes A, which takes itself off c's queue
            guard e.receive() == .value(9) else { return false }
            c.send(8)   // must wake B (a corrupted queue would pick A's stale sudog)
            return got.receive() == .value(8)
        }
        #expect(ok == true)
    }

    @Test("TestSelectStress: 4 channels, senders and receivers in selects, nothing lost", arguments: procCounts)
    func stress(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            let c = [Chan<Int>(), Chan<Int>(), Chan<Int>(capacity: 2), Chan<Int>(capacity: 3)]
            let n = 10_000
            let wg = WaitGroup(10)
            // Plain senders and receivers on each channel.
            for k in 0..<4 {
                go { for _ in 0..<n { c[k].send(0) }; wg.done() }
            }
            for k in 0..<4 {
                go { for _ in 0..<n { _ = c[k].receive() }; wg.done() }
            }
            // A select sender and a select receiver, each n per channel.
            go {
                var left = [n, n, n, n]
                while left != [0, 0, 0, 0] {
                    select { s in
                        if left[0] > 0, s.send(c[0], 0) { left[0] -= 1 }
                        if left[0] <= 0, s.send(nil as Chan<Int>?, 0) {}
                        if left[1] > 0, s.send(c[1], 0) { left[1] -= 1 }
                        if left[1] <= 0, s.send(nil as Chan<Int>?, 0) {}
                        if left[2] > 0, s.send(c[2], 0) { left[2] -= 1 }
                        if left[2] <= 0, s.send(nil as Chan<Int>?, 0) {}
                        if left[3] > 0, s.send(c[3], 0) { left[3] -= 1 }
                        if left[3] <= 0, s.send(nil as Chan<Int>?, 0) {}
                    }
                }
                wg.done()
            }
            go {
                var left = [n, n, n, n]
                while left != [0, 0, 0, 0] {
                    select { s in
                        for k in 0..<4 {
                            if s.receive(left[k] > 0 ? c[k] : nil) != nil { left[k] -= 1 }
                        }
                    }
                }
                wg.done()
            }
            wg.wait()
            return true
        }
        #expect(ok == true)
    }

    @Test("TestNonblockSelectRace: select with default on a closed buffered channel never takes default", arguments: procCounts)
    func nonblockSelectRace(procs: Int) async {
        let bad = await runG(procs: procs) { () -> Int in
            var bad = 0
            for _ in 0..<2_000 {
                let c1 = Chan<Int>(capacity: 1), c2 = Chan<Int>(capacity: 1)
                c1.send(1)
                let done = Chan<Bool>()
                go {
                    var tookDefault = false
                    select { s in
                        if s.receive(c1) != nil {}
                        if s.receive(c2) != nil {}
                        if s.otherwise() { tookDefault = true }
                    }
                    done.send(tookDefault)
                }
                c2.send(1)
                select { s in
                    if s.receive(c1) != nil {}
                    if s.otherwise() {}
                }
                if done.receive() == .value(true) { bad += 1 }
            }
            return bad
        }
        #expect(bad == 0)
    }

    @Test("A G blocked in select wakes exactly once, whichever case fires", arguments: procCounts)
    func wakesOnce(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            let rounds = 300
            let wakes = Counter()
            for _ in 0..<rounds {
                let a = Chan<Int>(), b = Chan<Int>(), cc = Chan<Int>()
                let done = Chan<Int>(capacity: 1)
                go {
                    select { s in
                        if s.receive(a) != nil { wakes.add() }
                        if s.receive(b) != nil { wakes.add() }
                        if s.receive(cc) != nil { wakes.add() }
                    }
                    done.send(1)
                }
                // The select is parked on all three (else the senders' time-outs
                // could all pass before it runs, and it would never wake).
                guard waitFor({ a.hasWaitingReceiver && b.hasWaitingReceiver && cc.hasWaitingReceiver }) else {
                    return false
                }
                // Race three senders; exactly one pairs with the select.
                let sentCount = Counter()
                let wg = WaitGroup(3)
                for ch in [a, b, cc] {
                    go {
                        if ch.trySend(1) { sentCount.add() } else {
                            select { s in
                                if s.send(ch, 1) { sentCount.add() }
                                if s.timeout(afterNanoseconds: 1_000_000) {}
                            }
                        }
                        wg.done()
                    }
                }
                _ = done.receive()
                wg.wait()
                if sentCount.value != 1 { return false }
            }
            return wakes.value == rounds
        }
        #expect(ok == true)
    }

    @Test("Large values and class references go through select intact (arena overflow to the heap)")
    func largeValues() async {
        struct Big: Sendable, Equatable {
            var a: [Int]
            var b: [String]
        }
        final class Ref: Sendable { let n: Int; init(_ n: Int) { self.n = n } }
        let ok = await runG { () -> Bool in
            let big = Chan<[Big]>(capacity: 1)
            let wide = Chan<(Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int,
                             Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int,
                             Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int,
                             Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int,
                             Int, Int, Int, Int, Int)>(capacity: 1) // 552 bytes: more than the arena
            let refs = Chan<Ref>()
            var w: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int,
                    Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int,
                    Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int,
                    Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int,
                    Int, Int, Int, Int, Int)
            w = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
                 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50,
                 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69)
            let value = [Big(a: [1, 2, 3], b: ["x", "y"])]
            select { s in
                if s.send(big, value) {}
                if s.send(wide, w) {}
            }
            select { s in
                if s.send(big, value) {}
                if s.send(wide, w) {}
            }
            var gotBig = false, gotWide = false
            for _ in 0..<2 {
                select { s in
                    if let r = s.receive(big) { gotBig = r.value == value }
                    if let r = s.receive(wide) { gotWide = r.value.map { $0.68 == 69 && $0.0 == 1 } ?? false }
                }
            }
            go { refs.send(Ref(77)) }
            var n = 0
            select { s in
                if let r = s.receive(refs) { n = r.value?.n ?? 0 }
            }
            return gotBig && gotWide && n == 77
        }
        #expect(ok == true)
    }

    @Test("Time-out and deadline cases fire, never early")
    func timeouts() async {
        let ok = await runG { () -> Bool in
            let c = Chan<Int>()
            for ms in [1, 5, 20] {
                let t0 = GMP.now
                var fired = false
                select { s in
                    if s.receive(c) != nil {}
                    if s.timeout(after: .milliseconds(ms)) { fired = true }
                }
                if !fired || GMP.now - t0 < Int64(ms) * 1_000_000 { return false }
            }
            let deadline = GMP.Instant.now + .milliseconds(3)
            var fired = false
            select { s in
                if s.deadline(at: deadline) { fired = true }
            }
            return fired && deadline.hasPassed
        }
        #expect(ok == true)
    }

    @Test("TestChanSendBarrier-style: values sent through channels carry memory visibility", arguments: procCounts)
    func sendBarrier(procs: Int) async {
        final class Box: @unchecked Sendable { var a = [Int](repeating: 0, count: 64) }
        let ok = await runG(procs: procs) { () -> Bool in
            let c = Chan<Box>(capacity: 4)
            let done = Chan<Bool>()
            go {
                var good = true
                for i in 0..<10_000 {
                    guard case .value(let b) = c.receive() else { break }
                    if b.a.contains(where: { $0 != i }) { good = false }
                }
                done.send(good)
            }
            for i in 0..<10_000 {
                let b = Box()
                for j in 0..<64 { b.a[j] = i }
                c.send(b)
            }
            return done.receive() == .value(true)
        }
        #expect(ok == true)
    }
}
