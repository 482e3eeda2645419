// Draining (ChatServer.drain; ChatApp's SIGTERM and SIGINT): each client gets what was queued for it,
// then close 1012; new connections are refused; the process exits 0 once the clients have gone, or
// after --drain-timeout, or at a second signal; with two nodes through Redis, clients that reconnect
// to the other node with `since` miss nothing and see nothing twice.
import Channels
import Chat
import Dispatch
import Foundation
import GMP
import GMPTestSupport
import Glibc
import NetPoller
import Synchronization
import Testing
import WebSocket

/// A ChatApp process's id, and when it ended with what status: for bounds
/// on how long its drain took.
final class ExitWatch: Sendable {
    let pid: Int32
    private let exited = DispatchSemaphore(value: 0)
    private let end = Synchronization.Mutex<(at: Date, status: Int32)?>(nil)

    /// Watches `process`, which runs.
    init(_ process: Process) {
        pid = process.processIdentifier
        process.terminationHandler = { p in
            self.end.withLock { $0 = (Date(), p.terminationStatus) }
            self.exited.signal()
        }
    }

    /// The exit status; nil while it runs.
    var status: Int32? { end.withLock { $0?.status } }

    /// Inside a G: waits at most `seconds` for the exit (in `GMP.blocking`:
    /// the G's P is handed off meanwhile); when it was, or nil.
    func wait(seconds: Double) -> Date? {
        guard GMP.blocking({ exited.wait(timeout: .now() + seconds) }) == .success else { return nil }
        exited.signal() // for a later wait
        return end.withLock { $0?.at }
    }

    /// Inside a G: SIGTERM, then `wait`; the seconds from the signal to the
    /// exit, or nil if it did not come within `seconds`.
    func terminate(within seconds: Double = 30) -> Double? {
        let start = Date()
        kill(pid, SIGTERM)
        return wait(seconds: seconds)?.timeIntervalSince(start)
    }
}

/// Starts ChatApp with `arguments` (as `startChatApp`, history in memory),
/// watched: the process, its port and the watch.
private func startWatched(_ arguments: [String]) throws -> (Process, Int, ExitWatch) {
    let (app, port) = try startChatApp(extraArguments: arguments)
    return (app, port, ExitWatch(app))
}

/// Ends `app` if it still runs (SIGTERM: a drain, cut short by `app`'s own
/// time-out) and waits for it.
private func end(_ app: Process) {
    if app.isRunning { app.terminate() }
    app.waitUntilExit()
}

/// Inside a G: one HTTP response on `c` (its head and Content-Length bytes
/// of body), as text; nil if the connection ends first.
private func httpResponse(_ c: Conn) -> String? {
    var got: [UInt8] = []
    while true {
        let text = String(decoding: got, as: UTF8.self)
        if let end = text.range(of: "\r\n\r\n") {
            let length = text[..<end.lowerBound].lowercased().split(separator: "\r\n")
                .first { $0.hasPrefix("content-length:") }
                .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
            if text.utf8.count - text.utf8.distance(from: text.startIndex, to: end.upperBound) >= length { return text }
        }
        guard let part = try? c.read(max: 65536) else { return nil }
        got += part
    }
}

/// Inside a G: the numbers of the messages `c` gets until its connection
/// ends (a close frame: then `c.closeCode` says which).
private func messageNumbers(_ c: EnvelopeClient) -> [UInt64] {
    var seqs: [UInt64] = []
    while let l = c.next() {
        if l.type == "message", let s = l.seq { seqs.append(s) }
    }
    return seqs
}

