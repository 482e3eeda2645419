import Channels
import Foundation
import GMP
import GMPTestSupport
import NetPoller
import Testing
import WebSocket

// RFC 6455 sections 5 and 7, MUST by MUST, on the assembler (the reader's
// logic without sockets) and on both ends of a connection.

private func text(_ s: String, fin: Bool = true) -> Frame { Frame(fin: fin, opcode: .text, payload: Array(s.utf8)) }
private func cont(_ b: [UInt8], fin: Bool = true) -> Frame { Frame(fin: fin, opcode: .continuation, payload: b) }

/// Pushes frames; returns the events, or the close code of the first error.
private func assemble(_ frames: [Frame], readLimit: Int = 1 << 20) -> ([MessageAssembler.Event?], CloseCode?) {
    var a = MessageAssembler(readLimit: readLimit)
    var events: [MessageAssembler.Event?] = []
    for f in frames {
        do { events.append(try a.push(f)) } catch { return (events, error.code) }
    }
    return (events, nil)
}

@Suite struct AssemblerTests {
    @Test("5.4: control frames between the fragments of a message are handled at once; the message is the fragments joined")
    func controlInsideMessage() {
        let (events, err) = assemble([text("frag", fin: false), Frame(opcode: .ping, payload: [1]),
                                      Frame(opcode: .pong, payload: [2]), cont(Array("men".utf8), fin: false),
                                      cont(Array("t".utf8))])
        #expect(err == nil)
        #expect(events == [nil, .ping([1]), .pong([2]), nil, .message(.text("fragment"))])
    }

    @Test("5.4: a new data frame inside a fragmented message, or a continuation outside one, fails with 1002")
    func interleaving() {
        #expect(assemble([text("a", fin: false), text("b")]).1 == .protocolError)
        #expect(assemble([text("a", fin: false), Frame(opcode: .binary, payload: [1])]).1 == .protocolError)
        #expect(assemble([cont([1])]).1 == .protocolError)
        #expect(assemble([text("a"), cont([1])]).1 == .protocolError)
    }

    @Test("5.6, 8.1: text is checked as a whole message, so a character split between fragments is fine; invalid UTF-8 fails with 1007")
    func utf8() {
        let euro = Array("€".utf8) // E2 82 AC
        let (events, err) = assemble([Frame(fin: false, opcode: .text, payload: [euro[0]]), cont([euro[1], euro[2]])])
        #expect(err == nil)
        #expect(events.last == .message(.text("€")))
        #expect(assemble([Frame(opcode: .text, payload: [0xC3, 0x28])]).1 == .invalidPayload)
        #expect(assemble([Frame(opcode: .text, payload: [0xED, 0xA0, 0x80])]).1 == .invalidPayload) // a surrogate
        #expect(assemble([Frame(fin: false, opcode: .text, payload: [0xE2, 0x82]), cont([])]).1 == .invalidPayload)
        // Binary is not checked.
        #expect(assemble([Frame(opcode: .binary, payload: [0xFF])]).0 == [.message(.binary([0xFF]))])
    }

    @Test("10.4: a message over the read limit fails with 1009, across fragments too; one at the limit passes")
    func readLimit() {
        #expect(assemble([text("abcd", fin: false), cont(Array("ef".utf8))], readLimit: 5).1 == .messageTooBig)
        #expect(assemble([text("abc", fin: false), cont(Array("de".utf8))], readLimit: 5).0.last == .message(.text("abcde")))
    }

    @Test("5.5.1, 7.4: a close payload is empty (1005 reported) or a code that may be sent and a UTF-8 reason")
    func closePayloads() throws {
        #expect(try ClosePayload(parsing: []) == ClosePayload(code: nil))
        #expect(try ClosePayload(parsing: [0x03, 0xE8] + Array("bye".utf8)) == ClosePayload(code: 1000, reason: "bye"))
        #expect(throws: FrameError(code: .protocolError, reason: "close payload of 1 byte")) { try ClosePayload(parsing: [0x03]) }
        for code: UInt16 in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            #expect(throws: FrameError.self) { try ClosePayload(parsing: [UInt8(code >> 8), UInt8(code & 0xFF)]) }
            #expect((try? ClosePayload(parsing: [UInt8(code >> 8), UInt8(code & 0xFF)])) == nil, "code \(code) taken")
        }
        for code: UInt16 in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999] {
            #expect(try ClosePayload(parsing: [UInt8(code >> 8), UInt8(code & 0xFF)]).code == code)
        }
        #expect(assemble([Frame(opcode: .close, payload: [0x03, 0xE8, 0xC3, 0x28])]).1 == .invalidPayload)
        // Encoded: the reason is cut at a scalar boundary to fit 125 bytes.
        let long = ClosePayload(code: 4000, reason: String(repeating: "é", count: 100)).encode()
        #expect(long.count == 124 && String(validating: long[2...], as: UTF8.self) != nil)
    }
}

