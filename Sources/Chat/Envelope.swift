import Synchronization
import WebSocket

// What the server sends a client, in its two formats. The default is a
// small JSON object per line (the envelope); `/ws?format=text` gives
// gorilla's protocol, plain lines, for gorilla's page and clients written
// for it. Several lines queued for one client go out joined by "\n" in one
// frame (of at most 64 KiB, unless one line is longer), in either format
// (gorilla's write pump does so).
//
//   {"type":"message","room":"lobby","seq":12,"time":1733212345678,"from":"ann","text":"hi"}
//       text: "ann: hi" ("hi" without a name)
//   {"type":"ack","room":"lobby","seq":12,"id":"c7"} to the sender, once the message is in the log
//   {"type":"error","id":"c7","outcome":"refused","text":"…"}  or "unknown": the answer to a
//       message that was not stored, or may have been (a retry with the same id is stored once)
//   {"type":"joined","room":"lobby","seq":11}       after the history: live from here (11: the newest then)
//   {"type":"gap","room":"lobby","from":1,"to":40}  since asked for messages no longer kept
//   {"type":"reset","room":"lobby","since":90,"seq":11}  since is past the newest (11; a server that
//       lost its history): forget what you have of the room, its last messages follow
//   {"type":"rooms","rooms":[{"name":"lobby","members":3}]}     text: "rooms: lobby (3)"
//   {"type":"who","room":"lobby","names":["ann"],"anonymous":1} text: "online: ann, 1 without a name"
//   {"type":"private","from":"ann","text":"hi"}      text: "(private) ann: hi"
//   {"type":"info","text":"…"} and {"type":"error","text":"…"}  text: the line itself
//
// A client in the JSON format may send a message as {"id":"c7","text":"hi"}:
// the id (1 to 64 printable ASCII characters) names the message's answer,
// ack or error (`ClientMessage`). Every message of a JSON client gets exactly
// one answer; a refusal by the rate limit can come ahead of the acks of
// earlier messages, so a client pairs them by id. With Redis, a message sent
// again with the same id (and text, from the same name) within 10 minutes is
// stored once, and acked with the first number (RoomRedis.swift).
//
// Acks and "joined" have no text form: gorilla's page would show them. A
// text client gets no history when it joins a room either (gorilla's
// protocol: what is said after it came), unless it asks with `since`.

/// A client's wire format.
public enum ChatFormat: String, Sendable {
    /// The envelope: a JSON object per line (the default).
    case json
    /// gorilla's protocol: plain lines (`?format=text`).
    case text
}

/// Lines for clients, encoded once per format (payload and frames): the
/// hub hands the same object to every write pump. The lines are joined by
/// "\n" into pieces of at most `pieceLimit` bytes (a longer line is a piece
/// of its own), each piece one frame: a batch of 256 long messages is
/// several frames, so no client is sent a frame past what it may take.
final class Prepared: Sendable {
    /// A piece's size, at most (unless one line is longer).
    static let pieceLimit = 64 << 10
    /// The pieces, and all their frames end to end (what a write sends).
    let json: [[UInt8]]
    let jsonWire: [UInt8]
    /// nil: nothing to send a text client.
    let text: [[UInt8]]?
    let textWire: [UInt8]?
    /// For a room's messages as the hub delivers them: when their senders'
    /// read pumps took them (GMP.now; those of this server only), and how
    /// many holders it still has (the hub while it delivers, and each send
    /// buffer it sits in). Whoever lets go last observes each message's
    /// receipt-to-last-write time (Metrics.swift). Empty: nothing to time.
    let receipts: [Int64]
    let holders = Atomic<Int>(1)
    /// How many lines (messages, acks) it holds: for `chat_messages_out_total`.
    let lines: Int

    /// One line in each format.
    convenience init(json: String, text: String?) {
        self.init(jsonLines: [json], textLines: text.map { [$0] })
    }

    /// Lines in each format (nil: none for text clients).
    init(jsonLines: [String], textLines: [String]?, receipts: [Int64] = []) {
        json = Self.pieces(jsonLines)
        jsonWire = Self.wire(json)
        text = textLines.map(Self.pieces)
        textWire = text.map(Self.wire)
        self.receipts = receipts
        lines = jsonLines.count
    }

    private static func pieces(_ lines: [String]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var piece: [UInt8] = []
        for (i, line) in lines.enumerated() {
            let bytes = line.utf8
            if i > 0 && piece.count + 1 + bytes.count > pieceLimit {
                out.append(piece)
                piece = []
            } else if i > 0 {
                piece.append(UInt8(ascii: "\n"))
            }
            piece += bytes
        }
        out.append(piece)
        return out
    }

    private static func wire(_ pieces: [[UInt8]]) -> [UInt8] {
        pieces.reduce(into: []) { $0 += Frame(opcode: .text, payload: $1).encode() }
    }

