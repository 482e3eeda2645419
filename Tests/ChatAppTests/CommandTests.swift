import Chat
import Testing

@Suite struct CommandTests {
    @Test("Command lines parse to what their syntax allows; anything else is a usage error or unknown")
    func parsing() {
        #expect(ChatCommand(parsing: "hello") == nil)
        #expect(ChatCommand(parsing: "/nick alice") == .nick("alice"))
        #expect(ChatCommand(parsing: "/nick") == .usage("error: usage: /nick NAME (one word, at most 32 visible characters, no \":\")"))
        #expect(ChatCommand(parsing: "/nick a b") == ChatCommand(parsing: "/nick"))
        #expect(ChatCommand(parsing: "/nick a:b") == ChatCommand(parsing: "/nick"))
        #expect(ChatCommand(parsing: "/nick " + String(repeating: "x", count: 33)) == ChatCommand(parsing: "/nick"))
        #expect(ChatCommand(parsing: "/who is here") == .who)
        #expect(ChatCommand(parsing: "/msg bob hi there") == .msg(to: "bob", text: "hi there"))
        #expect(ChatCommand(parsing: "/msg bob") == .usage("error: usage: /msg NAME TEXT"))
        #expect(ChatCommand(parsing: "/help") == .help)
        #expect(ChatCommand(parsing: "/dance now") == .unknown("/dance"))
        #expect(ChatCommand(parsing: "/") == .unknown("/"))
    }

    @Test("A name is read in NFC, so two spellings are one name byte for byte; invisible characters and a combining mark first are refused; /msg's target is read in NFC too")
    func nameForms() {
        let decomposed = "cafe\u{301}", composed = "caf\u{E9}"
        guard case .nick(let n)? = ChatCommand(parsing: "/nick " + decomposed) else {
            Issue.record("not a nick")
            return
        }
        #expect(Array(n.utf8) == Array(composed.utf8))
        guard case .msg(let to, _)? = ChatCommand(parsing: "/msg " + decomposed + " hi") else {
            Issue.record("not a msg")
            return
        }
        #expect(Array(to.utf8) == Array(composed.utf8))
        let refused = ChatCommand(parsing: "/nick")
        for bad in ["ann\u{200B}", "\u{202E}ann", "a\u{3000}b", "a\u{7}b", "\u{E000}x", "\u{301}ann", "a\u{2028}b", "\u{1F3FB}x"] {
            #expect(ChatCommand(parsing: "/nick " + bad) == refused, "\(bad.unicodeScalars.map { String($0.value, radix: 16) })")
        }
        #expect(ChatCommand(parsing: "/nick Zoë-42") == .nick("Zoë-42"))
        #expect(ChatCommand(parsing: "/nick 名前") == .nick("名前"))
        #expect(ChatCommand(parsing: "/nick e" + String(repeating: "\u{301}", count: 200)) == refused) // one character, 401 bytes
    }

    @Test("Found by fuzzing: a /msg's text starts after the run of spaces; a space before a combining mark still separates words")
    func fuzzFindings() {
        #expect(ChatCommand(parsing: "/msg bob   how are you?") == .msg(to: "bob", text: "how are you?"))
        #expect(ChatCommand(parsing: "/msg bob \u{301}x") == .msg(to: "bob", text: "\u{301}x"))
        #expect(ChatCommand(parsing: "/nick \u{301}") == ChatCommand(parsing: "/nick")) // (a combining mark first: no name)
        #expect(ChatCommand(parsing: "/\u{301}") == .unknown("/\u{301}"))
    }
}
