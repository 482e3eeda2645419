import Channels
import Foundation
import GMP
import GMPTestSupport
import NetPoller
import Synchronization
import Testing
import WebSocket

/// The built ChatApp binary (next to the test bundle, or a few levels up).
func chatAppURL() -> URL {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 where !FileManager.default.fileExists(atPath: dir.appendingPathComponent("ChatApp").path) {
        dir = dir.deletingLastPathComponent()
    }
    return dir.appendingPathComponent("ChatApp")
}

/// Starts the built ChatApp binary on a free port; returns it and the port.
/// `environment` is added to this process's; `stderr` gets the server's log
/// (else it is thrown away); `wrapper` runs the binary through `/bin/sh -c
/// "WRAPPER; exec ChatApp ARGS"` (e.g. "ulimit -n 64").
func startChatApp(extraArguments: [String] = [], environment: [String: String] = [:], stderr: Pipe? = nil,
                  wrapper: String? = nil) throws -> (Process, Int) {
    let free = try Listener(port: 0)
    let port = free.port
    free.close()
    let p = Process()
    // History in memory unless the test names a data directory (ChatApp's
    // default, ./chat-data, would be the package's directory).
    let history = extraArguments.contains("--data-dir") || extraArguments.contains("--memory") ? [] : ["--memory"]
    let arguments = extraArguments + history + ["--addr", "127.0.0.1:\(port)"]
    if let wrapper {
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "\(wrapper); exec \"$0\" \"$@\"", chatAppURL().path] + arguments
    } else {
        p.executableURL = chatAppURL()
        p.arguments = arguments
    }
    if !environment.isEmpty {
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    if let stderr { p.standardError = stderr } else { p.standardError = FileHandle.nullDevice }
    try p.run()
    // Wait (bounded) until it accepts connections.
    let deadline = Date().addingTimeInterval(10)
    while Date() < deadline {
        if let c = try? Conn.dial("127.0.0.1", port) { c.close(); return (p, port) }
        Thread.sleep(forTimeInterval: 0.02)
    }
    p.terminate()
    throw NetError.connectionRefused
}

/// Runs the built ChatApp binary with `arguments` to its end (for arguments
/// it refuses: it exits at once); its exit status and what it wrote to
/// standard error.
func runChatApp(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
    let p = Process()
    p.executableURL = chatAppURL()
    p.arguments = arguments
    let err = Pipe()
    p.standardError = err
    try p.run()
    let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) // (before the wait: a full pipe would block it)
    p.waitUntilExit()
    return (p.terminationStatus, text)
}

/// Inside a G: an HTTP/1.1 GET of `path` (Connection: close); the whole
/// reply, or "" if the server cannot be reached.
@Sendable func httpGet(_ port: Int, _ path: String) -> String {
    guard let c = try? Conn.dial("127.0.0.1", port) else { return "" }
    defer { c.close() }
    c.setReadDeadline(.after(.seconds(10)))
    try? c.write("GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    var got: [UInt8] = []
    while let part = try? c.read(max: 65536) { got += part }
    return String(decoding: got, as: UTF8.self)
}

/// Inside a G: the server's `/stats` (it must run with --stats); [:] if it
/// cannot be reached.
@Sendable func serverStats(_ port: Int) -> [String: Int] {
    let reply = httpGet(port, "/stats")
    guard let body = reply.range(of: "\r\n\r\n").map({ reply[$0.upperBound...] }) else { return [:] }
    return (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Int]) ?? [:]
}

/// Inside a G: one client says a word in the lobby and leaves, so that the
/// lobby is loaded (with history in memory, its hub G stays): a baseline of
/// the server's Gs taken after it does not count the lobby's G as a leak.
@Sendable func loadLobby(_ port: Int) {
    guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return }
    try? ws.send(text: "hello")
    _ = try? ws.receive()
    try? ws.close()
    while (try? ws.receive()) != nil {} // until the server's close frame
    ws.conn.close()
}

