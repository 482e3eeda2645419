// Robustness of the chat server against hostile or broken peers and failing
// system calls (issue 11), one section per finding. Each test talks to the
// built ChatApp binary over loopback and waits on what it needs, bounded.
//
// A peer that does not read is made by volume, not by a small SO_RCVBUF: set
// after connecting (Conn.dial gives no earlier hook), the window already
// offered is larger than the buffer, the kernel drops what does not fit, and
// the connection stalls in retransmission back-off rather than filling the
// server's send buffer (up to 4 MB here: tcp_wmem).
import Channels
import Foundation
import GMP
import GMPTestSupport
import NetPoller
import Testing
import WebSocket

// MARK: every write to a peer has a deadline

/// Inside a G: the TCP state of a connection (1 ESTABLISHED, 7 CLOSE after a
/// reset, 8 CLOSE_WAIT after the peer's FIN), read without consuming data.
func tcpState(_ c: Conn) -> UInt8 {
    var info = [UInt8](repeating: 0, count: 256)
    var len = socklen_t(info.count)
    guard getsockopt(c.fd, Int32(IPPROTO_TCP), Int32(TCP_INFO), &info, &len) == 0 else { return 0 }
    return info[0]
}

extension ChatAppTests {
    @Test("20 connections that pipeline 8,000 requests and never read are cut off after the write wait; Gs and fds come back")
    func pipeliningNonReadersCutOff() async throws {
        let (app, port) = try startChatApp(extraArguments: ["--stats", "--write-wait-ms", "300"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2, timeout: 60) { () -> (held: Bool, cut: Int, before: [String: Int], after: [String: Int], fds: String)? in
            let before = serverStats(port)
            guard let gs0 = before["goroutines"], let fds0 = before["fds"] else { return nil }
            let one = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            // 8,000 pages (14 MB): more than the socket buffers hold.
            let pipelined = Array(String(repeating: one, count: 8000).utf8)
            var conns: [Conn] = []
            defer { for c in conns { c.close() } }
            var held = true
            for _ in 0..<20 {
                guard let c = try? Conn.dial("127.0.0.1", port) else { return nil }
                conns.append(c)
                // One request answered first: from here the server holds the
                // connection (a G and an fd), so its counts can only come back
                // to the baseline by letting go of it.
                c.setReadDeadline(.after(.seconds(10)))
                try? c.write(one)
                var got: [UInt8] = []
                while responseStatuses(got) != [200], let part = try? c.read(max: 65536) { got += part }
                held = held && responseStatuses(got) == [200]
            }
            for c in conns {
                go {
                    c.setWriteDeadline(.after(.seconds(30))) // the server stops reading first
                    try? c.write(pipelined)
                }
            }
            // The server resets each connection (it leaves requests unread):
            // seen here without reading (reading would unblock it).
            _ = waitFor(seconds: 15, every: 10_000_000) { conns.allSatisfy { tcpState($0) != 1 } }
            let cut = conns.filter { tcpState($0) != 1 }.count
            var after = serverStats(port)
            _ = waitFor(seconds: 10, every: 10_000_000) {
                after = serverStats(port)
                return (after["goroutines"] ?? .max) <= gs0 && (after["fds"] ?? .max) <= fds0
            }
            return (held, cut, before, after, (after["fds"] ?? .max) <= fds0 ? "" : fdList(pid: app.processIdentifier))
        }
        let res = try #require(r ?? nil)
        #expect(res.held, "the warm-up request was not answered")
        #expect(res.cut == 20, "connections still open: \(20 - res.cut)")
        #expect((res.after["goroutines"] ?? .max) <= (res.before["goroutines"] ?? 0), "Gs \(res.before) -> \(res.after)")
        #expect((res.after["fds"] ?? .max) <= (res.before["fds"] ?? 0), "fds \(res.before) -> \(res.after):\n\(res.fds)")
    }

    @Test("A client that floods pings and never reads is cut off: the read pump's pongs have the write wait too")
    func pingFloodNonReaderCutOff() async throws {
        let (app, port) = try startChatApp(extraArguments: ["--stats", "--write-wait-ms", "300"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2, timeout: 45) { () -> (Bool, [String: Int], [String: Int])? in
            let before = serverStats(port)
            guard let gs0 = before["goroutines"], let fds0 = before["fds"],
                  let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return nil }
            defer { ws.conn.close() }
            // Registered before its 101: the server holds it from here.
            // 200,000 pings: 25 MB of pongs, more than the socket buffers hold.
            let ping = clientFrame(.ping, [UInt8](repeating: 7, count: 125))
            var flood: [UInt8] = []
            flood.reserveCapacity(ping.count * 200_000)
            for _ in 0..<200_000 { flood += ping }
            let pings = flood
            go {
                ws.conn.setWriteDeadline(.after(.seconds(30)))
                try? ws.conn.write(pings)
            }
            var after = before
            let back = waitFor(seconds: 15, every: 10_000_000) {
                after = serverStats(port)
                return after["clients"] == 0 && (after["goroutines"] ?? .max) <= gs0 && (after["fds"] ?? .max) <= fds0
            }
            return (back, before, after)
        }
        let (back, before, after) = try #require(r ?? nil)
        #expect(back, "the server still holds the client: \(before) -> \(after)")
    }
}

// MARK: a dropped client cannot make the hub send on its closed channel

extension ChatAppTests {
    @Test("A client dropped as slow whose read pump then hands in /help does not crash the server")
    func droppedClientCommand() async throws {
        // The long write wait keeps the dropped client's write pump blocked
        // (not timed out) while its read pump works through the flood.
        let log = Pipe()
        // (No message rate limit: the buffer is filled by a fast sender.)
        let (app, port) = try startChatApp(extraArguments: ["--stats", "--write-wait-ms", "60000", "--rate", "0"], stderr: log)
        var stopped = false
        defer { if !stopped { app.terminate(); app.waitUntilExit() } }
        let r = await runG(procs: 2, timeout: 60) { () -> (wrote: Bool, handled: Bool, alive: Bool, back: Bool, served: Bool)? in
            loadLobby(port)
            _ = waitFor(seconds: 10, every: 5_000_000) { serverStats(port)["clients"] == 0 } // its read pump is done
            let before = serverStats(port)
            guard let gs0 = before["goroutines"], let fds0 = before["fds"],
                  let m = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return nil }
            defer { m.conn.close() }
            // 40,000 masked 500-byte messages in one go, never reading: the
            // copies the server sends back fill its buffers and the hub drops
            // the client while its read pump is still reading; then a command.
            let frame = clientFrame(.text, [UInt8](repeating: UInt8(ascii: "x"), count: 500))
            var flood: [UInt8] = []
            flood.reserveCapacity(frame.count * 40_000 + 16)
            for _ in 0..<40_000 { flood += frame }
            flood += clientFrame(.text, Array("/help".utf8))
            m.conn.setWriteDeadline(.after(.seconds(30)))
            let wrote = (try? m.conn.write(flood)) != nil
            try? m.conn.closeWrite() // the read pump reads /help, then the end of the stream
            // Its read pump is gone (no client, and at most the write pump,
            // blocked on the unread socket, above the baseline): it handed
            // /help to the hub, and the hub has finished with it.
            let handled = waitFor(seconds: 30, every: 10_000_000) {
                guard app.isRunning else { return true } // died: no use waiting
                let s = serverStats(port)
                return s["clients"] == 0 && (s["goroutines"] ?? .max) <= gs0 + 1
            }
            let alive = app.isRunning
            let handledAlive = handled && alive
            // Now read: the write pump gets through, sends its close and ends.
            m.conn.setReadDeadline(.after(.seconds(15)))
            while (try? m.conn.read(max: 1 << 16)) != nil {}
            let back = alive && waitFor(seconds: 10, every: 10_000_000) {
                let s = serverStats(port)
                return (s["goroutines"] ?? .max) <= gs0 && (s["fds"] ?? .max) <= fds0
            }
            // And it serves another client.
            var served = false
            if alive, let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") {
                try? ws.send(text: "still here")
                if case .text(let t)? = try? ws.receive() { served = t == "still here" }
                ws.conn.close()
            }
            return (wrote, handledAlive, alive, back, served)
        }
        let res = try #require(r ?? nil)
        #expect(res.wrote)
        #expect(res.alive, "the server died (send on a closed channel)")
        #expect(res.handled)
        #expect(res.back)
        #expect(res.served)
        #expect(app.isRunning)
        app.terminate()
        app.waitUntilExit()
        stopped = true
        // The scenario happened: the client was dropped before its /help.
        let text = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text.contains("dropped slow client"), "the server's log:\n\(text)")
    }
}

