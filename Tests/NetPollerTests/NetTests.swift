import Channels
import Foundation
import GMP
import GMPTestSupport
import NetPoller
import Synchronization
import Testing

/// Open file descriptors of this process.
func openFDs() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// A server that echoes every connection in its own G until the peer closes.
func startEchoServer() throws -> TCPListener {
    let l = try TCPListener(port: 0)
    go {
        while let c = try? l.accept() {
            go {
                defer { c.close() }
                var buf = [UInt8](repeating: 0, count: 4096)
                while true {
                    let r: Result<Int, NetError> = buf.withUnsafeMutableBytes { b in Result { () throws(NetError) in try c.read(into: b) } }
                    guard case .success(let n) = r else { return }
                    if (try? c.write(Array(buf[0..<n]))) == nil { return }
                }
            }
        }
    }
    return l
}

@Suite(.serialized)
struct NetTests {
    @Test("Echo over loopback: 50 client Gs × 200 round trips of 64 bytes", arguments: [1, 2])
    func echo(procs: Int) throws {
        // The poller's own epoll fd and eventfd are made on first use: make them first.
        try TCPListener(port: 0).close()
        let fdsBefore = openFDs()
        let ok = runG(procs: procs) { () -> Bool in
            guard let l = try? startEchoServer() else { return false }
            let bad = Atomic<Int>(0)
            let wg = WaitGroup(50)
            for k in 0..<50 {
                go {
                    defer { wg.done() }
                    guard let c = try? TCPConn.dial("127.0.0.1", l.port) else { bad.add(1, ordering: .relaxed); return }
                    defer { c.close() }
                    c.setNoDelay(true)
                    for i in 0..<200 {
                        let msg = [UInt8](repeating: UInt8(truncatingIfNeeded: k &+ i), count: 64)
                        var got: [UInt8] = []
                        do {
                            try c.write(msg)
                            while got.count < 64 { got += try c.read(max: 64 - got.count) }
                        } catch {
                            bad.add(1, ordering: .relaxed)
                            return
                        }
                        if got != msg { bad.add(1, ordering: .relaxed) }
                    }
                }
            }
            wg.wait()
            l.close()
            return bad.load(ordering: .relaxed) == 0
        }
        #expect(ok == true)
        // Every fd opened was closed (the server side closes on end of stream).
        var fdsAfter = openFDs()
        let deadline = Date().addingTimeInterval(5)
        while fdsAfter > fdsBefore && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.01)
            fdsAfter = openFDs()
        }
        #expect(fdsAfter <= fdsBefore, "fds before \(fdsBefore), after \(fdsAfter)")
    }

    @Test("Read deadlines fire, not early, and can be moved while a G is blocked")
    func deadlines() {
        let r = runG { () -> (Bool, Bool, Bool) in
            guard let l = try? TCPListener(port: 0) else { return (false, false, false) }
            defer { l.close() }
            let accepted = Chan<TCPConn>(capacity: 1)
            go { if let c = try? l.accept() { accepted.send(c) } }
            guard let c = try? TCPConn.dial("127.0.0.1", l.port) else { return (false, false, false) }
            defer { c.close() }
            let server = accepted.receive().value
            defer { server?.close() }
            // 1. A deadline 20 ms ahead: the read times out, not before.
            let t0 = GMP.now
            c.setReadDeadline(t0 + 20_000_000)
            var timedOut = false
            do { _ = try c.read(max: 10) } catch { timedOut = (error as? NetError) == .timeout }
            let notEarly = GMP.now - t0 >= 20_000_000
            // 2. Far deadline, then moved closer by another G while blocked.
            c.setReadDeadline(GMP.now + 10_000_000_000)
            let moved = GMP.now
            go {
                GMP.sleep(nanoseconds: 5_000_000)
                c.setReadDeadline(GMP.now + 5_000_000)
            }
            var movedFired = false
            do { _ = try c.read(max: 10) } catch { movedFired = (error as? NetError) == .timeout && GMP.now - moved < 5_000_000_000 }
            return (timedOut && notEarly, movedFired, true)
        }
        #expect(r?.0 == true)
        #expect(r?.1 == true)
    }

    @Test("Closing a connection wakes a G blocked reading it with .closed")
    func closeWakesReader() {
        let ok = runG { () -> Bool in
            guard let l = try? TCPListener(port: 0) else { return false }
            defer { l.close() }
            go { _ = try? l.accept() } // accepted and dropped (closed by deinit)
            guard let c = try? TCPConn.dial("127.0.0.1", l.port) else { return false }
            let result = Chan<NetError?>(capacity: 1)
            go {
                do {
                    _ = try c.read(max: 10)
                    result.send(nil)
                } catch {
                    result.send(error as? NetError)
                }
            }
            for _ in 0..<100 { GMP.yield() }
            c.close()
            // The reader is woken (either .closed, or .endOfStream if the
            // accepted side went away first): not left hanging.
            guard case .value(let e) = result.receive() else { return false }
            return e == .closed || e == .endOfStream
        }
        #expect(ok == true)
    }

    @Test("Accept wakes with .closed when the listener closes")
    func closeWakesAccept() {
        let ok = runG { () -> Bool in
            guard let l = try? TCPListener(port: 0) else { return false }
            let result = Chan<Bool>(capacity: 1)
            go {
                do {
                    _ = try l.accept()
                    result.send(false)
                } catch {
                    result.send((error as? NetError) == .closed)
                }
            }
            for _ in 0..<100 { GMP.yield() }
            l.close()
            return result.receive() == .value(true)
        }
        #expect(ok == true)
    }

    @Test("Half-close: the server reads end of stream, then still answers")
    func halfClose() {
        let ok = runG { () -> Bool in
            guard let l = try? TCPListener(port: 0) else { return false }
            defer { l.close() }
            go {
                guard let s = try? l.accept() else { return }
                defer { s.close() }
                var got: [UInt8] = []
                while let part = try? s.read(max: 100) { got += part }
                try? s.write("got \(got.count)")
            }
            guard let c = try? TCPConn.dial("127.0.0.1", l.port) else { return false }
            defer { c.close() }
            guard (try? c.write("hello")) != nil, (try? c.closeWrite()) != nil else { return false }
            var reply: [UInt8] = []
            while let part = try? c.read(max: 100) { reply += part }
            return String(decoding: reply, as: UTF8.self) == "got 5"
        }
        #expect(ok == true)
    }

    @Test("Peer reset is reported as connectionReset")
    func peerReset() {
        let ok = runG { () -> Bool in
            guard let l = try? TCPListener(port: 0) else { return false }
            defer { l.close() }
            let accepted = Chan<TCPConn>(capacity: 1)
            go { if let c = try? l.accept() { accepted.send(c) } }
            guard let c = try? TCPConn.dial("127.0.0.1", l.port), case .value(let s) = accepted.receive() else {
                return false
            }
            defer { s.close() }
            // SO_LINGER with a zero time-out: close sends RST.
            var lin = linger(l_onoff: 1, l_linger: 0)
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lin, socklen_t(MemoryLayout<linger>.size))
            c.close()
            do {
                _ = try s.read(max: 10)
                return false
            } catch {
                return (error as? NetError) == .connectionReset
            }
        }
        #expect(ok == true)
    }

    @Test("A 64 MiB transfer completes intact (writes larger than the socket buffer park)", arguments: [1, 2])
    func bigTransfer(procs: Int) {
        let ok = runG(procs: procs) { () -> Bool in
            guard let l = try? TCPListener(port: 0) else { return false }
            defer { l.close() }
            let total = 64 << 20
            let sum = Chan<(Int, UInt64)>(capacity: 1)
            go {
                guard let s = try? l.accept() else { sum.send((-1, 0)); return }
                defer { s.close() }
                var n = 0
                var h: UInt64 = 0
                var buf = [UInt8](repeating: 0, count: 65536)
                while true {
                    let r: Result<Int, NetError> = buf.withUnsafeMutableBytes { b in Result { () throws(NetError) in try s.read(into: b) } }
                    guard case .success(let k) = r else { break }
                    for i in 0..<k { h = h &* 31 &+ UInt64(buf[i]) }
                    n += k
                }
                sum.send((n, h))
            }
            guard let c = try? TCPConn.dial("127.0.0.1", l.port) else { return false }
            var chunk = [UInt8](repeating: 0, count: 1 << 20)
            var h: UInt64 = 0
            for j in 0..<64 {
                for i in 0..<chunk.count { chunk[i] = UInt8(truncatingIfNeeded: i &* 7 &+ j) }
                for b in chunk { h = h &* 31 &+ UInt64(b) }
                guard (try? c.write(chunk)) != nil else { return false }
            }
            c.close()
            guard case .value(let (n, got)) = sum.receive() else { return false }
            return n == total && got == h
        }
        #expect(ok == true)
    }

    @Test("Dialing a closed port is refused")
    func dialRefused() throws {
        // Find a free port, then make sure nothing listens there.
        let l = try TCPListener(port: 0)
        let port = l.port
        l.close()
        let r = runG { () -> NetError? in
            do {
                _ = try TCPConn.dial("127.0.0.1", port)
                return nil
            } catch {
                return error as? NetError
            }
        }
        #expect(r == .some(.connectionRefused))
        #expect(throws: NetError.badAddress("not-an-ip")) { try TCPConn.dial("not-an-ip", 80) }
        #expect(throws: NetError.addressInUse) {
            let a = try TCPListener(port: 0)
            defer { a.close() }
            // Listening twice on one port (SO_REUSEADDR does not allow two listeners).
            _ = try TCPListener(port: a.port)
        }
    }

    @Test("GMPPROCS=1: 2,000 idle connections parked, one busy G, and echo still answers")
    func idleConnectionsOneP() {
        let ok = runG(procs: 1) { () -> Bool in
            guard let l = try? startEchoServer() else { return false }
            defer { l.close() }
            var conns: [TCPConn] = []
            for _ in 0..<2_000 {
                guard let c = try? TCPConn.dial("127.0.0.1", l.port) else { return false }
                conns.append(c)
            }
            let busyDone = Chan<Int>(capacity: 1)
            go {
                var x = 0
                for i in 0..<200_000 { x &+= i; if i % 1000 == 0 { GMP.yield() } }
                busyDone.send(x)
            }
            // One of the idle connections still echoes promptly.
            let c = conns[1_234]
            guard (try? c.write("ping")) != nil, let back = try? c.read(max: 10) else { return false }
            for c in conns { c.close() }
            return String(decoding: back, as: UTF8.self) == "ping" && busyDone.receive().value != nil
        }
        #expect(ok == true)
    }

    @Test("Plain threads can use sockets too (they block on a futex)")
    func plainThreadSocket() throws {
        let l = try startEchoServerFromPlainThread()
        defer { l.close() }
        let c = try TCPConn.dial("127.0.0.1", l.port)
        defer { c.close() }
        try c.write("abc")
        var got: [UInt8] = []
        while got.count < 3 { got += try c.read(max: 3) }
        #expect(String(decoding: got, as: UTF8.self) == "abc")
    }
}

func startEchoServerFromPlainThread() throws -> TCPListener {
    GMP.setProcs(2)
    return try startEchoServer()
}