/// The status codes of the HTTP responses in `bytes`, in order (each a head,
/// then Content-Length bytes of body).
func responseStatuses(_ bytes: [UInt8]) -> [Int] {
    var out: [Int] = []
    var i = 0
    while i < bytes.count {
        var end = i
        while end + 3 < bytes.count && !(bytes[end] == 13 && bytes[end + 1] == 10 && bytes[end + 2] == 13 && bytes[end + 3] == 10) {
            end += 1
        }
        guard end + 3 < bytes.count else { break }
        let head = String(decoding: bytes[i..<end], as: UTF8.self)
        let fields = head.split(separator: " ", maxSplits: 2)
        guard fields.count >= 2, let status = Int(fields[1]) else { break }
        out.append(status)
        let length = head.lowercased().split(separator: "\r\n")
            .first { $0.hasPrefix("content-length:") }
            .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
        i = end + 4 + length
    }
    return out
}

/// A masked client frame, encoded.
func clientFrame(_ opcode: Opcode, _ payload: [UInt8]) -> [UInt8] {
    Frame(opcode: opcode, payload: payload).encode(mask: [0x12, 0x34, 0x56, 0x78])
}

@Suite(.serialized)
struct ChatAppTests {
    @Test("20 clients each send 5 messages; every client receives all 100 (gorilla's protocol), in order per sender")
    func broadcast() async throws {
        let (app, port) = try startChatApp()
        defer { app.terminate(); app.waitUntilExit() }
        let ok = await runG(procs: 2) { () -> Bool in
            let n = 20, per = 5
            var clients: [WebSocketConn] = []
            for _ in 0..<n {
                guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return false }
                clients.append(ws)
            }
            // (The server registers a client before it answers the handshake.)
            let results = Chan<Bool>(capacity: n)
            for ws in clients {
                go {
                    var got: [String] = []
                    while got.count < n * per {
                        guard case .text(let t)? = try? ws.receive() else { break }
                        got += t.split(separator: "\n").map(String.init) // several may come joined by \n
                    }
                    // Every message once, and each sender's messages in order.
                    var ok = got.count == n * per && Set(got).count == n * per
                    for s in 0..<n {
                        let mine = got.filter { $0.hasPrefix("c\(s) ") }
                        ok = ok && mine == (0..<per).map { "c\(s) m\($0)" }
                    }
                    results.send(ok)
                }
            }
            for (i, ws) in clients.enumerated() {
                for k in 0..<per { try? ws.send(text: "  c\(i) m\(k) ") } // the server trims
            }
            var all = true
            for _ in 0..<n { all = all && results.receive() == .value(true) }
            for ws in clients { ws.conn.close() }
            return all
        }
        #expect(ok == true)
    }

    @Test("Newlines in a message become spaces; HTTP routes give 200, 404, 405")
    func cleaningAndRoutes() async throws {
        let (app, port) = try startChatApp()
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> (String, [String]) in
            guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return ("", []) }
            defer { ws.conn.close() }
            try? ws.send(text: " a\nb ")
            let text: String
            if case .text(let t)? = try? ws.receive() { text = t } else { text = "" }
            var statuses: [String] = []
            for req in ["GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                        "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
                        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"] {
                guard let c = try? Conn.dial("127.0.0.1", port) else { return (text, statuses) }
                try? c.write(req)
                var got: [UInt8] = []
                while let part = try? c.read(max: 65536) { got += part }
                c.close()
                statuses.append(String(String(decoding: got, as: UTF8.self).prefix(12)))
            }
            return (text, statuses)
        }
        #expect(r?.0 == "a b")
        #expect(r?.1 == ["HTTP/1.1 200", "HTTP/1.1 404", "HTTP/1.1 405"])
    }

    @Test("--stats serves /stats; after 300 connect/send/close cycles the server is back to its fds and Gs")
    func churnLeavesNothing() async throws {
        let (plain, plainPort) = try startChatApp()
        defer { plain.terminate(); plain.waitUntilExit() }
        let (app, port) = try startChatApp(extraArguments: ["--stats"])
        defer { app.terminate(); app.waitUntilExit() }
        @Sendable func get(_ port: Int, _ path: String) -> String {
            guard let c = try? Conn.dial("127.0.0.1", port) else { return "" }
            defer { c.close() }
            try? c.write("GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            var got: [UInt8] = []
            while let part = try? c.read(max: 65536) { got += part }
            return String(decoding: got, as: UTF8.self)
        }
        @Sendable func stats() -> [String: Int] {
            let reply = get(port, "/stats")
            guard let body = reply.range(of: "\r\n\r\n").map({ reply[$0.upperBound...] }) else { return [:] }
            return (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Int]) ?? [:]
        }
        let r = await runG(procs: 2) { () -> (String, [String: Int], [String: Int], String)? in
            let notServed = String(get(plainPort, "/stats").prefix(12))
            loadLobby(port)
            _ = waitFor(seconds: 10, every: 5_000_000) { stats()["clients"] == 0 } // its read pump is done
            let before = stats()
            guard let fds0 = before["fds"], let gs0 = before["goroutines"] else { return nil }
            for i in 0..<300 {
                guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return nil }
                try? ws.send(text: "m\(i)")
                guard case .text(let t)? = try? ws.receive(), t == "m\(i)" else { return nil }
                try? ws.close()
                while (try? ws.receive()) != nil {} // until the server's close frame
                ws.conn.close()
            }
            // The server notices each close a little later: wait for it (bounded).
            // `before` may still count the start-up probe's connection (its
            // G and fd go a little later), so the counts must come back to at
            // most where they were: a leak of one per cycle would be +300.
            var after = stats()
            let deadline = GMP.now + 10_000_000_000
            while (after["clients"] != 0 || (after["fds"] ?? .max) > fds0 || (after["goroutines"] ?? .max) > gs0)
                && GMP.now < deadline {
                GMP.sleep(nanoseconds: 10_000_000)
                after = stats()
            }
            // The server's fds, to name a leak if there is one.
            return (notServed, before, after, (after["fds"] ?? .max) <= fds0 ? "" : fdList(pid: app.processIdentifier))
        }
        let (notServed, before, after, serverFDs) = try #require(r ?? nil)
        #expect(notServed == "HTTP/1.1 404")
        #expect(before["clients"] == 0 && (before["fds"] ?? 0) > 0 && (before["goroutines"] ?? 0) > 0)
        #expect(after["clients"] == 0)
        #expect((after["fds"] ?? .max) <= (before["fds"] ?? 0), "fds \(before) -> \(after); the server's fds:\n\(serverFDs)")
        #expect((after["goroutines"] ?? .max) <= (before["goroutines"] ?? 0), "Gs \(before) -> \(after)")
    }

    @Test("--stats also serves GET /debug/goroutines: the goroutine dump, with a client's pumps and the hub")
    func goroutineDump() async throws {
        let (app, port) = try startChatApp(extraArguments: ["--stats"])
        defer { app.terminate(); app.waitUntilExit() }
        let (plain, plainPort) = try startChatApp()
        defer { plain.terminate(); plain.waitUntilExit() }
        let r = await runG(procs: 2) { () -> (String, String)? in
            guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return nil }
            defer { ws.conn.close() }
            try? ws.send(text: "hi") // registered and served: its pumps park once it is written
            guard case .text? = try? ws.receive() else { return nil }
            // The write pump may not have parked yet when the echo arrives (it
            // then shows as running, with no stack): take the dump again until
            // it has, within a bound.
            var dump = ""
            _ = waitFor(seconds: 10, every: 10_000_000) {
                dump = httpGet(port, "/debug/goroutines")
                return dump.contains("    writePump(_:_:_:draining:)\n")
            }
            return (dump, String(httpGet(plainPort, "/debug/goroutines").prefix(12)))
        }
        let (dump, notServed) = try #require(r ?? nil)
        #expect(dump.hasPrefix("HTTP/1.1 200"))
        #expect(dump.contains("goroutine dump: "), "\(dump)")
        #expect(dump.contains(" [IO wait"), "the read pump: \(dump)")
        #expect(dump.contains(" [select"), "the hub and the write pump: \(dump)")
        #expect(dump.contains("created by go at Chat/Server.swift:"), "\(dump)")
        #expect(dump.contains("    Room.run()\n") && dump.contains("    writePump(_:_:_:draining:)\n"), "stacks: \(dump)")
        #expect(notServed == "HTTP/1.1 404")
    }

    @Test("Commands: /nick names broadcasts, /who lists, /msg is private, unknown commands answer the sender alone")
    func commands() async throws {
        let (app, port) = try startChatApp()
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> [String] in
            guard let a = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text"),
                  let b = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return [] }
            defer { a.conn.close(); b.conn.close() }
            func next(_ ws: WebSocketConn) -> String {
                if case .text(let t)? = try? ws.receive() { return t }
                return "<none>"
            }
            var out: [String] = []
            try? a.send(text: "/nick alice")
            out.append(next(a))                       // you are now alice
            try? b.send(text: "/nick bob")
            out.append(next(b))                       // you are now bob
            try? a.send(text: "/who")
            out.append(next(a))                       // online: alice, bob
            try? a.send(text: "/msg bob psst")
            out.append(next(b))                       // private, to bob only
            try? b.send(text: "/bogus")
            out.append(next(b))                       // error, to bob only
            try? a.send(text: "hi all")
            out.append(next(a))                       // alice: hi all (a's first broadcast line)
            out.append(next(b))                       // b got no private line of a's before it
            return out
        }
        #expect(r == ["you are now alice", "you are now bob", "online in lobby: alice, bob", "(private) alice: psst",
                      "error: unknown command /bogus (try /help)", "alice: hi all", "alice: hi all"])
    }

    @Test("A bad config file is a clear error naming the key; a good one is used, and flags win over it")
    func configFile() async throws {
        let dir = NSTemporaryDirectory()
        let bad = dir + "chat-bad-\(getpid()).json", good = dir + "chat-good-\(getpid()).json"
        defer { unlink(bad); unlink(good) }
        for (content, expected) in [("{\"maxMessage\": \"big\"}", "key 'maxMessage' must be a positive integer"),
                                    ("{\"adr\": \"x\"}", "unknown key 'adr'"),
                                    ("{\"rate\": -1}", "key 'rate' must be a number of messages a second, 0 or more"),
                                    ("{\"burst\": 0}", "key 'burst' must be a positive integer"),
                                    ("{\"maxConnsPerIP\": 1.5}", "key 'maxConnsPerIP' must be an integer, 0 (no limit) or more"),
                                    ("[1, 2]", "the top level must be an object")] {
            try content.write(toFile: bad, atomically: true, encoding: .utf8)
            let (status, text) = try runChatApp(["--config", bad])
            #expect(status == 2)
            #expect(text.contains(expected), "stderr: \(text)")
        }
        // maxMessage 8 from the file: a 9-byte message is refused with 1009.
        try "{\"maxMessage\": 8, \"addr\": \"127.0.0.1:1\"}".write(toFile: good, atomically: true, encoding: .utf8)
        let (app, port) = try startChatApp(extraArguments: ["--config", good]) // --addr (a flag) wins over the file
        defer { app.terminate(); app.waitUntilExit() }
        let code = await runG(procs: 2) { () -> UInt16? in
            guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return nil }
            defer { ws.conn.close() }
            try? ws.send(text: "123456789")
            do throws(WebSocketError) {
                while true { _ = try ws.receive() }
            } catch {
                if case .closed(let c, _) = error { return c }
                return nil
            }
        }
        #expect(code == 1009)
    }

    @Test("A client that does not read is dropped; the others lose nothing")
    func slowClientDropped() async throws {
        // (No message rate limit: one client sends fast enough to fill the slow one's buffer.)
        let (app, port) = try startChatApp(extraArguments: ["--rate", "0"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2, timeout: 60) { () -> (Bool, Int, Bool) in
            guard let slow = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text"),
                  let fast = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return (false, 0, false) }
            defer { slow.conn.close(); fast.conn.close() }
            let n = 20_000
            let body = String(repeating: "x", count: 400)
            let received = Chan<Bool>(capacity: 1)
            let seen = SharedCount()
            go {
                var count = 0, inOrder = true
                while count < n {
                    guard case .text(let t)? = try? fast.receive() else { break }
                    for line in t.split(separator: "\n") {
                        if !line.hasPrefix("\(count) ") { inOrder = false }
                        count += 1
                    }
                    seen.value.store(count, ordering: .releasing)
                }
                received.send(count == n && inOrder)
            }
            // 8 MB in all: more than the slow side's buffers. The reading client
            // is never more than 200 messages behind (its send buffer holds 256),
            // however slow the machine, so only the one that does not read falls
            // behind far enough to be dropped.
            for i in 0..<n {
                try? fast.send(text: "\(i) \(body)")
                if i % 100 == 99, !waitFor({ seen.value.load(ordering: .acquiring) >= i + 1 - 100 }) { break }
            }
            let fastOK = received.receive() == .value(true)
            // The slow client now reads: it gets what was buffered, then the end.
            var slowCount = 0
            var ended = false
            while true {
                do throws(WebSocketError) {
                    if case .text(let t) = try slow.receive() { slowCount += t.split(separator: "\n").count }
                } catch {
                    ended = true
                    break
                }
            }
            return (fastOK, slowCount, ended)
        }
        #expect(r?.0 == true, "the reading client lost or reordered messages")
        #expect((r?.1 ?? 20_000) < 20_000, "the slow client was not dropped")
        #expect(r?.2 == true)
    }

    @Test("A client that never finishes its request is closed after the handshake time-out")
    func handshakeTimeout() async throws {
        let (app, port) = try startChatApp(extraArguments: ["--handshake-timeout-ms", "200"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> (Bool, Int64) in
            guard let c = try? Conn.dial("127.0.0.1", port) else { return (false, 0) }
            defer { c.close() }
            try? c.write("GET /ws HTTP/1.1\r\nHost: x\r\n") // never finished
            let t0 = GMP.now
            c.setReadDeadline(GMP.Instant(nanoseconds: t0 + 10_000_000_000))
            do throws(NetError) {
                _ = try c.read(max: 100)
                return (false, 0)
            } catch {
                return (error == .endOfStream || error == .connectionReset, GMP.now - t0)
            }
        }
        #expect(r?.0 == true, "the server did not close the connection")
        #expect((r?.1 ?? 0) >= 150_000_000 && (r?.1 ?? .max) < 5_000_000_000)
    }

    @Test("SIGTERM: clients get close 1012 (service restart: the drain, DrainTests) and the server exits 0")
    func gracefulShutdown() async throws {
        let (app, port) = try startChatApp()
        let code = await runG(procs: 2) { () -> UInt16? in
            guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return nil }
            defer { ws.conn.close() }
            app.terminate() // SIGTERM
            do throws(WebSocketError) {
                while true { _ = try ws.receive() }
            } catch {
                if case .closed(let c, _) = error { return c }
                return nil
            }
        }
        app.waitUntilExit()
        #expect(code == 1012)
        #expect(app.terminationStatus == 0)
    }
}

/// A count one G publishes and another waits on.
final class SharedCount: Sendable {
    let value = Atomic<Int>(0)
}