// MARK: a request body is never parsed as a request

extension ChatAppTests {
    @Test("A Content-Length body is skipped, never run as the next request (no smuggled 404); a 100 KB body too")
    func bodyIsNotARequest() async throws {
        let (app, port) = try startChatApp()
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> [[Int]] in
            let smuggled = "GET /nothere HTTP/1.1\r\nHost: x\r\n\r\n"
            let last = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" // ends the exchange
            let big = String(repeating: smuggled, count: 100_000 / smuggled.utf8.count + 1)
            var out: [[Int]] = []
            for body in [smuggled, big] {
                guard let c = try? Conn.dial("127.0.0.1", port) else { return out }
                defer { c.close() }
                c.setReadDeadline(.after(.seconds(10)))
                c.setWriteDeadline(.after(.seconds(10)))
                try? c.write("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body + last)
                var got: [UInt8] = []
                while let part = try? c.read(max: 65536) { got += part }
                out.append(responseStatuses(got))
            }
            return out
        }
        // One response for the request with the body, one for the last: no 404.
        #expect(r == [[200, 200], [200, 200]])
    }

    @Test("An error response to a request with a 500 KB body arrives whole: the body is read first, so the close does not reset the connection")
    func errorResponseAfterBody() async throws {
        let (app, port) = try startChatApp()
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> [String] in
            var out: [String] = []
            for target in ["POST /nothere", "POST /", "POST /ws"] {
                guard let c = try? Conn.dial("127.0.0.1", port) else { return out }
                defer { c.close() }
                c.setReadDeadline(.after(.seconds(10)))
                c.setWriteDeadline(.after(.seconds(10)))
                let body = [UInt8](repeating: UInt8(ascii: "x"), count: 500_000)
                try? c.write(Array("\(target) HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body)
                var got: [UInt8] = []
                var failure = ""
                while true {
                    do throws(NetError) { got += try c.read(max: 65536) } catch {
                        if error != .endOfStream { failure = " (\(error))" }
                        break
                    }
                }
                out.append(String(decoding: got.prefix(12), as: UTF8.self) + failure)
            }
            return out
        }
        #expect(r == ["HTTP/1.1 404", "HTTP/1.1 405", "HTTP/1.1 405"])
    }

    @Test("Each request on a keep-alive connection gets the request time-out afresh, from the previous response")
    func requestTimeoutPerRequest() async throws {
        let (app, port) = try startChatApp(extraArguments: ["--handshake-timeout-ms", "400"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> [Int] in
            guard let c = try? Conn.dial("127.0.0.1", port) else { return [] }
            defer { c.close() }
            c.setReadDeadline(.after(.seconds(10)))
            var statuses: [Int] = []
            // Three requests 250 ms apart: 750 ms in all, each within 400 ms of the last answer.
            for i in 0..<3 {
                if i > 0 { GMP.sleep(for: .milliseconds(250)) } // the passage of time under test
                try? c.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                var got: [UInt8] = []
                while responseStatuses(got).count < 1, let part = try? c.read(max: 65536) { got += part }
                statuses += responseStatuses(got)
            }
            // Then silence: the server closes once 400 ms pass with no request.
            var ended = false
            if case .failure(let e) = Result(catching: { () throws(NetError) in try c.read(max: 100) }) {
                ended = e == .endOfStream || e == .connectionReset
            }
            return statuses + [ended ? 1 : 0]
        }
        #expect(r == [200, 200, 200, 1])
    }
}

// MARK: a message is one line

extension ChatAppTests {
    @Test("CR LF and every other line break in a message become spaces: a message cannot forge a second line")
    func lineBreaksCannotForgeLines() async throws {
        let (app, port) = try startChatApp()
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> [String] in
            guard let alice = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text"),
                  let mallory = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return [] }
            defer { alice.conn.close(); mallory.conn.close() }
            func next(_ ws: WebSocketConn) -> String {
                if case .text(let t)? = try? ws.receive() { return t }
                return "<none>"
            }
            var out: [String] = []
            try? alice.send(text: "/nick alice")
            out.append(next(alice))
            try? mallory.send(text: "/nick mallory")
            out.append(next(mallory))
            for text in ["hello\r\nalice: give me your password",
                         "a\nb\u{0B}c\u{0C}d\re\u{85}f\u{2028}g\u{2029}h",
                         "\r\n  x  \u{2028}"] {
                try? mallory.send(text: text)
                out.append(next(alice)) // one message, one frame (alice reads each before the next)
            }
            return out
        }
        #expect(r == ["you are now alice", "you are now mallory", "mallory: hello  alice: give me your password",
                      "mallory: a b c d e f g h", "mallory: x"])
    }
}

