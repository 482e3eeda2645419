@testable import Chat
import Foundation
import Testing

@Suite struct EnvelopeTests {
    @Test("A JSON client's message object: string values read as JSONSerialization reads them, escapes and surrogate pairs too; anything else is plain text, a bad id a refusal")
    func clientMessages() throws {
        let texts = ["hi", "", "a \"quoted\" \\ back/slash", "tab\tnew\nline", "é ü 日本 🎉", "\u{1}\u{1F}", "\u{2028}"]
        for text in texts {
            let line = "{\"id\":\"c7\",\"text\":\(jsonString(text))}"
            #expect(ClientMessage(parsing: line, format: .json) == ClientMessage(text: text, id: "c7"), "\(line)")
            let viaFoundation = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String]
            #expect(ClientMessage.flatObject(line) == viaFoundation)
        }
        #expect(ClientMessage.flatObject(#" { "text" : "\ud83c\udf89 \u00e9\/" , "x":"" } "#) == ["text": "🎉 é/", "x": ""])
        #expect(ClientMessage(parsing: #"{"text":"no id"}"#, format: .json) == ClientMessage(text: "no id"))
        // Not a message object: the line is the text.
        for line in [#"{"text":1}"#, #"{"text":"a","n":[1]}"#, #"{"text":"a"} x"#, #"{"text":"\ud83c"}"#, #"{"text":"\q"}"#,
                     "{\"text\":\"raw\u{1}\"}", #"{"text""#, "{" + String(repeating: "[", count: 100_000)] {
            #expect(ClientMessage(parsing: line, format: .json) == ClientMessage(text: line), "\(line.prefix(40))")
        }
        #expect(ClientMessage(parsing: #"{"id":"a","text":"b"}"#, format: .text) == ClientMessage(text: #"{"id":"a","text":"b"}"#))
        // An id that is empty, too long or not printable ASCII: refused.
        for id in ["", String(repeating: "i", count: 65), "a b", "é"] {
            #expect(ClientMessage(parsing: "{\"id\":\(jsonString(id)),\"text\":\"x\"}", format: .json) == nil, "\(id)")
        }
    }

    @Test("The tail finds what follows a number by the numbers, across a hole (numbers a Redis stream no longer had)")
    func tailWithAHole() {
        func e(_ s: UInt64) -> Entry { Entry(seq: s, time: 0, from: "", text: "") }
        var tail = Tail(entries: (1...10).map(e), limit: 30)
        for s in 20...30 as ClosedRange<UInt64> { tail.append(e(s)) }
        #expect(tail.after(15).map(\.seq) == Array(20...30))
        #expect(tail.after(5).map(\.seq) == Array(6...10) + Array(20...30))
        #expect(tail.after(25).map(\.seq) == Array(26...30))
        #expect(tail.after(30).isEmpty && tail.after(0).count == 21)
        for s in 31...50 as ClosedRange<UInt64> { tail.append(e(s)) } // the oldest go
        #expect(tail.oldest == 21 && tail.after(0).first?.seq == 21 && tail.after(40).map(\.seq) == Array(41...50))
    }
}
