// The chat workloads, run against a chat server process: ChatApp, or the
// Go peer's gorilla/websocket hub (Benchmarks/peers/go/chat.go).
import Channels
import Foundation
import GMP
import Glibc
import NetPoller
import WebSocket

/// chat: the chat server with 100 clients of
/// ours, each sending 100 messages 10 ms apart; every client must receive
/// all 10,000. ns per delivery; deliveries/s and p50/p99 latency in `extra`.
/// Both servers drop a client whose send buffer fills (gorilla's policy): on
/// a loaded machine a client can fall that far behind, and then the run is
/// made once more (said on stderr); a second loss fails the workload.
func benchChat() -> Result? { chatAttempts(.memory) }

/// chathistory: `chat` with ChatApp logging every message to its history
/// (a fresh data directory, `--fsync interval`): the cost of the log G, the
/// writes and the syncs beside the in-memory figure.
func benchChatHistory() -> Result? { chatAttempts(.history) }

/// chat2nodes: `chat` with the 100 clients spread over two ChatApp nodes
/// joined through a redis-server of the run's own (`--redis`): every
/// message goes through Redis's append script and comes back to both nodes
/// by pub/sub.
func benchChat2Nodes() -> Result? { chatAttempts(.twoNodes) }

/// How the chat workloads run ChatApp.
enum ChatSetup {
    case memory, history, twoNodes

    var name: String { self == .memory ? "chat" : self == .history ? "chathistory" : "chat2nodes" }
}

func chatAttempts(_ setup: ChatSetup) -> Result? {
    for attempt in 1...2 {
        switch chatRun(setup) {
        case .done(let r):
            return r
        case .skipped:
            return nil
        case .lost(let got, let total):
            note("\(setup.name): \(got) of \(total) deliveries (the server dropped a slow client)" + (attempt == 1 ? "; once more" : ""))
        }
    }
    return nil
}

/// How one run of `chat` went.
enum ChatOutcome {
    case done(Result)
    /// Deliveries that did not arrive: the server dropped a client.
    case lost(got: Int, total: Int)
    /// No server to run against (said already).
    case skipped
}