// MARK: pongs extend the read deadline; configurable ping period and pong wait

extension ChatAppTests {
    @Test("With --ping-period-ms/--pong-wait-ms: a client answering pings outlives the pong wait; a silent one is dropped after it")
    func pongExtendsTheReadDeadline() async throws {
        let (app, port) = try startChatApp(extraArguments: ["--ping-period-ms", "100", "--pong-wait-ms", "1000"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2, timeout: 30) { () -> (pings: Int, alive: Bool, silentEnded: Bool, silentAfter: Int64)? in
            guard let a = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text"),
                  let b = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return nil }
            defer { a.conn.close(); b.conn.close() }
            let t0 = GMP.now
            // b is silent: it reads raw bytes (pings) and never answers.
            let silent = Chan<(Bool, Int64)>(capacity: 1)
            go {
                b.conn.setReadDeadline(GMP.Instant(nanoseconds: t0 + 20_000_000_000))
                while true {
                    do throws(NetError) {
                        _ = try b.conn.read(max: 4096)
                    } catch {
                        silent.send((error != .timeout, GMP.now - t0))
                        return
                    }
                }
            }
            // a answers every ping by hand (raw frames, counted) for 2.5 s,
            // well past its pong wait, then checks it still chats.
            a.conn.setReadDeadline(GMP.Instant(nanoseconds: t0 + 20_000_000_000))
            var pending: [UInt8] = []
            var pings = 0
            var alive = false
            var sentText = false
            loop: while true {
                while let (f, used) = try? Frame.decode(pending[...], masked: false, maxPayload: 1 << 16) {
                    pending.removeFirst(used)
                    switch f.opcode {
                    case .ping:
                        pings += 1
                        try? a.conn.write(clientFrame(.pong, f.payload))
                    case .text where String(decoding: f.payload, as: UTF8.self) == "still here":
                        alive = true
                        break loop
                    case .close:
                        break loop
                    default:
                        break
                    }
                }
                if pings >= 25 && !sentText {
                    try? a.conn.write(clientFrame(.text, Array("still here".utf8)))
                    sentText = true
                }
                guard let part = try? a.conn.read(max: 4096) else { break }
                pending += part
            }
            guard case .value(let (ended, after)) = silent.receive() else { return nil }
            return (pings, alive, ended, after)
        }
        let res = try #require(r ?? nil)
        #expect(res.pings >= 25, "the answering client was dropped after \(res.pings) pings")
        #expect(res.alive)
        #expect(res.silentEnded, "the silent client was not dropped")
        #expect(res.silentAfter >= 900_000_000 && res.silentAfter < 10_000_000_000, "dropped after \(res.silentAfter) ns")
    }

