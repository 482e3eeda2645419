// The chat's command lines: a message that starts with "/" is a command,
// not a broadcast. Parsing is separate from running (the client's read pump
// in Server.swift, the directory G in Directory.swift, the room's hub G in
// Room.swift), so that what a stranger may type is checked in one place,
// and fuzzed.
//
// Names are compared as bytes where they leave the process (Redis keys,
// with several nodes) and as Swift strings (canonical equivalence) inside
// it, so a name is put in one form as it is parsed: Unicode's NFC, for
// `/nick` and `/msg` alike. Two spellings of "café" are one name, and one
// key. A name is also visible: no control, format (zero-width, bidi
// override), separator, private-use or unassigned scalar, and it does not
// start with a combining mark or anything else that joins the character
// before it (an emoji modifier).
import Foundation

/// A command line, parsed.
public enum ChatCommand: Equatable, Sendable {
    /// `/nick NAME`: NAME is one word of 1 to 32 visible characters without
    /// ":" (`isName`), in NFC.
    case nick(String)
    /// `/who`: who is in the current room (anything after it is ignored).
    case who
    /// `/join ROOM`: moves to ROOM (creating it); a name is `isRoomName`.
    case join(String)
    /// `/leave`: back to the lobby (anything after it is ignored).
    case leave
    /// `/rooms`: the rooms and their member counts.
    case rooms
    /// `/msg NAME TEXT`: a private message; TEXT is the rest of the line.
    case msg(to: String, text: String)
    /// `/help`.
    case help
    /// A known command used wrongly: the line to reply with.
    case usage(String)
    /// An unknown command: its first word.
    case unknown(String)

    /// The longest name `/nick` takes, in characters.
    public static let maxNameLength = 32

    /// Whether `name` (in NFC) is one `/nick` takes: 1 to `maxNameLength`
    /// characters, at most 4 bytes of UTF-8 each on average (so a character
    /// piled with combining marks cannot make a long key), no ":" (the
    /// text format's separator) and nothing invisible (see the top of the file).
    static func isName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.count <= maxNameLength,
              name.utf8.count <= 4 * maxNameLength else { return false }
        // (What joins the character before it: after "/nick " it would be the space's.)
        if first.properties.isGraphemeExtend || first.properties.isEmojiModifier { return false }
        switch first.properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark: return false
        default: break
        }
        for u in name.unicodeScalars {
            if u == ":" || u == " " { return false }
            switch u.properties.generalCategory {
            case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator, .spaceSeparator:
                return false
            default: continue
            }
        }
        return true
    }

    /// The room every client starts in.
    public static let lobby = "lobby"

    /// Whether `s` is a room name: 1 to 32 of a-z, 0-9, "_" and "-" (so
    /// also a safe directory name for the room's history).
    public static func isRoomName(_ s: some StringProtocol) -> Bool {
        let u = s.utf8
        return (1...32).contains(u.count) && u.allSatisfy {
            ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
                || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-")
        }
    }

    /// What a room name is, for error lines.
    public static let roomNameRule = "a room name is 1 to 32 characters of a-z, 0-9, _ and -"

    /// The reply to `/help`.
    public static let helpLine = "commands: /join ROOM, /leave, /rooms, /who, /nick NAME, /msg NAME TEXT, /help"

    /// Parses `line`; nil if it is not a command (does not start with "/").
    /// Words are separated by runs of spaces. Cut at Unicode scalars, not
    /// Characters: a space that a combining mark follows still separates.
    public init?(parsing line: String) {
        let scalars = line.unicodeScalars
        guard scalars.first == "/" else { return nil }
        // At most three parts: the command, a word, and the rest of the line
        // (from its first scalar that is not a space).
        var parts: [String] = []
        var i = scalars.startIndex
        while parts.count < 3 {
            while i < scalars.endIndex && scalars[i] == " " { i = scalars.index(after: i) }
            if i == scalars.endIndex { break }
            if parts.count == 2 {
                parts.append(String(scalars[i...]))
                break
            }
            let j = scalars[i...].firstIndex(of: " ") ?? scalars.endIndex
            parts.append(String(scalars[i..<j]))
            i = j
        }
        switch parts[0] {
        case "/nick":
            let name = parts.count == 2 ? parts[1].precomposedStringWithCanonicalMapping : ""
            guard parts.count == 2, Self.isName(name) else {
                self = .usage("error: usage: /nick NAME (one word, at most \(Self.maxNameLength) visible characters, no \":\")")
                return
            }
            self = .nick(name)
        case "/who":
            self = .who
        case "/join":
            guard parts.count == 2, Self.isRoomName(parts[1]) else {
                self = .usage("error: usage: /join ROOM (\(Self.roomNameRule))")
                return
            }
            self = .join(parts[1])
        case "/leave":
            self = .leave
        case "/rooms":
            self = .rooms
        case "/msg":
            guard parts.count == 3 else {
                self = .usage("error: usage: /msg NAME TEXT")
                return
            }
            self = .msg(to: parts[1].precomposedStringWithCanonicalMapping, text: parts[2])
        case "/help":
            self = .help
        default:
            self = .unknown(parts[0])
        }
    }
}
