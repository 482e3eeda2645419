import Channels
import Foundation
import GMP
import GMPTestSupport
@testable import NetPoller
import Synchronization
import Testing

/// Open TCP sockets of this process with `port` at either end: a listener
/// on it, the connections it accepted and those dialled to it. Counted by
/// port, not all the process's sockets: tests run in parallel, and other
/// tests' sockets (and the socket pair of each Foundation `Process`) come and
/// go meanwhile, as do the test harness's own pipes and files.
func openSockets(port: Int) -> Int {
    var inodes = Set<Substring>()
    for table in ["tcp", "tcp6"] {
        guard let text = try? String(contentsOfFile: "/proc/self/net/\(table)", encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ")
            guard f.count > 9 else { continue }
            let ports = [f[1], f[2]].compactMap { $0.split(separator: ":").last.flatMap { Int($0, radix: 16) } }
            if ports.contains(port) { inodes.insert(f[9]) }
        }
    }
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return names.filter {
        let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0)) ?? ""
        return target.hasPrefix("socket:[") && inodes.contains(target.dropFirst(8).dropLast())
    }.count
}

/// A server that echoes every connection in its own G until the peer closes.
func startEchoServer() throws -> Listener {
    let l = try Listener(port: 0)
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
    func echo(procs: Int) async throws {
        let r = await runG(procs: procs) { () -> (ok: Bool, port: Int) in
            guard let l = try? startEchoServer() else { return (false, 0) }
            let bad = Atomic<Int>(0)
            let wg = WaitGroup(50)
            for k in 0..<50 {
                go {
                    defer { wg.done() }
                    guard let c = try? Conn.dial("127.0.0.1", l.port) else { bad.add(1, ordering: .relaxed); return }
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
            return (bad.load(ordering: .relaxed) == 0, l.port)
        }
        #expect(r?.ok == true)
        // Every socket opened was closed (the server side closes on end of stream).
        guard let port = r?.port, port != 0 else { return }
        var left = openSockets(port: port)
        let deadline = Date().addingTimeInterval(5)
        while left > 0 && Date() < deadline {
            try await Task.sleep(for: .milliseconds(10))
            left = openSockets(port: port)
        }
        #expect(left == 0, "sockets left on port \(port): \(left): \(fdList())")
    }

    @Test("TCP connections, dialled and accepted, start with TCP_NODELAY (as Go's); setNoDelay(false) turns it off")
    func noDelayByDefault() async {
        @Sendable func noDelay(_ c: Conn) -> Int32 {
            var v: Int32 = -1
            var len = socklen_t(MemoryLayout<Int32>.size)
            _ = getsockopt(c.fd, Int32(IPPROTO_TCP), TCP_NODELAY, &v, &len)
            return v
        }
        let r = await runG(procs: 2) { () -> [Int32]? in
            guard let l = try? Listener(port: 0) else { return nil }
            defer { l.close() }
            let accepted = Chan<Conn>(capacity: 1)
            go { if let c = try? l.accept() { accepted.send(c) } }
            guard let d = try? Conn.dial("127.0.0.1", l.port), case .value(let a) = accepted.receive() else { return nil }
            defer { d.close(); a.close() }
            let before = [noDelay(d), noDelay(a)]
            d.setNoDelay(false)
            return before + [noDelay(d)]
        }
        #expect(r == [1, 1, 0])
    }

    @Test("FDRef under contention: after close no reference is taken, and exactly one party closes the fd")
    func fdRefStress() async {
        final class Box: @unchecked Sendable {
            // @unchecked: FDRef is atomic inside; the box only keeps it at one address.
            let ref = FDRef()
        }
        for _ in 0..<20 {
            let r = await runG(procs: 4) { () -> (Int, Int, Int) in
                let box = Box()
                let closers = Atomic<Int>(0), lateAcquires = Atomic<Int>(0), beforeCloseRuns = Atomic<Int>(0)
                let closedAt = Atomic<Bool>(false)
                let wg = WaitGroup(4)
                for w in 0..<4 {
                    go {
                        for i in 0..<20_000 {
                            if w == 0 && i == 5_000 {
                                if box.ref.close(beforeClose: { beforeCloseRuns.add(1, ordering: .relaxed) }) {
                                    closers.add(1, ordering: .relaxed)
                                }
                                closedAt.store(true, ordering: .releasing)
                                // A second close does nothing.
                                if box.ref.close(beforeClose: { beforeCloseRuns.add(1, ordering: .relaxed) }) {
                                    closers.add(1, ordering: .relaxed)
                                }
                            }
                            let wasClosed = closedAt.load(ordering: .acquiring)
                            if box.ref.acquire() {
                                if wasClosed { lateAcquires.add(1, ordering: .relaxed) }
                                if box.ref.release() { closers.add(1, ordering: .relaxed) }
                            }
                        }
                        wg.done()
                    }
                }
                wg.wait()
                return (closers.load(ordering: .relaxed), lateAcquires.load(ordering: .relaxed),
                        beforeCloseRuns.load(ordering: .relaxed))
            }
            #expect(r?.0 == 1, "closers")
            #expect(r?.1 == 0, "references taken after close")
            #expect(r?.2 == 1, "beforeClose runs")
        }
    }

    @Test("close() keeps the fd number while a read still uses it: the next socket gets another number")
    func closeKeepsFdWhileInUse() async {
        // Alone: it checks which fd number the kernel hands out next, which sockets
        // other tests open and close meanwhile would change.
        await alone {
            // On 1 P, deterministically: a G is parked in read on A; close(A)
            // wakes it but it has not run yet when B's socket is made. Had A's
            // fd been released at close, the kernel would give B that lowest
            // free number, and A's reader, resuming, would use B's socket.
            let r = await runG(procs: 1) { () -> (Int32, Int32, Bool)? in
                guard let l = try? Listener(port: 0) else { return nil }
                defer { l.close() }
                let served = Chan<Conn>(capacity: 2)
                go { while let c = try? l.accept() { served.send(c) } }
                guard let a = try? Conn.dial("127.0.0.1", l.port), case .value(let aPeer) = served.receive() else { return nil }
                let result = Chan<Bool>(capacity: 1)
                go {
                    do { _ = try a.read(max: 64); result.send(false) } catch { result.send((error as? NetError) == .closed) }
                }
                GMP.yield() // the reader parks in read
                a.close()
                guard let b = try? Conn.dial("127.0.0.1", l.port), case .value(let bPeer) = served.receive() else { return nil }
                let sawClosed = result.receive().value ?? false
                defer { for c in [aPeer, b, bPeer] { c.close() } }
                return (a.fd, b.fd, sawClosed)
            }
            guard let (afd, bfd, sawClosed) = r ?? nil else {
                Issue.record("the connections could not be made")
                return
            }
            #expect(afd != bfd)
            #expect(sawClosed)
        }
    }

    @Test("Read deadlines fire, not early, and can be moved while a G is blocked")
    func deadlines() async {
        let r = await runG { () -> (Bool, Bool, Bool) in
            guard let l = try? Listener(port: 0) else { return (false, false, false) }
            defer { l.close() }
            let accepted = Chan<Conn>(capacity: 1)
            go { if let c = try? l.accept() { accepted.send(c) } }
            guard let c = try? Conn.dial("127.0.0.1", l.port) else { return (false, false, false) }
            defer { c.close() }
            let server = accepted.receive().value
            defer { server?.close() }
            // 1. A deadline 20 ms ahead: the read times out, not before.
            let t0 = GMP.now
            c.setReadDeadline(GMP.Instant(nanoseconds: t0 + 20_000_000))
            var timedOut = false
            do { _ = try c.read(max: 10) } catch { timedOut = (error as? NetError) == .timeout }
            let notEarly = GMP.now - t0 >= 20_000_000
            // 2. Far deadline, then moved closer by another G while blocked.
            c.setReadDeadline(.after(.seconds(10)))
            let moved = GMP.now
            go {
                GMP.sleep(nanoseconds: 5_000_000)
                c.setReadDeadline(.after(.milliseconds(5)))
            }
            var movedFired = false
            do { _ = try c.read(max: 10) } catch { movedFired = (error as? NetError) == .timeout && GMP.now - moved < 5_000_000_000 }
            return (timedOut && notEarly, movedFired, true)
        }
        #expect(r?.0 == true)
        #expect(r?.1 == true)
    }

    @Test("A passed deadline fails reads and writes at once, even with data waiting or buffer space free (as Go)")
    func passedDeadlineWithDataWaiting() async {
        let r = await runG(timeout: 30) { () -> [String] in
            guard let l = try? Listener(port: 0) else { return ["listen"] }
            defer { l.close() }
            let accepted = Chan<Conn>(capacity: 1)
            go { if let c = try? l.accept() { accepted.send(c) } }
            // A dial time-out too long for the clock is "no time-out", not a deadline in the past.
            guard let c = try? Conn.dial("127.0.0.1", l.port, timeout: .seconds(Int64.max)) else { return ["dial"] }
            defer { c.close() }
            guard let server = accepted.receive().value else { return ["accept"] }
            defer { server.close() }
            try? server.write("hello")
            var got: [String] = []
            // Wait (bounded) until the bytes are there to read.
            guard waitFor({
                var pfd = pollfd(fd: c.fd, events: Int16(POLLIN), revents: 0)
                return poll(&pfd, 1, 0) > 0
            }) else { return ["no data"] }
            c.setReadDeadline(.now - .nanoseconds(1))
            do { _ = try c.read(max: 10); got.append("read max: data") } catch { got.append("read max: \(error)") }
            var buf = [UInt8](repeating: 0, count: 10)
            let n = buf.withUnsafeMutableBytes { b in Result { () throws(NetError) in try c.read(into: b) } }
            if case .failure(let e) = n { got.append("read into: \(e)") } else { got.append("read into: data") }
            c.setReadDeadline(nil)
            got.append(((try? c.read(max: 10)) ?? []) == Array("hello".utf8) ? "cleared: data" : "cleared: none")
            c.setWriteDeadline(.now - .nanoseconds(1))
            do { try c.write("x"); got.append("write: sent") } catch { got.append("write: \(error)") }
            // 0 is a deadline too (long past), not "none": a read with nothing to read times out at once.
            c.setReadDeadline(GMP.Instant(nanoseconds: 0))
            do { _ = try c.read(max: 10); got.append("deadline 0: data") } catch { got.append("deadline 0: \(error)") }
            return got
        }
        #expect(r == ["read max: i/o timeout", "read into: i/o timeout", "cleared: data", "write: i/o timeout",
                      "deadline 0: i/o timeout"])
    }

    @Test("Closing a connection wakes a G blocked reading it with .closed")
    func closeWakesReader() async {
        let ok = await runG { () -> Bool in
            guard let l = try? Listener(port: 0) else { return false }
            defer { l.close() }
            let accepted = Chan<Conn>(capacity: 1)
            go { if let s = try? l.accept() { accepted.send(s) } }
            guard let c = try? Conn.dial("127.0.0.1", l.port),
                  let server = accepted.receive().value else { return false }
            defer { server.close() } // open until the end: the reader sees no end of stream
            let result = Chan<NetError?>(capacity: 1)
            go {
                do {
                    _ = try c.read(max: 10)
                    result.send(nil)
                } catch {
                    result.send(error as? NetError)
                }
            }
            guard waitFor({ c.pd.hasWaiter(.read) }) else { return false } // the reader is parked
            c.close()
            guard case .value(let e) = result.receive() else { return false }
            return e == .closed
        }
        #expect(ok == true)
    }

    @Test("Accept wakes with .closed when the listener closes")
    func closeWakesAccept() async {
        let ok = await runG { () -> Bool in
            guard let l = try? Listener(port: 0) else { return false }
            let result = Chan<Bool>(capacity: 1)
            go {
                do {
                    _ = try l.accept()
                    result.send(false)
                } catch {
                    result.send((error as? NetError) == .closed)
                }
            }
            guard waitFor({ l.pd.hasWaiter(.read) }) else { return false } // accept is parked
            l.close()
            return result.receive() == .value(true)
        }
        #expect(ok == true)
    }

    @Test("Half-close: the server reads end of stream, then still answers")
    func halfClose() async {
        let ok = await runG { () -> Bool in
            guard let l = try? Listener(port: 0) else { return false }
            defer { l.close() }
            go {
                guard let s = try? l.accept() else { return }
                defer { s.close() }
                var got: [UInt8] = []
                while let part = try? s.read(max: 100) { got += part }
                try? s.write("got \(got.count)")
            }
            guard let c = try? Conn.dial("127.0.0.1", l.port) else { return false }
            defer { c.close() }
            guard (try? c.write("hello")) != nil, (try? c.closeWrite()) != nil else { return false }
            var reply: [UInt8] = []
            while let part = try? c.read(max: 100) { reply += part }
            return String(decoding: reply, as: UTF8.self) == "got 5"
        }
        #expect(ok == true)
    }

    @Test("Peer reset is reported as connectionReset")
    func peerReset() async {
        let ok = await runG { () -> Bool in
            guard let l = try? Listener(port: 0) else { return false }
            defer { l.close() }
            let accepted = Chan<Conn>(capacity: 1)
            go { if let c = try? l.accept() { accepted.send(c) } }
            guard let c = try? Conn.dial("127.0.0.1", l.port), case .value(let s) = accepted.receive() else {
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
    func bigTransfer(procs: Int) async {
        let ok = await runG(procs: procs) { () -> Bool in
            guard let l = try? Listener(port: 0) else { return false }
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
                    let r: Result<Int, NetError> = buf.withUnsafeMutableBytes { b in
                        Result { () throws(NetError) in
                            let k = try s.read(into: b)
                            h = hashBytes(h, UnsafeRawBufferPointer(rebasing: b[..<k]))
                            return k
                        }
                    }
                    guard case .success(let k) = r else { break }
                    n += k
                }
                sum.send((n, h))
            }
            guard let c = try? Conn.dial("127.0.0.1", l.port) else { return false }
            var chunk = [UInt8](repeating: 0, count: 1 << 20)
            var h: UInt64 = 0
            for j in 0..<64 {
                chunk.withUnsafeMutableBytes { b in
                    for i in 0..<b.count { b[i] = UInt8(truncatingIfNeeded: i &* 7 &+ j) }
                    h = hashBytes(h, UnsafeRawBufferPointer(b))
                }
                guard (try? c.write(chunk)) != nil else { return false }
            }
            c.close()
            guard case .value(let (n, got)) = sum.receive() else { return false }
            return n == total && got == h
        }
        #expect(ok == true)
    }

    @Test("Dialing a closed port is refused")
    func dialRefused() async throws {
        // Find a free port, then make sure nothing listens there.
        let l = try Listener(port: 0)
        let port = l.port
        l.close()
        let r = await runG { () -> NetError? in
            do {
                _ = try Conn.dial("127.0.0.1", port)
                return nil
            } catch {
                return error as? NetError
            }
        }
        #expect(r == .some(.connectionRefused))
        #expect(throws: NetError.badAddress("not-an-ip")) { try Conn.dial("not-an-ip", 80) }
        #expect(throws: NetError.addressInUse) {
            let a = try Listener(port: 0)
            defer { a.close() }
            // Listening twice on one port (SO_REUSEADDR does not allow two listeners).
            _ = try Listener(port: a.port)
        }
    }

    @Test("GMPPROCS=1: 2,000 idle connections parked, one busy G, and echo still answers")
    func idleConnectionsOneP() async {
        let ok = await runG(procs: 1) { () -> Bool in
            guard let l = try? startEchoServer() else { return false }
            defer { l.close() }
            var conns: [Conn] = []
            for _ in 0..<2_000 {
                guard let c = try? Conn.dial("127.0.0.1", l.port) else { return false }
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
    func plainThreadSocket() async throws {
        // On a plain thread of its own: the socket calls block it.
        let got = await onThread(procs: 2) { () -> Result<String, any Error> in
            Result {
                let l = try startEchoServer()
                defer { l.close() }
                let c = try Conn.dial("127.0.0.1", l.port)
                defer { c.close() }
                try c.write("abc")
                var got: [UInt8] = []
                while got.count < 3 { got += try c.read(max: 3) }
                return String(decoding: got, as: UTF8.self)
            }
        }
        #expect(try #require(got).get() == "abc")
    }
}

@Suite struct NetDeadlockTests {
    @Test("A G waiting on a socket is not a deadlock: an accept that a client outside the runtime answers after 2.5 s")
    func socketWaitIsNotDeadlock() async {
        await #expect(processExitsWith: .success) {
            let ok = GMP.run { () -> Bool in
                guard let l = try? Listener(port: 0) else { return false }
                defer { l.close() }
                let port = l.port
                // A raw socket, never seen by the runtime, connects later.
                let t = Thread {
                    usleep(2_500_000) // past the deadlock check's second of grace
                    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                    var addr = sockaddr_in()
                    addr.sin_family = sa_family_t(AF_INET)
                    addr.sin_port = in_port_t(UInt16(port).bigEndian)
                    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
                    _ = withUnsafePointer(to: &addr) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                        }
                    }
                    close(fd)
                }
                t.start()
                guard let c = try? l.accept() else { return false }
                c.close()
                return true
            }
            exit(ok ? 0 : 1)
        }
    }
}