/// One run of `chat`, `chathistory` or `chat2nodes`.
func chatRun(_ setup: ChatSetup) -> ChatOutcome {
    let dataDir = setup == .history ? NSTemporaryDirectory() + "chathistory-\(getpid())" : nil
    var redis: Process?
    var servers: [(Process, Int)] = []
    defer {
        for (app, _) in servers {
            app.terminate()
            app.waitUntilExit()
        }
        redis?.terminate()
        redis?.waitUntilExit()
        if let dataDir { try? FileManager.default.removeItem(atPath: dataDir) }
    }
    switch setup {
    case .memory:
        guard let s = startChatServer("chat") else { return .skipped }
        servers = [s]
    case .history:
        guard let s = startChatServer("chathistory", extra: ["--data-dir", dataDir!, "--fsync", "interval"]) else { return .skipped }
        servers = [s]
    case .twoNodes:
        guard let (r, url) = startRedis() else { return .skipped }
        redis = r
        for _ in 0..<2 {
            guard let s = startChatServer("chat2nodes", extra: ["--redis", url]) else { return .skipped }
            servers.append(s)
        }
    }
    let ports = servers.map(\.1), pids = servers.map { $0.0.processIdentifier }
    let clients = 100, per = 100, total = clients * clients * per
    let redisPID = redis?.processIdentifier
    let (elapsed, lat, serverCPU, redisCPU) = GMP.run { () -> (Int64, [Int64], Int, Int) in
        var conns: [WebSocketConn] = []
        for i in 0..<clients {
            guard let ws = try? dialWebSocket(host: "127.0.0.1", port: ports[i % ports.count], path: "/ws?format=text") else {
                fatalError("\(setup.name): dial")
            }
            conns.append(ws)
        }
        // gorilla's example registers a client after its handshake answer:
        // wait until the server counts every client, or early messages miss some.
        for (i, port) in ports.enumerated() { awaitClients(clients / ports.count + (i < clients % ports.count ? 1 : 0), port: port) }
        let cpu0 = pids.reduce(0) { $0 + cpuMs(pid: $1) } // the servers' CPU from here on
        let redis0 = redisPID.map { cpuMs(pid: $0) } ?? 0
        let latencies = Chan<[Int64]>(capacity: clients)
        let t0 = now()
        for ws in conns {
            go {
                // A lost message fails the run (below) rather than hanging it.
                ws.conn.setReadDeadline(.after(.seconds(60)))
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
        let cpu = pids.reduce(0) { $0 + cpuMs(pid: $1) } - cpu0
        let redisCPU = (redisPID.map { cpuMs(pid: $0) } ?? 0) - redis0
        for ws in conns { ws.conn.close() }
        return (el, all.sorted(), cpu, redisCPU)
    }
    guard lat.count == total else { return .lost(got: lat.count, total: total) }
    let p50 = Double(lat[lat.count / 2]) / 1e6, p99 = Double(lat[lat.count * 99 / 100]) / 1e6
    let rate = Double(total) / (Double(elapsed) / 1e9)
    let extra = "deliveries_per_s=\(Int(rate)) p50_ms=\((p50 * 100).rounded() / 100) p99_ms=\((p99 * 100).rounded() / 100)"
        + " server_cpu_ms=\(serverCPU)" + (redisPID == nil ? "" : " redis_cpu_ms=\(redisCPU)")
    return .done(Result(name: setup.name, ops: total, nsPerOp: Double(elapsed) / Double(total), extra: extra))
}

/// The chat server the chat workloads run against: nil for ChatApp (the
/// release binary next to this one), or the Go peer binary (`--chat-server`).
nonisolated(unsafe) var goChatServer: String?
// nonisolated(unsafe): set once while parsing arguments, before any G runs.

/// Starts the chat server on a free port, with its `/stats` route on (and,
/// for ChatApp, history in memory unless `extra` says otherwise), and
/// waits (at most 10 s) until it accepts; nil, with a note, if it cannot.
func startChatServer(_ workload: String, extra: [String] = []) -> (Process, Int)? {
    func skip(_ why: String) -> (Process, Int)? {
        note("\(workload): skipped, \(why)")
        return nil
    }
    let exe = goChatServer.map { URL(fileURLWithPath: $0) }
        ?? URL(fileURLWithPath: selfPath).deletingLastPathComponent().appendingPathComponent("ChatApp")
    guard FileManager.default.fileExists(atPath: exe.path) else {
        return skip("no \(exe.path) (swift build -c release --product ChatApp)")
    }
    guard let probe = try? Listener(port: 0) else { return skip("no free port") }
    let port = probe.port
    probe.close()
    let app = Process()
    app.executableURL = exe
    // Ours without its connection limits (every client comes from 127.0.0.1,
    // and gorilla's hub has none); its message rate limit stays at the default.
    app.arguments = goChatServer == nil
        ? ["--addr", "127.0.0.1:\(port)", "--stats", "--max-conns", "0", "--max-conns-per-ip", "0"]
            + (extra.isEmpty ? ["--memory"] : extra)
        : ["-chat-server", "127.0.0.1:\(port)"]
    app.standardError = FileHandle.nullDevice
    guard (try? app.run()) != nil else { return skip("\(exe.path) did not start") }
    let deadline = now() + 10_000_000_000
    while (try? Conn.dial("127.0.0.1", port))?.close() == nil {
        guard now() < deadline else {
            app.terminate()
            return skip("\(exe.path) did not accept connections within 10 s")
        }
        usleep(20_000)
    }
    return (app, port)
}

/// A redis-server of the run's own on a free port, without persistence, and
/// its URL; nil, with a note, if there is none (apt-get install redis-server).
func startRedis() -> (Process, String)? {
    guard let exe = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first(where: {
        FileManager.default.isExecutableFile(atPath: $0)
    }) else {
        note("chat2nodes: skipped, no redis-server (apt-get install redis-server)")
        return nil
    }
    guard let probe = try? Listener(port: 0) else { return nil }
    let port = probe.port
    probe.close()
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return nil }
    let deadline = now() + 10_000_000_000
    while (try? Conn.dial("127.0.0.1", port))?.close() == nil {
        guard now() < deadline else {
            p.terminate()
            note("chat2nodes: skipped, redis-server did not start")
            return nil
        }
        usleep(20_000)
    }
    return (p, "redis://127.0.0.1:\(port)")
}

/// Waits (at most 10 s, from a G) until the server's `/stats` counts `n` clients.
func awaitClients(_ n: Int, port: Int) {
    let deadline = now() + 10_000_000_000
    while serverStats(port: port)["clients"] != n {
        guard now() < deadline else { fatalError("the server never counted \(n) clients") }
        GMP.sleep(nanoseconds: 5_000_000)
    }
}

/// The server's `GET /stats`: clients, goroutines, fds, rss_bytes.
func serverStats(port: Int) -> [String: Int] {
    guard let c = try? Conn.dial("127.0.0.1", port) else { fatalError("stats: dial failed") }
    defer { c.close() }
    var reply: [UInt8] = []
    do {
        try c.write(Array("GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8))
        while true { reply += try c.read(max: 4096) }
    } catch NetError.endOfStream {
    } catch {
        fatalError("stats: \(error)")
    }
    let text = String(decoding: reply, as: UTF8.self)
    guard let body = text.range(of: "\r\n\r\n").map({ text[$0.upperBound...] }),
          let obj = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Int] else {
        fatalError("stats: bad reply \(text)")
    }
    return obj
}

/// chatchurn: 10,000 cycles of connect, send one message, receive it back,
/// close (the close handshake), by 50 client Gs at a time. Connections per
/// second; then the server's fds, live Gs and RSS, once it has seen every
/// client go (waited for, at most 10 s), against where they started.
func benchChatChurn() -> Result? {
    guard let (app, port) = startChatServer("chatchurn") else { return nil }
    defer { app.terminate(); app.waitUntilExit() }
    let n = 10_000, workers = 50
    let cpu0 = cpuMs(pid: app.processIdentifier)
    let (el, before, after) = GMP.run { () -> (Int64, [String: Int], [String: Int]) in
        let before = serverStats(port: port)
        let wg = WaitGroup(workers)
        let t0 = now()
        for w in 0..<workers {
            go {
                for i in 0..<(n / workers) {
                    guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else {
                        fatalError("chatchurn: dial failed")
                    }
                    let mine = "churn \(w) \(i)"
                    do {
                        try ws.send(text: mine)
                        var seen = false
                        while !seen {
                            guard case .text(let t) = try ws.receive() else { continue }
                            seen = t.split(separator: "\n").contains { $0 == mine }
                        }
                        try ws.close()
                    } catch {
                        fatalError("chatchurn: \(error)")
                    }
                    while (try? ws.receive()) != nil {} // until the server's close frame
                    ws.conn.close()
                }
                wg.done()
            }
        }
        wg.wait()
        let el = now() - t0
        var after = serverStats(port: port)
        let deadline = now() + 10_000_000_000
        while after["clients"] != before["clients"] || after["fds"]! > before["fds"]!
            || after["goroutines"]! > before["goroutines"]!, now() < deadline {
            GMP.sleep(nanoseconds: 20_000_000)
            after = serverStats(port: port)
        }
        return (el, before, after)
    }
    let rate = Double(n) / (Double(el) / 1e9)
    let growthKB = (after["rss_bytes"]! - before["rss_bytes"]!) / 1024
    return Result(name: "chatchurn", ops: n, nsPerOp: Double(el) / Double(n),
                  extra: "conns_per_s=\(Int(rate)) fds_before=\(before["fds"]!) fds_after=\(after["fds"]!) "
                      + "gs_before=\(before["goroutines"]!) gs_after=\(after["goroutines"]!) rss_growth_kb=\(growthKB)"
                      + " server_cpu_ms=\(cpuMs(pid: app.processIdentifier) - cpu0)")
}

/// chatidle: 10,000 connected, idle WebSocket clients (in a child process)
/// on the chat server; the server's RSS per connection.
func benchChatIdle() -> Result? {
    guard let (app, port) = startChatServer("chatidle") else { return nil }
    defer { app.terminate(); app.waitUntilExit() }
    let n = 10_000
    let before = rssBytes(pid: app.processIdentifier)
    let child = Process()
    child.executableURL = URL(fileURLWithPath: selfPath)
    child.arguments = ["--chatidle-client", String(port), String(n)]
    let stdin = Pipe(), stdout = Pipe()
    child.standardInput = stdin
    child.standardOutput = stdout
    let t0 = now()
    guard (try? child.run()) != nil else { return nil }
    // The client writes one line once all n are connected.
    _ = stdout.fileHandleForReading.availableData
    awaitClients(n, port: port) // and the server has registered them all
    let el = now() - t0
    usleep(3_000_000) // idle for a while, as a chat server's users mostly are
    let after = rssBytes(pid: app.processIdentifier)
    try? stdin.fileHandleForWriting.close()
    child.waitUntilExit()
    return Result(name: "chatidle", ops: n, nsPerOp: Double(el) / Double(n),
                  extra: "rss_bytes_per_conn=\((after - before) / n) (server process)")
}

/// `n` WebSocket clients of the chat server on `port`, dialled one after
/// another (from a G); a failed dial ends the process with the workload's name.
func dialChatClients(_ n: Int, port: Int, for workload: String) -> [WebSocketConn] {
    (0..<n).map { _ in
        guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else {
            fatalError("\(workload) client: dial failed")
        }
        return ws
    }
}

/// The client half of `chatidle`: n WebSocket clients, held until stdin closes.
func chatIdleClient(port: Int, n: Int) -> Never {
    GMP.run {
        let conns = dialChatClients(n, port: port, for: "chatidle")
        let line = "connected \(n)\n"
        _ = line.withCString { write(1, $0, strlen($0)) }
        waitForStdinToClose()
        for ws in conns { ws.conn.close() }
    }
    exit(0)
}

/// chatfanout: 10,000 idle clients (ours, in another process, so that the
/// client is never the limit); one of them sends a message and the time until
/// the last client has it is measured, five times (one message at a time);
/// every client must get every message. Milliseconds per broadcast, median.
func benchChatFanout() -> Result? {
    guard let (app, port) = startChatServer("chatfanout") else { return nil }
    defer { app.terminate(); app.waitUntilExit() }
    let n = 10_000, rounds = 5
    let child = Process()
    child.executableURL = URL(fileURLWithPath: selfPath)
    child.arguments = ["--chatfanout-client", String(port), String(n), String(rounds)]
    let stdin = Pipe(), stdout = Pipe()
    child.standardInput = stdin
    child.standardOutput = stdout
    guard (try? child.run()) != nil else { return nil }
    let out = stdout.fileHandleForReading
    _ = out.availableData // "connected n" once all n are connected
    awaitClients(n + 1, port: port) // and the server has registered them all (the sender too)
    try? stdin.fileHandleForWriting.write(contentsOf: Data("go\n".utf8))
    var text = ""
    while !text.contains("\n") {
        let d = out.availableData
        if d.isEmpty { break }
        text += String(decoding: d, as: UTF8.self)
    }
    child.waitUntilExit()
    // "fanout <ms> <ms> ... missing=<k>"
    let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
    guard fields.first == "fanout" else { note("chatfanout: client said \(text)"); return nil }
    let times = fields.dropFirst().compactMap { Double($0) }.sorted()
    let missing = fields.first { $0.hasPrefix("missing=") }.map { String($0.dropFirst(8)) } ?? "?"
    guard times.count == rounds, missing == "0" else { note("chatfanout: client said \(text)"); return nil }
    let median = times[rounds / 2]
    return Result(name: "chatfanout", ops: n, nsPerOp: median * 1e6,
                  extra: "fanout_ms=\(median) min_ms=\(times[0]) max_ms=\(times[rounds - 1]) missing=0")
}

/// The client half of `chatfanout`: n reading clients and one sender; on
/// "go" from stdin, `rounds` broadcasts, each timed from its send until the
/// last reader has it. Prints "fanout <ms>... missing=<messages not
/// received in 30 s>".
func chatFanoutClient(port: Int, n: Int, rounds: Int) -> Never {
    GMP.run {
        let readers = dialChatClients(n, port: port, for: "chatfanout")
        let sender = dialChatClients(1, port: port, for: "chatfanout")[0]
        // One message per round: each reader counts it in the round's group.
        let got = (0..<rounds).map { _ in WaitGroup(n) }
        for ws in readers {
            go {
                var round = 0
                while round < rounds, case .text? = try? ws.receive() {
                    got[round].done()
                    round += 1
                }
            }
        }
        _ = "connected \(n)\n".withCString { write(1, $0, strlen($0)) }
        var b: UInt8 = 0
        _ = GMP.blocking { read(0, &b, 1) } // "go"
        var line = "fanout"
        var missing = 0
        for round in 0..<rounds {
            let t0 = GMP.now
            try? sender.send(text: "fanout round \(round)")
            let done = Chan<Bool>(capacity: 1)
            go { got[round].wait(); _ = done.trySend(true) }
            var ok = false
            select { s in
                if s.receive(done) != nil { ok = true }
                if s.timeout(after: .seconds(30)) {} // ok stays false
            }
            if !ok { missing += 1 }
            line += " \(Double(GMP.now - t0) / 1e6)"
        }
        line += " missing=\(missing)\n"
        _ = line.withCString { write(1, $0, strlen($0)) }
        for ws in readers { ws.conn.close() }
        sender.conn.close()
    }
    exit(0)
}
