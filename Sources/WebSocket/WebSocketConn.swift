import GMP
import NetPoller

/// A message received on a WebSocket.
public enum Message: Equatable, Sendable {
    case text(String)
    case binary([UInt8])
}

/// Why a WebSocket ended.
public enum WebSocketError: Error, Equatable, Sendable {
    /// The peer sent a close frame (code, reason), or we closed after a protocol error.
    case closed(code: UInt16, reason: String)
    /// The transport failed (reset, timeout, end of stream without a close frame, ...).
    case transport(NetError)
    /// The handshake was refused or malformed.
    case handshake(String)
}

/// One side of a WebSocket connection over a `Conn` (RFC 6455).
///
/// `receive()` assembles fragmented messages, answers pings with pongs,
/// passes pongs to `onPong`, validates text as UTF-8 (1007), enforces the
/// read limit (1009), answers a close frame, and fails the connection with
/// 1002 for a close code that may not be sent (1005, 1006, 1015, reserved or
/// out of range). Use one reader G and one writer G at a time (as gorilla's
/// read and write pumps); writes of control frames from the reader (pong,
/// close) are serialized with a lock, and every write, either G's, gets
/// `writeTimeout` if set.
public final class WebSocketConn: @unchecked Sendable {
    // @unchecked: `pending`, `fragments` are the reader's; writes go through
    // `writeLock`; `closeSent` is guarded by it; `readLimit`, `onPong` and
    // `writeTimeout` are set before the reader and writer Gs start (their
    // contract) and only read afterwards.
    public let conn: Conn
    /// True for the server side (expects masked frames, sends unmasked ones).
    public let isServer: Bool
    /// Largest message accepted; larger ones close the connection with 1009.
    public var readLimit: Int
    /// Called (on the reader's G) for every pong.
    public var onPong: (@Sendable ([UInt8]) -> Void)?
    /// If set, every write (messages, and the pongs and close frames that
    /// `receive()` sends from the reader's G) must finish within this many
    /// nanoseconds or fail with `.transport(.timeout)`: the write deadline is
    /// set just before each write, under the write lock (gorilla's writeWait).
    /// Without it a peer that stops reading blocks a writer for ever. Set it
    /// before the reader and writer Gs start.
    public var writeTimeout: Int64?
    private var pending: [UInt8] = []
    private let writeLock = Mutex()
    private var closeSent = false

    /// Wraps an upgraded connection; `leftover` are bytes read past the handshake.
    public init(conn: Conn, isServer: Bool, readLimit: Int = 1 << 20, leftover: [UInt8] = []) {
        self.conn = conn
        self.isServer = isServer
        self.readLimit = readLimit
        self.pending = leftover
    }

    /// Reads the next frame, reading from the socket as needed.
    private func nextFrame() throws(WebSocketError) -> Frame {
        while true {
            do {
                if let (f, used) = try Frame.decode(pending[...], masked: isServer, maxPayload: readLimit) {
                    pending.removeFirst(used)
                    return f
                }
            } catch {
                try? fail(code: error.code, reason: error.reason)
                throw .closed(code: error.code.rawValue, reason: error.reason)
            }
            do {
                pending += try conn.read(max: 16384)
            } catch {
                throw .transport(error)
            }
        }
    }

