// The GMP workloads (scheduler and channels): one function each, with the
// parameters of the issues.
import Channels
import Foundation
import GMP
import Glibc
import NetPoller
import WebSocket

/// spawn: 1,000,000 Gs that each call wg.done(); the spawner then waits.
func benchSpawn() -> Result {
    let n = 1_000_000
    let t = GMP.run { () -> Int64 in
        let wg = WaitGroup(n)
        let t0 = now()
        for _ in 0..<n { go { wg.done() } }
        wg.wait()
        return now() - t0
    }
    return Result(name: "spawn", ops: n, nsPerOp: Double(t) / Double(n), extra: "procs=\(GMP.procs)")
}

/// yield: 2×GMPPROCS Gs share 4,000,000 yield() calls.
func benchYield() -> Result {
    let total = 4_000_000
    let gs = 2 * GMP.procs
    let t = GMP.run { () -> Int64 in
        let wg = WaitGroup(gs)
        let start = WaitGroup(1)
        let t0 = now()
        for _ in 0..<gs {
            go {
                start.wait()
                for _ in 0..<(total / gs) { GMP.yield() }
                wg.done()
            }
        }
        start.done()
        wg.wait()
        return now() - t0
    }
    return Result(name: "yield", ops: total, nsPerOp: Double(t) / Double(total), extra: "gs=\(gs)")
}

/// spawntree: a binary tree of Gs of depth 20 (2,097,151 Gs), each spawning
/// its two children and signalling a shared WaitGroup.
func benchSpawnTree() -> Result {
    let depth = 20
    let total = (1 << (depth + 1)) - 1
    let t = GMP.run { () -> Int64 in
        let wg = WaitGroup(total)
        @Sendable func node(_ d: Int) {
            if d < depth {
                go { node(d + 1) }
                go { node(d + 1) }
            }
            wg.done()
        }
        let t0 = now()
        go { node(0) }
        wg.wait()
        return now() - t0
    }
    return Result(name: "spawntree", ops: total, nsPerOp: Double(t) / Double(total), extra: "depth=\(depth)")
}

/// Starts `n` Gs that each block on a WaitGroup, holds them blocked for
/// `hold` after the last has started, then releases them. Returns the ns
/// to start them all, RSS per G at the end of the hold, and how many stacks
/// were trimmed then. For `parked` and `idle`.
func blockGs(_ n: Int, hold: Duration) -> (startNs: Int64, rssPerG: Int, trimmed: Int) {
    GMP.run { () -> (Int64, Int, Int) in
        let before = rssBytes()
        let gate = WaitGroup(1)
        let started = WaitGroup(n)
        let finished = WaitGroup(n)
        let t0 = now()
        for _ in 0..<n {
            go {
                started.done()
                gate.wait()
                finished.done()
            }
        }
        started.wait()
        let t1 = now() - t0
        if hold > .zero { GMP.sleep(for: hold) }
        let after = rssBytes()
        let trimmed = GMP.stats.trimmedStacks
        gate.done()
        finished.wait()
        return (t1, (after - before) / n, trimmed)
    }
}

/// parked: 100,000 Gs each blocked on a WaitGroup; ns per spawn and RSS per G.
func benchParked() -> Result {
    let n = 100_000
    let (t, perG, _) = blockGs(n, hold: .zero)
    GMP.trimStacks()
    return Result(name: "parked", ops: n, nsPerOp: Double(t) / Double(n), extra: "rss_bytes_per_g=\(perG)")
}

/// idle: 100,000 Gs blocked on a WaitGroup for 3 s (sysmon trims the stacks
/// of Gs parked over a second); RSS per G after the 3 s.
func benchIdle() -> Result {
    let n = 100_000
    let (_, perG, trimmed) = blockGs(n, hold: .seconds(3))
    return Result(name: "idle", ops: n, nsPerOp: 0, extra: "rss_bytes_per_g=\(perG) trimmed=\(trimmed)")
}

