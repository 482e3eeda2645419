import Testing
import WebSocket

private func parse(_ s: String, max: Int = 8192) throws(HTTPError) -> (HTTPRequest, Int)? {
    try HTTPRequest.parse(Array(s.utf8)[...], maxHeaderBytes: max)
}

private func status(_ s: String, max: Int = 8192) -> Int? {
    do { _ = try parse(s, max: max); return nil } catch { return error.status.code }
}

private let upgrade = """
    GET /ws HTTP/1.1\r
    Host: localhost:8080\r
    Upgrade: websocket\r
    Connection: keep-alive, Upgrade\r
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
    Sec-WebSocket-Version: 13\r
    Origin: http://localhost:8080\r
    \r

    """

@Suite struct HTTPTests {
    @Test("A request head parses; headers are case-insensitive; keep-alive follows the version")
    func parsesHead() throws {
        let (req, used) = try #require(try parse("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Thing:  v \r\n\r\nBODY"))
        #expect(req.method == "GET" && req.target == "/a?b=1" && req.path == "/a" && req.minorVersion == 1)
        #expect(req.header("x-thing") == "v")
        #expect(used == "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Thing:  v \r\n\r\n".utf8.count)
        #expect(req.keepAlive)
        #expect(try parse("GET / HTTP/1.0\r\n\r\n")?.0.keepAlive == false)
        #expect(try parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?.0.keepAlive == false)
    }

    @Test("Found by fuzzing: a head is cut at bytes, not Characters: white space, colons and slashes before a combining mark count")
    func combiningMarks() throws {
        // " \u{350}" is one Character; the space is still white space around the value.
        let (r, _) = try #require(try parse("GET / HTTP/1.1\r\nHost: x\r\nX: \u{350}v\r\n\r\n"))
        #expect(Array(r.header("x")!.unicodeScalars) == ["\u{350}", "v"])
        // ":\u{301}" is one Character; the colon still ends the name.
        #expect(try parse("GET / HTTP/1.1\r\nHost: x\r\nY:\u{301}z\r\n\r\n")?.0.header("y") == "\u{301}z")
        // "/\u{DD0}" is one Character; the target still starts with "/".
        #expect(try parse("GET /\u{DD0}a HTTP/1.1\r\nHost: x\r\n\r\n")?.0.target == "/\u{DD0}a")
        // A space before a combining mark still separates the request line's words.
        #expect(status("GET / \u{301}HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
    }

    @Test("Incomplete heads ask for more; bad ones get 400, 413, 431, 505")
    func errors() {
        var incomplete = false // parsed without error, but needs more bytes
        do { incomplete = try parse("GET / HTTP/1.1\r\nHost: x\r\n") == nil } catch {}
        #expect(incomplete)
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\n", max: 10) == 431)
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\nX: " + String(repeating: "a", count: 9000) + "\r\n\r\n") == 431)
        #expect(status("GET /\r\n\r\n") == 400)
        #expect(status("get / HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
        #expect(status("GET nopath HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
        #expect(status("GET / HTTP/2.0\r\nHost: x\r\n\r\n") == 505)
        #expect(status("GET / HTTP/1.1\r\n\r\n") == 400) // no Host
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\nBroken header\r\n\r\n") == 400)
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n") == 413)
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n") == 400)
    }

