import Chat

// A line a chat client sends: cleaned (`cleanMessage`), then a command if it
// starts with "/". The cleaned text has no line breaks and no white space at
// either end; a parsed command holds only what its syntax allows, and reads
// back the same from its canonical form.

func fuzzChatLine(_ bytes: [UInt8]) {
    let raw = String(decoding: bytes, as: UTF8.self)
    let text = cleanMessage(raw)
    check(text.unicodeScalars.count <= raw.unicodeScalars.count, "cleaning made the text longer")
    check(!text.unicodeScalars.contains { [0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029].contains($0.value) },
          "a line break survived cleaning")
    check(text.first.map { !$0.isWhitespace } ?? true, "leading white space survived cleaning")
    check(text.last.map { !$0.isWhitespace } ?? true, "trailing white space survived cleaning")
    check(cleanMessage(text) == text, "cleaning twice changes the text")
    // Commands are read by Unicode scalars (a space before a combining
    // mark still separates words), and so are these checks.
    guard let cmd = ChatCommand(parsing: text) else {
        check(text.unicodeScalars.first != "/", "a line starting with / is no command")
        return
    }
    check(text.unicodeScalars.first == "/", "a line not starting with / became a command")
    func word(_ w: String) -> Bool { !w.isEmpty && !w.unicodeScalars.contains(" ") }
    switch cmd {
    case .nick(let name):
        check(word(name) && !name.unicodeScalars.contains(":") && name.count <= ChatCommand.maxNameLength, "nick \(name)")
        check(ChatCommand(parsing: "/nick \(name)") == cmd, "/nick \(name) reads back differently")
    case .msg(let to, let body):
        check(word(to) && !body.isEmpty && body.unicodeScalars.first != " ", "msg to \(to): \(body)")
        check(ChatCommand(parsing: "/msg \(to) \(body)") == cmd, "/msg \(to) \(body) reads back differently")
    case .join(let room):
        check(ChatCommand.isRoomName(room), "join \(room)")
        check(ChatCommand(parsing: "/join \(room)") == cmd, "/join \(room) reads back differently")
    case .unknown(let w):
        check(w.unicodeScalars.first == "/" && word(w), "unknown command \(w)")
        check(!["/nick", "/who", "/msg", "/help", "/join", "/leave", "/rooms"].contains(w),
              "a known command \(w) taken for unknown")
    case .usage(let line):
        check(line.hasPrefix("error: usage: "), "usage line \(line)")
    case .who, .help, .leave, .rooms:
        break
    }
}