@Suite(.serialized)
struct NetScaleTests {
    @Test("IPv6 loopback: listen on ::1, dial, echo")
    func ipv6() async {
        let ok = await runG { () -> Bool in
            guard let l = try? Listener(host: "::1", port: 0) else { return false }
            defer { l.close() }
            go {
                guard let s = try? l.accept() else { return }
                if let b = try? s.read(max: 10) { try? s.write(b) }
                s.close()
            }
            guard let c = try? Conn.dial("::1", l.port) else { return false }
            defer { c.close() }
            guard (try? c.write("v6")) != nil, let b = try? c.read(max: 10) else { return false }
            return String(decoding: b, as: UTF8.self) == "v6"
        }
        #expect(ok == true)
    }

    @Test("Unix domain sockets: listen, dial, echo")
    func unixSockets() async {
        let path = NSTemporaryDirectory() + "gmp-test-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        let ok = await runG { () -> Bool in
            guard let l = try? Listener(unixPath: path) else { return false }
            defer { l.close() }
            go {
                guard let s = try? l.accept() else { return }
                if let b = try? s.read(max: 10) { try? s.write(b) }
                s.close()
            }
            guard let c = try? Conn.dial(unixPath: path) else { return false }
            defer { c.close() }
            guard (try? c.write("unix")) != nil, let b = try? c.read(max: 10) else { return false }
            return String(decoding: b, as: UTF8.self) == "unix"
        }
        #expect(ok == true)
    }

    @Test("A write deadline fires when the peer does not read (the socket buffer fills)")
    func writeDeadline() async {
        let r = await runG { () -> NetError? in
            guard let l = try? Listener(port: 0) else { return nil }
            defer { l.close() }
            let accepted = Chan<Conn>(capacity: 1)
            go { if let c = try? l.accept() { accepted.send(c) } }
            guard let c = try? Conn.dial("127.0.0.1", l.port) else { return nil }
            defer { c.close() }
            let peer = accepted.receive().value // never reads
            defer { peer?.close() }
            c.setWriteDeadline(.after(.milliseconds(50)))
            let chunk = [UInt8](repeating: 1, count: 1 << 20)
            do {
                for _ in 0..<256 { try c.write(chunk) } // 256 MiB: far more than any socket buffer
                return nil
            } catch {
                return error as? NetError
            }
        }
        #expect(r == .some(.timeout))
    }

    @Test("10,000 concurrent connections (clients in a child process), each answered")
    func tenThousandConnections() async throws {
        // Alone with 2 Ps: the echo server's Gs run outside runG, beside the
        // exit test's child, for as long as it runs.
        try await alone(procs: 2) {
            let n = 10_000
            let l = try startEchoServer()
            setenv("GMP_NET_TEST_PORT", String(l.port), 1)
            setenv("GMP_NET_TEST_CONNS", String(n), 1)
            await #expect(processExitsWith: .success) {
                let port = Int(String(cString: getenv("GMP_NET_TEST_PORT")))!
                let n = Int(String(cString: getenv("GMP_NET_TEST_CONNS")))!
                let ok = GMP.run { () -> Bool in
                    var conns: [Conn] = []
                    for _ in 0..<n {
                        guard let c = try? Conn.dial("127.0.0.1", port) else { return false }
                        conns.append(c)
                    }
                    // All open at once; now every one gets an answer.
                    let bad = Atomic<Int>(0)
                    let wg = WaitGroup(n)
                    for (i, c) in conns.enumerated() {
                        go {
                            defer { wg.done() }
                            let msg = "c\(i)"
                            guard (try? c.write(msg)) != nil else { bad.add(1, ordering: .relaxed); return }
                            var got: [UInt8] = []
                            while got.count < msg.utf8.count, let part = try? c.read(max: 16) { got += part }
                            if String(decoding: got, as: UTF8.self) != msg { bad.add(1, ordering: .relaxed) }
                        }
                    }
                    wg.wait()
                    for c in conns { c.close() }
                    return bad.load(ordering: .relaxed) == 0
                }
                exit(ok ? 0 : 1)
            }
            l.close()
            // The server closed its side of every connection (no fd leak).
            var left = openSockets(port: l.port)
            let deadline = Date().addingTimeInterval(10)
            while left > 0 && Date() < deadline {
                try await Task.sleep(for: .milliseconds(20))
                left = openSockets(port: l.port)
            }
            #expect(left == 0, "sockets left on port \(l.port): \(left): \(fdList())")
        }
    }

    @Test("Out of fds, accept backs off without spinning and without failing, then goes on")
    func acceptOutOfFDs() async {
        await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            let ok = GMP.run { () -> Bool in
                guard let l = try? Listener(port: 0) else { return false }
                // Client sockets made while fds remain; connected after the table is full.
                var clients: [Int32] = []
                for _ in 0..<3 { clients.append(socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)) }
                let accepted = Atomic<Int>(0)
                let done = Chan<Bool>(capacity: 1)
                go {
                    var conns: [Conn] = []
                    while accepted.load(ordering: .relaxed) < 3 {
                        guard let c = try? l.accept() else { done.send(false); return }
                        conns.append(c)
                        accepted.add(1, ordering: .relaxed)
                    }
                    done.send(true)
                }
                // Fill the fd table.
                var lim = rlimit()
                getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
                lim.rlim_cur = 256
                setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
                var fillers: [Int32] = []
                while true {
                    let d = dup(0)
                    if d < 0 { break }
                    fillers.append(d)
                }
                var addr = sockaddr_in()
                addr.sin_family = sa_family_t(AF_INET)
                addr.sin_port = in_port_t(UInt16(l.port).bigEndian)
                addr.sin_addr.s_addr = inet_addr("127.0.0.1")
                for c in clients {
                    _ = withUnsafePointer(to: &addr) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            connect(c, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                        }
                    }
                }
                // 300 ms with no fd to accept into: the acceptor must back off.
                var ru0 = rusage(), ru1 = rusage()
                getrusage(RUSAGE_SELF.rawValue, &ru0)
                GMP.sleep(nanoseconds: 300_000_000)
                getrusage(RUSAGE_SELF.rawValue, &ru1)
                let cpuMs = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) * 1000 + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1000
                    + (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1000 + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1000
                let stillWaiting = accepted.load(ordering: .relaxed) == 0
                // Free fds: the listener goes on and accepts all three.
                for d in fillers { close(d) }
                let finished = done.receive() == .value(true)
                print("cpu_ms=\(cpuMs) waiting=\(stillWaiting) finished=\(finished)")
                return stillWaiting && finished && cpuMs < 150
            }
            exit(ok ? 0 : 1)
        }
    }
}