/// A server end and a client end of one WebSocket over loopback.
private func pair() throws -> (server: WebSocketConn, client: WebSocketConn, listener: Listener) {
    let l = try Listener(port: 0)
    let accepted = Chan<WebSocketConn?>(capacity: 1)
    go {
        guard let c = try? l.accept() else { accepted.send(nil); return }
        accepted.send(try? upgradeToWebSocket(c, origins: .any))
    }
    let client = try dialWebSocket(host: "127.0.0.1", port: l.port)
    guard case .value(let s?) = accepted.receive() else { throw WebSocketError.handshake("no server end") }
    return (s, client, l)
}

/// The whole frames at the start of `bytes`, raw: (first header byte, mask
/// key or nil, payload length). A frame cut short ends the list.
private func rawFrames(_ bytes: [UInt8]) -> [(b0: UInt8, mask: [UInt8]?, length: Int)] {
    var out: [(UInt8, [UInt8]?, Int)] = []
    var i = 0
    while i + 2 <= bytes.count {
        var n = Int(bytes[i + 1] & 0x7F), off = i + 2
        if n == 126 {
            guard off + 2 <= bytes.count else { break }
            n = Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
            off += 2
        } else if n == 127 {
            break // not sent by these tests
        }
        let masked = bytes[i + 1] & 0x80 != 0
        guard off + (masked ? 4 : 0) + n <= bytes.count else { break }
        let mask = masked ? Array(bytes[off..<(off + 4)]) : nil
        if masked { off += 4 }
        out.append((bytes[i], mask, n))
        i = off + n
    }
    return out
}

@Suite(.serialized) struct ConnectionRFCTests {
    @Test("5.3: a client masks every frame, with keys that differ; 5.1: a server masks none")
    func masking() async {
        let r = await runG(procs: 2) { () -> (Int, Int, Int, Bool)? in
            guard let (server, client, l) = try? pair() else { return nil }
            defer { l.close(); server.conn.close(); client.conn.close() }
            let n = 64
            for i in 0..<n { try? client.send(text: "m\(i)") }
            var got: [UInt8] = []
            while rawFrames(got).count < n, let b = try? server.conn.read(max: 65536) { got += b }
            let frames = rawFrames(got)
            let masked = frames.filter { $0.mask != nil }.count
            let keys = Set(frames.compactMap { $0.mask })
            // The other way: the server's frames reach the client unmasked.
            try? server.send(text: "hello")
            let back = (try? client.conn.read(max: 64)) ?? []
            let serverMasked = rawFrames(back).first?.mask != nil
            return (frames.count, masked, keys.count, serverMasked)
        }
        guard let (count, masked, keys, serverMasked) = r ?? nil else {
            Issue.record("no connection")
            return
        }
        #expect(count == 64 && masked == 64)
        #expect(keys >= 60, "only \(keys) distinct masking keys in 64 frames")
        #expect(!serverMasked)
    }

    @Test("5.1: a client that gets a masked frame fails the connection with 1002")
    func clientRefusesMaskedFrames() async {
        let r = await runG(procs: 2) { () -> (WebSocketError?, UInt16?)? in
            guard let (server, client, l) = try? pair() else { return nil }
            defer { l.close(); server.conn.close(); client.conn.close() }
            try? server.conn.write(Frame(opcode: .text, payload: Array("x".utf8)).encode(mask: [1, 2, 3, 4]))
            var clientError: WebSocketError?
            do throws(WebSocketError) { _ = try client.receive() } catch { clientError = error }
            return (clientError, closeCode(server))
        }
        guard let (clientError, serverGot) = r ?? nil else {
            Issue.record("no connection")
            return
        }
        guard case .closed(1002, _)? = clientError else {
            Issue.record("the client's receive ended with \(String(describing: clientError))")
            return
        }
        #expect(serverGot == 1002)
    }

    @Test("5.5.1: after its close frame an endpoint sends no data frame (refused with .closed), a control frame still goes")
    func noDataAfterClose() async {
        let r = await runG(procs: 2) { () -> (WebSocketError?, WebSocketError?, Bool, [UInt8])? in
            guard let (server, client, l) = try? pair() else { return nil }
            defer { l.close(); server.conn.close(); client.conn.close() }
            try? server.close(code: 4001, reason: "done")
            var textError: WebSocketError?, preparedError: WebSocketError?
            do throws(WebSocketError) { try server.send(text: "late") } catch { textError = error }
            do throws(WebSocketError) { try server.sendEncoded(Frame(opcode: .binary, payload: [1]).encode()) } catch { preparedError = error }
            let pongSent = (try? server.send(Frame(opcode: .pong, payload: []))) != nil
            // What reached the client: the close frame, then the pong, no data.
            var got: [UInt8] = []
            while rawFrames(got).count < 2, let b = try? client.conn.read(max: 1024) { got += b }
            return (textError, preparedError, pongSent, rawFrames(got).map { $0.b0 & 0x0F })
        }
        guard let (textError, preparedError, pongSent, opcodes) = r ?? nil else {
            Issue.record("no connection")
            return
        }
        #expect(textError == .closed(code: 4001, reason: "a close frame was sent: no more data"))
        #expect(preparedError == .closed(code: 4001, reason: "a close frame was sent: no more data"))
        #expect(pongSent)
        #expect(opcodes == [0x8, 0xA])
    }

