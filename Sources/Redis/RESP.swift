// RESP, the Redis serialization protocol, versions 2 and 3: values, a
// parser for bytes as they arrive, and the encoding of commands.
//
// A value is a type byte, then a line ending in CR LF, then for bulk types
// that many bytes and CR LF, for aggregates that many values. RESP2 has
// simple strings (+), errors (-), integers (:), bulk strings ($, -1 for
// null) and arrays (*, -1 for null); RESP3 adds null (_), booleans (#),
// doubles (,), big numbers ((), bulk errors (!), verbatim strings (=),
// maps (%), sets (~), attributes (|, metadata before a reply: read and
// dropped here) and pushes (>, out-of-band data such as pub/sub messages).
//
// `RESPParser.parse` takes the bytes received so far and answers nil while
// a value is not complete: every prefix of a valid value is "not yet",
// never an error, so a reader can call it again after each read. What the
// peer controls is bounded: the length of a line, of a bulk string, the
// elements of an aggregate and how deeply aggregates nest; past a bound,
// or on any byte the protocol does not allow, it throws. It parses from
// the start each time: a reader of a stream of bytes uses `RESPReader`
// (RESPReader.swift), which finds where a value ends as the bytes come and
// parses each value once.

/// A RESP value (RESP2 and RESP3).
public indirect enum RESPValue: Sendable, Equatable {
    /// `+OK`: a short string without CR or LF.
    case simple(String)
    /// `-ERR message`: an error reply (RESP3's bulk errors too).
    case error(String)
    /// `:42`.
    case integer(Int64)
    /// `$3\r\nfoo`: binary-safe bytes.
    case bulk([UInt8])
    /// `$-1`, `*-1` (RESP2) or `_` (RESP3).
    case null
    /// `*2 ...`.
    case array([RESPValue])
    /// `,3.14` (RESP3), including `inf`, `-inf` and `nan`.
    case double(Double)
    /// `#t` / `#f` (RESP3).
    case boolean(Bool)
    /// `(3492890328409238509324850943850943825024385` (RESP3), as its digits.
    case bigNumber(String)
    /// `=15\r\ntxt:Some string` (RESP3): the format (3 characters) and the text.
    case verbatim(format: String, text: String)
    /// `%2 ...` (RESP3): key-value pairs in the order sent.
    case map([RESPPair])
    /// `~2 ...` (RESP3).
    case set([RESPValue])
    /// `>3 ...` (RESP3): out-of-band data (pub/sub messages, invalidations).
    case push([RESPValue])

    /// The value as text: simple and bulk strings (UTF-8), verbatim text, big numbers, integers.
    public var string: String? {
        switch self {
        case .simple(let s), .verbatim(_, let s), .bigNumber(let s): s
        case .bulk(let b): String(decoding: b, as: UTF8.self)
        case .integer(let n): String(n)
        default: nil
        }
    }

    /// The value as an integer: integers, and strings of digits.
    public var int: Int64? {
        if case .integer(let n) = self { return n }
        return string.flatMap { Int64($0) }
    }

    /// The elements of an array, set or push; nil for anything else.
    public var elements: [RESPValue]? {
        switch self {
        case .array(let a), .set(let a), .push(let a): a
        default: nil
        }
    }

    /// Appends the value's encoding (RESP3 types as RESP3; nulls as `_`
    /// unless `resp2`, then as `$-1`).
    public func encode(into out: inout [UInt8], resp2: Bool = false) {
        func line(_ type: UInt8, _ text: String) {
            out.append(type)
            out += text.utf8
            out += [13, 10]
        }
        func aggregate(_ type: UInt8, _ items: [RESPValue]) {
            line(type, String(items.count))
            for v in items { v.encode(into: &out, resp2: resp2) }
        }
        switch self {
        case .simple(let s): line(UInt8(ascii: "+"), s)
        case .error(let s):
            if s.utf8.contains(where: { $0 == 13 || $0 == 10 }) {
                line(UInt8(ascii: "!"), String(s.utf8.count))
                out += s.utf8
                out += [13, 10]
            } else {
                line(UInt8(ascii: "-"), s)
            }
        case .integer(let n): line(UInt8(ascii: ":"), String(n))
        case .bulk(let b):
            line(UInt8(ascii: "$"), String(b.count))
            out += b
            out += [13, 10]
        case .null: resp2 ? line(UInt8(ascii: "$"), "-1") : line(UInt8(ascii: "_"), "")
        case .array(let a): aggregate(UInt8(ascii: "*"), a)
        case .double(let d):
            line(UInt8(ascii: ","), d.isNaN ? "nan" : d == .infinity ? "inf" : d == -.infinity ? "-inf" : "\(d)")
        case .boolean(let b): line(UInt8(ascii: "#"), b ? "t" : "f")
        case .bigNumber(let s): line(UInt8(ascii: "("), s)
        case .verbatim(let format, let text):
            let body = Array((format + ":" + text).utf8)
            line(UInt8(ascii: "="), String(body.count))
            out += body
            out += [13, 10]
        case .map(let pairs):
            line(UInt8(ascii: "%"), String(pairs.count))
            for p in pairs {
                p.key.encode(into: &out, resp2: resp2)
                p.value.encode(into: &out, resp2: resp2)
            }
        case .set(let a): aggregate(UInt8(ascii: "~"), a)
        case .push(let a): aggregate(UInt8(ascii: ">"), a)
        }
    }

    /// The value's encoding.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }

    /// Two values are equal if they are the same (doubles: NaN equals NaN).
    public static func == (a: RESPValue, b: RESPValue) -> Bool {
        switch (a, b) {
        case (.simple(let x), .simple(let y)), (.error(let x), .error(let y)), (.bigNumber(let x), .bigNumber(let y)): x == y
        case (.integer(let x), .integer(let y)): x == y
        case (.bulk(let x), .bulk(let y)): x == y
        case (.null, .null): true
        case (.array(let x), .array(let y)), (.set(let x), .set(let y)), (.push(let x), .push(let y)): x == y
        case (.double(let x), .double(let y)): x == y || (x.isNaN && y.isNaN)
        case (.boolean(let x), .boolean(let y)): x == y
        case (.verbatim(let f, let t), .verbatim(let g, let u)): f == g && t == u
        case (.map(let x), .map(let y)): x == y
        default: false
        }
    }
}

