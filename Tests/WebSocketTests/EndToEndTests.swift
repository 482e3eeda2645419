import Channels
import GMP
import GMPTestSupport
import NetPoller
import Synchronization
import Testing
import WebSocket

/// A WebSocket echo server: each message back, until the peer closes.
/// Reports how each connection ended on `ends`.
func startWebSocketEcho(readLimit: Int = 1 << 16, ends: Chan<WebSocketError>? = nil) throws -> Listener {
    let l = try Listener(port: 0)
    go {
        while let c = try? l.accept() {
            go {
                defer { c.close() }
                guard let ws = try? upgradeToWebSocket(c, origins: .any, readLimit: readLimit) else { return }
                while true {
                    do throws(WebSocketError) {
                        switch try ws.receive() {
                        case .text(let t): try ws.send(text: t)
                        case .binary(let b): try ws.send(binary: b)
                        }
                    } catch {
                        _ = ends?.trySend(error)
                        return
                    }
                }
            }
        }
    }
    return l
}

/// Reads frames until a close frame; returns its code.
func closeCode(_ ws: WebSocketConn) -> UInt16? {
    do {
        while true { _ = try ws.receive() }
    } catch {
        if case .closed(let code, _) = error { return code }
        return nil
    }
}

@Suite(.serialized)
struct EndToEndTests {
    @Test("Text, binary, fragmented messages, ping/pong and the close handshake, with our client")
    func roundTrips() async {
        let ok = await runG(procs: 2) { () -> Bool in
            let ends = Chan<WebSocketError>(capacity: 4)
            guard let l = try? startWebSocketEcho(readLimit: 1 << 20, ends: ends) else { return false }
            defer { l.close() }
            guard let ws = try? dialWebSocket(host: "127.0.0.1", port: l.port) else { return false }
            defer { ws.conn.close() }
            let pongs = Atomic<Int>(0)
            ws.onPong = { p in if p == Array("hi".utf8) { pongs.add(1, ordering: .relaxed) } }
            do {
                try ws.send(text: "héllo")
                guard try ws.receive() == .text("héllo") else { return false }
                try ws.send(binary: [0, 1, 2, 255])
                guard try ws.receive() == .binary([0, 1, 2, 255]) else { return false }
                // Fragmented, with a ping between the fragments.
                try ws.send(Frame(fin: false, opcode: .text, payload: Array("frag".utf8)))
                try ws.send(Frame(opcode: .ping, payload: Array("hi".utf8)))
                try ws.send(Frame(fin: true, opcode: .continuation, payload: Array("ment".utf8)))
                guard try ws.receive() == .text("fragment") else { return false }
                // 16-bit and 64-bit lengths.
                let big = [UInt8](repeating: 7, count: 70_000)
                try ws.send(binary: big)
                guard try ws.receive() == .binary(big) else { return false }
            } catch {
                print("roundTrips failed: \(error)")
                return false
            }
            // Our pong came back once we read on (it arrived before the "fragment" echo).
            guard pongs.load(ordering: .relaxed) == 1 else { return false }
            try? ws.close(code: 1000, reason: "bye")
            // The server answers the close, and its receive reports our code.
            guard closeCode(ws) == 1000, case .value(.closed(1000, "bye")) = ends.receive() else { return false }
            return true
        }
        #expect(ok == true)
    }

    @Test("Protocol errors close with the right codes: 1007 bad UTF-8, 1009 too big, 1002 unmasked")
    func protocolErrors() async {
        let codes = await runG(procs: 2) { () -> [UInt16?] in
            guard let l = try? startWebSocketEcho(readLimit: 512) else { return [] }
            defer { l.close() }
            var out: [UInt16?] = []
            // Invalid UTF-8 in a text message.
            if let ws = try? dialWebSocket(host: "127.0.0.1", port: l.port) {
                try? ws.send(Frame(opcode: .text, payload: [0xC3, 0x28]))
                out.append(closeCode(ws))
                ws.conn.close()
            }
            // Over the read limit.
            if let ws = try? dialWebSocket(host: "127.0.0.1", port: l.port) {
                try? ws.send(binary: [UInt8](repeating: 1, count: 600))
                out.append(closeCode(ws))
                ws.conn.close()
            }
            // An unmasked frame from a client, written raw.
            if let ws = try? dialWebSocket(host: "127.0.0.1", port: l.port) {
                try? ws.conn.write(Frame(opcode: .text, payload: Array("x".utf8)).encode())
                out.append(closeCode(ws))
                ws.conn.close()
            }
            return out
        }
        #expect(codes == [1007, 1009, 1002])
    }

