import Chat
import Testing

@Suite struct CommandTests {
    @Test("Command lines parse to what their syntax allows; anything else is a usage error or unknown")
    func parsing() {
        #expect(ChatCommand(parsing: "hello") == nil)
        #expect(ChatCommand(parsing: "/nick alice") == .nick("alice"))
        #expect(ChatCommand(parsing: "/nick") == .usage("error: usage: /nick NAME (one word, at most 32 characters)"))
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

    @Test("Found by fuzzing: a /msg's text starts after the run of spaces; a space before a combining mark still separates words")
    func fuzzFindings() {
        #expect(ChatCommand(parsing: "/msg bob   how are you?") == .msg(to: "bob", text: "how are you?"))
        #expect(ChatCommand(parsing: "/msg bob \u{301}x") == .msg(to: "bob", text: "\u{301}x"))
        #expect(ChatCommand(parsing: "/nick \u{301}") == .nick("\u{301}"))
        #expect(ChatCommand(parsing: "/\u{301}") == .unknown("/\u{301}"))
    }
}
