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

// MARK: 11.2: every write to a peer has a deadline

/// Inside a G: the TCP state of a connection (1 ESTABLISHED, 7 CLOSE after a
/// reset, 8 CLOSE_WAIT after the peer's FIN), read without consuming data.
func tcpState(_ c: Conn) -> UInt8 {
    var info = [UInt8](repeating: 0, count: 256)
    var len = socklen_t(info.count)
    guard getsockopt(c.fd, Int32(IPPROTO_TCP), Int32(TCP_INFO), &info, &len) == 0 else { return 0 }
    return info[0]
}

extension ChatAppTests {
    @Test("20 connections that pipeline 8,000 requests and never read are cut off after the write wait; Gs and fds come back (11.2)")
    func pipeliningNonReadersCutOff() throws {
        let (app, port) = try startChatApp(extraArguments: ["--stats", "--write-wait-ms", "300"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = runG(procs: 2, timeout: 60) { () -> (held: Bool, cut: Int, before: [String: Int], after: [String: Int], fds: String)? in
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
                c.setReadDeadline(GMP.now + 10_000_000_000)
                try? c.write(one)
                var got: [UInt8] = []
                while responseStatuses(got) != [200], let part = try? c.read(max: 65536) { got += part }
                held = held && responseStatuses(got) == [200]
            }
            for c in conns {
                go {
                    c.setWriteDeadline(GMP.now + 30_000_000_000) // the server stops reading first
                    try? c.write(pipelined)
                }
            }
            // The server resets each connection (it leaves requests unread):
            // seen here without reading (reading would unblock it).
            _ = pollUntil(seconds: 15) { conns.allSatisfy { tcpState($0) != 1 } }
            let cut = conns.filter { tcpState($0) != 1 }.count
            var after = serverStats(port)
            _ = pollUntil(seconds: 10) {
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

    @Test("A client that floods pings and never reads is cut off: the read pump's pongs have the write wait too (11.2)")
    func pingFloodNonReaderCutOff() throws {
        let (app, port) = try startChatApp(extraArguments: ["--stats", "--write-wait-ms", "300"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = runG(procs: 2, timeout: 45) { () -> (Bool, [String: Int], [String: Int])? in
            let before = serverStats(port)
            guard let gs0 = before["goroutines"], let fds0 = before["fds"],
                  let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws") else { return nil }
            defer { ws.conn.close() }
            // Registered before its 101: the server holds it from here.
            // 200,000 pings: 25 MB of pongs, more than the socket buffers hold.
            let ping = clientFrame(.ping, [UInt8](repeating: 7, count: 125))
            var flood: [UInt8] = []
            flood.reserveCapacity(ping.count * 200_000)
            for _ in 0..<200_000 { flood += ping }
            let pings = flood
            go {
                ws.conn.setWriteDeadline(GMP.now + 30_000_000_000)
                try? ws.conn.write(pings)
            }
            var after = before
            let back = pollUntil(seconds: 15) {
                after = serverStats(port)
                return after["clients"] == 0 && (after["goroutines"] ?? .max) <= gs0 && (after["fds"] ?? .max) <= fds0
            }
            return (back, before, after)
        }
        let (back, before, after) = try #require(r ?? nil)
        #expect(back, "the server still holds the client: \(before) -> \(after)")
    }
}
