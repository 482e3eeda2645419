@testable import Channels
import Foundation
import GMP
import Synchronization
import Testing

/// Go's runtime/chan_test.go and test/chan/*.go scenarios, in Swift. Each
/// test names the Go scenario it mirrors and runs on 1, 2 and 4 Ps.
@Suite(.serialized)
struct ChanTests {
    @Test("TestChan: blocking, non-blocking, close, FIFO, many senders; all capacities", arguments: procCounts)
    func testChan(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            for cap in 0..<12 {
                // A receive from an empty channel would block; a non-blocking one does not.
                let c = Chan<Int>(capacity: cap)
                guard c.tryReceive() == .empty else { return false }
                // Buffered sends up to capacity succeed without blocking, then block.
                for i in 0..<cap { guard c.trySend(i) else { return false } }
                guard !c.trySend(99), c.count == cap, c.capacity == cap else { return false }
                for i in 0..<cap { guard c.receive() == .value(i) else { return false } }
                // Close unblocks a waiting receiver.
                let done = Chan<Bool>()
                go {
                    let r = c.receive()
                    done.send(r == .closed)
                }
                c.close()
                guard done.receive() == .value(true) else { return false }
                guard c.receive() == .closed, c.tryReceive() == .closed else { return false }
                // Close drains the buffer first.
                let d = Chan<Int>(capacity: cap)
                for i in 0..<cap { d.send(i) }
                d.close()
                for i in 0..<cap { guard d.receive() == .value(i) else { return false } }
                guard d.receive() == .closed else { return false }
                // FIFO from one sender.
                let f = Chan<Int>(capacity: cap)
                go { for i in 0..<100 { f.send(i) } }
                for i in 0..<100 { guard f.receive() == .value(i) else { return false } }
                // Many senders, one receiver: every value once, each sender's in order.
                let m = Chan<Int>(capacity: cap)
                let senders = 4, per = 250
                for s in 0..<senders { go { for i in 0..<per { m.send(s * 1000 + i) } } }
                var last = [Int](repeating: -1, count: senders)
                for _ in 0..<(senders * per) {
                    guard case .value(let v) = m.receive() else { return false }
                    let s = v / 1000, i = v % 1000
                    guard i == last[s] + 1 else { return false }
                    last[s] = i
                }
                guard last == [Int](repeating: per - 1, count: senders) else { return false }
            }
            return true
        }
        #expect(ok == true)
    }

    @Test("test/chan/fifo.go: asynchronous and synchronous FIFO", arguments: procCounts)
    func fifo(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            let n = 10
            let c = Chan<Int>(capacity: n)
            for i in 0..<n { c.send(i) }
            for i in 0..<n { guard c.receive() == .value(i) else { return false } }
            // Synchronous: a chain of Gs, each waits for its turn then sends.
            let ch = Chan<Int>()
            var inp = Chan<Int>()
            let start = inp
            for i in 0..<n {
                let out = Chan<Int>()
                let myIn = inp
                go {
                    _ = myIn.receive()
                    ch.send(i)
                    out.send(0)
                }
                inp = out
            }
            start.send(0)
            for i in 0..<n {
                guard ch.receive() == .value(i) else { return false }
            }
            _ = inp.receive()
            return true
        }
        #expect(ok == true)
    }

    @Test("test/chan/goroutines.go: a chain of 10,000 Gs passing a value", arguments: procCounts)
    func goroutinesChain(procs: Int) async {
        let r = await runG(procs: procs) { () -> Received<Int> in
            let n = 10_000
            let leftmost = Chan<Int>()
            var right = leftmost
            for _ in 0..<n {
                let left = right
                right = Chan<Int>()
                let r = right
                go {
                    if case .value(let v) = r.receive() { left.send(v + 1) }
                }
            }
            let r = right
            go { r.send(0) }
            return leftmost.receive()
        }
        #expect(r == .value(10_000))
    }

    @Test("test/chan/nonblock.go: non-blocking send/receive on buffered and unbuffered channels", arguments: procCounts)
    func nonblock(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            for cap in [0, 1, 10] {
                let c = Chan<Int>(capacity: cap)
                guard c.tryReceive() == .empty else { return false }
                if cap == 0 {
                    guard !c.trySend(1) else { return false } // no receiver waiting
                    // A waiting receiver makes a non-blocking send succeed.
                    let got = Chan<Int>(capacity: 1)
                    go { if case .value(let v) = c.receive() { got.send(v) } }
                    var sent = false
                    for _ in 0..<1_000_000 where !sent {
                        sent = c.trySend(7)
                        if !sent { GMP.yield() }
                    }
                    guard sent, got.receive() == .value(7) else { return false }
                    // A waiting sender makes a non-blocking receive succeed.
                    go { c.send(8) }
                    var r = TryReceived<Int>.empty
                    for _ in 0..<1_000_000 {
                        r = c.tryReceive()
                        if r != .empty { break }
                        GMP.yield()
                    }
                    guard r == .value(8) else { return false }
                } else {
                    for i in 0..<cap { guard c.trySend(i) else { return false } }
                    guard !c.trySend(-1) else { return false }
                    for i in 0..<cap { guard c.tryReceive() == .value(i) else { return false } }
                    guard c.tryReceive() == .empty else { return false }
                }
            }
            return true
        }
        #expect(ok == true)
    }

    @Test("test/chan/sieve1.go and sieve2.go: prime sieve of Gs and channels", arguments: procCounts)
    func sieve(procs: Int) async {
        let primes = await runG(procs: procs) { () -> [Int] in
            let ch = Chan<Int>()
            let quit = Chan<Void>()
            go {
                var i = 2
                var running = true
                while running {
                    select { s in
                        if s.send(ch, i) { i += 1 }
                        if s.receive(quit) != nil { running = false }
                    }
                }
                ch.close()
            }
            var src = ch
            var out: [Int] = []
            for _ in 0..<100 {
                guard case .value(let p) = src.receive() else { break }
                out.append(p)
                let next = Chan<Int>(capacity: out.count % 2) // unbuffered and buffered stages (sieve2)
                let from = src
                go {
                    for v in from where v % p != 0 { next.send(v) }
                    next.close()
                }
                src = next
            }
            // Stop the generator; closing ripples down the chain of filters.
            quit.close()
            for _ in src {}
            return out
        }
        var expected: [Int] = []
        var n = 2
        while expected.count < 100 {
            if expected.allSatisfy({ n % $0 != 0 }) { expected.append(n) }
            n += 1
        }
        #expect(primes == expected)
    }

    @Test("test/chan/zerosize.go: channels of zero-size values")
    func zeroSize() async {
        let ok = await runG { () -> Bool in
            let c = Chan<Void>(capacity: 2)
            c.send(())
            c.send(())
            guard !c.trySend(()) else { return false }
            guard case .value = c.receive(), case .value = c.receive() else { return false }
            struct Empty: Sendable {}
            let e = Chan<Empty>()
            go { e.send(Empty()) }
            guard case .value = e.receive() else { return false }
            return MemoryLayout<Empty>.size == 0
        }
        #expect(ok == true)
    }

    @Test("Chan<Int?>: a sent nil and a closed channel are different")
    func optionalValues() async {
        let ok = await runG { () -> Bool in
            let c = Chan<Int?>(capacity: 2)
            c.send(nil)
            c.send(5)
            c.close()
            return c.receive() == .value(nil) && c.receive() == .value(5) && c.receive() == .closed
        }
        #expect(ok == true)
    }

    @Test("for-in receives until closed and drained", arguments: procCounts)
    func iteration(procs: Int) async {
        let sum = await runG(procs: procs) { () -> Int in
            let c = Chan<Int>(capacity: 3)
            go {
                for i in 1...100 { c.send(i) }
                c.close()
            }
            var s = 0
            for v in c { s += v }
            return s
        }
        #expect(sum == 5050)
    }

    @Test("close wakes every blocked receiver: Gs, selects and plain threads (blocked senders: ChanExitTests)")
    func closeWakesAll() async {
        let ok = await runG(timeout: 30) { () -> Bool in
            let c = Chan<Int>()
            let woke = Chan<Bool>(capacity: 100)
            for _ in 0..<40 { go { woke.send(c.receive() == .closed) } }
            for _ in 0..<5 {
                go {
                    var closed = false
                    select { s in if let r = s.receive(c) { closed = r == .closed } }
                    woke.send(closed)
                }
            }
            for _ in 0..<5 { Thread.detachNewThread { woke.send(c.receive() == .closed) } }
            // Wait until all 50 wait on the channel. (Counted on the channel,
            // not as GMP.stats.parked over a baseline: a G an earlier test left
            // sleeping can wake meanwhile and the sum never add up.)
            guard waitFor({ c.waitingReceivers == 50 }) else { return false }
            c.close()
            for _ in 0..<50 { guard woke.receive() == .value(true) else { return false } }
            return true
        }
        #expect(ok == true)
    }

    @Test("Channel operations inside GMP.blocking block the thread, not crash: receive, send, select with a time-out")
    func channelsInsideBlocking() async {
        let ok = await runG(procs: 2, timeout: 30) { () -> Bool in
            let c = Chan<Int>(), d = Chan<Int>()
            let out = Chan<[Int]>(capacity: 1)
            go {
                let got: [Int] = GMP.blocking {
                    var got: [Int] = []
                    got.append(c.receive().value ?? -1) // parks: the main G sends once it waits
                    d.send(2) // to a G already parked on d
                    select { s in
                        if let r = s.receive(c) { got.append(r.value ?? -1) }
                        if s.timeout(after: .milliseconds(1)) { got.append(-2) }
                    }
                    return got
                }
                out.send(got)
            }
            guard waitFor({ c.hasWaitingReceiver }) else { return false }
            c.send(1)
            guard d.receive() == .value(2) else { return false }
            return out.receive() == .value([1, -2])
        }
        #expect(ok == true)
    }

    @Test("A time-out of Int64.max nanoseconds or .seconds(Int64.max) never fires (it neither wraps nor traps)")
    func timeoutForever() async {
        let r = await runG(procs: 2, timeout: 30) { () -> [Int] in
            var fired: [Int] = []
            for forever in [true, false] {
                let c = Chan<Int>(capacity: 1)
                go {
                    GMP.sleep(for: .milliseconds(10))
                    c.send(1)
                }
                select { s in
                    if s.receive(c) != nil { fired.append(0) }
                    if forever, s.timeout(afterNanoseconds: .max) { fired.append(1) }
                    if !forever, s.timeout(after: .seconds(Int64.max)) { fired.append(2) }
                }
            }
            return fired
        }
        #expect(r == [0, 0], "a time-out fired: \(r ?? [])")
    }

    @Test("TestMultiConsumer: many consumers see every value exactly once", arguments: procCounts)
    func multiConsumer(procs: Int) async {
        let r = await runG(procs: procs) { () -> (Int, Int) in
            let nwork = 23, niter = 27_000
            let q = Chan<Int>(capacity: nwork * 3)
            let r = Chan<Int>(capacity: nwork * 3)
            let wg = WaitGroup(nwork)
            for _ in 0..<nwork {
                go {
                    for v in q {
                        if v % 100 == 0 { GMP.yield() }
                        r.send(v)
                    }
                    wg.done()
                }
            }
            var expect = 0
            go {
                for i in 0..<niter { q.send(i) }
                q.close()
                wg.wait()
                r.close()
            }
            for i in 0..<niter { expect += i }
            var n = 0, s = 0
            for v in r { n += 1; s += v }
            return (n == niter ? 1 : 0, s - expect)
        }
        #expect(r?.0 == 1)
        #expect(r?.1 == 0)
    }

    @Test("TestNonblockRecvRace: a non-blocking receive on a closed buffered channel never sees empty", arguments: procCounts)
    func nonblockRecvRace(procs: Int) async {
        let bad = await runG(procs: procs) { () -> Int in
            var bad = 0
            for _ in 0..<2_000 {
                let c = Chan<Int>(capacity: 1)
                c.send(1)
                let done = Chan<Bool>()
                go {
                    let r = c.tryReceive()
                    done.send(r == .empty)
                }
                c.close()
                _ = c.receive()
                if done.receive() == .value(true) { bad += 1 }
            }
            return bad
        }
        #expect(bad == 0)
    }

    @Test("Channel operations from plain threads work with Gs on the other side")
    func plainThreads() async {
        let r = await onThread(procs: 2) { () -> (Received<Int>, Received<Int>, String?) in
            let c = Chan<Int>()
            let back = Chan<Int>(capacity: 1)
            let done = Chan<Int>()
            go {
                var s = 0
                for v in c { s += v }
                back.send(s)
            }
            go {
                // A G receiving from a plain thread's unbuffered send, and replying.
                done.send(42)
            }
            for i in 1...1000 { c.send(i) } // plain thread blocks on a futex per rendezvous
            c.close()
            let sum = back.receive(), answer = done.receive()
            // Plain thread receiving what a G sends, through a select.
            let d = Chan<String>()
            go { d.send("hi") }
            var got: String?
            select { s in
                if let r = s.receive(d) { got = r.value }
            }
            return (sum, answer, got)
        }
        #expect(r?.0 == .value(500_500))
        #expect(r?.1 == .value(42))
        #expect(r?.2 == "hi")
    }
}
