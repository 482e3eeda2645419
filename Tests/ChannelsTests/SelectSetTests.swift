import Channels
import Foundation
import GMP
import Synchronization
import Testing

/// Counts live instances, to see that values a SelectSet drops are freed.
private final class Tracked: Sendable {
    static let live = Atomic<Int>(0)
    let n: Int
    init(_ n: Int) { self.n = n; Tracked.live.add(1, ordering: .relaxed) }
    deinit { Tracked.live.subtract(1, ordering: .relaxed) }
}

/// SelectSet: a select built once and waited on in a loop.
@Suite(.serialized)
struct SelectSetTests {
    @Test("Receives from four fed channels until each is closed: every value once, then .closed", arguments: procCounts)
    func receiveAll(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            let per = 20_000
            let cs = (0..<4).map { _ in Chan<Int>(capacity: 16) }
            for (k, c) in cs.enumerated() {
                go {
                    for i in 0..<per { c.send(k * per + i) }
                    c.close()
                }
            }
            let set = SelectSet()
            let cases = cs.map { set.receive($0) }
            var seen = [Bool](repeating: false, count: 4 * per)
            var closed = 0
            var last = [Int](repeating: -1, count: 4)
            while closed < 4 {
                let fired = set.wait()
                guard let k = cases.firstIndex(where: { $0.index == fired }) else { return false }
                switch set.value(of: cases[k]) {
                case .value(let v):
                    // Each channel's values arrive in order, each once.
                    if v / per != k || v <= last[k] || seen[v] { return false }
                    seen[v] = true
                    last[k] = v
                case .closed:
                    closed += 1
                    set.setChannel(nil, for: cases[k]) // as Go code sets a drained channel to nil
                }
            }
            return seen.allSatisfy { $0 }
        }
        #expect(ok == true)
    }

    @Test("Two ready cases are chosen at random (each wins over 40% of 10,000 waits); switch matches cases")
    func randomChoice() async {
        let counts = await runG(procs: 1) { () -> [Int] in
            let a = Chan<Int>(capacity: 1), b = Chan<Int>(capacity: 1)
            let set = SelectSet()
            let ra = set.receive(a), rb = set.receive(b)
            var n = [0, 0]
            for _ in 0..<10_000 {
                _ = a.trySend(1)
                _ = b.trySend(2)
                switch set.wait() {
                case ra: if set.value(of: ra) == .value(1) { n[0] += 1 }
                case rb: if set.value(of: rb) == .value(2) { n[1] += 1 }
                default: return [-1, -1]
                }
            }
            return n
        }
        #expect((counts?[0] ?? 0) > 4_000 && (counts?[1] ?? 0) > 4_000, "\(counts ?? [])")
    }

    @Test("A send case is off until a value is loaded, sends it once, then is off again (a forwarding queue)", arguments: procCounts)
    func forwardingQueue(procs: Int) async {
        let got = await runG(procs: procs) { () -> [Int] in
            let input = Chan<Int>(), output = Chan<Int>(), done = Chan<[Int]>(capacity: 1)
            let n = 5_000
            go {
                var r: [Int] = []
                for _ in 0..<n {
                    guard case .value(let v) = output.receive() else { break }
                    r.append(v)
                }
                done.send(r)
            }
            go { for i in 0..<n { input.send(i) }; input.close() }
            // Go's pattern: receive into a queue; offer its head while it is not empty.
            let set = SelectSet()
            let inCase = set.receive(input)
            let outCase = set.send(output)
            var queue: [Int] = [], head = 0, inputOpen = true
            while inputOpen || head < queue.count {
                switch set.wait() {
                case inCase:
                    if case .value(let v) = set.value(of: inCase) {
                        queue.append(v)
                        if queue.count - head == 1 { set.setValue(queue[head], for: outCase) }
                    } else {
                        inputOpen = false
                        set.setChannel(nil, for: inCase)
                    }
                case outCase:
                    head += 1
                    if head < queue.count { set.setValue(queue[head], for: outCase) }
                default:
                    return []
                }
            }
            guard case .value(let r) = done.receive() else { return [] }
            return r
        }
        #expect(got == Array(0..<5_000))
    }

    @Test("poll takes a ready case or returns nil; wait(timeout:) times out with nil and otherwise takes the value")
    func pollAndTimeout() async {
        let ok = await runG(procs: 2) { () -> Bool in
            let c = Chan<Int>(capacity: 1), never = Chan<Int>()
            let set = SelectSet()
            let rc = set.receive(c)
            _ = set.receive(never)
            guard set.poll() == nil else { return false }
            c.send(7)
            guard let i = set.poll(), i == rc.index, set.value(of: rc) == .value(7) else { return false }
            let t0 = GMP.now
            guard set.wait(timeout: .milliseconds(20)) == nil, GMP.now - t0 >= 20_000_000 else { return false }
            go {
                GMP.sleep(for: .milliseconds(5))
                c.send(8)
            }
            guard let j = set.wait(timeout: .seconds(30)), j == rc.index, set.value(of: rc) == .value(8) else { return false }
            // An all-off send case and a nil channel: only the time-out can fire.
            let off = SelectSet()
            _ = off.send(c)
            _ = off.receive(Optional<Chan<Int>>.none)
            return off.wait(timeout: .milliseconds(1)) == nil && off.poll() == nil
        }
        #expect(ok == true)
    }

    @Test("setChannel moves a case to another channel; a value loaded in a send case stays loaded")
    func setChannel() async {
        let ok = await runG(procs: 1) { () -> Bool in
            let a = Chan<String>(capacity: 1), b = Chan<String>(capacity: 1)
            let set = SelectSet()
            let out = set.send(a)
            set.setValue("x", for: out)
            set.setChannel(b, for: out)
            guard set.wait() == out.index, b.tryReceive() == .value("x"), a.tryReceive() == .empty else { return false }
            guard set.poll() == nil else { return false } // sent: off until the next value
            let r = set.receive(Optional<Chan<String>>.none)
            guard set.poll() == nil else { return false }
            set.setChannel(a, for: r)
            a.send("y")
            return set.wait() == r.index && set.value(of: r) == .value("y")
        }
        #expect(ok == true)
    }

    @Test("Values never taken, loaded and left, or still in the set when it goes are all freed")
    func valuesFreed() async {
        let before = Tracked.live.load(ordering: .relaxed)
        let ok = await runG(procs: 1) { () -> Bool in
            let c = Chan<Tracked>(capacity: 4), d = Chan<Tracked>(capacity: 4)
            do {
                let set = SelectSet()
                let rc = set.receive(c)
                let sd = set.send(d)
                for i in 0..<3 { c.send(Tracked(i)) }
                guard set.wait() == rc.index else { return false } // fired, value not taken
                guard set.wait() == rc.index else { return false } // the first is dropped here
                set.setValue(Tracked(10), for: sd)
                set.setValue(Tracked(11), for: sd)                 // replaces 10
                set.setChannel(nil, for: sd)
                guard case .value(let t) = set.value(of: rc), t.n == 1 else { return false }
                // The set goes with 11 loaded and the third value still in c.
            }
            guard case .value(let last) = c.tryReceive(), last.n == 2 else { return false }
            return true
        }
        #expect(ok == true)
        #expect(Tracked.live.load(ordering: .relaxed) == before)
    }

    @Test("Many Gs each waiting on their own set over shared channels: every value delivered once", arguments: procCounts)
    func sharedChannels(procs: Int) async {
        let total = await runG(procs: procs) { () -> Int in
            let a = Chan<Int>(), b = Chan<Int>(capacity: 8), quit = Chan<Void>()
            let sum = Chan<Int>(capacity: 16)
            let workers = 16, per = 2_000
            for _ in 0..<workers {
                go {
                    let set = SelectSet()
                    let ra = set.receive(a), rb = set.receive(b), rq = set.receive(quit)
                    var s = 0
                    loop: while true {
                        switch set.wait() {
                        case ra: if case .value(let v) = set.value(of: ra) { s += v }
                        case rb: if case .value(let v) = set.value(of: rb) { s += v }
                        case rq: break loop
                        default: break
                        }
                    }
                    sum.send(s)
                }
            }
            let wg = WaitGroup(2)
            go { for _ in 0..<(workers * per) { a.send(1) }; wg.done() }
            go { for _ in 0..<(workers * per) { b.send(2) }; wg.done() }
            wg.wait()
            quit.close()
            var t = 0
            for _ in 0..<workers { if case .value(let s) = sum.receive() { t += s } }
            return t
        }
        #expect(total == 16 * 2_000 * 3)
    }
}
