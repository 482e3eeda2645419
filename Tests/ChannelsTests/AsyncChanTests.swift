@testable import Channels
import Foundation
import GMP
import Synchronization
import Testing

/// Live instances of `Token`, to see that a value is destroyed, not leaked.
private let tokensAlive = Atomic<Int>(0)

/// A value whose copies can be counted.
private final class Token: Sendable {
    let id: Int
    init(_ id: Int) {
        self.id = id
        tokensAlive.add(1, ordering: .relaxed)
    }
    deinit { tokensAlive.add(-1, ordering: .relaxed) }
}

/// A value too big for a sudog's slot (40 bytes): it travels through a heap cell.
private struct Big: Sendable, Equatable {
    var a, b, c, d, e: Int
    init(_ i: Int) { (a, b, c, d, e) = (i, i + 1, i + 2, i + 3, i + 4) }
}

/// How a task's channel operation ended.
private enum Outcome: Sendable, Equatable {
    case value(Int), closed, sent, cancelled, other(String)
}

/// Runs `op` in a task and reports how it ended on `to`.
private func report(to out: Chan<Outcome>, _ op: @escaping @Sendable () async throws -> Outcome) -> Task<Void, Never> {
    Task {
        let o: Outcome
        do { o = try await op() } catch is CancellationError { o = .cancelled } catch { o = .other("\(error)") }
        _ = out.trySend(o)
    }
}

/// Channels between Gs and Swift tasks (AsyncChan.swift).
@Suite(.serialized) struct AsyncChanTests {
    @Test("A G sends, a task receives with `for await` until close (unbuffered and buffered)", arguments: [0, 8])
    func gToTask(capacity: Int) async {
        let r = await runG(procs: 2) { () -> Received<Int> in
            let c = Chan<Int>(capacity: capacity), sum = Chan<Int>(capacity: 1)
            Task {
                var s = 0
                for await v in c { s += v }
                _ = sum.trySend(s)
            }
            for i in 1...1000 { c.send(i) }
            c.close()
            return sum.receive()
        }
        #expect(r == .value(500_500))
    }

    @Test("A task sends with `try await`, a G receives until close (unbuffered and buffered)", arguments: [0, 8])
    func taskToG(capacity: Int) async {
        let r = await runG(procs: 2) { () -> Int in
            let c = Chan<Int>(capacity: capacity)
            Task {
                for i in 1...1000 { try await c.send(i) }
                c.close()
            }
            var s = 0
            for v in c { s += v }
            return s
        }
        #expect(r == 500_500)
    }

    @Test("Values too big for a sudog's slot cross both ways intact")
    func bigValues() async {
        let r = await runG(procs: 2) { () -> [Big] in
            let there = Chan<Big>(), back = Chan<Big>()
            Task {
                while case .value(let v) = try await there.receive() { try await back.send(Big(v.a * 10)) }
                back.close()
            }
            var got: [Big] = []
            for i in 1...50 {
                there.send(Big(i))
                got.append(back.receive().value ?? Big(-1))
            }
            there.close()
            return got
        }
        #expect(r == (1...50).map { Big($0 * 10) })
    }

    @Test("Tasks alone: four tasks wait to receive and a fifth sends, on any number of cores (it hung when receive blocked a pool thread)")
    func tasksOnly() async {
        let got = await onThread { () -> [Int] in
            let c = Chan<Int>(), results = Chan<Int>(capacity: 4)
            for _ in 0..<4 {
                Task.detached { if case .value(let v) = try await c.receive() { _ = results.trySend(v) } }
            }
            Task.detached { for i in 1...4 { try await c.send(i) } }
            return (0..<4).map { _ in results.receive().value ?? -1 }.sorted()
        }
        #expect(got == [1, 2, 3, 4])
    }