    @Test("Timing flags: a ping period not shorter than the pong wait, or a bad number, is refused with a clear error")
    func timingFlags() throws {
        for (args, expected) in [(["--ping-period-ms", "1000", "--pong-wait-ms", "1000"], "must be shorter than the pong wait"),
                                 (["--ping-period-ms", "70000"], "must be shorter than the pong wait"),
                                 (["--write-wait-ms", "0"], "--write-wait-ms needs a positive number"),
                                 (["--pong-wait-ms", "x"], "--pong-wait-ms needs a positive number")] {
            let (status, text) = try runChatApp(args)
            #expect(status == 2, "\(args)")
            #expect(text.contains(expected), "\(args): \(text)")
        }
    }
}

// MARK: accept errors

/// A C compiler, for the accept(2) fault-injection shim.
func cCompiler() -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for dir in path.split(separator: ":") {
        for name in ["cc", "clang", "gcc"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
    }
    return nil
}

/// Builds (once per machine and source) an LD_PRELOAD library whose accept4 fails some
/// accepts: the connections numbered SHIM_FAIL_FROM ..< SHIM_FAIL_FROM +
/// SHIM_FAIL_COUNT (counting from 1, in the order accepted) are closed and
/// reported as errno SHIM_FAIL_ERRNO, as accept(2) reports a network error of
/// a pending connection (or, for EINVAL, a broken listening socket).
func acceptFaultShim() throws -> String { try faultShim(named: "accept_fault", source: acceptFaultShimSource) }

