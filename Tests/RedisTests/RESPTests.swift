@testable import Redis
import Testing

private func parse(_ s: String) throws -> (RESPValue, Int)? { try RESPParser().parse(Array(s.utf8)[...]) }

@Suite struct RESPTests {
    @Test("RESP2 values parse, and what is not complete yet is nil, never an error")
    func resp2() throws {
        #expect(try parse("+OK\r\n")?.0 == .simple("OK"))
        #expect(try parse("-ERR unknown command 'x'\r\n")?.0 == .error("ERR unknown command 'x'"))
        #expect(try parse(":-42\r\n")?.0 == .integer(-42))
        #expect(try parse("$5\r\nhe\r\no\r\n")?.0 == .bulk(Array("he\r\no".utf8))) // binary-safe
        #expect(try parse("$-1\r\n")?.0 == .null && parse("*-1\r\n")?.0 == .null)
        #expect(try parse("*2\r\n$1\r\na\r\n:7\r\n+extra")?.0 == .array([.bulk([97]), .integer(7)]))
        #expect(try parse("*2\r\n$1\r\na\r\n:7\r\n+extra")?.1 == 15)
        for partial in ["", "+OK", "+OK\r", "$5\r\nhel", "$5\r\nhello\r", "*2\r\n:1\r\n", ":12"] {
            #expect(try parse(partial) == nil, "\(partial.debugDescription)")
        }
    }

    @Test("RESP3 values: null, booleans, doubles, big numbers, verbatim, maps, sets, pushes, bulk errors; attributes are dropped")
    func resp3() throws {
        #expect(try parse("_\r\n")?.0 == .null)
        #expect(try parse("#t\r\n")?.0 == .boolean(true) && parse("#f\r\n")?.0 == .boolean(false))
        #expect(try parse(",3.25\r\n")?.0 == .double(3.25) && parse(",-inf\r\n")?.0 == .double(-.infinity))
        #expect(try parse(",nan\r\n")?.0 == .double(.nan))
        #expect(try parse("(-123456789012345678901234567890\r\n")?.0 == .bigNumber("-123456789012345678901234567890"))
        #expect(try parse("=9\r\ntxt:hello\r\n")?.0 == .verbatim(format: "txt", text: "hello"))
        #expect(try parse("%1\r\n+a\r\n:1\r\n")?.0 == .map([RESPPair(.simple("a"), .integer(1))]))
        #expect(try parse("~2\r\n:1\r\n:2\r\n")?.0 == .set([.integer(1), .integer(2)]))
        #expect(try parse(">2\r\n+pong\r\n$0\r\n\r\n")?.0 == .push([.simple("pong"), .bulk([])]))
        #expect(try parse("!3\r\nbad\r\n")?.0 == .error("bad"))
        #expect(try parse("|1\r\n+ttl\r\n:3\r\n+v\r\n")?.0 == .simple("v"))
    }

    @Test("Bytes that are not RESP, and values past the bounds, are errors that say what is wrong")
    func refusals() {
        func refused(_ s: String, _ p: RESPParser = RESPParser()) -> String? {
            do { _ = try p.parse(Array(s.utf8)[...]); return nil } catch { return error.description }
        }
        #expect(refused("?x\r\n") == "an unknown type byte 63 at byte 0")
        #expect(refused(":12a\r\n") == "not an integer: \"12a\"")
        #expect(refused(":99999999999999999999\r\n") == "not an integer: \"99999999999999999999\"")
        #expect(refused("+a\rb\r\n") == "a CR not followed by LF at byte 2")
        #expect(refused("+a\nb\r\n") == "a bare LF at byte 2")
        #expect(refused("$3\r\nabcd\r\n") == "a bulk string not followed by CR LF")
        #expect(refused("$-2\r\n") == "a bulk string of -2 (at most 67108864)")
        #expect(refused("#x\r\n") == "a boolean that is not t or f")
        #expect(refused(",1.5x\r\n") == "not a double: \"1.5x\"")
        #expect(refused("_x\r\n") == "a null with something after it")
        var small = RESPParser()
        small.maxElements = 3
        small.maxDepth = 2
        small.maxLine = 8
        #expect(refused("*4\r\n", small) == "an aggregate of 4 (at most 3)")
        #expect(refused("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", small) == "aggregates nested over 2 deep")
        #expect(refused("+123456789", small) == "a line over 8 bytes") // before its end arrives
    }

    @Test("Every value encodes to bytes that parse back to it; a command is an array of bulk strings")
    func roundTrip() throws {
        let values: [RESPValue] = [
            .simple("OK"), .error("ERR x"), .error("multi\nline"), .integer(.min), .bulk(Array("a\r\nb".utf8)), .null,
            .array([.integer(1), .array([.bulk([])])]), .double(-0.5), .double(1e300), .boolean(true),
            .bigNumber("123"), .verbatim(format: "mkd", text: "# hi"), .map([RESPPair(.bulk([1]), .null)]),
            .set([.simple("a")]), .push([.bulk(Array("message".utf8))]),
        ]
        for v in values {
            let bytes = v.encoded
            #expect(try RESPParser().parse(bytes[...]).map { $0.0 == v && $0.1 == bytes.count } == true, "\(v)")
        }
        #expect(String(decoding: encodeCommand(["SET", "k", "v é"]), as: UTF8.self) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nv é\r\n")
    }