    /// Receives the next data message.
    /// - Throws: `.closed` when the peer closed (after answering its close
    ///   frame) or a protocol violation closed the connection; `.transport`.
    public func receive() throws(WebSocketError) -> Message {
        var fragments: [UInt8] = []
        var kind: Opcode?
        while true {
            let f = try nextFrame()
            switch f.opcode {
            case .ping:
                try send(Frame(opcode: .pong, payload: f.payload))
            case .pong:
                onPong?(f.payload)
            case .close:
                var code: UInt16 = CloseCode.noStatus.rawValue
                var reason = ""
                if f.payload.count == 1 {
                    try? fail(code: .protocolError, reason: "close payload of 1 byte")
                    throw .closed(code: CloseCode.protocolError.rawValue, reason: "close payload of 1 byte")
                }
                if f.payload.count >= 2 {
                    code = UInt16(f.payload[0]) << 8 | UInt16(f.payload[1])
                    guard CloseCode.isValidOnWire(code) else { // never echo 1005, 1006, 1015, 0, 5000...
                        try? fail(code: .protocolError, reason: "invalid close code")
                        throw .closed(code: CloseCode.protocolError.rawValue, reason: "invalid close code \(code)")
                    }
                    guard let r = String(validating: f.payload[2...], as: UTF8.self) else {
                        try? fail(code: .invalidPayload, reason: "close reason is not UTF-8")
                        throw .closed(code: CloseCode.invalidPayload.rawValue, reason: "invalid close reason")
                    }
                    reason = r
                }
                try? close(code: f.payload.count >= 2 ? code : CloseCode.normal.rawValue, reason: "")
                throw .closed(code: code, reason: reason)
            case .text, .binary:
                if kind != nil {
                    try? fail(code: .protocolError, reason: "new message inside a fragmented one")
                    throw .closed(code: CloseCode.protocolError.rawValue, reason: "interleaved message")
                }
                kind = f.opcode
                fragments = f.payload
            case .continuation:
                if kind == nil {
                    try? fail(code: .protocolError, reason: "continuation without a message")
                    throw .closed(code: CloseCode.protocolError.rawValue, reason: "stray continuation")
                }
                fragments += f.payload
            }
            if fragments.count > readLimit {
                try? fail(code: .messageTooBig, reason: "message over \(readLimit) bytes")
                throw .closed(code: CloseCode.messageTooBig.rawValue, reason: "message too big")
            }
            if let k = kind, f.fin, !f.opcode.isControl {
                if k == .binary { return .binary(fragments) }
                guard let s = String(validating: fragments, as: UTF8.self) else {
                    try? fail(code: .invalidPayload, reason: "text is not UTF-8")
                    throw .closed(code: CloseCode.invalidPayload.rawValue, reason: "invalid UTF-8")
                }
                return .text(s)
            }
        }
    }

    /// Sends one frame (masked with a fresh key on the client side).
    public func send(_ frame: Frame) throws(WebSocketError) {
        let bytes: [UInt8]
        if isServer {
            bytes = frame.encode()
        } else {
            let r = GMP.fastrand()
            bytes = frame.encode(mask: [UInt8(truncatingIfNeeded: r), UInt8(truncatingIfNeeded: r >> 8),
                                        UInt8(truncatingIfNeeded: r >> 16), UInt8(truncatingIfNeeded: r >> 24)])
        }
        try sendEncoded(bytes)
    }

    /// Sends bytes that are already a frame (e.g. one encoding shared by many
    /// server connections: a "prepared message").
    public func sendEncoded(_ bytes: [UInt8]) throws(WebSocketError) {
        writeLock.lock()
        defer { writeLock.unlock() }
        if let t = writeTimeout { conn.setWriteDeadline(GMP.deadline(afterNanoseconds: t)) }
        do { try conn.write(bytes) } catch { throw .transport(error) }
    }

    /// Sends a text message.
    public func send(text: String) throws(WebSocketError) {
        try send(Frame(opcode: .text, payload: Array(text.utf8)))
    }

    /// Sends a binary message.
    public func send(binary: [UInt8]) throws(WebSocketError) {
        try send(Frame(opcode: .binary, payload: binary))
    }

    /// Sends a close frame (once) with `code` and `reason` (cut to the 123
    /// bytes a control frame has room for, at a character boundary). Code
    /// 1005 (no status) sends a close frame without a body, as gorilla does:
    /// 1005 itself may not be sent.
    public func close(code: UInt16 = CloseCode.normal.rawValue, reason: String = "") throws(WebSocketError) {
        writeLock.lock()
        let first = !closeSent
        closeSent = true
        writeLock.unlock()
        guard first else { return }
        var payload: [UInt8] = []
        if code != CloseCode.noStatus.rawValue {
            payload = [UInt8(code >> 8), UInt8(truncatingIfNeeded: code)]
            for s in reason.unicodeScalars {
                if payload.count + UTF8.width(s) > 125 { break }
                payload += String(s).utf8
            }
        }
        try send(Frame(opcode: .close, payload: payload))
    }

