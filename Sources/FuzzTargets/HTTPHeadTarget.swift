import WebSocket

// The HTTP request head: whatever `HTTPRequest.parse` accepts is a request
// made of tokens and control-free text, ends at the first blank line, and
// reads back the same once written out again; what it refuses, it refuses
// with one of the statuses it documents. Its query decodes to fields that
// read back the same once escaped again, or to nil.

private let crlf2: [UInt8] = [13, 10, 13, 10]

/// The first offset of CR LF CR LF in `b`, if any.
private func blankLine(_ b: [UInt8]) -> Int? {
    guard b.count >= 4 else { return nil }
    for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i }
    return nil
}

/// `req` written out as a request head.
private func encode(_ req: HTTPRequest) -> [UInt8] {
    var s = "\(req.method) \(req.target) HTTP/1.\(req.minorVersion)\r\n"
    for h in req.headers { s += "\(h.name): \(h.value)\r\n" }
    return Array((s + "\r\n").utf8)
}

private func same(_ a: HTTPRequest, _ b: HTTPRequest) -> Bool {
    a.method == b.method && a.target == b.target && a.minorVersion == b.minorVersion
        && a.contentLength == b.contentLength && a.headers.count == b.headers.count
        && zip(a.headers, b.headers).allSatisfy { $0.name == $1.name && $0.value == $1.value }
}

private func describe(_ r: HTTPRequest) -> String {
    "\(r.method.debugDescription) \(r.target.debugDescription) 1.\(r.minorVersion) length \(r.contentLength) "
        + r.headers.map { "\($0.name.debugDescription): \($0.value.unicodeScalars.map { String($0.value, radix: 16) })" }.joined(separator: ", ")
}

func fuzzHTTPHead(_ bytes: [UInt8]) {
    let maxHead = 1024, maxBody = 4096
    let parsed: (HTTPRequest, Int)?
    do {
        parsed = try HTTPRequest.parse(bytes[...], maxHeaderBytes: maxHead, maxBodyBytes: maxBody)
    } catch {
        check([400, 413, 431, 501, 505].contains(error.status.code), "undocumented status \(error.status.code)")
        if error.status.code == 431 { check(bytes.count > maxHead, "431 for a head of \(bytes.count) bytes") }
        return
    }
    guard let (req, used) = parsed else {
        check(blankLine(bytes) == nil, "a complete head was taken for a partial one")
        check(bytes.count <= maxHead, "an incomplete head over the limit was not refused")
        return
    }
    check(blankLine(bytes).map { $0 + 4 } == used, "the head did not end at the first blank line")
    check(used <= maxHead, "a head of \(used) bytes passed a limit of \(maxHead)")
    check(req.contentLength >= 0 && req.contentLength <= maxBody, "content length \(req.contentLength)")
    check(req.minorVersion == 0 || req.minorVersion == 1, "version 1.\(req.minorVersion)")
    check(!req.method.isEmpty && req.method.utf8.allSatisfy { $0 >= 65 && $0 <= 90 }, "method \(req.method)")
    check(req.target.utf8.first == UInt8(ascii: "/") || req.target.utf8.elementsEqual("*".utf8), "target \(req.target)")
    let text = [req.method, req.target] + req.headers.flatMap { [$0.name, $0.value] }
    check(text.allSatisfy { $0.unicodeScalars.allSatisfy { ($0.value >= 0x20 || $0 == "\t") && $0.value != 0x7F } },
          "a control character got through")
    check(req.headers.allSatisfy { !$0.name.isEmpty && !$0.name.unicodeScalars.contains { $0 == ":" || $0 == " " } },
          "a header name that is no token")
    if req.minorVersion == 1 { check(req.header("host") != nil, "HTTP/1.1 without Host") }
    check(req.header("transfer-encoding") == nil, "Transfer-Encoding accepted")
    // Its query: nil (a malformed escape, bytes that are not UTF-8), or
    // fields that, written out again with every byte escaped, read back the same.
    if let fields = req.query {
        func escaped(_ s: String) -> String { s.utf8.map { ($0 < 16 ? "%0" : "%") + String($0, radix: 16) }.joined() }
        let q = fields.map { escaped($0.name) + "=" + escaped($0.value) }.joined(separator: "&")
        let back = (try? HTTPRequest.parse(Array("GET /?\(q) HTTP/1.1\r\nHost: x\r\n\r\n".utf8)[...], maxHeaderBytes: .max))??.0.query
        check(back.map { $0.map { [$0.name, $0.value] } } == fields.map { [$0.name, $0.value] },
              "the query \(req.target.debugDescription) reads back differently once escaped")
    }
    // Written out again, it reads back the same.
    let again = encode(req)
    do {
        guard let (req2, used2) = try HTTPRequest.parse(again[...], maxHeaderBytes: .max, maxBodyBytes: maxBody) else {
            check(false, "the request written out again is incomplete")
            return
        }
        check(used2 == again.count, "the request written out again ends elsewhere")
        check(same(req, req2), "the request written out again reads back differently: \(describe(req)) against \(describe(req2))")
    } catch {
        check(false, "the request written out again is refused: \(error)")
    }
}