@Suite(.serialized)
struct DrainTests {
    @Test("SIGTERM drains one node: a client that was not reading gets all 60 messages (12 MB) queued for it, then close 1012, as do the others; new connections are refused and an upgrade on an open connection gets 503; the node exits 0 once they have closed, long before the 60 s drain time-out")
    func oneNode() async throws {
        let (app, port, watch) = try startWatched(["--rate", "0", "--max-message", "262144", "--write-wait-ms", "60000",
                                                   "--handshake-timeout-ms", "60000", "--drain-timeout", "60"])
        defer { end(app) }
        let n = 60
        let r = await runG(procs: 2, timeout: 90) { () -> [String]? in
            guard let a = EnvelopeClient(port: port), let b = EnvelopeClient(port: port), let c = EnvelopeClient(port: port),
                  let http = try? Conn.dial("127.0.0.1", port) else { return nil }
            defer { a.close(); b.close(); c.close(); http.close() }
            for x in [a, b, c] {
                x.ws.conn.setReadDeadline(.after(.seconds(60))) // (20 s from its start, else: too short for 12 MB under load)
                guard x.until({ $0.type == "joined" }) != nil else { return nil }
            }
            // A keep-alive HTTP connection, open before the drain (idle up to the handshake time-out).
            http.setReadDeadline(.after(.seconds(20)))
            try? http.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            guard httpResponse(http)?.hasPrefix("HTTP/1.1 200") == true else { return nil }
            // c reads as messages come; b reads nothing: 12 MB of a's messages pile up
            // for it (its socket's buffers hold 4 MB at most: tcp_wmem), behind a write that waits for b.
            let cGot = Chan<[UInt64]>(capacity: 1)
            go {
                let seqs = messageNumbers(c)
                c.close()
                cGot.send(seqs)
            }
            let big = String(repeating: "x", count: 200_000)
            for i in 0..<n { a.say("\(i) \(big)") }
            var acks = 0
            while acks < n, let l = a.next() { if l.type == "ack" { acks += 1 } }
            guard acks == n else { return ["a got \(acks) acks of \(n)"] }
            // The room's hub acks a batch, then hands it to each member: once it
            // has answered a /who, after the last ack, it has handed over every
            // message, and they are all in b's buffer.
            a.say("/who")
            guard a.until({ $0.type == "who" }) != nil else { return nil }
            let t0 = Date()
            kill(watch.pid, SIGTERM)
            var out: [String] = []
            let cSeqs = cGot.receive().value ?? []
            out.append("c: \(cSeqs == (1...UInt64(n)).map { $0 } ? "all" : "\(cSeqs.count), missing \(Set(1...UInt64(n)).subtracting(cSeqs).sorted())"), close \(c.closeCode ?? 0)")
            // c has its close frame, so the drain has begun: the listener is closed…
            if let late = try? Conn.dial("127.0.0.1", port) {
                late.close()
                out.append("a new connection is accepted")
            } else {
                out.append("a new connection is refused")
            }
            // …and an upgrade on a connection opened before is refused.
            http.setReadDeadline(.after(.seconds(20)))
            try? http.write("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            out.append(String(httpResponse(http)?.prefix(12) ?? "no answer"))
            let bSeqs = messageNumbers(b)
            b.close()
            out.append("b: \(bSeqs == (1...UInt64(n)).map { $0 } ? "all" : "\(bSeqs.count), missing \(Set(1...UInt64(n)).subtracting(bSeqs).sorted())"), close \(b.closeCode ?? 0)")
            while a.next() != nil {}
            a.close()
            out.append("a: close \(a.closeCode ?? 0)")
            guard let end = watch.wait(seconds: 30) else { return out + ["still running"] }
            let took = end.timeIntervalSince(t0)
            out.append(took < 10 ? "exited long before the time-out" : "exited after \(took) s")
            return out
        } ?? nil
        #expect(r == ["c: all, close 1012", "a new connection is refused", "HTTP/1.1 503", "b: all, close 1012", "a: close 1012",
                      "exited long before the time-out"])
        #expect(watch.status == 0)
    }

    @Test("A client that never answers the close: the node exits after --drain-timeout (1 s), not before and not long after, with status 0; the client finds close 1012 waiting for it")
    func clientThatNeverCloses() async throws {
        let (app, port, watch) = try startWatched(["--drain-timeout", "1"])
        defer { end(app) }
        let r = await runG(procs: 2, timeout: 60) { () -> [String]? in
            // (Counted from its upgrade request: registered before its 101 comes.)
            guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws") else { return nil }
            defer { ws.conn.close() }
            guard let took = watch.terminate() else { return ["still running"] }
            var out = [took >= 0.95 ? "not before the time-out" : "after \(took) s",
                       took < 8 ? "soon after it" : "after \(took) s"]
            // What the server sent, read now: the "joined" line, then close 1012.
            ws.conn.setReadDeadline(.after(.seconds(10)))
            var code: UInt16 = 0
            do throws(WebSocketError) {
                while true { _ = try ws.receive() }
            } catch {
                if case .closed(let c, _) = error { code = c }
            }
            out.append("close \(code)")
            return out
        } ?? nil
        #expect(r == ["not before the time-out", "soon after it", "close 1012"])
        #expect(watch.status == 0)
    }

    @Test("A second SIGTERM during the drain stops the node at once (status 0), though a client has not closed and the drain time-out is 60 s")
    func secondSignal() async throws {
        let (app, port, watch) = try startWatched(["--drain-timeout", "60"])
        defer { end(app) }
        let r = await runG(procs: 2, timeout: 60) { () -> [String]? in
            guard let x = EnvelopeClient(port: port), x.until({ $0.type == "joined" }) != nil,
                  let silent = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws") else { return nil }
            defer { x.close(); silent.conn.close() }
            kill(watch.pid, SIGTERM)
            while x.next() != nil {} // until its close frame: the drain has begun
            x.close()
            var out = ["x: close \(x.closeCode ?? 0)"]
            guard let took = watch.terminate() else { return out + ["still running"] }
            out.append(took < 10 ? "stopped at once" : "stopped after \(took) s")
            return out
        } ?? nil
        #expect(r == ["x: close 1012", "stopped at once"])
        #expect(watch.status == 0)
    }

    @Test("--drain-timeout and the config key drainTimeout take seconds, 0 to a day, a fraction too; anything else is a clear error (exit 2); ChatServer refuses a negative time-out")
    func settings() async throws {
        var c = ChatConfig()
        #expect(c.drainTimeout == 10_000_000_000)
        _ = try parseConfig(Data(#"{"drainTimeout": 1.5}"#.utf8), name: "c.json", into: &c)
        #expect(c.drainTimeout == 1_500_000_000)
        _ = try parseConfig(Data(#"{"drainTimeout": 0}"#.utf8), name: "c.json", into: &c)
        #expect(c.drainTimeout == 0)
        for json in [#"{"drainTimeout": -1}"#, #"{"drainTimeout": "10s"}"#, #"{"drainTimeout": true}"#, #"{"drainTimeout": 1e9}"#] {
            #expect { _ = try parseConfig(Data(json.utf8), name: "c.json", into: &c) } throws: {
                "\($0)" == "c.json: key 'drainTimeout' must be a number of seconds, 0 to 86400"
            }
        }
        for value in [["-1"], ["soon"], ["nan"], ["1e9"], []] {
            let (status, text) = try runChatApp(["--memory", "--addr", "127.0.0.1:0", "--drain-timeout"] + value)
            #expect(status == 2, "--drain-timeout \(value)")
            #expect(text.contains("--drain-timeout needs a number of seconds, 0 to 86400"), "stderr: \(text)")
        }
        var bad = ChatConfig()
        bad.port = 0
        bad.drainTimeout = -1
        #expect { _ = try ChatServer(config: bad) } throws: { "\($0)" == "drainTimeout must be 0 or more, not -1 ns" }
    }

    @Test("Two nodes through Redis: SIGTERM node 1, its clients get 1012 and reconnect to node 2 with since while a sender there goes on; each gets every message once, in order, with no gap; node 1 exits 0 and no longer counts in /who",
          .enabled(if: haveRedis, "needs redis-server (apt-get install redis-server; .ci/run installs it)"))
    func handOver() async throws {
        let redis = try RedisServer()
        let (one, port1, watch) = try startWatched(["--redis", redis.urlString, "--rate", "0"])
        defer { end(one) }
        let (two, port2) = try startChatApp(extraArguments: ["--redis", redis.urlString, "--rate", "0"])
        defer { two.terminate(); two.waitUntilExit() }
        let r = await runG(procs: 2, timeout: 90) { () -> [String]? in
            guard let sender = EnvelopeClient(port: port2, query: "room=hand"), sender.until({ $0.type == "joined" }) != nil else {
                return nil
            }
            defer { sender.close() }
            sender.ws.conn.setReadDeadline(.after(.seconds(60))) // (20 s from its start, else: it waits up to 15 s below)
            var clients: [EnvelopeClient] = []
            for _ in 0..<3 {
                guard let c = EnvelopeClient(port: port1, query: "room=hand"), c.until({ $0.type == "joined" }) != nil else { return nil }
                clients.append(c)
            }
            /// What the sender's /who counts: its names, + those without one.
            func who() -> String {
                sender.say("/who")
                guard let l = sender.until({ $0.type == "who" })?.last else { return "no /who" }
                return "who \((l.object["names"] as? [String]) ?? ["?"]) +\(l.object["anonymous"] ?? "?")"
            }
            // Node 1's presence is in Redis (written every 2 s): node 2 counts its three.
            var counted = ""
            _ = waitFor(seconds: 15, every: 100_000_000) { counted = who(); return counted == "who [] +4" }
            guard counted == "who [] +4" else { return ["before: \(counted)"] }
            let sent = SharedCount() // messages the sender has sent: m0, m1, …
            let enough = Chan<Void>() // closed: the sender sends "end" and stops
            let going = Chan<Void>(capacity: 3), back = Chan<Void>(capacity: 3)
            let reports = Chan<(String, EnvelopeClient?)>(capacity: 3) // and the client on node 2, still connected
            for c in clients {
                go {
                    var seen: [(UInt64, String)] = []
                    while let l = c.next() {
                        guard l.type == "message", let s = l.seq else { continue }
                        seen.append((s, l.text))
                        if seen.count == 20 { going.send(()) }
                    }
                    let code = c.closeCode ?? 0
                    c.close()
                    // Away, it misses 10 messages at least: node 2 sends them before its "joined" (from the
                    // stream or its tail), or after it if its hub has not had them yet when it joins.
                    let mark = sent.value.load(ordering: .relaxed)
                    _ = waitFor(seconds: 10) { sent.value.load(ordering: .relaxed) >= mark + 10 }
                    let last = seen.last?.0 ?? 0
                    guard let again = EnvelopeClient(port: port2, query: "room=hand&since=\(last)") else {
                        back.send(())
                        reports.send(("no reconnection", nil))
                        return
                    }
                    var caughtUp = 0, live = false
                    while let l = again.next() {
                        if l.type == "joined" && !live {
                            live = true
                            back.send(())
                        }
                        guard l.type == "message", let s = l.seq else { continue }
                        if !live { caughtUp += 1 }
                        seen.append((s, l.text))
                        if l.text == "end" { break }
                    }
                    if !live { back.send(()) }
                    let k = seen.count
                    let numbers = seen.map(\.0) == (1...UInt64(k)).map { $0 }
                    let texts = seen.map(\.1) == (0..<(k - 1)).map { "m\($0)" } + ["end"]
                    reports.send((numbers && texts && code == 1012 ? "ok"
                                  : "close \(code), caught up \(caughtUp) after \(last), numbers \(numbers ? "ok" : "\(seen.map(\.0))"), "
                                    + "texts \(texts ? "ok" : "\(seen.map(\.1))")", again))
                }
            }
            let acked = Chan<Bool>(capacity: 1)
            go { // the sender's own lines, until the ack of its "end" (acks come in its order)
                var acks = 0
                while let l = sender.next() {
                    guard l.type == "ack" else { continue }
                    acks += 1
                    if l.object["id"] as? String == "end" { break }
                }
                acked.send(acks == sent.value.load(ordering: .relaxed) + 1)
            }
            go {
                var k = 0
                while true {
                    if case .closed = enough.tryReceive() { break }
                    sender.say("m\(k)")
                    k += 1
                    sent.value.store(k, ordering: .relaxed)
                    GMP.sleep(for: .milliseconds(2))
                }
                sender.say(#"{"id":"end","text":"end"}"#)
            }
            for _ in 0..<3 { _ = going.receive() }
            let t0 = Date()
            kill(watch.pid, SIGTERM)
            for _ in 0..<3 { _ = back.receive() }
            enough.close()
            var out: [String] = []
            var moved: [EnvelopeClient] = []
            defer { for c in moved { c.close() } }
            for _ in 0..<3 {
                let (report, client) = reports.receive().value ?? ("?", nil)
                out.append(report)
                if let client { moved.append(client) }
            }
            out.append(acked.receive().value == true ? "every message acked" : "not every message acked")
            guard let end = watch.wait(seconds: 30) else { return out + ["node 1 still running"] }
            let took = end.timeIntervalSince(t0)
            out.append(took < 8 ? "node 1 exited" : "node 1 exited after \(took) s")
            // Node 1 took its presence with it: the three, now on node 2, and the sender, once each
            // (node 1's field, had it stayed, would count three more until it expired).
            out.append(who())
            return out
        } ?? nil
        #expect(r == ["ok", "ok", "ok", "every message acked", "node 1 exited", "who [] +4"])
        #expect(watch.status == 0)
    }
}