    @Test("close wakes the tasks waiting to receive: each gets .closed, and `for await` ends")
    func closeWakesTasks() async {
        let r = await runG(procs: 2) { () -> [Outcome]? in
            let c = Chan<Int>(), out = Chan<Outcome>(capacity: 4)
            for _ in 0..<3 {
                _ = report(to: out) { try await c.receive() == .closed ? .closed : .other("a value") }
            }
            Task {
                for await _ in c {}
                _ = out.trySend(.closed)
            }
            guard waitFor({ c.waitingReceivers == 4 }) else { return nil }
            c.close()
            return (0..<4).map { _ in out.receive().value ?? .other("none") }
        }
        #expect(r == [.closed, .closed, .closed, .closed])
    }

    @Test("A task cancelled while it waits to receive throws CancellationError; the channel has no waiter left")
    func cancelReceive() async {
        let r = await runG(procs: 2) { () -> (Outcome?, Bool, Bool)? in
            let c = Chan<Int>(), out = Chan<Outcome>(capacity: 1)
            let t = report(to: out) { if case .value(let v) = try await c.receive() { .value(v) } else { .closed } }
            guard waitFor({ c.hasWaitingReceiver }) else { return nil }
            t.cancel()
            let o = out.receive().value
            return (o, c.hasWaitingReceiver, c.trySend(1)) // nobody takes the value now
        }
        guard let (o, waiting, sent) = r ?? nil else {
            Issue.record("the task never waited")
            return
        }
        #expect(o == .cancelled)
        #expect(!waiting)
        #expect(!sent)
    }

    @Test("The async send and receive throw only CancellationError (typed): a catch gets a CancellationError, not any Error")
    func typedCancellation() async {
        let c = Chan<Int>(capacity: 1)
        let task = Task.detached { () -> (CancellationError?, CancellationError?) in
            withUnsafeCurrentTask { $0?.cancel() }
            var sendError: CancellationError?, receiveError: CancellationError?
            do throws(CancellationError) { try await c.send(1); try await c.send(2) } catch { sendError = error } // (does not compile if untyped)
            do throws(CancellationError) { _ = try await c.receive(); _ = try await c.receive() } catch { receiveError = error }
            return (sendError, receiveError)
        }
        let (s, r) = await task.value
        #expect(s != nil) // the first send completes at once; the second waits, cancelled
        #expect(r != nil) // the first receive takes the 1; the second waits, cancelled
    }

    @Test("A task cancelled while it waits to send throws CancellationError; its value is destroyed, never delivered")
    func cancelSend() async {
        let before = tokensAlive.load(ordering: .relaxed)
        let r = await runG(procs: 2) { () -> (Outcome?, Bool, Bool)? in
            let c = Chan<Token>(), out = Chan<Outcome>(capacity: 1)
            let t = report(to: out) {
                try await c.send(Token(7))
                return .sent
            }
            guard waitFor({ c.hasWaitingSender }) else { return nil }
            t.cancel()
            let o = out.receive().value
            let nothing: Bool
            if case .empty = c.tryReceive() { nothing = true } else { nothing = false }
            return (o, c.hasWaitingSender, nothing)
        }
        guard let (o, waiting, nothing) = r ?? nil else {
            Issue.record("the task never waited")
            return
        }
        #expect(o == .cancelled)
        #expect(!waiting)
        #expect(nothing)
        #expect(tokensAlive.load(ordering: .relaxed) == before)
    }

    @Test("An already cancelled task: a receive that must wait throws at once; one that can complete, completes")
    func cancelledBefore() async {
        let r = await runG(procs: 2) { () -> [Outcome] in
            let empty = Chan<Int>(), full = Chan<Int>(capacity: 1), out = Chan<Outcome>(capacity: 2)
            full.send(5)
            let gate = Chan<Bool>()
            let t = Task {
                _ = try? await gate.receive() // released after the cancel
                for c in [empty, full] {
                    do {
                        let r = try await c.receive()
                        _ = out.trySend(r.value.map { .value($0) } ?? .closed)
                    } catch {
                        _ = out.trySend(.cancelled)
                    }
                }
            }
            guard waitFor({ gate.hasWaitingReceiver }) else { return [] }
            t.cancel() // ends the gate's wait with CancellationError; the task goes on cancelled
            return (0..<2).map { _ in out.receive().value ?? .other("none") }
        }
        #expect(r == [.cancelled, .value(5)])
    }

