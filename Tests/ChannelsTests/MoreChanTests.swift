import Channels
import Foundation
import GMP
import Synchronization
import Testing

/// The rest of Go's test/chan programs.
@Suite(.serialized)
struct MoreChanTests {
    @Test("Gs parked in receive, send and select past stackTrimAfter are trimmed (their values wait in the sudogs), and every value arrives whole; values too big for a sudog pin the stack")
    func handOffWithTrimming() async {
        // Alone: it sets GMP.stackTrimAfter, which is process-wide, and counts
        // GMP.stats.trimmedStacks over a baseline.
        await alone {
            let saved = GMP.stackTrimAfter
            GMP.stackTrimAfter = .milliseconds(1)
            defer { GMP.stackTrimAfter = saved }
            let pairs = 100, rounds = 20
            let wrong = await runG(procs: 2, timeout: 60) { () -> Int in
                let bad = Atomic<Int>(0)
                let wg = WaitGroup(3 * pairs)
                for i in 0..<pairs {
                    let c = Chan<String>(), d = Chan<String>(), e = Chan<String>()
                    // A receiver parked well past the threshold each time; the
                    // value is copied into its frame while it waits.
                    go {
                        for r in 0..<rounds where c.receive().value != "c \(i) \(r) \(String(repeating: "x", count: r))" {
                            bad.add(1, ordering: .relaxed)
                        }
                        wg.done()
                    }
                    // A sender parked past it; the value is copied out of its frame.
                    go {
                        for r in 0..<rounds { d.send("d \(i) \(r) \(String(repeating: "y", count: r))") }
                        wg.done()
                    }
                    // Both ends, with a select in between.
                    go {
                        for r in 0..<rounds {
                            GMP.sleep(nanoseconds: 2_000_000 + Int64(GMP.fastrand() % 2_000_000))
                            c.send("c \(i) \(r) \(String(repeating: "x", count: r))")
                            GMP.sleep(nanoseconds: 2_000_000)
                            if d.receive().value != "d \(i) \(r) \(String(repeating: "y", count: r))" { bad.add(1, ordering: .relaxed) }
                            go { GMP.sleep(nanoseconds: 2_000_000); e.send("e \(r)") }
                            var got: String?
                            select { s in
                                if let v = s.receive(e) { got = v.value ?? "closed" }
                            }
                            if got != "e \(r)" { bad.add(1, ordering: .relaxed) }
                        }
                        wg.done()
                    }
                }
                wg.wait()
                // Long waits: receivers (plain and in select), senders, and
                // receivers of a value too big for a sudog (their stacks stay).
                let n = 50
                typealias Big = (String, String, String, Int)
                let c = Chan<String>(), d = Chan<String>(), e = Chan<String>(), big = Chan<Big>()
                let parked = WaitGroup(4 * n)
                let trimsBefore = GMP.stats.trimmedStacks
                for i in 0..<n {
                    go { if c.receive().value?.hasPrefix("c") != true { bad.add(1, ordering: .relaxed) }; parked.done() }
                    go {
                        var got: String?
                        select { s in if let v = s.receive(d) { got = v.value } }
                        if got?.hasPrefix("d") != true { bad.add(1, ordering: .relaxed) }
                        parked.done()
                    }
                    go { e.send("e\(i)"); parked.done() }
                    go { if big.receive().value?.1 != "big" { bad.add(1, ordering: .relaxed) }; parked.done() }
                }
                let trimmed = waitFor(seconds: 20) { GMP.stats.trimmedStacks >= trimsBefore + 3 * n }
                var seen = Set<String>()
                for i in 0..<n {
                    c.send("c\(i)")
                    d.send("d\(i)")
                    seen.insert(e.receive().value ?? "")
                    big.send(("a", "big", "c", i))
                }
                parked.wait()
                if seen.count != n || !trimmed { bad.add(1000, ordering: .relaxed) }
                return bad.load(ordering: .relaxed)
            }
            #expect(wrong == 0)
        }
    }