    @Test("Message framing is strict (RFC 9112 sections 3.2, 6): one Host, one decimal Content-Length, no Transfer-Encoding, no control characters")
    func framing() throws {
        let req = "GET / HTTP/1.1\r\nHost: x\r\n"
        // The body is left to the caller: the head's length, and the body's.
        let (r, used) = try #require(try parse(req + "Content-Length: 5\r\n\r\nhello"))
        #expect(r.contentLength == 5 && used == (req + "Content-Length: 5\r\n\r\n").utf8.count)
        #expect(try parse(req + "Content-Length: 007\r\n\r\n")?.0.contentLength == 7) // 1*DIGIT
        #expect(try parse(req + "Content-Length:\t 5 \t\r\n\r\n")?.0.contentLength == 5) // white space around a value is not part of it
        #expect(try parse(req + "\r\n")?.0.contentLength == 0)
        for bad in ["+5", "-0", "-1", "0x5", "5 5", "5,5", "", "5.0", "٥", "Ⅴ", "1e3"] {
            #expect(status(req + "Content-Length: \(bad)\r\n\r\n") == 400, "Content-Length: '\(bad)'")
        }
        #expect(status(req + "Content-Length: 5\r\nContent-Length: 5\r\n\r\n") == 400)
        #expect(status(req + "Content-Length: 5\r\ncontent-length: 6\r\n\r\n") == 400)
        #expect(status(req + "Content-Length: 99999999999999999999999999\r\n\r\n") == 413) // no overflow
        #expect(status(req + "Transfer-Encoding: chunked\r\n\r\n") == 501)
        #expect(status(req + "Transfer-Encoding: identity\r\n\r\n") == 501)
        #expect(status(req + "transfer-encoding: chunked\r\nContent-Length: 5\r\n\r\n") == 501)
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n") == 400)
        #expect(status("GET / HTTP/1.0\r\nHost: x\r\nhost: x\r\n\r\n") == 400)
        #expect(try parse("GET / HTTP/1.0\r\n\r\n") != nil) // 1.0 needs no Host
        // Bare CR or LF (another parser may end a line there), NUL, other controls.
        for bad in ["X: a\nHost: y", "X: a\rb", "X: a\u{0}b", "X: a\u{1B}b", "X: a\u{7F}b"] {
            #expect(status(req + bad + "\r\n\r\n") == 400, "\(bad.debugDescription)")
        }
        #expect(try parse(req + "X: a\tb\r\n\r\n")?.0.header("X") == "a\tb")
        // No space before the colon, no folded line, ASCII token names.
        #expect(status(req + "Content-Length : 5\r\n\r\n") == 400)
        #expect(status(req + "X: a\r\n b\r\n\r\n") == 400)
        #expect(status(req + "Hóst: x\r\n\r\n") == 400)
        #expect(status("GÉT / HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
    }

    @Test("Responses encode with Content-Length")
    func response() {
        let r = HTTPResponse(status: .notFound, headers: [("Content-Type", "text/plain")], body: Array("no".utf8))
        #expect(String(decoding: r.encode(), as: UTF8.self)
                == "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nno")
    }
}

@Suite struct HandshakeTests {
    @Test("A valid upgrade gets 101 with RFC 6455's accept value")
    func accepts() throws {
        let (req, _) = try #require(try parse(upgrade))
        let r = try acceptWebSocket(req)
        #expect(r.status == .switchingProtocols)
        #expect(r.headers.contains { $0.name == "Sec-WebSocket-Accept" && $0.value == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" })
        #expect(String(decoding: r.encode(), as: UTF8.self).hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
    }

    @Test("Bad upgrades: 405, 400, 426 with the version, 403 for a foreign origin")
    func rejects() throws {
        func code(_ s: String, _ origins: OriginPolicy = .sameHost) throws -> Int? {
            let (req, _) = try #require(try parse(s))
            do { _ = try acceptWebSocket(req, origins: origins); return nil } catch { return error.status.code }
        }
        #expect(try code(upgrade.replacingFirst("GET", with: "POST")) == 405)
        #expect(try code(upgrade.replacingFirst("Upgrade: websocket", with: "Upgrade: h2c")) == 400)
        #expect(try code(upgrade.replacingFirst("keep-alive, Upgrade", with: "keep-alive")) == 400)
        #expect(try code(upgrade.replacingFirst("dGhlIHNhbXBsZSBub25jZQ==", with: "c2hvcnQ=")) == 400)
        #expect(try code(upgrade.replacingFirst("Version: 13", with: "Version: 8")) == 426)
        // A body on the upgrade: the bytes after the head are frames.
        #expect(try code(upgrade.replacingFirst("Version: 13", with: "Version: 13\r\nContent-Length: 5")) == 400)
        #expect(try code(upgrade.replacingFirst("Version: 13", with: "Version: 13\r\nContent-Length: 0")) == nil)
        #expect(try code(upgrade.replacingFirst("http://localhost:8080", with: "http://evil.example")) == 403)
        #expect(try code(upgrade.replacingFirst("http://localhost:8080", with: "http://evil.example"), .any) == nil)
        #expect(try code(upgrade.replacingFirst("http://localhost:8080", with: "http://ok.example"),
                         .allow(["http://ok.example"])) == nil)
        let r = rejectWebSocket(HTTPError(status: .upgradeRequired, detail: "version 13 only"))
        #expect(r.headers.contains { $0.name == "Sec-WebSocket-Version" && $0.value == "13" })
    }
}

extension String {
    /// `self` with the first occurrence of `a` replaced by `b`.
    func replacingFirst(_ a: String, with b: String) -> String {
        guard let r = firstRange(of: a) else { return self }
        var s = self
        s.replaceSubrange(r, with: b)
        return s
    }
}