    private func fail(code: CloseCode, reason: String) throws(WebSocketError) {
        try close(code: code.rawValue, reason: reason)
    }
}

/// Client side: connects to `ws://host:port/path` over TCP and performs the
/// handshake. For tests, benchmarks and tools.
public func dialWebSocket(host: String, port: Int, path: String = "/", origin: String? = nil,
                          readLimit: Int = 1 << 20) throws(WebSocketError) -> WebSocketConn {
    let conn: Conn
    do { conn = try Conn.dial(host, port) } catch { throw .transport(error) }
    var keyBytes = [UInt8]()
    for _ in 0..<4 {
        let r = GMP.fastrand()
        keyBytes += [UInt8(truncatingIfNeeded: r), UInt8(truncatingIfNeeded: r >> 8),
                     UInt8(truncatingIfNeeded: r >> 16), UInt8(truncatingIfNeeded: r >> 24)]
    }
    let key = Base64.encode(keyBytes)
    var req = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    req += "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
    if let origin { req += "Origin: \(origin)\r\n" }
    req += "\r\n"
    var buf: [UInt8] = []
    do {
        try conn.write(req)
        while true {
            buf += try conn.read(max: 4096)
            if let end = findHeadEnd(buf[...]) {
                let head = String(decoding: buf[0..<end], as: UTF8.self)
                guard head.hasPrefix("HTTP/1.1 101"),
                      head.lowercased().contains("sec-websocket-accept: \(webSocketAccept(key: key).lowercased())") else {
                    conn.close()
                    throw WebSocketError.handshake(String(head.split(separator: "\r\n").first ?? ""))
                }
                return WebSocketConn(conn: conn, isServer: false, readLimit: readLimit, leftover: Array(buf[(end + 4)...]))
            }
            if buf.count > 16384 {
                conn.close()
                throw WebSocketError.handshake("response head too large")
            }
        }
    } catch let e as WebSocketError {
        throw e
    } catch {
        throw handshakeFailed(conn, error)
    }
}

/// Closes `conn` after a failed handshake and says why.
private func handshakeFailed(_ conn: Conn, _ error: any Error) -> WebSocketError {
    conn.close()
    if let e = error as? NetError { return .transport(e) }
    return .handshake("\(error)")
}

/// Offset (from the start of `b`) of the blank line (CR LF CR LF) ending
/// an HTTP head, if present.
func findHeadEnd(_ b: ArraySlice<UInt8>) -> Int? {
    var i = b.startIndex
    while i + 3 < b.endIndex {
        if b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i - b.startIndex }
        i += 1
    }
    return nil
}

/// Server side: reads the request head from `conn`, answers the handshake
/// (or the error status, then closes), and returns the WebSocket. It sets no
/// deadlines of its own: set read and write deadlines on `conn` first to
/// bound a peer that sends slowly or does not read.
public func upgradeToWebSocket(_ conn: Conn, origins: OriginPolicy = .sameHost,
                               readLimit: Int = 1 << 20) throws(WebSocketError) -> WebSocketConn {
    var buf: [UInt8] = []
    while true {
        do {
            if let (req, used) = try HTTPRequest.parse(buf[...]) {
                let resp = try acceptWebSocket(req, origins: origins)
                try conn.write(resp.encode())
                return WebSocketConn(conn: conn, isServer: true, readLimit: readLimit, leftover: Array(buf[used...]))
            }
            buf += try conn.read(max: 4096)
        } catch let e as HTTPError {
            try? conn.write(rejectWebSocket(e).encode())
            conn.close()
            throw .handshake("\(e.status.code) \(e.detail)")
        } catch {
            throw handshakeFailed(conn, error)
        }
    }
}