    @Test("Cancelling tasks while a G receives what they send: every value is received exactly when its send returned")
    func cancelRace() async {
        let r = await runG(procs: 2) { () -> (received: Set<Int>, returned: Set<Int>, cancelled: Int)? in
            let n = 300
            let c = Chan<Int>(), out = Chan<(Int, Bool)>(capacity: n)
            var tasks: [Task<Void, Never>] = []
            for i in 0..<n {
                tasks.append(Task {
                    do {
                        try await c.send(i)
                        _ = out.trySend((i, true))
                    } catch {
                        _ = out.trySend((i, false))
                    }
                })
            }
            let canceller = WaitGroup(1)
            go { [tasks] in
                for (i, t) in tasks.enumerated() where i % 2 == 0 {
                    t.cancel()
                    if i % 16 == 0 { GMP.yield() }
                }
                canceller.done()
            }
            var received = Set<Int>(), returned = Set<Int>(), cancelled = 0
            var finished = 0
            while finished < n {
                select { s in
                    if let r = s.receive(c) { if let v = r.value { received.insert(v) } }
                    if let r = s.receive(out), let (i, ok) = r.value {
                        finished += 1
                        if ok { returned.insert(i) } else { cancelled += 1 }
                    }
                    if s.timeout(after: .seconds(20)) { finished = n + 1 }
                }
            }
            canceller.wait()
            return finished == n ? (received, returned, cancelled) : nil
        }
        guard let r = r ?? nil else {
            Issue.record("the tasks did not all finish")
            return
        }
        #expect(r.received == r.returned)
        #expect(r.received.count + r.cancelled == 300)
    }

    @Test("10,000 tasks and 10,000 Gs cross over two unbuffered channels at once")
    func tenThousandCrossings() async {
        let r = await runG(procs: 2, timeout: 60) { () -> Int in
            let n = 10_000
            let there = Chan<Int>(), back = Chan<Int>()
            for _ in 0..<n {
                Task {
                    if case .value(let v) = try await there.receive() { try await back.send(v * 2) }
                }
            }
            for i in 1...n { go { there.send(i) } }
            var s = 0
            for _ in 0..<n { s += back.receive().value ?? 0 }
            return s
        }
        #expect(r == 10_000 * 10_001)
    }

    @Test("`for await` ends when its task is cancelled, and takes no value it does not return")
    func iterationCancelled() async {
        let r = await runG(procs: 2) { () -> (Int?, Received<Int>)? in
            let c = Chan<Int>(), seen = Chan<Int>(capacity: 1)
            let t = Task {
                var n = 0
                for await _ in c { n += 1 }
                _ = seen.trySend(n)
            }
            c.send(1)
            guard waitFor({ c.hasWaitingReceiver }) else { return nil }
            t.cancel()
            let n = seen.receive().value
            go { c.send(2) } // nobody took it: a G can still receive it
            return (n, c.receive())
        }
        guard let (n, next) = r ?? nil else {
            Issue.record("the task never waited")
            return
        }
        #expect(n == 1)
        #expect(next == .value(2))
    }

    @Test("A task on GMP.executor and a G round-trip 10,000 times on one P, the task's side on that P too (or a spare lent to it)")
    func executorRoundTrips() async {
        let r = await runG(procs: 1) { () -> (Int, Bool) in
            let ping = Chan<Int>(), pong = Chan<Int>()
            let onP0 = Atomic<Bool>(true)
            Task(executorPreference: GMP.executor) {
                for await v in ping {
                    // P0, or a spare lent to it while a G held it past its
                    // slice (spares are numbered from 1024, past any GMPPROCS).
                    let p = GMP.currentProcessor ?? -1
                    if p != 0 && p < 1024 { onP0.store(false, ordering: .relaxed) }
                    try? await pong.send(v + 1)
                }
            }
            var s = 0
            for i in 0..<10_000 {
                ping.send(i)
                s += pong.receive().value ?? 0
            }
            ping.close()
            return (s, onP0.load(ordering: .relaxed))
        }
        #expect(r?.0 == (0..<10_000).reduce(0, +) + 10_000)
        #expect(r?.1 == true)
    }

}
