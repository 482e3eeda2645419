import Channels
import Foundation
import GMP
import GMPTestSupport
import Glibc
import NetPoller
import Testing
import WebSocket

/// A client of the JSON envelope (inside a G): the lines of its frames, one
/// JSON object each, read as they come.
final class EnvelopeClient: @unchecked Sendable {
    // @unchecked: used by one G at a time.
    struct Line: CustomStringConvertible {
        let object: [String: Any]
        var type: String { object["type"] as? String ?? "" }
        var seq: UInt64? { (object["seq"] as? NSNumber)?.uint64Value }
        var text: String { object["text"] as? String ?? "" }
        var room: String { object["room"] as? String ?? "" }
        var description: String { "\(object)" }
    }

    let ws: WebSocketConn
    private var pending: [Line] = []
    /// The code of the close frame that ended the connection (after `next`
    /// has returned nil for it); nil before, or if it ended otherwise.
    private(set) var closeCode: UInt16?

    init?(port: Int, query: String = "") {
        guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws" + (query.isEmpty ? "" : "?" + query)) else {
            return nil
        }
        self.ws = ws
        ws.conn.setReadDeadline(.after(.seconds(20)))
    }

    /// The next line; nil when the connection ends (or after 20 s).
    func next() -> Line? {
        while pending.isEmpty {
            let message: Message
            do { message = try ws.receive() } catch {
                if case .closed(let code, _) = error { closeCode = code }
                return nil
            }
            guard case .text(let t) = message else { return nil }
            for part in t.split(separator: "\n") {
                let object = (try? JSONSerialization.jsonObject(with: Data(part.utf8))) as? [String: Any]
                pending.append(Line(object: object ?? ["type": "not JSON", "text": String(part)]))
            }
        }
        return pending.removeFirst()
    }

    /// Lines up to and including the first that `stop` accepts; nil if the connection ends first.
    func until(_ stop: (Line) -> Bool) -> [Line]? {
        var got: [Line] = []
        while let l = next() {
            got.append(l)
            if stop(l) { return got }
        }
        return nil
    }

    func say(_ text: String) { try? ws.send(text: text) }

    func close() { ws.conn.close() }
}