    @Test("test/chan/doubleselect.go: two cases of different selects never both take one value", arguments: procCounts)
    func doubleSelect(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            let n = 20_000
            let c1 = Chan<Int>(), c2 = Chan<Int>(), c3 = Chan<Int>(), c4 = Chan<Int>()
            let cmux = Chan<Int>(capacity: 100)
            // The sender offers each value on four channels at once; exactly one takes it.
            go {
                for i in 1...n {
                    select { s in
                        if s.send(c1, i) {}
                        if s.send(c2, i) {}
                        if s.send(c3, i) {}
                        if s.send(c4, i) {}
                    }
                }
                c1.close(); c2.close(); c3.close(); c4.close()
            }
            // Muxers: a plain receive on c1, selects over pairs of the others.
            let wg = WaitGroup(3)
            go { for v in c1 { cmux.send(v) }; wg.done() }
            for (a, b) in [(c2, c3), (c4, c4)] {
                go {
                    var open = true
                    while open {
                        select { s in
                            if let r = s.receive(a) { if case .value(let v) = r { cmux.send(v) } else { open = false } }
                            if let r = s.receive(b) { if case .value(let v) = r { cmux.send(v) } else { open = false } }
                        }
                    }
                    wg.done()
                }
            }
            go { wg.wait(); cmux.close() }
            var seen = [Bool](repeating: false, count: n + 1)
            var count = 0
            for v in cmux {
                if seen[v] { return false } // received twice
                seen[v] = true
                count += 1
            }
            // c2/c3 muxer may stop at the first close while the other channel still has a
            // blocked sender... the sender closes only after all values went out, so none is lost.
            return count == n
        }
        #expect(ok == true)
    }

    @Test("test/chan/select2.go: blocking selects do not leak memory or Gs")
    func select2() async {
        // Alone: it measures RSS. The Gs it leaves are looked for in the
        // goroutine dump, by the go statement that made them, not counted in
        // GMP.stats.live over a baseline: Gs of other tests (parked on a
        // server another test is ending) may exit meanwhile.
        await alone {
            let r = await runG(procs: 2) { () -> (Int, Int, Int) in
                let c = Chan<Int>(), d = Chan<Int>()
                let before = rssBytes()
                var senderLine = 0
                for round in 0..<3 {
                    let done = Chan<Bool>()
                    senderLine = #line + 1
                    go {
                        for i in 0..<50_000 { c.send(i) }
                        done.send(true)
                    }
                    for _ in 0..<50_000 {
                        select { s in
                            if s.receive(c) != nil {}
                            if s.receive(d) != nil {}
                        }
                    }
                    _ = done.receive()
                    _ = round
                }
                let grew = rssBytes() - before // before the dumps below, which allocate
                // The senders have sent `done` but may not have finished exiting: wait (bounded).
                let site = "    created by go at \(#fileID):\(senderLine)\n"
                var left = 0
                _ = waitFor(seconds: 2, every: 1_000_000) {
                    left = GMP.dump().components(separatedBy: site).count - 1
                    return left == 0
                }
                return (left, grew, 0)
            }
            #expect(r?.0 == 0, "Gs leaked")
            // (Under ThreadSanitizer RSS also counts its shadow memory, under
            // AddressSanitizer its quarantine of freed memory: the G count above
            // still holds, and LeakSanitizer looks for leaks at exit.)
            if !GMP.isThreadSanitized && !GMP.isAddressSanitized {
                #expect((r?.1 ?? Int.max) < 16 << 20, "RSS grew by \(r?.1 ?? -1) bytes over 150,000 blocking selects")
            }
        }
    }

    @Test("Blocking selects with a time-out, timers, mutexes and wait groups free what they allocate",
          .disabled(if: GMP.isThreadSanitized, "RSS under TSan counts its shadow memory; this is a memory test"),
          .disabled(if: GMP.isAddressSanitized, "ASan holds freed memory in quarantine (LeakSanitizer checks leaks at exit)"))
    func noLeakPerObject() async {
        // Alone: it measures RSS.
        await alone {
            // Each blocking select with a time-out makes a timer and a select
            // state, each with a lock word; each Mutex and WaitGroup has one.
            // When these words were never freed, RSS grew by ~190 MB here.
            let n = 400_000
            let grew = await runG(procs: 2) { () -> Int in
                let c = Chan<Int>()
                let before = rssBytes()
                go { for i in 0..<n { c.send(i) } }
                var got = 0
                while got < n {
                    select { s in
                        if s.receive(c) != nil { got += 1 }
                        if s.timeout(after: .seconds(10)) { fatalError("no value for 10 s") }
                    }
                }
                for _ in 0..<n {
                    let m = GMP.Mutex(), wg = WaitGroup(1)
                    m.lock()
                    wg.done()
                    m.unlock()
                }
                return rssBytes() - before
            }
            #expect((grew ?? Int.max) < 16 << 20, "RSS grew by \(grew ?? -1) bytes")
        }
    }

    @Test("A timer callback can trySend to a channel a select waits on; the G re-arms it (a ticker)", arguments: procCounts)
    func tickerFromTimerCallback(procs: Int) async {
        let ticks = await runG(procs: procs) { () -> Int in
            let tick = Chan<Void>(capacity: 1), quit = Chan<Void>()
            let t = Timer { _ = tick.trySend(()) }
            t.reset(afterNanoseconds: 1_000_000)
            var n = 0
            var running = true
            while running {
                select { s in
                    if s.receive(tick) != nil {
                        n += 1
                        if n == 20 { quit.close() } else { t.reset(afterNanoseconds: 1_000_000) }
                    }
                    if s.receive(quit) != nil { running = false }
                    if s.timeout(after: .seconds(10)) { running = false }
                }
            }
            t.stop()
            return n
        }
        #expect(ticks == 20)
    }

    @Test("test/chan/select4.go: a select proceeds when a value is ready")
    func select4() async {
        let v = await runG { () -> Int in
            let c = Chan<Int>(capacity: 1), c1 = Chan<Int>()
            c.send(42)
            var got = -1
            select { s in
                if s.receive(c1) != nil { got = -2 }
                if let r = s.receive(c) { got = r.value ?? -3 }
            }
            return got
        }
        #expect(v == 42)
    }

    @Test("sendstmt / Go spec: select evaluates send values exactly once, in order; the first pass's channels are used")
    func evaluationOrder() async {
        let order = await runG { () -> [String] in
            var log: [String] = []
            let a = Chan<Int>(capacity: 1), b = Chan<Int>(capacity: 1), other = Chan<Int>(capacity: 1)
            var pass = 0
            func val(_ v: Int) -> Int { log.append("value \(v)"); return v }
            select { s in
                pass += 1
                // On the second pass the body names another channel: the case stays on `b`.
                if s.receive(a) != nil { log.append("received") }
                if s.send(pass == 1 ? b : other, val(7)) { log.append("sent") }
            }
            guard b.tryReceive() == .value(7), other.tryReceive() == .empty else { return ["wrong channel"] }
            // A send statement: the channel and the value are evaluated before the send.
            a.send(val(8))
            return log
        }
        #expect(order == ["value 7", "sent", "value 8"])
    }
}
