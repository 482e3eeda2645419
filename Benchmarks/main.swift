// Benchmarks: `swift run -c release Benchmarks [--filter NAME] [--json]`.
//
// Each workload runs once per invocation with exactly the parameters of the
// issues, and prints ns per operation (or, with --json, one object a line:
// {"name":..., "ops":..., "ns_per_op":..., "extra":...}).
import Channels
import Foundation
import GMP
import Glibc
import NetPoller
import WebSocket

struct Result {
    var name: String
    var ops: Int
    var nsPerOp: Double
    var extra: String
}

func now() -> Int64 { GMP.now }

/// Resident set size of process `pid` in bytes.
func rssBytes(pid: Int32) -> Int {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return 0 }
    let parts = s.split(separator: " ")
    return parts.count > 1 ? (Int(parts[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
}

/// Resident set size of this process in bytes.
func rssBytes() -> Int { rssBytes(pid: getpid()) }

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

/// parked: 100,000 Gs each blocked on a WaitGroup; ns per spawn and RSS per G.
func benchParked() -> Result {
    let n = 100_000
    let (t, perG) = GMP.run { () -> (Int64, Int) in
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
        let after = rssBytes()
        gate.done()
        finished.wait()
        return (t1, (after - before) / n)
    }
    GMP.trimStacks()
    return Result(name: "parked", ops: n, nsPerOp: Double(t) / Double(n), extra: "rss_bytes_per_g=\(perG)")
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
        let t0 = now()
        for i in 0..<n {
            ping.send(i)
            _ = pong.receive()
        }
        let t1 = now() - t0
        ping.close()
        done.wait()
        return t1
    }
    return Result(name: "pingpong", ops: n, nsPerOp: Double(t) / Double(n), extra: "ns per round trip")
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
    let n = 4_000_000
    let t = GMP.run { () -> Int64 in
        let cs = (0..<4).map { _ in Chan<Int>(capacity: 16) }
        let t0 = now()
        for c in cs {
            go { for i in 0..<(n / 4) { c.send(i) } }
        }
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
        return now() - t0
    }
    return Result(name: "select", ops: n, nsPerOp: Double(t) / Double(n), extra: "")
}

/// echo: a server and 100 client Gs in one process over loopback, each
/// client making 10,000 round trips of 64 bytes. ns per round trip.
func benchEcho() -> Result {
    let clients = 100, rounds = 10_000
    let t = GMP.run { () -> Int64 in
        guard let l = try? Listener(port: 0, backlog: 1024) else { fatalError("echo: cannot listen") }
        go {
            while let c = try? l.accept() {
                c.setNoDelay(true)
                go {
                    defer { c.close() }
                    var buf = [UInt8](repeating: 0, count: 4096)
                    while true {
                        let r: Swift.Result<Int, NetError> = buf.withUnsafeMutableBytes { b in
                            Swift.Result { () throws(NetError) in try c.read(into: b) }
                        }
                        guard case .success(let n) = r else { return }
                        let w: Swift.Result<Void, NetError> = buf.withUnsafeBytes { b in
                            Swift.Result { () throws(NetError) in try c.write(UnsafeRawBufferPointer(rebasing: b[0..<n])) }
                        }
                        if case .failure = w { return }
                    }
                }
            }
        }
        let wg = WaitGroup(clients)
        let t0 = now()
        for _ in 0..<clients {
            go {
                defer { wg.done() }
                guard let c = try? Conn.dial("127.0.0.1", l.port) else { fatalError("echo: dial failed") }
                defer { c.close() }
                c.setNoDelay(true)
                var msg = [UInt8](repeating: 7, count: 64)
                for _ in 0..<rounds {
                    do {
                        try c.write(msg)
                        var got = 0
                        while got < 64 {
                            got += try msg.withUnsafeMutableBytes { b throws(NetError) -> Int in
                                try c.read(into: UnsafeMutableRawBufferPointer(rebasing: b[got...]))
                            }
                        }
                    } catch {
                        fatalError("echo: \(error)")
                    }
                }
            }
        }
        wg.wait()
        let el = now() - t0
        l.close()
        return el
    }
    return Result(name: "echo", ops: clients * rounds, nsPerOp: Double(t) / Double(clients * rounds),
                  extra: "clients=\(clients)")
}

/// idleconns: 10,000 open idle connections held by parked Gs; server-side
/// RSS per connection. The clients run in a child process (this same binary,
/// `--idleconns-client PORT N`), so both ends fit the fd limit and only the
/// server's memory is counted.
func benchIdleConns() -> Result {
    let n = 10_000
    let (t, perConn) = GMP.run { () -> (Int64, Int) in
        guard let l = try? Listener(port: 0, backlog: 4096) else { fatalError("idleconns: cannot listen") }
        let accepted = WaitGroup(n)
        let closed = WaitGroup(n)
        let before = rssBytes()
        go {
            for _ in 0..<n {
                guard let c = try? l.accept() else { return }
                go {
                    accepted.done()
                    // Parked in read until the client goes away.
                    _ = try? c.read(max: 16)
                    c.close()
                    closed.done()
                }
            }
        }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        child.arguments = ["--idleconns-client", String(l.port), String(n)]
        let stdin = Pipe()
        child.standardInput = stdin
        let t0 = now()
        guard (try? child.run()) != nil else { fatalError("idleconns: cannot start the client process") }
        accepted.wait()
        let el = now() - t0
        let after = rssBytes()
        try? stdin.fileHandleForWriting.close() // the child exits and its sockets close
        closed.wait()
        child.waitUntilExit()
        l.close()
        return (el, (after - before) / n)
    }
    return Result(name: "idleconns", ops: n, nsPerOp: Double(t) / Double(n),
                  extra: "rss_bytes_per_conn=\(perConn) (server side)")
}

/// Blocks the calling G (in a blocking call) until the parent closes our stdin.
func waitForStdinToClose() {
    var b: UInt8 = 0
    _ = GMP.blocking { read(0, &b, 1) }
}

/// The client half of `idleconns`: dial `n` connections, hold them until
/// stdin closes.
func idleConnsClient(port: Int, n: Int) -> Never {
    GMP.run {
        var conns: [Conn] = []
        for _ in 0..<n {
            guard let c = try? Conn.dial("127.0.0.1", port) else { fatalError("idleconns client: dial failed") }
            conns.append(c)
        }
        waitForStdinToClose()
        for c in conns { c.close() }
    }
    exit(0)
}

/// chat: the ChatApp binary (built next to this one) with 100 clients of
/// ours, each sending 100 messages 10 ms apart; every client must receive
/// all 10,000. ns per delivery; deliveries/s and p50/p99 latency in `extra`.
func benchChat() -> Result? {
    guard let (app, port) = startChatApp("chat") else { return nil }
    defer { app.terminate(); app.waitUntilExit() }
    let clients = 100, per = 100, total = clients * clients * per
    let (elapsed, lat) = GMP.run { () -> (Int64, [Int64]) in
        var conns: [WebSocketConn] = []
        for _ in 0..<clients {
            guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws") else { fatalError("chat: dial") }
            conns.append(ws)
        }
        let latencies = Chan<[Int64]>(capacity: clients)
        let t0 = now()
        for ws in conns {
            go {
                var got = 0
                var l: [Int64] = []
                l.reserveCapacity(clients * per)
                while got < clients * per {
                    guard case .text(let t)? = try? ws.receive() else { break }
                    let at = now()
                    for line in t.split(separator: "\n") {
                        if let sent = Int64(line.split(separator: " ").first ?? "") { l.append(at - sent) }
                        got += 1
                    }
                }
                latencies.send(l)
            }
        }
        for ws in conns {
            go {
                for k in 0..<per {
                    try? ws.send(text: "\(now()) m\(k)")
                    GMP.sleep(nanoseconds: 10_000_000)
                }
            }
        }
        var all: [Int64] = []
        for _ in 0..<clients { all += latencies.receive().value ?? [] }
        let el = now() - t0
        for ws in conns { ws.conn.close() }
        return (el, all.sorted())
    }
    precondition(lat.count == total, "chat: \(lat.count) of \(total) deliveries")
    let p50 = Double(lat[lat.count / 2]) / 1e6, p99 = Double(lat[lat.count * 99 / 100]) / 1e6
    let rate = Double(total) / (Double(elapsed) / 1e9)
    let extra = "deliveries_per_s=\(Int(rate)) p50_ms=\((p50 * 100).rounded() / 100) p99_ms=\((p99 * 100).rounded() / 100)"
    return Result(name: "chat", ops: total, nsPerOp: Double(elapsed) / Double(total), extra: extra)
}

/// Starts the release ChatApp binary (next to this one) on a free port and
/// waits until it accepts; nil (with a note) if there is no binary.
func startChatApp(_ workload: String) -> (Process, Int)? {
    let exe = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("ChatApp")
    guard FileManager.default.fileExists(atPath: exe.path) else {
        let msg = "\(workload): skipped, no ChatApp binary next to Benchmarks (swift build -c release --product ChatApp)\n"
        _ = msg.withCString { write(2, $0, strlen($0)) }
        return nil
    }
    guard let probe = try? Listener(port: 0) else { return nil }
    let port = probe.port
    probe.close()
    let app = Process()
    app.executableURL = exe
    app.arguments = ["--addr", "127.0.0.1:\(port)"]
    app.standardError = FileHandle.nullDevice
    guard (try? app.run()) != nil else { return nil }
    while (try? Conn.dial("127.0.0.1", port))?.close() == nil { usleep(20_000) }
    return (app, port)
}

/// chatidle: 10,000 connected, idle WebSocket clients (in a child process)
/// on the ChatApp binary; the server's RSS per connection.
func benchChatIdle() -> Result? {
    guard let (app, port) = startChatApp("chatidle") else { return nil }
    defer { app.terminate(); app.waitUntilExit() }
    let n = 10_000
    let before = rssBytes(pid: app.processIdentifier)
    let child = Process()
    child.executableURL = URL(fileURLWithPath: "/proc/self/exe")
    child.arguments = ["--chatidle-client", String(port), String(n)]
    let stdin = Pipe(), stdout = Pipe()
    child.standardInput = stdin
    child.standardOutput = stdout
    let t0 = now()
    guard (try? child.run()) != nil else { return nil }
    // The client writes one line once all n are connected.
    _ = stdout.fileHandleForReading.availableData
    let el = now() - t0
    let after = rssBytes(pid: app.processIdentifier)
    try? stdin.fileHandleForWriting.close()
    child.waitUntilExit()
    return Result(name: "chatidle", ops: n, nsPerOp: Double(el) / Double(n),
                  extra: "rss_bytes_per_conn=\((after - before) / n) (server process)")
}

/// The client half of `chatidle`: n WebSocket clients, held until stdin closes.
func chatIdleClient(port: Int, n: Int) -> Never {
    GMP.run {
        var conns: [WebSocketConn] = []
        for _ in 0..<n {
            guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws") else {
                fatalError("chatidle client: dial failed")
            }
            conns.append(ws)
        }
        let line = "connected \(n)\n"
        _ = line.withCString { write(1, $0, strlen($0)) }
        waitForStdinToClose()
        for ws in conns { ws.conn.close() }
    }
    exit(0)
}