    /// The pieces for format `f` (nil: nothing for it).
    func payload(_ f: ChatFormat) -> [[UInt8]]? { f == .json ? json : text }
    /// The frames for format `f`, end to end (nil: nothing for it).
    func frame(_ f: ChatFormat) -> [UInt8]? { f == .json ? jsonWire : textWire }

    /// A room's message as a JSON line and as a text line.
    private static func lines(_ e: Entry, room: String) -> (json: String, text: String) {
        var j = "{\"type\":\"message\",\"room\":\(jsonString(room)),\"seq\":\(e.seq),\"time\":\(e.time)"
        if !e.from.isEmpty { j += ",\"from\":\(jsonString(e.from))" }
        j += ",\"text\":\(jsonString(e.text))}"
        return (j, e.from.isEmpty ? e.text : "\(e.from): \(e.text)")
    }

    /// Several messages as one line each, in one object (a batch the hub
    /// delivers, history on a join): one place in a client's send buffer.
    static func messages(_ es: some Collection<Entry>, room: String, receipts: [Int64] = []) -> Prepared {
        let parts = es.map { lines($0, room: room) }
        return Prepared(jsonLines: parts.map(\.json), textLines: parts.map(\.text), receipts: receipts)
    }

    /// The acks of a sender's messages in a batch, one line each, in one object.
    static func acks(room: String, _ acked: [(seq: UInt64, id: String?)]) -> Prepared {
        Prepared(jsonLines: acked.map { ackLine(room: room, seq: $0.seq, id: $0.id) }, textLines: nil)
    }

    /// The ack of a message: its number, and the client's id for it if it gave one.
    static func ack(room: String, seq: UInt64, id: String? = nil) -> Prepared {
        Prepared(json: ackLine(room: room, seq: seq, id: id), text: nil)
    }

    private static func ackLine(room: String, seq: UInt64, id: String?) -> String {
        "{\"type\":\"ack\",\"room\":\(jsonString(room)),\"seq\":\(seq)\(idField(id))}"
    }

    /// The answer to a message that was not stored (`line` starts with
    /// "error: "), naming it by the client's id if it gave one. `unknown`:
    /// it may have been stored after all (Redis did not answer in time); a
    /// retry with the same id is stored at most once.
    static func refusal(_ line: String, id: String?, unknown: Bool = false) -> Prepared {
        let bare = line.hasPrefix("error: ") ? String(line.dropFirst(7)) : line
        let outcome = unknown ? "unknown" : "refused"
        return Prepared(json: "{\"type\":\"error\"\(idField(id)),\"outcome\":\"\(outcome)\",\"text\":\(jsonString(bare))}",
                        text: "error: " + bare)
    }

    /// The answers to a sender's posts of a batch that was not stored (one
    /// line each, naming each by its id), as one object.
    static func refusals(_ line: String, ids: [String?], unknown: Bool) -> Prepared {
        let one = ids.map { refusal(line, id: $0, unknown: unknown) }
        return Prepared(jsonLines: one.map { String(decoding: $0.json[0], as: UTF8.self) },
                        textLines: one.map { String(decoding: $0.text![0], as: UTF8.self) })
    }

    private static func idField(_ id: String?) -> String { id.map { ",\"id\":\(jsonString($0))" } ?? "" }

    static func joined(room: String, seq: UInt64) -> Prepared {
        Prepared(json: "{\"type\":\"joined\",\"room\":\(jsonString(room)),\"seq\":\(seq)}", text: nil)
    }

    static func gap(room: String, from: UInt64, to: UInt64) -> Prepared {
        let line = "messages \(from) to \(to) of \(room) are no longer kept"
        return Prepared(json: "{\"type\":\"gap\",\"room\":\(jsonString(room)),\"from\":\(from),\"to\":\(to)}", text: line)
    }

    static func privateMessage(from: String, text: String) -> Prepared {
        Prepared(json: "{\"type\":\"private\",\"from\":\(jsonString(from)),\"text\":\(jsonString(text))}",
                 text: "(private) \(from): \(text)")
    }

    static func reset(room: String, since: UInt64, newest: UInt64, count: Int) -> Prepared {
        Prepared(json: "{\"type\":\"reset\",\"room\":\(jsonString(room)),\"since\":\(since),\"seq\":\(newest)}",
                 text: "since \(since) is past the newest message of \(room) (\(newest)); here are the last \(count)")
    }

    static func info(_ line: String) -> Prepared {
        Prepared(json: "{\"type\":\"info\",\"text\":\(jsonString(line))}", text: line)
    }

    /// An error line; `line` starts with "error: ", which the JSON form leaves out.
    static func error(_ line: String) -> Prepared {
        let bare = line.hasPrefix("error: ") ? String(line.dropFirst(7)) : line
        return Prepared(json: "{\"type\":\"error\",\"text\":\(jsonString(bare))}", text: "error: " + bare)
    }