/// A key and its value in a RESP3 map.
public struct RESPPair: Sendable, Equatable {
    /// The key.
    public var key: RESPValue
    /// Its value.
    public var value: RESPValue

    /// The pair `key`: `value`.
    public init(_ key: RESPValue, _ value: RESPValue) {
        self.key = key
        self.value = value
    }
}

/// Bytes that are not RESP, or a value past a bound.
public struct RESPError: Error, Equatable, CustomStringConvertible {
    /// What is wrong, and where.
    public let description: String
    init(_ d: String) { description = d }
}

/// Parses RESP values from bytes as they arrive (see the top of the file).
public struct RESPParser: Sendable {
    /// The longest line (a simple string, an error, a number) in bytes.
    public var maxLine = 64 << 10
    /// The longest bulk string in bytes (Redis's own limit is 512 MiB).
    public var maxBulk = 64 << 20
    /// The most elements an aggregate may announce.
    public var maxElements = 1 << 20
    /// How deeply aggregates may nest.
    public var maxDepth = 32

    /// A parser with the default bounds.
    public init() {}

    /// The value at the start of `bytes` and how many bytes it took, or nil
    /// if it is not complete yet.
    /// - Throws: `RESPError` for bytes that are not RESP or a value past a bound.
    public func parse(_ bytes: ArraySlice<UInt8>) throws(RESPError) -> (RESPValue, Int)? {
        var at = bytes.startIndex
        guard let v = try value(bytes, &at, depth: 0) else { return nil }
        return (v, at - bytes.startIndex)
    }

    /// The line at `at` (without its CR LF), moving `at` past it; nil if incomplete.
    private func line(_ b: ArraySlice<UInt8>, _ at: inout Int) throws(RESPError) -> ArraySlice<UInt8>? {
        var i = at
        while i < b.endIndex {
            if b[i] == 13 {
                guard i + 1 < b.endIndex else { return nil }
                guard b[i + 1] == 10 else { throw RESPError("a CR not followed by LF at byte \(i - b.startIndex)") }
                let l = b[at..<i]
                at = i + 2
                return l
            }
            if b[i] == 10 { throw RESPError("a bare LF at byte \(i - b.startIndex)") }
            i += 1
            if i - at > maxLine { throw RESPError("a line over \(maxLine) bytes") }
        }
        return nil
    }

    /// A decimal integer: an optional minus, then digits, in Int64's range.
    private func integer(_ l: ArraySlice<UInt8>) throws(RESPError) -> Int64 {
        let text = String(decoding: l, as: UTF8.self)
        let digits = l.first == UInt8(ascii: "-") ? l.dropFirst() : l
        guard !digits.isEmpty, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = Int64(text) else {
            throw RESPError("not an integer: \(text.debugDescription)")
        }
        return n
    }

    /// A length or count: -1 (null) or 0 up to `max`.
    private func count(_ l: ArraySlice<UInt8>, max: Int, _ what: String) throws(RESPError) -> Int? {
        let n = try integer(l)
        if n == -1 { return nil }
        guard n >= 0 && n <= Int64(max) else { throw RESPError("\(what) of \(n) (at most \(max))") }
        return Int(n)
    }

    /// `n` bytes and CR LF at `at`; nil if incomplete.
    private func bulkBody(_ b: ArraySlice<UInt8>, _ at: inout Int, _ n: Int) throws(RESPError) -> [UInt8]? {
        guard b.endIndex - at >= n + 2 else { return nil }
        guard b[at + n] == 13 && b[at + n + 1] == 10 else { throw RESPError("a bulk string not followed by CR LF") }
        let body = Array(b[at..<(at + n)])
        at += n + 2
        return body
    }

