// The server side of the RFC 6455 opening handshake (section 4.2).

import Digests

/// Which origins may open a WebSocket.
public enum OriginPolicy: Sendable {
    /// The Origin's host must equal the Host header (gorilla's default); no
    /// Origin header (non-browser clients) is allowed.
    case sameHost
    /// The Origin must be one of these (e.g. "http://example.com:8080").
    case allow([String])
    /// Any origin.
    case any
}

/// Checks a request for a WebSocket upgrade and returns the 101 response
/// that accepts it.
/// - Throws: 405 for a method other than GET, 400 for missing or wrong
///   Upgrade/Connection tokens, a key that is not 16 base64 bytes, or a
///   body (Content-Length over 0: the bytes after the head are frames), 426
///   (with `Sec-WebSocket-Version: 13`) for another protocol version, 403 for
///   an origin the policy refuses.
public func acceptWebSocket(_ req: HTTPRequest, origins: OriginPolicy = .sameHost) throws(HTTPError) -> HTTPResponse {
    if req.method != "GET" { throw HTTPError(status: .methodNotAllowed, detail: "a WebSocket handshake must use GET") }
    if req.minorVersion < 1 { throw HTTPError(status: .badRequest, detail: "a WebSocket handshake needs HTTP/1.1") }
    if req.contentLength > 0 { throw HTTPError(status: .badRequest, detail: "a WebSocket handshake has no body") }
    guard req.headerHasToken("Upgrade", "websocket") else {
        throw HTTPError(status: .badRequest, detail: "missing 'Upgrade: websocket'")
    }
    guard req.headerHasToken("Connection", "upgrade") else {
        throw HTTPError(status: .badRequest, detail: "missing 'Connection: Upgrade'")
    }
    guard req.header("Sec-WebSocket-Version") == "13" else { throw HTTPError(status: .upgradeRequired, detail: "version 13 only") }
    guard let key = req.header("Sec-WebSocket-Key"), Base64.decode(key)?.count == 16 else {
        throw HTTPError(status: .badRequest, detail: "bad Sec-WebSocket-Key")
    }
    if let origin = req.header("Origin") {
        let ok: Bool
        switch origins {
        case .any: ok = true
        case .allow(let list): ok = list.contains(origin.lowercased()) || list.contains(origin)
        case .sameHost:
            let host = origin.split(separator: "/", omittingEmptySubsequences: true).dropFirst().first.map(String.init)
            ok = host != nil && host!.lowercased() == req.header("Host")?.lowercased()
        }
        if !ok { throw HTTPError(status: .forbidden, detail: "origin not allowed") }
    }
    return HTTPResponse(status: .switchingProtocols, headers: [
        ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", webSocketAccept(key: key)),
    ])
}

/// The response for a failed handshake (426 also names the version we speak).
public func rejectWebSocket(_ error: HTTPError) -> HTTPResponse {
    var r = HTTPResponse(error: error)
    if error.status == .upgradeRequired { r.headers.append(("Sec-WebSocket-Version", "13")) }
    return r
}

/// The RFC 6455 handshake's accept value for a client's Sec-WebSocket-Key:
/// base64(SHA-1(key + the protocol's GUID)).
public func webSocketAccept(key: String) -> String {
    Base64.encode(SHA1.hash(Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
}
