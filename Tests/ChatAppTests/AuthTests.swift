import Chat
import Foundation
import GMP
import GMPTestSupport
import Glibc
import NetPoller
import Testing
import WebSocket

// Signed identities end to end (`--auth-secret FILE`, Server.swift's
// `authenticate`): a ChatApp process that takes only tokens signed with the
// file's bytes, and clients that present good and bad ones.

private let secret = Array("a secret of at least 32 bytes, for the tests".utf8)
private let later = Date(timeIntervalSince1970: 4_102_444_800) // 2100-01-01

/// Writes `secret` (and a line end, as `echo` would) to a file of its own; its path.
private func secretFile(_ bytes: [UInt8] = secret, _ tag: String = "") throws -> String {
    let path = NSTemporaryDirectory() + "chat-secret-\(getpid())\(tag)"
    try Data(bytes + [UInt8(ascii: "\n")]).write(to: URL(fileURLWithPath: path))
    return path
}

private func token(_ name: String, rooms: [String]? = nil, expires: Date = later) -> String {
    mintToken(TokenClaims(name: name, expires: expires, rooms: rooms), secret: secret)
}

/// base64url of `s`, unpadded (a header or payload of a hand-made token).
private func b64url(_ s: String) -> String {
    Data(s.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
}

/// Inside a G: the status line a `/ws` upgrade with `query` is answered
/// with: "101" if it was accepted (the connection is closed again).
private func handshake(_ port: Int, _ query: String) -> String {
    do {
        let ws = try dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?" + query)
        ws.conn.close()
        return "101"
    } catch {
        if case .handshake(let line) = error { return line }
        return "\(error)"
    }
}

@Suite(.serialized) struct AuthTests {
    @Test("With --auth-secret, /ws needs a good token: none, a bad signature, alg none or RS256, expired, malformed, bad base64url, a claim of the wrong type or an oversized one get 401 before the upgrade; a room outside the token's rooms 403; a good token is upgraded")
    func refusals() async throws {
        let file = try secretFile()
        defer { unlink(file) }
        let (app, port) = try startChatApp(extraArguments: ["--auth-secret", file])
        defer { app.terminate(); app.waitUntilExit() }
        let good = token("ann")
        let parts = good.split(separator: ".").map(String.init)
        let cases: [(String, String)] = [
            ("no token", ""),
            ("another secret", "token=" + mintToken(TokenClaims(name: "ann", expires: later), secret: Array("another secret, 32 bytes or more!".utf8))),
            ("signature changed", "token=" + parts[0] + "." + parts[1] + "." + String(parts[2].reversed())),
            ("alg none", "token=" + b64url(#"{"alg":"none"}"#) + "." + parts[1] + "."),
            ("alg RS256", "token=" + signToken(header: #"{"alg":"RS256","typ":"JWT"}"#, payload: #"{"sub":"ann","exp":4102444800}"#, secret: secret)),
            ("expired", "token=" + token("ann", expires: Date(timeIntervalSinceNow: -60))),
            ("two parts", "token=" + parts[0] + "." + parts[1]),
            ("bad base64url", "token=" + parts[0] + "." + parts[1] + "*" + "." + parts[2]),
            ("not an object", "token=" + signToken(header: #"{"alg":"HS256"}"#, payload: "[1,2]", secret: secret)),
            ("exp a string", "token=" + signToken(header: #"{"alg":"HS256"}"#, payload: #"{"sub":"ann","exp":"4102444800"}"#, secret: secret)),
            ("sub not a name", "token=" + signToken(header: #"{"alg":"HS256"}"#, payload: #"{"sub":"a b","exp":4102444800}"#, secret: secret)),
            ("oversized", "token=" + signToken(header: #"{"alg":"HS256"}"#, payload: #"{"sub":"ann","exp":4102444800,"x":""# + String(repeating: "x", count: 5000) + #""}"#, secret: secret)),
            ("a room outside rooms", "room=ops&token=" + token("ann", rooms: ["dev"])),
            ("good", "token=" + good),
            ("good, in a room it may join", "room=dev&token=" + token("ann", rooms: ["dev"])),
            ("good, the lobby is always open", "token=" + token("ann", rooms: ["dev"])),
        ]
        let r = await runG(procs: 2) { cases.map { "\($0.0): \(handshake(port, $0.1).prefix(12))" } }
        #expect(r == [
            "no token: HTTP/1.1 401", "another secret: HTTP/1.1 401", "signature changed: HTTP/1.1 401",
            "alg none: HTTP/1.1 401", "alg RS256: HTTP/1.1 401", "expired: HTTP/1.1 401", "two parts: HTTP/1.1 401",
            "bad base64url: HTTP/1.1 401", "not an object: HTTP/1.1 401", "exp a string: HTTP/1.1 401",
            "sub not a name: HTTP/1.1 401", "oversized: HTTP/1.1 401", "a room outside rooms: HTTP/1.1 403",
            "good: 101", "good, in a room it may join: 101", "good, the lobby is always open: 101",
        ])
        // Still serving after all that (no crash).
        #expect(app.isRunning)
    }

    @Test("With auth on, a client is its token's name: its messages carry it, /nick is refused, /join outside its rooms is refused with an error line, /msg reaches the other user, and a second connection of one user is told private messages go to the first")
    func identity() async throws {
        let file = try secretFile()
        defer { unlink(file) }
        let (app, port) = try startChatApp(extraArguments: ["--auth-secret", file])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> [String]? in
            guard let ann = EnvelopeClient(port: port, query: "token=" + token("ann", rooms: ["dev"])),
                  let bob = EnvelopeClient(port: port, query: "token=" + token("bob")) else { return nil }
            defer { ann.close(); bob.close() }
            guard ann.until({ $0.type == "joined" }) != nil, bob.until({ $0.type == "joined" }) != nil else { return nil }
            var out: [String] = []
            ann.say("hello")
            guard let m = bob.until({ $0.type == "message" })?.last else { return nil }
            out.append("\(m.object["from"] ?? "?"): \(m.text)")
            ann.say("/nick eve")
            guard let e = ann.until({ $0.type == "error" })?.last else { return nil }
            out.append(e.text)
            ann.say("/join ops")
            guard let e2 = ann.until({ $0.type == "error" })?.last else { return nil }
            out.append(e2.text)
            ann.say("/join dev")
            guard let j = ann.until({ $0.type == "joined" || $0.type == "error" })?.last else { return nil }
            out.append("\(j.type) \(j.room)")
            bob.say("/msg ann psst")
            guard let p = ann.until({ $0.type == "private" })?.last else { return nil }
            out.append("private from \(p.object["from"] ?? "?"): \(p.text)")
            // ann again, on a second connection.
            guard let ann2 = EnvelopeClient(port: port, query: "token=" + token("ann")) else { return nil }
            defer { ann2.close() }
            guard let e3 = ann2.until({ $0.type == "error" })?.last else { return nil }
            out.append(e3.text)
            ann2.say("from the second")
            guard let m2 = bob.until({ $0.type == "message" })?.last else { return nil }
            out.append("\(m2.object["from"] ?? "?"): \(m2.text)")
            return out
        }
        #expect(r == [
            "ann: hello",
            "your name is the one your token gives (ann); /nick is off",
            "your token does not let you join ops",
            "joined dev",
            "private from bob: psst",
            "private messages to ann will not reach this connection (the name ann is taken)",
            "ann: from the second",
        ])
    }

    @Test("A secret file that cannot be read, holds under 32 bytes or over 64 KiB, is a clear error (exit 2), by flag and by config key; one line end is dropped; ChatServer refuses a short secret")
    func badSecret() async throws {
        let short = try secretFile(Array("too short".utf8), "-short")
        let config = NSTemporaryDirectory() + "chat-auth-\(getpid()).json"
        try #"{"authSecret": "\#(short)"}"#.write(toFile: config, atomically: true, encoding: .utf8)
        defer { unlink(short); unlink(config) }
        for (args, expected) in [(["--auth-secret", "/nonexistent/secret"], "/nonexistent/secret: cannot read the auth secret"),
                                 (["--auth-secret", short], "the auth secret must hold at least 32 bytes (it has 9)"),
                                 (["--config", config], "the auth secret must hold at least 32 bytes (it has 9)"),
                                 (["--auth-secret"], "--auth-secret needs the path of a file")] {
            let (status, text) = try runChatApp(["--memory", "--addr", "127.0.0.1:0"] + args)
            #expect(status == 2, "\(args)")
            #expect(text.contains(expected), "\(args): \(text)")
        }
        // One "\n" goes (a file written by echo); a "\r" before it is a byte of the secret.
        let crlf = try secretFile(secret + [UInt8(ascii: "\r")], "-crlf")
        defer { unlink(crlf) }
        #expect(try loadAuthSecret(path: crlf) == secret + [UInt8(ascii: "\r")])
        let plain = try secretFile(secret, "-plain")
        defer { unlink(plain) }
        #expect(try loadAuthSecret(path: plain) == secret)
        // A file without end is refused, not read for ever.
        #expect { _ = try loadAuthSecret(path: "/dev/zero") } throws: { "\($0)" == "/dev/zero: the auth secret must hold at most 64 KiB" }
        var bad = ChatConfig()
        bad.port = 0
        bad.authSecret = Array("short".utf8)
        #expect { _ = try ChatServer(config: bad) } throws: { "\($0)" == "authSecret must hold at least 32 bytes, not 5" }
    }
}