    private func values(_ b: ArraySlice<UInt8>, _ at: inout Int, _ n: Int, depth: Int) throws(RESPError) -> [RESPValue]? {
        var out: [RESPValue] = []
        out.reserveCapacity(Swift.min(n, 1024))
        for _ in 0..<n {
            guard let v = try value(b, &at, depth: depth + 1) else { return nil }
            out.append(v)
        }
        return out
    }

    private func value(_ b: ArraySlice<UInt8>, _ at: inout Int, depth: Int) throws(RESPError) -> RESPValue? {
        guard depth <= maxDepth else { throw RESPError("aggregates nested over \(maxDepth) deep") }
        guard at < b.endIndex else { return nil }
        let type = b[at]
        var i = at + 1
        guard let l = try line(b, &i) else { return nil }
        let result: RESPValue
        switch type {
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard let s = String(validating: l, as: UTF8.self) else { throw RESPError("a line that is not UTF-8") }
            result = type == UInt8(ascii: "+") ? .simple(s) : .error(s)
        case UInt8(ascii: ":"):
            result = .integer(try integer(l))
        case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
            guard let n = try count(l, max: maxBulk, "a bulk string") else {
                guard type == UInt8(ascii: "$") else { throw RESPError("a null that is not a bulk string") }
                result = .null
                break
            }
            guard let body = try bulkBody(b, &i, n) else { return nil }
            if type == UInt8(ascii: "$") {
                result = .bulk(body)
            } else if type == UInt8(ascii: "!") {
                guard let text = String(validating: body, as: UTF8.self) else { throw RESPError("a bulk error that is not UTF-8") }
                result = .error(text)
            } else {
                guard body.count >= 4, body[3] == UInt8(ascii: ":"), body[0..<3].allSatisfy({ $0 > 32 && $0 < 127 }),
                      let text = String(validating: body[4...], as: UTF8.self) else {
                    throw RESPError("a verbatim string without its format, or not UTF-8")
                }
                result = .verbatim(format: String(decoding: body[0..<3], as: UTF8.self), text: text)
            }
        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"):
            guard let n = try count(l, max: maxElements, "an aggregate") else {
                guard type == UInt8(ascii: "*") else { throw RESPError("a null that is not an array") }
                result = .null
                break
            }
            guard let items = try values(b, &i, n, depth: depth) else { return nil }
            result = type == UInt8(ascii: "*") ? .array(items) : type == UInt8(ascii: "~") ? .set(items) : .push(items)
        case UInt8(ascii: "%"), UInt8(ascii: "|"):
            guard let n = try count(l, max: maxElements / 2, "a map") else { throw RESPError("a null map") }
            guard let items = try values(b, &i, n * 2, depth: depth) else { return nil }
            if type == UInt8(ascii: "|") { // an attribute: metadata for the value after it
                at = i
                return try value(b, &at, depth: depth + 1) // (attributes in a row count as nesting)
            }
            result = .map(stride(from: 0, to: items.count, by: 2).map { RESPPair(items[$0], items[$0 + 1]) })
        case UInt8(ascii: "_"):
            guard l.isEmpty else { throw RESPError("a null with something after it") }
            result = .null
        case UInt8(ascii: "#"):
            guard l.count == 1, l.first == UInt8(ascii: "t") || l.first == UInt8(ascii: "f") else {
                throw RESPError("a boolean that is not t or f")
            }
            result = .boolean(l.first == UInt8(ascii: "t"))
        case UInt8(ascii: ","):
            let text = String(decoding: l, as: UTF8.self)
            switch text {
            case "inf": result = .double(.infinity)
            case "-inf": result = .double(-.infinity)
            case "nan": result = .double(.nan)
            default:
                guard !text.isEmpty, text.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || [43, 45, 46, 69, 101].contains($0) }),
                      let d = Double(text), d.isFinite else {
                    throw RESPError("not a double: \(text.debugDescription)")
                }
                result = .double(d)
            }
        case UInt8(ascii: "("):
            let digits = l.first == UInt8(ascii: "-") ? l.dropFirst() : l
            guard !digits.isEmpty, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { throw RESPError("not a big number") }
            result = .bigNumber(String(decoding: l, as: UTF8.self))
        default:
            throw RESPError("an unknown type byte \(type) at byte \(at - b.startIndex)")
        }
        at = i
        return result
    }
}

/// A command as Redis takes it: an array of bulk strings.
public func encodeCommand(_ args: [String]) -> [UInt8] {
    var out: [UInt8] = []
    encodeCommand(args.map { Array($0.utf8) }, into: &out)
    return out
}

/// Appends a command of binary-safe arguments.
public func encodeCommand(_ args: [[UInt8]], into out: inout [UInt8]) {
    out.append(UInt8(ascii: "*"))
    out += String(args.count).utf8
    out += [13, 10]
    for a in args {
        out.append(UInt8(ascii: "$"))
        out += String(a.count).utf8
        out += [13, 10]
        out += a
        out += [13, 10]
    }
}
