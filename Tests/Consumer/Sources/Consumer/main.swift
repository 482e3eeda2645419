// Touches every library product of SwiftGMP through its public API, as a
// user's program would; prints a line per check and exits 1 on a mismatch.
import Channels
import Chat
import Contexts
import Foundation
import GMP
import NetPoller
import Redis
import WebSocket

nonisolated(unsafe) var failures = 0

func check(_ name: String, _ ok: Bool, _ detail: @autoclosure () -> String = "") {
    print(ok ? "ok    \(name)" : "FAIL  \(name): \(detail())")
    if !ok { failures += 1 }
}

/// Async code for `GMP.await` to call.
func double(_ n: Int) async -> Int {
    await Task.yield()
    return 2 * n
}

/// The checks that need a G (run by `GMP.run` below).
func inGoroutine() {
    // A G and a WaitGroup.
    let wg = WaitGroup(10)
    let sum = Chan<Int>(capacity: 10)
    for i in 1...10 { go { sum.send(i); wg.done() } }
    wg.wait()
    sum.close()
    check("GMP: 10 Gs via go, WaitGroup", sum.reduce(0, +) == 55)

    // A channel, select with a time-out, a Ticker-free timer channel.
    let c = Chan<String>()
    go { c.send("hello") }
    check("Channels: unbuffered send/receive", c.receive().value == "hello")
    var timedOut = false
    select { s in
        if s.receive(c) != nil { timedOut = false }
        if s.timeout(after: .milliseconds(10)) { timedOut = true }
    }
    check("Channels: select timeout(after:)", timedOut)
    check("Channels: after(_:)", after(.milliseconds(5)).receive().value != nil)

    // A socket: a local listener, a dial, one round trip.
    do {
        let listener = try Listener(host: "127.0.0.1", port: 0)
        defer { listener.close() }
        go {
            guard let conn = try? listener.accept() else { return }
            defer { conn.close() }
            if let bytes = try? conn.read(max: 64) { try? conn.write(bytes) }
        }
        let conn = try Conn.dial("127.0.0.1", listener.port, timeout: .seconds(2))
        defer { conn.close() }
        conn.setReadDeadline(.now + .seconds(2))
        try conn.write("ping")
        let reply = try conn.read(max: 64)
        check("NetPoller: Listener, Conn.dial, echo", reply == Array("ping".utf8), "got \(reply)")
    } catch {
        check("NetPoller: Listener, Conn.dial, echo", false, "\(error)")
    }

    // A context, cancelled.
    let (ctx, cancel) = Context.withCancel(.background)
    let (child, _) = Context.withDeadline(ctx, at: .now + .seconds(60))
    cancel()
    check("Contexts: cancel reaches a child", child.done.receive() == .closed && child.err == .canceled)

    // Async code from a G.
    check("GMP.await", GMP.await { await double(21) } == 42)
}

GMP.run(inGoroutine)

// Redis: parse a URL (no server needed).
do {
    let url = try RedisURL("redis://ann:s%40cret@10.0.0.7:6380/2")
    check("Redis: RedisURL parse", url.host == "10.0.0.7" && url.port == 6380 && url.user == "ann"
        && url.password == "s@cret" && url.db == 2, "\(url)")
} catch {
    check("Redis: RedisURL parse", false, "\(error)")
}

// WebSocket: the handshake's accept key (RFC 6455's example) and a frame round trip.
check("WebSocket: accept key", webSocketAccept(key: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
let frame = Frame(opcode: .text, payload: Array("hi there".utf8))
let decoded = try? Frame.decode(frame.encode(mask: [1, 2, 3, 4])[...], masked: true, maxPayload: 1024)
check("WebSocket: frame encode/decode", decoded?.0 == frame)

// Chat: its config parsing.
var config = ChatConfig()
do {
    _ = try parseConfig(Data(#"{"addr": "127.0.0.1:9000", "maxMessage": 1024}"#.utf8), name: "test", into: &config)
    check("Chat: parseConfig", config.host == "127.0.0.1" && config.port == 9000 && config.maxMessage == 1024)
} catch {
    check("Chat: parseConfig", false, "\(error)")
}

if failures > 0 {
    print("\(failures) check(s) failed")
    exit(1)
}
print("all checks passed")