/// timers: 100,000 Gs each sleeping 1 ms ten times.
func benchTimers() -> Result {
    let n = 100_000
    let t = GMP.run { () -> Int64 in
        let wg = WaitGroup(n)
        let t0 = now()
        for _ in 0..<n {
            go {
                for _ in 0..<10 { GMP.sleep(nanoseconds: 1_000_000) }
                wg.done()
            }
        }
        wg.wait()
        return now() - t0
    }
    return Result(name: "timers", ops: n * 10, nsPerOp: Double(t) / Double(n * 10), extra: "")
}

/// starvation: one G per P runs for 0.5 s without parking while a ticker G
/// sleeps to a 10 ms schedule; first Gs that compute, then Gs that call
/// usleep(1 ms) without `GMP.blocking`. The worst lateness of a tick, in ns
/// (computing) and in ms for both.
func benchStarvation() -> Result {
    func worstLateness(blocking: Bool) -> (Int64, Int) {
        GMP.run { () -> (Int64, Int) in
            let procs = GMP.procs
            let period: Int64 = 10_000_000
            let end = now() + 500_000_000
            let result = Chan<(Int64, Int)>(capacity: 1)
            let hogs = WaitGroup(procs)
            go {
                var worst: Int64 = 0, ticks = 0
                var next = now() + period
                while next < end {
                    GMP.sleep(nanoseconds: next - now())
                    worst = max(worst, now() - next)
                    ticks += 1
                    next += period
                }
                result.send((worst, ticks))
            }
            for _ in 0..<procs {
                go {
                    var x = 0
                    while now() < end {
                        if blocking { usleep(1000) } else { for i in 0..<1000 { x &+= i } }
                    }
                    if x == 42 { print(x) } // keep the loop
                    hogs.done()
                }
            }
            hogs.wait()
            return result.receive().value ?? (0, 0)
        }
    }
    let (computing, ticks) = worstLateness(blocking: false)
    let (blocking, _) = worstLateness(blocking: true)
    return Result(name: "starvation", ops: ticks, nsPerOp: Double(computing),
                  extra: "worst_late_ms=\(Double(computing) / 1e6) worst_late_blocking_ms=\(Double(blocking) / 1e6)")
}

/// pingpong: two Gs, two unbuffered channels, 1,000,000 round trips.
func benchPingPong() -> Result {
    let n = 1_000_000
    let t = GMP.run { () -> Int64 in
        let ping = Chan<Int>(), pong = Chan<Int>()
        let done = WaitGroup(1)
        go {
            for v in ping { pong.send(v) }
            done.done()
        }
        let t1 = roundTrips(n, ping, pong)
        ping.close()
        done.wait()
        return t1
    }
    return Result(name: "pingpong", ops: n, nsPerOp: Double(t) / Double(n), extra: "ns per round trip")
}

/// Inside a G: `n` round trips (send on `ping`, receive the echo from
/// `pong`) with whoever echoes; the time they took.
func roundTrips(_ n: Int, _ ping: Chan<Int>, _ pong: Chan<Int>) -> Int64 {
    let t0 = now()
    for i in 0..<n {
        ping.send(i)
        _ = pong.receive()
    }
    return now() - t0
}

/// buffered: one producer, one consumer, capacity 1024, 10,000,000 values.
func benchBuffered() -> Result {
    let n = 10_000_000
    let t = GMP.run { () -> Int64 in
        let c = Chan<Int>(capacity: 1024)
        let t0 = now()
        go {
            for i in 0..<n { c.send(i) }
            c.close()
        }
        var sum = 0
        for v in c { sum &+= v }
        precondition(sum == n * (n - 1) / 2)
        return now() - t0
    }
    return Result(name: "buffered", ops: n, nsPerOp: Double(t) / Double(n), extra: "")
}