@Suite(.serialized) struct RoomsTests {
    @Test("Rooms: /join moves a client (creating the room), messages stay in their room, /rooms counts, /who is per room, /leave goes back to the lobby, bad names get an error line")
    func rooms() async throws {
        let (app, port) = try startChatApp()
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> [String]? in
            guard let a = EnvelopeClient(port: port), let b = EnvelopeClient(port: port) else { return nil }
            defer { a.close(); b.close() }
            var out: [String] = []
            guard let ja = a.next(), let jb = b.next() else { return nil }
            out.append("\(ja.type) \(ja.room) \(jb.type) \(jb.room)")
            a.say("/nick ann")
            _ = a.until { $0.type == "info" }
            a.say("/join dev")
            guard let joined = a.until({ $0.type == "joined" })?.last else { return nil }
            out.append("a \(joined.type) \(joined.room)")
            b.say("lobby only")
            a.say("dev only")
            guard let inDev = a.until({ $0.type == "message" })?.last, let inLobby = b.until({ $0.type == "message" })?.last else { return nil }
            out.append("a got \(inDev.text) in \(inDev.room); b got \(inLobby.text) in \(inLobby.room)")
            a.say("/rooms")
            guard let rooms = a.until({ $0.type == "rooms" })?.last, let list = rooms.object["rooms"] as? [[String: Any]] else { return nil }
            out.append(list.map { "\($0["name"]!)=\($0["members"]!)" }.joined(separator: ","))
            a.say("/who")
            guard let who = a.until({ $0.type == "who" })?.last else { return nil }
            out.append("who \(who.room) \(who.object["names"] as? [String] ?? []) \(who.object["anonymous"] ?? "")")
            a.say("/join Bad!")
            a.say("/join dev")
            guard let e1 = a.until({ $0.type == "error" })?.last, let e2 = a.until({ $0.type == "error" })?.last else { return nil }
            out += [e1.text, e2.text]
            a.say("/leave")
            // Back in the lobby, ann gets its history (b's message), then "joined", and b's next one.
            guard let back = a.until({ $0.type == "joined" }) else { return nil }
            b.say("welcome back")
            guard let live = a.until({ $0.type == "message" })?.last else { return nil }
            out.append("\(back.last!.room): \(back.filter { $0.type == "message" }.map(\.text)), \(live.text)")
            return out
        }
        #expect(r == [
            "joined lobby joined lobby",
            "a joined dev",
            "a got dev only in dev; b got lobby only in lobby",
            "dev=1,lobby=1",
            "who dev [\"ann\"] 0",
            "usage: /join ROOM (a room name is 1 to 32 characters of a-z, 0-9, _ and -)",
            "you are in dev already",
            "lobby: [\"lobby only\"], welcome back",
        ])
    }

    @Test("Limits: --max-rooms refuses one room more (the lobby aside), an empty room is dropped and frees its place; --joins-per-minute refuses the join after")
    func limits() async throws {
        let (app, port) = try startChatApp(extraArguments: ["--max-rooms", "1", "--joins-per-minute", "3"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> [String]? in
            guard let a = EnvelopeClient(port: port), let b = EnvelopeClient(port: port) else { return nil }
            defer { a.close(); b.close() }
            var out: [String] = []
            guard a.next()?.type == "joined", b.next()?.type == "joined" else { return nil } // the lobby
            a.say("/join one")
            guard let j = a.until({ $0.type == "joined" })?.last else { return nil }
            b.say("/join two")
            guard let e = b.until({ $0.type == "error" })?.last else { return nil }
            out += [j.room, e.text]
            a.say("/leave") // "one" is empty and has no history: dropped
            _ = a.until { $0.type == "joined" }
            b.say("/join two")
            guard let j2 = b.until({ $0.type == "joined" })?.last else { return nil }
            out.append(j2.room)
            a.say("/join two") // a's third join
            _ = a.until { $0.type == "joined" }
            a.say("/leave")
            guard let e2 = a.until({ $0.type == "error" })?.last else { return nil }
            out.append(e2.text)
            return out
        }
        #expect(r == ["one", "too many rooms (at most 1); join one that exists (/rooms)", "two",
                      "too many joins: at most 3 a minute"])
    }

    @Test("History: a joiner gets the room's last --history messages, numbered; the sender gets an ack with each number; ?since=N gets what follows N; a since past the newest says so")
    func historyAndSince() async throws {
        let (app, port) = try startChatApp(extraArguments: ["--history", "3"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> [String]? in
            guard let a = EnvelopeClient(port: port) else { return nil }
            defer { a.close() }
            _ = a.next() // joined
            var acks: [UInt64] = []
            for i in 1...5 {
                a.say("m\(i)")
                guard let lines = a.until({ $0.type == "message" }) else { return nil }
                acks += lines.filter { $0.type == "ack" }.compactMap(\.seq)
            }
            var out = ["acks \(acks)"]
            func lines(_ query: String) -> String? {
                guard let c = EnvelopeClient(port: port, query: query) else { return nil }
                defer { c.close() }
                c.say("/who") // ends what the join brought
                guard let got = c.until({ $0.type == "who" }) else { return nil }
                return got.dropLast().map { $0.type == "message" ? "\($0.seq!):\($0.text)" : "\($0.type) \($0.seq.map(String.init) ?? $0.text)" }
                    .joined(separator: " ")
            }
            for q in ["", "since=3", "since=5", "since=0", "since=9"] {
                guard let l = lines(q) else { return nil }
                out.append(l)
            }
            return out
        }
        #expect(r == [
            "acks [1, 2, 3, 4, 5]",
            "3:m3 4:m4 5:m5 joined 5",
            "4:m4 5:m5 joined 5",
            "joined 5",
            "1:m1 2:m2 3:m3 4:m4 5:m5 joined 5",
            "reset 5 3:m3 4:m4 5:m5 joined 5",
        ])
    }

    @Test("Rooms opened and left in a loop (16 at a time, one address, 300 rooms with a line each) leave the fd count bounded by the idle-room cap; a bystander is served")
    func idleRoomsBounded() async throws {
        // (Each room with history stayed loaded 30 s with its Gs and an open
        // segment: such loops ran the server out of file descriptors.)
        let dir = temporaryDirectory("idle-rooms")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (app, port) = try startChatApp(extraArguments: ["--data-dir", dir, "--stats", "--joins-per-minute", "100000"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2, timeout: 120) { () -> (before: Int, after: Int, opened: Int, bystander: Bool)? in
            guard let bystander = EnvelopeClient(port: port), bystander.until({ $0.type == "joined" }) != nil else { return nil }
            defer { bystander.close() }
            guard let before = serverStats(port)["fds"] else { return nil }
            let opened = Chan<Int>(capacity: 16)
            for w in 0..<16 {
                go {
                    var n = 0
                    for k in stride(from: w, to: 300, by: 16) {
                        guard let c = EnvelopeClient(port: port, query: "room=r\(k)"), c.until({ $0.type == "joined" }) != nil else { continue }
                        c.say("one line")
                        if c.until({ $0.type == "ack" }) != nil { n += 1 }
                        c.close()
                    }
                    opened.send(n)
                }
            }
            var total = 0
            for _ in 0..<16 { total += opened.receive().value ?? 0 }
            // The last connections' sockets may take a moment to go.
            var after = Int.max
            _ = waitFor(seconds: 10, every: 10_000_000) {
                after = serverStats(port)["fds"] ?? Int.max
                return after <= before + 100 + 5
            }
            bystander.say("still here")
            let served = bystander.until({ $0.type == "ack" }) != nil
            return (before, after, total, served)
        }
        guard let got = r ?? nil else { Issue.record("no result"); return }
        #expect(got.opened == 300, "rooms that took a line: \(got.opened)")
        #expect(got.after <= got.before + 100 + 5, "fds went from \(got.before) to \(got.after) (at most 100 idle rooms hold a segment)")
        #expect(got.bystander)
    }

    @Test("An address may open --joins-per-minute rooms that were not loaded a minute, by /ws?room= as by /join: the next is refused (503, or an error line)")
    func roomLoadsPerAddress() async throws {
        let (app, port) = try startChatApp(extraArguments: ["--joins-per-minute", "5"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> (opened: Int, refused: String?, joinRefused: String?)? in
            var opened = 0
            var refused: String?
            for k in 0..<6 {
                do throws(WebSocketError) {
                    let ws = try dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?room=new\(k)")
                    opened += 1
                    ws.conn.close()
                } catch {
                    if case .handshake(let line) = error { refused = line }
                }
            }
            // A fresh connection's /join counts for the address too.
            guard let c = EnvelopeClient(port: port), c.until({ $0.type == "joined" }) != nil else { return nil }
            defer { c.close() }
            c.say("/join another")
            let e = c.until { $0.type == "error" || $0.type == "joined" }?.last
            return (opened, refused, e.map { "\($0.type): \($0.text)" })
        }
        guard let got = r ?? nil else { Issue.record("no result"); return }
        #expect(got.opened == 5)
        #expect(got.refused?.hasPrefix("HTTP/1.1 503") == true, "\(String(describing: got.refused))")
        #expect(got.joinRefused == "error: too many rooms opened from your address (at most 5 a minute); try again later")
    }
}
