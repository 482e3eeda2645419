// HTTP/1.1 server side, just what a WebSocket server needs: request-head
// parsing with size limits, and responses.
//
// Message framing is strict (RFC 9112 sections 3.2 and 6), because a server
// and a proxy in front of it that disagree on where a request ends let one
// request smuggle another: exactly one Host on HTTP/1.1 (at most one on 1.0),
// at most one Content-Length made of decimal digits only, no
// Transfer-Encoding at all (we decode none: 501), and no CR, LF, NUL or other
// control character inside a line. The parser consumes the head only: the
// caller reads (or discards) `contentLength` body bytes before the next
// request.

/// An HTTP status with its reason phrase.
public struct HTTPStatus: Equatable, Sendable {
    /// The three-digit status code, such as 404.
    public let code: Int
    /// The reason phrase sent after the code on the status line, such as
    /// "Not Found".
    public let reason: String

    /// 200 OK: the request succeeded.
    public static let ok = HTTPStatus(code: 200, reason: "OK")
    /// 101 Switching Protocols: the server accepts the upgrade (here to
    /// WebSocket); the connection speaks the new protocol after this response.
    public static let switchingProtocols = HTTPStatus(code: 101, reason: "Switching Protocols")
    /// 400 Bad Request: the request is malformed.
    public static let badRequest = HTTPStatus(code: 400, reason: "Bad Request")
    /// 401 Unauthorized: the request lacks valid credentials (here: a
    /// missing, malformed, wrongly signed or expired token).
    public static let unauthorized = HTTPStatus(code: 401, reason: "Unauthorized")
    /// 403 Forbidden: understood but refused (here: an origin the policy
    /// does not allow).
    public static let forbidden = HTTPStatus(code: 403, reason: "Forbidden")
    /// 404 Not Found: nothing is served at the target.
    public static let notFound = HTTPStatus(code: 404, reason: "Not Found")
    /// 405 Method Not Allowed: the target does not support the method.
    public static let methodNotAllowed = HTTPStatus(code: 405, reason: "Method Not Allowed")
    /// 413 Payload Too Large (Content Too Large in RFC 9110): the announced
    /// body exceeds the server's limit.
    public static let payloadTooLarge = HTTPStatus(code: 413, reason: "Payload Too Large")
    /// 426 Upgrade Required: refused with the current protocol, but the
    /// client may retry after upgrading to another (here: a WebSocket
    /// version other than 13; the response names 13).
    public static let upgradeRequired = HTTPStatus(code: 426, reason: "Upgrade Required")
    /// 431 Request Header Fields Too Large: the request head exceeds the
    /// server's limit.
    public static let headersTooLarge = HTTPStatus(code: 431, reason: "Request Header Fields Too Large")
    /// 501 Not Implemented: the server does not support a feature the request
    /// needs (here: any Transfer-Encoding).
    public static let notImplemented = HTTPStatus(code: 501, reason: "Not Implemented")
    /// 503 Service Unavailable: the server cannot handle the request now
    /// (overloaded or shutting down); it may later.
    public static let serviceUnavailable = HTTPStatus(code: 503, reason: "Service Unavailable")
    /// 505 HTTP Version Not Supported: the server does not support the
    /// request's HTTP version (here: anything but 1.0 and 1.1).
    public static let versionNotSupported = HTTPStatus(code: 505, reason: "HTTP Version Not Supported")
}

/// A request that cannot be served: answer with `status` and close.
public struct HTTPError: Error, Equatable, Sendable {
    /// The status to answer with.
    public let status: HTTPStatus
    /// What was wrong, for logs and the response body.
    public let detail: String

    /// An error to be answered with `status`.
    public init(status: HTTPStatus, detail: String) {
        self.status = status
        self.detail = detail
    }
}

/// A parsed request head (request line and headers).
public struct HTTPRequest: Sendable {
    /// The method, such as "GET" (uppercase letters only).
    public var method: String
    /// The request target as sent: a path with an optional query
    /// (`/chat?room=a`), or "*".
    public var target: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: Int
    /// Header fields in order, names as sent.
    public var headers: [(name: String, value: String)]
    /// Length of a request body announced by Content-Length (0 if none).
    public var contentLength: Int

    /// The first value of a header (names compare case-insensitively).
    public func header(_ name: String) -> String? {
        let n = name.lowercased()
        return headers.first { $0.name.lowercased() == n }?.value
    }

    /// Whether a comma-separated header holds `token` (case-insensitive), as
    /// `Connection: keep-alive, Upgrade` holds "upgrade".
    public func headerHasToken(_ name: String, _ token: String) -> Bool {
        let n = name.lowercased(), t = token.lowercased()
        return headers.contains { h in
            h.name.lowercased() == n
                && h.value.utf8.split(separator: UInt8(ascii: ",")).contains { Substring($0).trimmingSpaces.lowercased() == t }
        }
    }

