// Reading RESP values from a stream of reads, each value parsed once.
//
// `RESPParser.parse` starts from the first byte each time: a reply that
// comes in many reads (a stream read of thousands of entries, megabytes,
// in 64 KiB reads) would be parsed again after each, its elements built and
// thrown away forty times over. The reader frames instead: it walks the
// bytes as they come, once, knowing only the shape (a type byte, its line,
// a bulk string's length skipped over, the values an aggregate still owes),
// and where it stopped is where it goes on after the next read. Once a value
// is whole, `RESPParser` parses it, once, and checks everything it checks
// (so a value is exactly what `parse` would give, and bytes it refuses are
// refused the same way). A line that is not whole yet is walked again after
// the next read (lines are short: `maxLine`).
//
// Framing checks only what it needs to find a value's end; at anything it
// does not follow (a count that is not a number, past a bound, an unknown
// type byte, a line ending that is not CR LF) it hands the value to the
// parser from its start, which throws, as it would have.

/// RESP values from bytes as they arrive, each parsed once (see the top of the file).
public struct RESPReader: Sendable {
    /// The parser of whole values, and its bounds.
    public var parser: RESPParser
    private var buf: [UInt8] = []
    /// Where the value being read starts, and how far its bytes are framed.
    private var start = 0
    private var framed = 0
    /// For each aggregate open at `framed`: the values it still owes.
    private var owed: [Int] = []
    /// Values handed to the parser (one per value, unless framing gave up).
    private(set) var parses = 0

    /// A reader with `parser`'s bounds.
    public init(parser: RESPParser = RESPParser()) { self.parser = parser }

    /// Bytes as they arrive.
    public mutating func append(_ bytes: [UInt8]) {
        if start > 0 && start >= buf.count / 2 { // what was read goes, now and then
            buf.removeFirst(start)
            framed -= start
            start = 0
        }
        buf += bytes
    }

    /// Bytes received and not yet taken as values.
    public var buffered: Int { buf.count - start }

    /// The next whole value, or nil until more bytes come.
    /// - Throws: `RESPError` for bytes that are not RESP or a value past a bound.
    public mutating func next() throws(RESPError) -> RESPValue? {
        while framed < buf.count {
            guard let (type, lineEnd, count) = header(at: framed) else { return nil }
            guard let count else { return try whole() } // something framing does not follow: the parser says what
            switch type {
            case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
                if count < 0 {
                    framed = lineEnd
                } else {
                    guard buf.count >= lineEnd + count + 2 else { return nil }
                    framed = lineEnd + count + 2
                }
            case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
                framed = lineEnd
                let n = count < 0 ? 0 : type == UInt8(ascii: "%") ? count * 2 : type == UInt8(ascii: "|") ? count * 2 + 1 : count
                if n > 0 {
                    guard owed.count <= parser.maxDepth else { return try whole() }
                    owed.append(n)
                    continue
                }
            default:
                framed = lineEnd
            }
            // A value ended at `framed`: the aggregates it completes end with it.
            while let last = owed.last {
                if last > 1 {
                    owed[owed.count - 1] = last - 1
                    break
                }
                owed.removeLast()
            }
            if owed.isEmpty { return try whole() }
        }
        return nil
    }

    /// The value from `start`, parsed: whole, if framing found its end; else
    /// the parser's answer (an error, or nil: then framing starts again at
    /// `start` after the next read).
    private mutating func whole() throws(RESPError) -> RESPValue? {
        parses += 1
        let result: (RESPValue, Int)?
        do { result = try parser.parse(buf[start...]) } catch {
            owed = []
            framed = start
            throw error
        }
        owed = []
        guard let (v, n) = result else {
            framed = start
            return nil
        }
        start += n
        framed = start
        return v
    }

    /// The type byte at `at`, where its line ends (past CR LF), and its
    /// count for a sized type (-1 for null; 0 for a type without one); nil
    /// if the line is not whole yet; a nil count if framing does not follow it.
    private func header(at: Int) -> (UInt8, Int, Int?)? {
        let type = buf[at]
        var i = at + 1
        while i < buf.count && buf[i] != 13 && buf[i] != 10 {
            i += 1
            if i - at > parser.maxLine + 1 { return (type, i, nil) }
        }
        guard i + 1 < buf.count else { return nil }
        guard buf[i] == 13 && buf[i + 1] == 10 else { return (type, i, nil) }
        let end = i + 2
        switch type {
        case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="),
             UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
            let digits = buf[(at + 1)..<i]
            guard !digits.isEmpty, digits.count <= 19, let n = Int(String(decoding: digits, as: UTF8.self)), n >= -1 else {
                return (type, end, nil)
            }
            let sized = type == UInt8(ascii: "$") || type == UInt8(ascii: "!") || type == UInt8(ascii: "=")
            guard n <= (sized ? parser.maxBulk : parser.maxElements) else { return (type, end, nil) }
            return (type, end, n)
        case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "_"), UInt8(ascii: "#"),
             UInt8(ascii: ","), UInt8(ascii: "("):
            return (type, end, 0)
        default:
            return (type, end, nil)
        }
    }
}