/// Folds `bytes` into the running hash `h` (the 64 MiB transfer's check).
/// Through a raw pointer, because Array's checked subscript in a debug
/// build made the check itself the slow part of that test.
private func hashBytes(_ h: UInt64, _ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var h = h
    for b in bytes { h = h &* 31 &+ UInt64(b) }
    return h
}

@Suite struct LingeringShutdownTests {
    @Test("lingeringShutdown: what was written arrives whole, then end of stream, though the peer sent input nobody read")
    func writtenArrivesWhole() async throws {
        let listener = try Listener(port: 0)
        defer { listener.close() }
        let r = await runG(procs: 2) { () -> (Int, NetError?)? in
            let total = 256 * 1024
            let served = WaitGroup(1)
            let sent = Chan<Bool>(capacity: 1)
            go {
                defer { served.done() }
                guard let server = try? listener.accept() else { return }
                _ = sent.receive() // the client's bytes are in our receive buffer, unread
                try? server.write([UInt8](repeating: 7, count: total))
                server.lingeringShutdown(timeout: .seconds(5))
                server.close()
            }
            guard let client = try? Conn.dial("127.0.0.1", listener.port) else { return nil }
            defer { client.close() }
            try? client.write([UInt8](repeating: 1, count: 1000)) // never read by the server
            sent.send(true)
            var got = 0
            var end: NetError?
            while true {
                do throws(NetError) { got += try client.read(max: 65536).count } catch {
                    end = error
                    break
                }
            }
            client.close()
            served.wait()
            return (got, end)
        }
        #expect(r??.0 == 256 * 1024)
        #expect(r??.1 == .endOfStream)
    }
}