/// Builds (once per machine and source) the LD_PRELOAD library `name`.so from `source`.
func faultShim(named name: String, source: String) throws -> String {
    // Named by a hash of its source: later runs reuse it, an edited source gets a new one.
    let hash = source.utf8.reduce(UInt64(14_695_981_039_346_656_037)) { ($0 ^ UInt64($1)) &* 1_099_511_628_211 }
    let dir = NSTemporaryDirectory() + "chatapp-\(name)-\(String(hash, radix: 16))"
    let lib = dir + "/\(name).so"
    if FileManager.default.fileExists(atPath: lib) { return lib }
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    // Built under a name of its own, then renamed: test cases may race here.
    let unique = "\(dir)/\(UUID().uuidString)"
    try source.write(toFile: unique + ".c", atomically: true, encoding: .utf8)
    guard let cc = cCompiler() else { throw NetError.badAddress("no C compiler") }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: cc)
    p.arguments = ["-shared", "-fPIC", "-O1", "-o", unique + ".so", unique + ".c", "-ldl"]
    try p.run()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw NetError.badAddress("\(cc) failed on the shim") }
    _ = rename(unique + ".so", lib)
    unlink(unique + ".c")
    return lib
}

/// The shim's C source.
let acceptFaultShimSource = """
        #define _GNU_SOURCE
        #include <dlfcn.h>
        #include <errno.h>
        #include <stdlib.h>
        #include <sys/socket.h>
        #include <unistd.h>
        static int accepted;
        int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
            static int (*real)(int, struct sockaddr *, socklen_t *, int);
            if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
            int c = real(fd, addr, len, flags);
            if (c < 0) return c;
            int n = __atomic_add_fetch(&accepted, 1, __ATOMIC_SEQ_CST);
            const char *from = getenv("SHIM_FAIL_FROM"), *count = getenv("SHIM_FAIL_COUNT"), *err = getenv("SHIM_FAIL_ERRNO");
            if (from && count && err && n >= atoi(from) && n < atoi(from) + atoi(count)) {
                close(c);
                errno = atoi(err);
                return -1;
            }
            return c;
        }
    """