    @Test("7.1.1, 7.1.7: a server shuts its side of TCP after the close handshake, and either end after failing: the peer reads the close frame, then end of stream")
    func tcpClosedAfterClose() async {
        let r = await runG(procs: 2) { () -> ([UInt8], NetError?, [UInt8], NetError?, [UInt8], NetError?)? in
            // The handshake: the client closes, the server answers and shuts down.
            guard let (server, client, l) = try? pair() else { return nil }
            defer { l.close(); server.conn.close(); client.conn.close() }
            try? client.close(code: 1000)
            guard case .closed(1000, _)? = { () -> WebSocketError? in
                do throws(WebSocketError) { _ = try server.receive(); return nil } catch { return error }
            }() else { return nil }
            func drain(_ c: Conn) -> ([UInt8], NetError?) {
                c.setReadDeadline(.after(.seconds(10)))
                var got: [UInt8] = []
                while true {
                    do throws(NetError) { got += try c.read(max: 1024) } catch { return (got, error) }
                }
            }
            let (echo, end) = drain(client.conn)
            // Failing: the client sends text that is not UTF-8; the server fails it.
            guard let (server2, client2, l2) = try? pair() else { return nil }
            defer { l2.close(); server2.conn.close(); client2.conn.close() }
            try? client2.send(Frame(opcode: .text, payload: [0xC3, 0x28]))
            _ = try? server2.receive()
            let (failure, end2) = drain(client2.conn)
            // And a failing client: the server sends a masked frame.
            guard let (server3, client3, l3) = try? pair() else { return nil }
            defer { l3.close(); server3.conn.close(); client3.conn.close() }
            try? server3.conn.write(Frame(opcode: .text, payload: [1]).encode(mask: [1, 2, 3, 4]))
            _ = try? client3.receive()
            let (clientFailure, end3) = drain(server3.conn)
            return (echo, end, failure, end2, clientFailure, end3)
        }
        guard let (echo, end, failure, end2, clientFailure, end3) = r ?? nil else {
            Issue.record("no connection")
            return
        }
        #expect(rawFrames(echo).map { $0.b0 } == [0x88] && end == .endOfStream, "after the handshake: \(echo), \(String(describing: end))")
        #expect(rawFrames(failure).map { $0.b0 } == [0x88] && Array(failure.suffix(from: 2).prefix(2)) == [0x03, 0xEF],
                "after failing: \(failure)")
        #expect(end2 == .endOfStream)
        // 1002 from the client, masked as a client's frames are.
        let f = rawFrames(clientFailure)
        #expect(f.map { $0.b0 } == [0x88] && f.first?.mask != nil && end3 == .endOfStream, "client failing: \(clientFailure)")
    }

    @Test("7.4.1: close(code:) refuses codes only for reports (1006, 1015) and reserved ones", arguments: [1006, 1015, 1004, 999, 2000, 5000])
    func unsendableCloseCode(_ code: Int) async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) { [code] in
            let c = UInt16(code)
            _ = runG(procs: 1) { () -> Bool in
                guard let (server, client, l) = try? pair() else { return false }
                defer { l.close(); server.conn.close(); client.conn.close() }
                try? server.close(code: c)
                return true
            }
        }
        let err = String(decoding: r?.standardErrorContent ?? [], as: UTF8.self)
        #expect(err.contains("close code \(code) may not be sent (RFC 6455 section 7.4)"), "stderr: \(err)")
    }

    @Test("5.1: prepared bytes masked the wrong way for their side are never sent", arguments: [true, false])
    func wrongMasking(_ fromServer: Bool) async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) { [fromServer] in
            _ = runG(procs: 1) { () -> Bool in
                guard let (server, client, l) = try? pair() else { return false }
                defer { l.close(); server.conn.close(); client.conn.close() }
                let frame = Frame(opcode: .text, payload: [1])
                if fromServer {
                    try? server.sendEncoded(frame.encode(mask: [1, 2, 3, 4]))
                } else {
                    try? client.sendEncoded(frame.encode())
                }
                return true
            }
        }
        let err = String(decoding: r?.standardErrorContent ?? [], as: UTF8.self)
        #expect(err.contains(fromServer ? "a server must not mask its frames" : "a client must mask its frames"), "stderr: \(err)")
    }

    @Test("5.5: a control frame over 125 bytes is never sent")
    func longControlFrame() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = runG(procs: 1) { () -> Bool in
                guard let (server, client, l) = try? pair() else { return false }
                defer { l.close(); server.conn.close(); client.conn.close() }
                try? client.send(Frame(opcode: .ping, payload: [UInt8](repeating: 0, count: 126)))
                return true
            }
        }
        let err = String(decoding: r?.standardErrorContent ?? [], as: UTF8.self)
        #expect(err.contains("at most 125 bytes"), "stderr: \(err)")
    }
}