    @Test("A close code that may not be sent (1005, 1006, 1015, 0, 999, 1004, 1016, 2999, 5000, 65535) fails the connection with 1002; valid ones are echoed")
    func closeCodes() async {
        let invalid: [UInt16] = [1005, 1006, 1015, 0, 999, 1004, 1016, 2999, 5000, 65535]
        let valid: [UInt16] = [1000, 1001, 1002, 1003, 1007, 1010, 1011, 1012, 1014, 3000, 4999]
        let r = await runG(procs: 2) { () -> ([UInt16?], [WebSocketError?])? in
            let ends = Chan<WebSocketError>(capacity: 32)
            guard let l = try? startWebSocketEcho(ends: ends) else { return nil }
            defer { l.close() }
            var answers: [UInt16?] = []
            var serverSaw: [WebSocketError?] = []
            for code in invalid + valid {
                guard let ws = try? dialWebSocket(host: "127.0.0.1", port: l.port) else { return nil }
                // Written as a raw frame: our own close(code:) would not send 1005.
                try? ws.send(Frame(opcode: .close, payload: [UInt8(code >> 8), UInt8(truncatingIfNeeded: code)]))
                answers.append(closeCode(ws))
                ws.conn.close()
                serverSaw.append(ends.receive().value)
            }
            return (answers, serverSaw)
        }
        guard let (answers, serverSaw) = r ?? nil else {
            Issue.record("no answers")
            return
        }
        let expected: [UInt16?] = invalid.map { _ in 1002 } + valid.map { $0 }
        #expect(answers == expected)
        for (code, e) in zip(invalid + valid, serverSaw) {
            let expected: UInt16 = invalid.contains(code) ? 1002 : code
            guard case .closed(let c, _)? = e, c == expected else {
                Issue.record("close code \(code): the server's receive ended with \(String(describing: e))")
                continue
            }
        }
    }

    @Test("close(code:reason:) cuts a long reason at a character boundary (valid UTF-8) and sends 1005 as no code at all")
    func closeFrames() async {
        let r = await runG(procs: 2) { () -> ([WebSocketError?])? in
            let ends = Chan<WebSocketError>(capacity: 4)
            guard let l = try? startWebSocketEcho(ends: ends) else { return nil }
            defer { l.close() }
            var out: [WebSocketError?] = []
            for (code, reason) in [(UInt16(4000), String(repeating: "é", count: 100)), (1005, "ignored")] {
                guard let ws = try? dialWebSocket(host: "127.0.0.1", port: l.port) else { return nil }
                try? ws.close(code: code, reason: reason)
                _ = closeCode(ws)
                ws.conn.close()
                out.append(ends.receive().value)
            }
            return out
        }
        // 123 bytes of reason hold 61 "é" (2 bytes each); no body reads as 1005.
        let ends = r ?? nil
        #expect(ends?.first == .closed(code: 4000, reason: String(repeating: "é", count: 61)))
        #expect(ends?.last == .closed(code: 1005, reason: ""))
    }

    @Test("writeTimeout bounds every write: a peer that sends pings and never reads ends the reader's receive with a time-out")
    func writeTimeoutBoundsPongs() async {
        let r = await runG(procs: 2, timeout: 30) { () -> WebSocketError? in
            guard let l = try? Listener(port: 0) else { return nil }
            defer { l.close() }
            let ended = Chan<WebSocketError?>(capacity: 1)
            go {
                guard let c = try? l.accept(), let ws = try? upgradeToWebSocket(c, origins: .any) else {
                    ended.send(nil)
                    return
                }
                defer { c.close() }
                ws.writeTimeout = .milliseconds(200)
                do throws(WebSocketError) {
                    while true { _ = try ws.receive() } // answers each ping with a pong
                } catch {
                    ended.send(error)
                }
            }
            guard let client = try? dialWebSocket(host: "127.0.0.1", port: l.port) else { return nil }
            defer { client.conn.close() }
            let ping = Frame(opcode: .ping, payload: [UInt8](repeating: 1, count: 125)).encode(mask: [1, 2, 3, 4])
            var flood: [UInt8] = []
            // 25 MB of pongs to answer: far more than the socket buffers hold
            // (4 MB for the sender at most, here). (A small SO_RCVBUF set
            // after connecting would not help: the window already offered
            // is larger, the kernel drops what does not fit, and the
            // connection stalls in retransmission back-off instead.)
            for _ in 0..<200_000 { flood += ping }
            let pings = flood
            go {
                client.conn.setWriteDeadline(.after(.seconds(30)))
                try? client.conn.write(pings)
            }
            var result: WebSocketError?
            select { s in
                if let v = s.receive(ended) { result = v.value ?? nil }
                if s.timeout(after: .seconds(10)) { result = nil }
            }
            return result
        }
        #expect(r == .transport(.timeout))
    }

    @Test("A bad handshake gets its HTTP status: 426 names version 13; a non-GET gets 405")
    func badHandshake() async {
        let replies = await runG(procs: 2) { () -> [String] in
            guard let l = try? startWebSocketEcho() else { return [] }
            defer { l.close() }
            var out: [String] = []
            for req in [
                "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
                "GARBAGE\r\n\r\n",
            ] {
                guard let c = try? Conn.dial("127.0.0.1", l.port) else { return [] }
                try? c.write(req)
                var got: [UInt8] = []
                while let part = try? c.read(max: 4096) { got += part }
                c.close()
                out.append(String(decoding: got, as: UTF8.self))
            }
            return out
        }
        guard let replies, replies.count == 3 else {
            Issue.record("no replies")
            return
        }
        #expect(replies[0].hasPrefix("HTTP/1.1 426 Upgrade Required\r\n"))
        #expect(replies[0].contains("Sec-WebSocket-Version: 13\r\n"))
        #expect(replies[1].hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
        #expect(replies[2].hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
    }
}