    /// Whether the connection stays open after the response (HTTP/1.1
    /// unless `Connection: close`; HTTP/1.0 only with `keep-alive`).
    public var keepAlive: Bool {
        if headerHasToken("Connection", "close") { return false }
        return minorVersion >= 1 || headerHasToken("Connection", "keep-alive")
    }

    /// The path part of the target (without the query).
    public var path: String { String(target.split(separator: "?", maxSplits: 1).first ?? "") }

    /// The query's fields, in order: `a=1&b=x%20y` is [("a", "1"), ("b", "x y")].
    /// "+" is a space and %XX a byte (form encoding); a field without "="
    /// has the value ""; nil if an escape is malformed or the bytes are not UTF-8.
    public var query: [(name: String, value: String)]? {
        guard let q = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return [] }
        var out: [(name: String, value: String)] = []
        for field in target.utf8[target.utf8.index(after: q)...].split(separator: UInt8(ascii: "&")) {
            let parts = field.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = Self.formDecode(parts[0]), let value = parts.count > 1 ? Self.formDecode(parts[1]) : "" else {
                return nil
            }
            out.append((name, value))
        }
        return out
    }

    private static func formDecode(_ bytes: some Collection<UInt8>) -> String? {
        var out: [UInt8] = []
        var i = bytes.startIndex
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        while i != bytes.endIndex {
            let b = bytes[i]
            i = bytes.index(after: i)
            if b == UInt8(ascii: "+") {
                out.append(UInt8(ascii: " "))
            } else if b == UInt8(ascii: "%") {
                guard i != bytes.endIndex, let h = hex(bytes[i]) else { return nil }
                i = bytes.index(after: i)
                guard i != bytes.endIndex, let l = hex(bytes[i]) else { return nil }
                i = bytes.index(after: i)
                out.append(h << 4 | l)
            } else {
                out.append(b)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    /// Parses the request head at the start of `bytes`. Returns the request
    /// and the number of bytes its head took, or nil if the head is not
    /// complete yet (and within `maxHeaderBytes`). The body, if any
    /// (`contentLength` bytes), follows the head and is left to the caller.
    /// - Throws: 431 when the head exceeds `maxHeaderBytes`; 400 for a
    ///   malformed request line or header (control characters in a line
    ///   included), a missing or repeated Host, a repeated Content-Length or
    ///   one that is not plain decimal digits; 505 for another HTTP version;
    ///   413 when Content-Length exceeds `maxBodyBytes`; 501 for any
    ///   Transfer-Encoding (none is supported).
    /// - Complexity: O(*n*) in the length of `bytes` (each call scans them
    ///   again for the end of the head).
    public static func parse(_ bytes: ArraySlice<UInt8>, maxHeaderBytes: Int = 8192,
                             maxBodyBytes: Int = 1 << 20) throws(HTTPError) -> (HTTPRequest, Int)? {
        // Find the blank line that ends the head.
        guard let end = findHeadEnd(bytes) else {
            if bytes.count > maxHeaderBytes { throw HTTPError(status: .headersTooLarge, detail: "request head over \(maxHeaderBytes) bytes") }
            return nil
        }
        if end + 4 > maxHeaderBytes { throw HTTPError(status: .headersTooLarge, detail: "request head over \(maxHeaderBytes) bytes") }
        let head = bytes[bytes.startIndex..<(bytes.startIndex + end)]
        guard let text = String(validating: head, as: UTF8.self) else {
            throw HTTPError(status: .badRequest, detail: "request head is not UTF-8")
        }
        // Lines, words and fields are cut at bytes (CR LF, SP, ":", OWS), never
        // at Characters: a space or colon followed by a combining mark is one
        // Character, and cutting there would read the head differently from
        // a byte-level parser in front of us.
        var lines = text.utf8.split(separator: 10, omittingEmptySubsequences: false).map { Substring($0) }
        for i in lines.indices {
            // Every line but the last ended in CR LF (a bare LF is caught below).
            guard i == lines.count - 1 || lines[i].utf8.last == 13 else {
                throw HTTPError(status: .badRequest, detail: "control character in the request head")
            }
            if i < lines.count - 1 { lines[i] = Substring(lines[i].utf8.dropLast()) }
        }
        guard !lines.isEmpty else { throw HTTPError(status: .badRequest, detail: "empty request") }
        // A CR or LF left inside a line (a bare one, which another parser may
        // take for a line end), NUL, or another control character: refused.
        // (Tab is allowed in header values.)
        if lines.contains(where: { $0.unicodeScalars.contains { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7F } }) {
            throw HTTPError(status: .badRequest, detail: "control character in the request head")
        }
        let requestLine = lines.removeFirst()
        let parts = requestLine.utf8.split(separator: 0x20, omittingEmptySubsequences: false).map { Substring($0) }
        guard parts.count == 3, !parts[0].isEmpty, parts[0].unicodeScalars.allSatisfy({ ("A"..."Z").contains($0) }),
              parts[1].utf8.first == UInt8(ascii: "/") || parts[1].utf8.elementsEqual("*".utf8),
              !parts[1].unicodeScalars.contains("\t") else {
            throw HTTPError(status: .badRequest, detail: "malformed request line")
        }
        let minor: Int
        if parts[2].utf8.elementsEqual("HTTP/1.1".utf8) {
            minor = 1
        } else if parts[2].utf8.elementsEqual("HTTP/1.0".utf8) {
            minor = 0
        } else if parts[2].utf8.starts(with: "HTTP/".utf8) {
            throw HTTPError(status: .versionNotSupported, detail: String(parts[2]))
        } else {
            throw HTTPError(status: .badRequest, detail: "malformed request line")
        }
        var headers: [(name: String, value: String)] = []
        for line in lines {
            guard let colon = line.utf8.firstIndex(of: UInt8(ascii: ":")) else {
                throw HTTPError(status: .badRequest, detail: "header line without a colon")
            }
            let name = line[line.startIndex..<colon]
            // A token: no space before the colon, no folded continuation line.
            guard !name.isEmpty, name.unicodeScalars.allSatisfy({ $0.isASCII && isTokenChar(UInt8($0.value)) }) else {
                throw HTTPError(status: .badRequest, detail: "malformed header name")
            }
            headers.append((String(name), line[line.utf8.index(after: colon)...].trimmingSpaces))
        }
        var req = HTTPRequest(method: String(parts[0]), target: String(parts[1]), minorVersion: minor,
                              headers: headers, contentLength: 0)
        func values(_ name: String) -> [String] { req.headers.filter { $0.name.lowercased() == name }.map(\.value) }
        let hosts = values("host")
        if hosts.count > 1 { throw HTTPError(status: .badRequest, detail: "more than one Host") }
        if minor == 1 && hosts.isEmpty { throw HTTPError(status: .badRequest, detail: "missing Host") }
        // Transfer-Encoding first: with it, Content-Length would not count
        // (RFC 9112 section 6.3), and we decode no transfer coding at all.
        if !values("transfer-encoding").isEmpty {
            throw HTTPError(status: .notImplemented, detail: "Transfer-Encoding is not supported")
        }
        let lengths = values("content-length")
        if lengths.count > 1 { throw HTTPError(status: .badRequest, detail: "more than one Content-Length") }
        if let cl = lengths.first {
            // 1*DIGIT (after the optional white space around any field value):
            // no sign, inner space, comma list or hex; Int("+5") would take a sign.
            guard !cl.isEmpty, cl.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
                throw HTTPError(status: .badRequest, detail: "bad Content-Length")
            }
            var n = 0
            for d in cl.utf8 {
                let (m, o1) = n.multipliedReportingOverflow(by: 10)
                let (v, o2) = m.addingReportingOverflow(Int(d - UInt8(ascii: "0")))
                if o1 || o2 || v > maxBodyBytes {
                    throw HTTPError(status: .payloadTooLarge, detail: "body over \(maxBodyBytes) bytes")
                }
                n = v
            }
            req.contentLength = n
        }
        return (req, end + 4)
    }
}

/// tchar of RFC 9110 section 5.6.2: the characters of a header name or method.
private func isTokenChar(_ c: UInt8) -> Bool {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
        return true
    default:
        return Array("!#$%&'*+-.^_`|~".utf8).contains(c)
    }
}