let all: [(String, () -> Result?)] = [
    ("spawn", benchSpawn),
    ("yield", benchYield),
    ("spawntree", benchSpawnTree),
    ("parked", benchParked),
    ("timers", benchTimers),
    ("pingpong", benchPingPong),
    ("buffered", benchBuffered),
    ("fanin", benchFanIn),
    ("select", benchSelect),
    ("echo", benchEcho),
    ("idleconns", benchIdleConns),
    ("chat", benchChat),
    ("chatidle", benchChatIdle),
]

var json = false
var filter: String?
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--chatidle-client":
        guard let p = args.popFirst().flatMap({ Int($0) }), let n = args.popFirst().flatMap({ Int($0) }) else {
            fatalError("--chatidle-client PORT N")
        }
        chatIdleClient(port: p, n: n)
    case "--idleconns-client":
        guard let p = args.popFirst().flatMap({ Int($0) }), let n = args.popFirst().flatMap({ Int($0) }) else {
            fatalError("--idleconns-client PORT N")
        }
        idleConnsClient(port: p, n: n)
    case "--json": json = true
    case "--filter":
        guard let f = args.popFirst() else { fatalError("--filter needs a name") }
        filter = f
    case "--help", "-h":
        print("usage: Benchmarks [--filter NAME] [--json]\nworkloads: \(all.map(\.0).joined(separator: ", "))")
        exit(0)
    default:
        let msg = "Benchmarks: unknown argument \(a) (try --help)\n"
        _ = msg.withCString { write(2, $0, strlen($0)) }
        exit(2)
    }
}

// An exact name selects that workload; otherwise every name containing the filter.
let exact = all.filter { $0.0 == filter }
let selected = !exact.isEmpty ? exact : all.filter { filter == nil || $0.0.contains(filter!) }
if selected.isEmpty {
    let msg = "Benchmarks: no workload matches \(filter ?? "")\n"
    _ = msg.withCString { write(2, $0, strlen($0)) }
    exit(2)
}
if !json { print("GMPPROCS=\(GMP.procs), cores=\(sysconf(Int32(_SC_NPROCESSORS_ONLN)))") }
for (_, f) in selected {
    guard let r = f() else { continue } // skipped (it said why)
    if json {
        print("{\"name\":\"\(r.name)\",\"ops\":\(r.ops),\"ns_per_op\":\(r.nsPerOp),\"extra\":\"\(r.extra)\"}")
    } else {
        let ns = (r.nsPerOp * 10).rounded() / 10
        print("\(r.name + String(repeating: " ", count: max(0, 10 - r.name.count))) \(r.ops) ops  \(ns) ns/op  \(r.extra)")
    }
}