/// fanin: 8 producers, 1 consumer, capacity 128, 8,000,000 values in all.
func benchFanIn() -> Result {
    let n = 8_000_000, producers = 8
    let t = GMP.run { () -> Int64 in
        let c = Chan<Int>(capacity: 128)
        let t0 = now()
        for _ in 0..<producers {
            go { for i in 0..<(n / producers) { c.send(i) } }
        }
        for _ in 0..<n { _ = c.receive() }
        return now() - t0
    }
    return Result(name: "fanin", ops: n, nsPerOp: Double(t) / Double(n), extra: "producers=\(producers)")
}

/// select: one receiver selecting over 4 channels of capacity 16, each fed
/// by its own producer, 4,000,000 values in all.
func benchSelect() -> Result {
    selectOverFour(name: "select") { cs, n in
        // The loop form: the cases built once (SelectSet), waited on n times.
        let set = SelectSet()
        let cases = cs.map { set.receive($0) }
        let (r0, r1, r2, r3) = (cases[0], cases[1], cases[2], cases[3])
        var got = 0
        while got < n {
            switch set.wait() {
            case r0: if case .value = set.value(of: r0) { got += 1 }
            case r1: if case .value = set.value(of: r1) { got += 1 }
            case r2: if case .value = set.value(of: r2) { got += 1 }
            case r3: if case .value = set.value(of: r3) { got += 1 }
            default: break
            }
        }
    }
}

/// selectonce: as select, with a one-off `select { }` per value.
func benchSelectOnce() -> Result {
    selectOverFour(name: "selectonce") { cs, n in
        let (c0, c1, c2, c3) = (cs[0], cs[1], cs[2], cs[3])
        var got = 0
        while got < n {
            select { s in
                if s.receive(c0) != nil { got += 1 }
                if s.receive(c1) != nil { got += 1 }
                if s.receive(c2) != nil { got += 1 }
                if s.receive(c3) != nil { got += 1 }
            }
        }
    }
}

/// 4 channels of capacity 16, a producer each, 4,000,000 values in all;
/// `receiveAll` takes them in the G that started the producers.
func selectOverFour(name: String, _ receiveAll: @escaping @Sendable ([Chan<Int>], Int) -> Void) -> Result {
    let n = 4_000_000
    let t = GMP.run { () -> Int64 in
        let cs = (0..<4).map { _ in Chan<Int>(capacity: 16) }
        let t0 = now()
        for c in cs {
            go { for i in 0..<(n / 4) { c.send(i) } }
        }
        receiveAll(cs, n)
        return now() - t0
    }
    return Result(name: name, ops: n, nsPerOp: Double(t) / Double(n), extra: "")
}

/// bridge: a G and a Swift task, two unbuffered channels, 200,000 round
/// trips (the task uses the async forms), once with the task on Swift's
/// global executor and once on `GMP.executor`; then 50,000 `GMP.await`
/// calls of a closure that returns at once (a task made and awaited per call).
func benchBridge() -> Result {
    let n = 200_000, m = 50_000
    let (t, tExecutor, tAwait) = GMP.run { () -> (Int64, Int64, Int64) in
        func withTask(on executor: (any TaskExecutor)?) -> Int64 {
            let ping = Chan<Int>(), pong = Chan<Int>()
            let echo = Task(executorPreference: executor) {
                for await v in ping { try? await pong.send(v) }
            }
            let t1 = roundTrips(n, ping, pong)
            ping.close()
            GMP.await { await echo.value }
            return t1
        }
        let t = withTask(on: nil)
        let tExecutor = withTask(on: GMP.executor)
        let t2 = now()
        var sum = 0
        for i in 0..<m { sum &+= GMP.await { i } }
        precondition(sum == m * (m - 1) / 2)
        return (t, tExecutor, now() - t2)
    }
    return Result(name: "bridge", ops: n, nsPerOp: Double(t) / Double(n),
                  extra: "executor_ns=\(Double(tExecutor) / Double(n)) await_ns=\(Double(tAwait) / Double(m))")
}
