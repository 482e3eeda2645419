// The net poller workloads: echo and idleconns.
import Channels
import Foundation
import GMP
import Glibc
import NetPoller
import WebSocket

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
        child.executableURL = URL(fileURLWithPath: selfPath)
        child.arguments = ["--idleconns-client", String(l.port), String(n)]
        let stdin = Pipe()
        child.standardInput = stdin
        let t0 = now()
        guard (try? child.run()) != nil else { fatalError("idleconns: cannot start the client process") }
        accepted.wait()
        let el = now() - t0
        GMP.sleep(for: .seconds(3)) // idle for a while, as idle connections are
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
