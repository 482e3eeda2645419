// The Swift concurrency peer: the workloads a Swift user would write today
// with tasks, task groups, Task.sleep and a continuation-based channel, with
// the same parameters as ours. No select, sockets or chat: Swift concurrency
// has no select, and NIO (its usual network layer) is not a dependency here.
import Foundation
import enum GMP.GMP
import Synchronization

/// A FIFO queue on an array with a moving head (amortised O(1) both ends).
struct FIFO<Element> {
    private var items: [Element?] = []
    private var head = 0

    var count: Int { items.count - head }
    var isEmpty: Bool { head == items.count }

    mutating func push(_ e: Element) { items.append(e) }

    mutating func pop() -> Element? {
        guard head < items.count else { return nil }
        let e = items[head]
        items[head] = nil
        head += 1
        if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return e
    }
}

/// A countdown latch for tasks: `wait()` returns once `done()` has been
/// called `count` times. Any number of tasks may wait.
final class AsyncLatch: Sendable {
    private struct State {
        var count: Int
        var waiters: [UnsafeContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(count: count)) }

    func done() {
        let wake = state.withLock { s -> [UnsafeContinuation<Void, Never>] in
            s.count -= 1
            guard s.count == 0 else { return [] }
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in wake { w.resume() }
    }

    func wait() async {
        if state.withLock({ $0.count == 0 }) { return }
        await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.count == 0 { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}

/// Go's channel for tasks, as one would write it on continuations: a buffer
/// of `capacity` values (0: every send meets a receive), FIFO queues of
/// suspended senders and receivers, `close()`; continuations are resumed
/// outside the lock.
final class AsyncChannel<T: Sendable>: Sendable {
    private struct State {
        var buffer = FIFO<T>()
        var receivers = FIFO<UnsafeContinuation<T?, Never>>()
        var senders = FIFO<(T, UnsafeContinuation<Void, Never>)>()
        var closed = false
    }
    private let state = Mutex(State())
    let capacity: Int

    init(capacity: Int = 0) { self.capacity = capacity }

    private enum SendStep {
        case handOff(UnsafeContinuation<T?, Never>)
        case buffered
        case wait
    }

    /// One attempt to send without suspending; `.wait` if it must suspend.
    private func trySend(_ v: T, _ s: inout State) -> SendStep {
        precondition(!s.closed, "send on closed channel")
        if let r = s.receivers.pop() { return .handOff(r) }
        if s.buffer.count < capacity {
            s.buffer.push(v)
            return .buffered
        }
        return .wait
    }

    func send(_ v: T) async {
        switch state.withLock({ trySend(v, &$0) }) {
        case .handOff(let r): r.resume(returning: v); return
        case .buffered: return
        case .wait: break
        }
        await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
            let step = state.withLock { s -> SendStep in
                let step = trySend(v, &s)
                if case .wait = step { s.senders.push((v, c)) }
                return step
            }
            switch step {
            case .handOff(let r): r.resume(returning: v); c.resume()
            case .buffered: c.resume()
            case .wait: break
            }
        }
    }

    private enum ReceiveStep {
        case value(T, UnsafeContinuation<Void, Never>?)
        case closed
        case wait
    }

    /// One attempt to receive without suspending; `.wait` if it must suspend.
    private func tryReceive(_ s: inout State) -> ReceiveStep {
        if let v = s.buffer.pop() {
            // A waiting sender moves its value into the freed slot.
            if let (sv, sc) = s.senders.pop() {
                s.buffer.push(sv)
                return .value(v, sc)
            }
            return .value(v, nil)
        }
        if let (sv, sc) = s.senders.pop() { return .value(sv, sc) }
        return s.closed ? .closed : .wait
    }

    /// The next value, or nil once the channel is closed and drained.
    func receive() async -> T? {
        switch state.withLock({ tryReceive(&$0) }) {
        case .value(let v, let sender): sender?.resume(); return v
        case .closed: return nil
        case .wait: break
        }
        return await withUnsafeContinuation { (c: UnsafeContinuation<T?, Never>) in
            let step = state.withLock { s -> ReceiveStep in
                let step = tryReceive(&s)
                if case .wait = step { s.receivers.push(c) }
                return step
            }
            switch step {
            case .value(let v, let sender): sender?.resume(); c.resume(returning: v)
            case .closed: c.resume(returning: nil)
            case .wait: break
            }
        }
    }

    func close() {
        let waiting = state.withLock { s -> [UnsafeContinuation<T?, Never>] in
            s.closed = true
            var all: [UnsafeContinuation<T?, Never>] = []
            while let r = s.receivers.pop() { all.append(r) }
            return all
        }
        for r in waiting { r.resume(returning: nil) }
    }
}

/// Runs `body` as a task and blocks this (non-pool) thread until it returns.
func runTask<R: Sendable>(_ body: @escaping @Sendable () async -> R) -> R {
    let done = DispatchSemaphore(value: 0)
    let result = Mutex<R?>(nil)
    Task.detached(executorPreference: peerExecutor) {
        let r = await body()
        result.withLock { $0 = r }
        done.signal()
    }
    done.wait()
    return result.withLock { $0! }
}

/// Where the peer's tasks run: Swift's global executor (nil), or with
/// SWIFT_EXECUTOR=gmp our `GMP.executor` (the "Swift on GMP.executor"
/// column: the same Swift code, every task it makes preferring our executor,
/// since an unstructured `Task { }` would not inherit the preference).
let peerExecutor: (any TaskExecutor)? = ProcessInfo.processInfo.environment["SWIFT_EXECUTOR"] == "gmp" ? GMP.executor : nil

/// The number of threads Swift's global executor runs tasks on here.
var swiftWidth: Int { ProcessInfo.processInfo.activeProcessorCount }

/// spawn: 1,000,000 unstructured tasks that each count down a latch.
func swiftSpawn() -> Result {
    let n = 1_000_000
    let t = runTask { () -> Int64 in
        let latch = AsyncLatch(n)
        let t0 = now()
        for _ in 0..<n { Task(executorPreference: peerExecutor) { latch.done() } }
        await latch.wait()
        return now() - t0
    }
    return Result(name: "spawn", ops: n, nsPerOp: Double(t) / Double(n), extra: "tasks")
}

/// yield: 2×(threads) tasks share 4,000,000 `Task.yield()` calls.
func swiftYield() -> Result {
    let total = 4_000_000
    let gs = 2 * swiftWidth
    let t = runTask { () -> Int64 in
        let t0 = now()
        await withDiscardingTaskGroup { g in
            for _ in 0..<gs {
                g.addTask { for _ in 0..<(total / gs) { await Task.yield() } }
            }
        }
        return now() - t0
    }
    return Result(name: "yield", ops: total, nsPerOp: Double(t) / Double(total), extra: "tasks=\(gs)")
}

/// spawntree: a binary tree of unstructured tasks of depth 20, each starting
/// its two children and counting down a shared latch.
func swiftSpawnTree() -> Result {
    let depth = 20
    let total = (1 << (depth + 1)) - 1
    let t = runTask { () -> Int64 in
        let latch = AsyncLatch(total)
        @Sendable func node(_ d: Int) {
            if d < depth {
                Task(executorPreference: peerExecutor) { node(d + 1) }
                Task(executorPreference: peerExecutor) { node(d + 1) }
            }
            latch.done()
        }
        let t0 = now()
        Task(executorPreference: peerExecutor) { node(0) }
        await latch.wait()
        return now() - t0
    }
    return Result(name: "spawntree", ops: total, nsPerOp: Double(t) / Double(total), extra: "depth=\(depth)")
}

/// Starts `n` tasks that each suspend on a latch, holds them for
/// `holdNanoseconds` after the last has started, then releases them.
/// Returns the ns to start them all and RSS per task at the end of the hold.
func suspendTasks(_ n: Int, holdNanoseconds: UInt64) -> (startNs: Int64, rssPerTask: Int) {
    runTask { () -> (Int64, Int) in
        let before = rssBytes()
        let gate = AsyncLatch(1), started = AsyncLatch(n), finished = AsyncLatch(n)
        let t0 = now()
        for _ in 0..<n {
            Task(executorPreference: peerExecutor) {
                started.done()
                await gate.wait()
                finished.done()
            }
        }
        await started.wait()
        let t1 = now() - t0
        if holdNanoseconds > 0 { try? await Task.sleep(nanoseconds: holdNanoseconds) }
        let after = rssBytes()
        gate.done()
        await finished.wait()
        return (t1, (after - before) / n)
    }
}

/// parked: 100,000 tasks each suspended on a latch; ns per task started and
/// RSS per task.
func swiftParked() -> Result {
    let n = 100_000
    let (t, perTask) = suspendTasks(n, holdNanoseconds: 0)
    return Result(name: "parked", ops: n, nsPerOp: Double(t) / Double(n), extra: "rss_bytes_per_g=\(perTask)")
}

/// idle: 100,000 tasks suspended on a latch for 3 s; RSS per task.
func swiftIdle() -> Result {
    let n = 100_000
    let (_, perTask) = suspendTasks(n, holdNanoseconds: 3_000_000_000)
    return Result(name: "idle", ops: n, nsPerOp: 0, extra: "rss_bytes_per_g=\(perTask)")
}

/// timers: 100,000 tasks each `Task.sleep`ing 1 ms ten times.
func swiftTimers() -> Result {
    let n = 100_000
    let t = runTask { () -> Int64 in
        let t0 = now()
        await withDiscardingTaskGroup { g in
            for _ in 0..<n {
                g.addTask { for _ in 0..<10 { try? await Task.sleep(nanoseconds: 1_000_000) } }
            }
        }
        return now() - t0
    }
    return Result(name: "timers", ops: n * 10, nsPerOp: Double(t) / Double(n * 10), extra: "")
}

/// pingpong: two tasks, two unbuffered channels, 1,000,000 round trips.
func swiftPingPong() -> Result {
    let n = 1_000_000
    let t = runTask { await channelRoundTrips(n) }
    return Result(name: "pingpong", ops: n, nsPerOp: Double(t) / Double(n), extra: "ns per round trip")
}

/// `n` round trips between this task and an echo task over two
/// `AsyncChannel`s (continuation-based); the time they took.
func channelRoundTrips(_ n: Int) async -> Int64 {
    let ping = AsyncChannel<Int>(), pong = AsyncChannel<Int>()
    let echo = Task(executorPreference: peerExecutor) {
        while let v = await ping.receive() { await pong.send(v) }
    }
    let t0 = now()
    for i in 0..<n {
        await ping.send(i)
        _ = await pong.receive()
    }
    let t1 = now() - t0
    ping.close()
    await echo.value
    return t1
}

/// buffered: one producer task, one consumer, capacity 1024, 10,000,000 values.
func swiftBuffered() -> Result {
    let n = 10_000_000
    let t = runTask { () -> Int64 in
        let c = AsyncChannel<Int>(capacity: 1024)
        let t0 = now()
        Task(executorPreference: peerExecutor) {
            for i in 0..<n { await c.send(i) }
            c.close()
        }
        var sum = 0
        while let v = await c.receive() { sum &+= v }
        precondition(sum == n * (n - 1) / 2)
        return now() - t0
    }
    return Result(name: "buffered", ops: n, nsPerOp: Double(t) / Double(n), extra: "")
}

/// fanin: 8 producer tasks, 1 consumer, capacity 128, 8,000,000 values in all.
func swiftFanIn() -> Result {
    let n = 8_000_000, producers = 8
    let t = runTask { () -> Int64 in
        let c = AsyncChannel<Int>(capacity: 128)
        let t0 = now()
        for _ in 0..<producers {
            Task(executorPreference: peerExecutor) { for i in 0..<(n / producers) { await c.send(i) } }
        }
        for _ in 0..<n { _ = await c.receive() }
        return now() - t0
    }
    return Result(name: "fanin", ops: n, nsPerOp: Double(t) / Double(n), extra: "producers=\(producers)")
}

/// bridge, as Swift concurrency does it without Gs: two tasks, 200,000
/// round trips over two AsyncStreams, then over two continuation-based
/// channels (`AsyncChannel`, as pingpong); then 50,000 `await Task { }.value`
/// of a closure that returns at once (the counterpart of `GMP.await`).
func swiftBridge() -> Result {
    let n = 200_000, m = 50_000
    let (t, tContinuations, tAwait) = runTask { () -> (Int64, Int64, Int64) in
        let (pingStream, ping) = AsyncStream<Int>.makeStream()
        let (pongStream, pong) = AsyncStream<Int>.makeStream()
        let echo = Task(executorPreference: peerExecutor) {
            for await v in pingStream { pong.yield(v) }
            pong.finish()
        }
        var replies = pongStream.makeAsyncIterator()
        let t0 = now()
        for i in 0..<n {
            ping.yield(i)
            _ = await replies.next()
        }
        let t1 = now() - t0
        ping.finish()
        await echo.value
        let t3 = await channelRoundTrips(n)
        let t4 = now()
        var sum = 0
        for i in 0..<m { sum &+= await Task(executorPreference: peerExecutor) { i }.value }
        precondition(sum == m * (m - 1) / 2)
        return (t1, t3, now() - t4)
    }
    return Result(name: "bridge", ops: n, nsPerOp: Double(t) / Double(n),
                  extra: "executor_ns=\(Double(tContinuations) / Double(n)) await_ns=\(Double(tAwait) / Double(m))")
}