    @Test("redis:// URLs: host, port, user, password (escaped), database; bad ones say why")
    func urls() throws {
        let plain = try RedisURL("redis://example.com")
        #expect(plain.host == "example.com" && plain.port == 6379 && plain.password == nil && plain.db == 0)
        let full = try RedisURL("redis://ann:p%40ss@10.0.0.1:6380/3")
        #expect(full.user == "ann" && full.password == "p@ss" && full.host == "10.0.0.1" && full.port == 6380 && full.db == 3)
        let pw = try RedisURL("redis://:secret@localhost:7000")
        #expect(pw.user == nil && pw.password == "secret" && pw.port == 7000)
        let v6 = try RedisURL("redis://[::1]:6390/1")
        #expect(v6.host == "::1" && v6.port == 6390 && v6.db == 1)
        #expect(full.description == "redis://ann:***@10.0.0.1:6380/3")
        for (bad, why) in [("http://x", "http://x: it must start with redis://"), ("redis://x:0", "redis://x:0: a bad port"),
                           ("redis://x/db", "redis://x/db: the database must be a number"),
                           ("redis://a:%zz@x", "redis://a:%zz@x: a bad escape in the user or password")] {
            #expect(throws: RedisError.badURL(why)) { _ = try RedisURL(bad) }
        }
    }

    @Test("The reader: values split anywhere, fed in pieces of every size, come out as one parse of the whole gives them; bytes the parser refuses, the reader refuses with the same words")
    func readerAgrees() throws {
        let values: [RESPValue] = [
            .simple("OK"), .error("ERR x"), .integer(-7), .bulk(Array("a\r\nb".utf8)), .null, .array([]),
            .array([.integer(1), .array([.bulk([]), .null]), .map([RESPPair(.simple("k"), .set([.double(2.5)]))])]),
            .push([.bulk(Array("message".utf8)), .bulk(Array("ch".utf8)), .bulk(Array(repeating: 120, count: 300))]),
            .verbatim(format: "txt", text: "hi"), .boolean(false), .bigNumber("-1"),
        ]
        var bytes: [UInt8] = []
        for v in values { v.encode(into: &bytes) }
        bytes += Array("|1\r\n+ttl\r\n:3\r\n*1\r\n+after an attribute\r\n".utf8)
        let expected = values + [.array([.simple("after an attribute")])]
        for piece in [1, 2, 3, 7, 64, bytes.count] {
            var reader = RESPReader()
            var got: [RESPValue] = []
            var at = 0
            while at < bytes.count {
                reader.append(Array(bytes[at..<min(at + piece, bytes.count)]))
                at += piece
                while let v = try reader.next() { got.append(v) }
            }
            #expect(got == expected, "pieces of \(piece)")
            #expect(reader.buffered == 0 && reader.parses == expected.count, "pieces of \(piece): \(reader.parses) parses")
        }
        var small = RESPParser()
        small.maxElements = 3
        small.maxDepth = 2
        small.maxLine = 8
        for (bad, parser) in [("?x\r\n", RESPParser()), ("*2\r\n:1\r\n:12a\r\n", RESPParser()), ("+a\rb\r\n", RESPParser()),
                              ("*1\r\n$3\r\nabcd\r\n", RESPParser()), ("$-2\r\n", RESPParser()), ("*1\r\n#x\r\n", RESPParser()),
                              ("*4\r\n", small), ("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", small), ("+123456789", small)] {
            var whole: String?
            do { _ = try parser.parse(Array(bad.utf8)[...]) } catch { whole = error.description }
            for piece in [1, 3, bad.utf8.count] {
                var reader = RESPReader(parser: parser)
                var seen: String?
                let b = Array(bad.utf8)
                var at = 0
                while at < b.count && seen == nil {
                    reader.append(Array(b[at..<min(at + piece, b.count)]))
                    at += piece
                    do { while try reader.next() != nil {} } catch { seen = error.description }
                }
                #expect(seen != nil && seen == whole, "\(bad.debugDescription) in pieces of \(piece)")
            }
        }
    }

    @Test("The reader parses a big reply once: 5,000 stream entries (about 2.5 MB) in 64 KiB reads is one parse, not one per read")
    func readerParsesOnce() throws {
        let entry = RESPValue.array([.bulk(Array("1-1".utf8)), .array([.bulk([109]), .bulk(Array(repeating: 97, count: 480))])])
        let reply = RESPValue.array(Array(repeating: entry, count: 5_000)).encoded
        var reader = RESPReader()
        var got: [RESPValue] = []
        var at = 0
        while at < reply.count {
            reader.append(Array(reply[at..<min(at + 65536, reply.count)]))
            at += 65536
            while let v = try reader.next() { got.append(v) }
        }
        #expect(reply.count > 2_400_000 && got.count == 1 && got.first?.elements?.count == 5_000)
        #expect(reader.parses == 1)
    }
}