    static func rooms(_ list: [(name: String, members: Int)]) -> Prepared {
        let j = list.map { "{\"name\":\(jsonString($0.name)),\"members\":\($0.members)}" }.joined(separator: ",")
        return Prepared(json: "{\"type\":\"rooms\",\"rooms\":[\(j)]}",
                        text: "rooms: " + list.map { "\($0.name) (\($0.members))" }.joined(separator: ", "))
    }

    static func who(room: String, names: [String], anonymous: Int) -> Prepared {
        let j = "{\"type\":\"who\",\"room\":\(jsonString(room)),\"names\":[\(names.map(jsonString).joined(separator: ","))],"
            + "\"anonymous\":\(anonymous)}"
        let t = "online in \(room): " + (names + (anonymous > 0 ? ["\(anonymous) without a name"] : [])).joined(separator: ", ")
        return Prepared(json: j, text: t)
    }
}

/// `s` as a JSON string literal: quotes, backslash and control characters
/// escaped (the rest is UTF-8 as it is).
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.value < 0x20 || u.value == 0x2028 || u.value == 0x2029:
            let hex = String(u.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// A message as a client sent it: its text, and the id its answer echoes.
/// A JSON client may send `{"id":"c7","text":"hi"}` (an object of string
/// values with a "text"; "id", if there, 1 to 64 printable ASCII
/// characters); any other line is the text itself, without an id.
struct ClientMessage: Equatable {
    var text: String
    var id: String?

    init(text: String, id: String? = nil) {
        self.text = text
        self.id = id
    }

    /// Parses a line a client sent in `format`; nil for an object that
    /// claims to be a message but is malformed (a bad id): the answer is an error.
    init?(parsing line: String, format: ChatFormat) {
        guard format == .json, line.utf8.first == UInt8(ascii: "{"),
              let object = Self.flatObject(line), let text = object["text"] else {
            self.init(text: line)
            return
        }
        guard let id = object["id"] else {
            self.init(text: text)
            return
        }
        guard (1...64).contains(id.utf8.count), id.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else { return nil }
        self.init(text: text, id: id)
    }

    /// A JSON object whose values are all strings, read in one pass without
    /// recursion (a client's nesting cannot run a G out of stack); nil for
    /// anything else: another value, a bad escape, a lone surrogate, a raw
    /// control character, bytes after the object. A repeated key: the last.
    static func flatObject(_ line: String) -> [String: String]? {
        let b = Array(line.utf8)
        var i = 0
        func skipSpace() { while i < b.count, b[i] == 0x20 || b[i] == 0x09 || b[i] == 0x0A || b[i] == 0x0D { i += 1 } }
        func hex4() -> UInt32? {
            guard i + 4 <= b.count else { return nil }
            var v: UInt32 = 0
            for k in 0..<4 {
                guard let d = Character(UnicodeScalar(b[i + k])).hexDigitValue else { return nil }
                v = v << 4 | UInt32(d)
            }
            i += 4
            return v
        }
        func string() -> String? {
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { return nil }
            i += 1
            var out: [UInt8] = []
            while i < b.count {
                let c = b[i]
                i += 1
                switch c {
                case UInt8(ascii: "\""):
                    return String(decoding: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard i < b.count else { return nil }
                    let e = b[i]
                    i += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        guard var v = hex4() else { return nil }
                        if (0xD800...0xDBFF).contains(v) { // a surrogate pair
                            guard i + 2 <= b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else { return nil }
                            i += 2
                            guard let low = hex4(), (0xDC00...0xDFFF).contains(low) else { return nil }
                            v = 0x10000 + (v - 0xD800) << 10 + (low - 0xDC00)
                        }
                        guard let scalar = UnicodeScalar(v) else { return nil }
                        out += Array(String(Character(scalar)).utf8)
                    default:
                        return nil
                    }
                case 0..<0x20:
                    return nil
                default:
                    out.append(c)
                }
            }
            return nil
        }
        var object: [String: String] = [:]
        skipSpace()
        guard i < b.count, b[i] == UInt8(ascii: "{") else { return nil }
        i += 1
        skipSpace()
        if i < b.count, b[i] == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                guard let key = string() else { return nil }
                skipSpace()
                guard i < b.count, b[i] == UInt8(ascii: ":") else { return nil }
                i += 1
                skipSpace()
                guard let value = string() else { return nil }
                object[key] = value
                skipSpace()
                guard i < b.count else { return nil }
                if b[i] == UInt8(ascii: "}") {
                    i += 1
                    break
                }
                guard b[i] == UInt8(ascii: ",") else { return nil }
                i += 1
                skipSpace()
            }
        }
        skipSpace()
        return i == b.count ? object : nil
    }
}