/// Inside a G: a connection upgraded to a WebSocket on `/ws` (the 101
/// read), or nil if no 101 came within 10 s.
func upgraded(_ port: Int) -> Conn? {
    guard let c = try? Conn.dial("127.0.0.1", port) else { return nil }
    c.setReadDeadline(.after(.seconds(10)))
    try? c.write("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    var got: [UInt8] = []
    while !String(decoding: got, as: UTF8.self).contains("\r\n\r\n"), let part = try? c.read(max: 4096) { got += part }
    guard String(decoding: got, as: UTF8.self).hasPrefix("HTTP/1.1 101") else {
        c.close()
        return nil
    }
    c.setReadDeadline(nil)
    return c
}

extension ChatAppTests {
    @Test("Transient accept errors (EPROTO, ETIMEDOUT) are logged and the server serves on",
          .enabled(if: cCompiler() != nil), arguments: [EPROTO, ETIMEDOUT])
    func transientAcceptErrors(errno: Int32) async throws {
        let shim = try acceptFaultShim()
        let err = Pipe()
        // Connection 1 is startChatApp's probe; 2, 3 and 4 fail.
        let (app, port) = try startChatApp(environment: ["LD_PRELOAD": shim, "SHIM_FAIL_FROM": "2", "SHIM_FAIL_COUNT": "3",
                                                         "SHIM_FAIL_ERRNO": "\(errno)"], stderr: err)
        let r = await runG(procs: 2) { () -> (Int, String) in
            var dropped = 0
            for _ in 0..<3 {
                // The server accepts and the shim drops it: end of stream or a reset.
                guard let c = try? Conn.dial("127.0.0.1", port) else { continue }
                c.setReadDeadline(.after(.seconds(10)))
                do throws(NetError) { _ = try c.read(max: 100) } catch { if error != .timeout { dropped += 1 } }
                c.close()
            }
            return (dropped, String(httpGet(port, "/").prefix(12)))
        }
        #expect(app.isRunning)
        app.terminate()
        app.waitUntilExit()
        let log = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let (dropped, status) = try #require(r)
        #expect(dropped == 3, "connections refused: the server is gone")
        #expect(status == "HTTP/1.1 200", "the server stopped serving after accept failed with errno \(errno)")
        let retries = log.split(separator: "\n").filter { $0.hasPrefix("accept: ") && $0.hasSuffix("retrying") }
        #expect(retries.count == 3, "log: \(log)")
    }

    @Test("An error of the listening socket (EINVAL from accept) ends the server with a message and a non-zero status",
          .enabled(if: cCompiler() != nil))
    func fatalAcceptError() async throws {
        let shim = try acceptFaultShim()
        let err = Pipe()
        let (app, port) = try startChatApp(environment: ["LD_PRELOAD": shim, "SHIM_FAIL_FROM": "2", "SHIM_FAIL_COUNT": "1000",
                                                         "SHIM_FAIL_ERRNO": "\(EINVAL)"], stderr: err)
        let exited = DispatchSemaphore(value: 0)
        app.terminationHandler = { _ in exited.signal() }
        _ = await runG(procs: 2) { () -> Bool in
            guard let c = try? Conn.dial("127.0.0.1", port) else { return false }
            defer { c.close() }
            c.setReadDeadline(.after(.seconds(10)))
            _ = try? c.read(max: 100)
            return true
        }
        // Waited for on a thread of its own, not this one (a cooperative-pool thread).
        if await onThread(timeout: 15, { exited.wait(timeout: .now() + 10) }) != .success {
            app.terminate()
            app.waitUntilExit()
            Issue.record("the server did not exit")
            return
        }
        app.waitUntilExit()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(app.terminationStatus != 0)
        #expect(text.contains("listening socket failed"), "stderr: \(text)")
    }

    @Test("Out of fds (ulimit -n): accept waits, and once clients leave the server serves again")
    func outOfFileDescriptors() async throws {
        let limit = 64 // the server starts with about 10 fds
        let (app, port) = try startChatApp(wrapper: "ulimit -n \(limit)")
        defer { app.terminate(); app.waitUntilExit() }
        let pid = app.processIdentifier
        @Sendable func serverFDs() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0 }
        let r = await runG(procs: 2, timeout: 30) { () -> (Int, String)? in
            // Clients until the server has all its fds (each upgrade is
            // answered, so its fd is counted by then).
            var clients: [Conn] = []
            while serverFDs() < limit && clients.count < limit, let ws = upgraded(port) { clients.append(ws) }
            let full = serverFDs()
            // This one waits in the listen queue: accept fails with EMFILE.
            guard let c = try? Conn.dial("127.0.0.1", port) else { return nil }
            defer { c.close() }
            c.setReadDeadline(.after(.seconds(20)))
            try? c.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            for ws in clients { ws.close() }
            var got: [UInt8] = []
            while let part = try? c.read(max: 65536) { got += part }
            return (full, String(decoding: got.prefix(12), as: UTF8.self))
        }
        let (full, status) = try #require(r ?? nil)
        #expect(full == limit, "the server never ran out of fds (\(full))")
        #expect(status == "HTTP/1.1 200")
        #expect(app.isRunning)
    }
}

// MARK: the log never holds a worker

extension ChatAppTests {
    @Test("A standard error nobody reads (a full pipe) does not stop the server: 2,000 connections log past the pipe's 64 KiB and it serves on")
    func blockedStderr() async throws {
        // (Each connection logs "connect" and "disconnect"; a plain write(2)
        // to a full pipe held the worker thread, with its P, for ever.)
        let unread = Pipe()
        let (app, port) = try startChatApp(extraArguments: ["--max-conns-per-ip", "0"], environment: ["GMPPROCS": "2"],
                                           stderr: unread)
        defer { kill(app.processIdentifier, SIGKILL); app.waitUntilExit() } // (a wedged server would not stop by itself)
        let r = await runG(procs: 2, timeout: 60) { () -> (opened: Int, served: Bool) in
            let done = Chan<Int>(capacity: 8)
            for _ in 0..<8 {
                go {
                    var n = 0
                    for _ in 0..<250 {
                        guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { break }
                        n += 1
                        ws.conn.close()
                    }
                    done.send(n)
                }
            }
            var opened = 0
            for _ in 0..<8 { opened += done.receive().value ?? 0 }
            return (opened, httpGet(port, "/").hasPrefix("HTTP/1.1 200"))
        }
        #expect(r?.opened == 2000)
        #expect(r?.served == true)
        _ = unread // (kept open, unread, until the server has gone)
    }
}