/// An HTTP response, encoded with `Content-Length`.
public struct HTTPResponse: Sendable {
    /// The status line's code and reason.
    public var status: HTTPStatus
    /// Header fields, sent in order; `Content-Length` is added by `encode()`
    /// unless present (or the status is 101).
    public var headers: [(name: String, value: String)]
    /// The body, sent after the head.
    public var body: [UInt8]

    /// A response with the given status, headers and body.
    public init(status: HTTPStatus, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A plain-text error response for `error`.
    public init(error: HTTPError) {
        self.init(status: error.status, headers: [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")],
                  body: Array("\(error.status.code) \(error.status.reason): \(error.detail)\n".utf8))
    }

    /// The bytes on the wire.
    public func encode() -> [UInt8] {
        var head = "HTTP/1.1 \(status.code) \(status.reason)\r\n"
        for h in headers { head += "\(h.name): \(h.value)\r\n" }
        if status.code != 101 && !headers.contains(where: { $0.name.lowercased() == "content-length" }) {
            head += "Content-Length: \(body.count)\r\n"
        }
        head += "\r\n"
        return Array(head.utf8) + body
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs (HTTP's OWS), taken off
    /// as bytes: a space that a combining mark follows is still a space.
    var trimmingSpaces: String {
        let s = Substring(self)
        let u = s.utf8
        func ows(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }
        guard let first = u.firstIndex(where: { !ows($0) }), let last = u.lastIndex(where: { !ows($0) }) else { return "" }
        return String(Substring(u[first...last])) // both ends on scalar boundaries
    }
}
