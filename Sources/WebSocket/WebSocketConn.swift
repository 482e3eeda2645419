import Digests
import GMP
import NetPoller
import Synchronization

/// A message received on a WebSocket.
public enum Message: Equatable, Sendable {
    /// A text message (opcode 0x1), its fragments joined; validated as UTF-8.
    case text(String)
    /// A binary message (opcode 0x2), its fragments joined.
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
/// out of range). Failing sends the close frame and then shuts the socket
/// for writing; so does a server once the close handshake is done (it closes
/// TCP first, RFC 6455 section 7.1.1). Closing the `Conn` is its owner's.
/// Use one reader G at a time. Writes may come from any G (gorilla's write
/// pump, and the reader's pongs, close frames and replies): each frame is
/// written whole under a lock, and every write gets `writeTimeout` if set.
public final class WebSocketConn: @unchecked Sendable {
    // @unchecked: `pending` is the reader's; writes go through
    // `writeLock`; `closeCodeSent` is guarded by it; `readLimit`, `onPong` and
    // `writeTimeout` are set before the reader and writer Gs start (their
    // contract) and only read afterwards.
    /// The underlying connection, which its owner closes.
    public let conn: Conn
    /// True for the server side (expects masked frames, sends unmasked ones).
    public let isServer: Bool
    /// Largest message accepted; larger ones close the connection with 1009.
    public var readLimit: Int
    /// Called (on the reader's G) for every pong.
    public var onPong: (@Sendable ([UInt8]) -> Void)?
    /// If set, every write (messages, and the pongs and close frames that
    /// `receive()` sends from the reader's G) must finish within this time
    /// or fail with `.transport(.timeout)`: the write deadline is
    /// set just before each write, under the write lock (gorilla's writeWait).
    /// Without it a peer that stops reading blocks a writer for ever. Set it
    /// before the reader and writer Gs start.
    public var writeTimeout: Duration?
    private var pending: [UInt8] = []
    private let writeLock = Mutex()
    /// The code of the close frame sent (1005 for one without a body); nil
    /// until then.
    private var closeCodeSent: UInt16?
    /// closeCodeSent != nil, readable without the write lock (which a writer
    /// blocked on a peer that does not read may hold for the write timeout).
    private let closeStarted = Atomic<Bool>(false)

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
        var assembler = MessageAssembler(readLimit: readLimit)
        while true {
            let f = try nextFrame()
            let event: MessageAssembler.Event?
            do {
                event = try assembler.push(f)
            } catch {
                try? fail(code: error.code, reason: error.reason)
                throw .closed(code: error.code.rawValue, reason: error.reason)
            }
            switch event {
            case nil:
                continue
            case .message(let m):
                return m
            case .ping(let payload):
                try send(Frame(opcode: .pong, payload: payload))
            case .pong(let payload):
                onPong?(payload)
            case .close(let c):
                // Echo the peer's code (1000 for a close without one). Both
                // close frames have now gone; the server closes TCP first
                // (section 7.1.1), with a FIN after its frame; a client waits
                // for the server's (its owner closes the socket).
                try? close(code: c.code ?? CloseCode.normal.rawValue, reason: "")
                if isServer { try? conn.closeWrite() }
                throw .closed(code: c.code ?? CloseCode.noStatus.rawValue, reason: c.reason)
            }
        }
    }

    /// Sends one frame: unmasked from a server, masked from a client with a
    /// fresh key from the system's random source (RFC 6455 section 5.3: a
    /// key a script could predict would let it steer what a proxy sees).
    /// - Precondition: a control frame is final and carries at most 125
    ///   bytes (section 5.5).
    public func send(_ frame: Frame) throws(WebSocketError) {
        precondition(!frame.opcode.isControl || (frame.fin && frame.payload.count <= 125),
                     "a control frame must be final and carry at most 125 bytes (RFC 6455 section 5.5)")
        try sendEncoded(isServer ? frame.encode() : frame.encode(mask: secureRandomBytes(4)))
    }

    /// Sends bytes that are already a frame (e.g. one encoding shared by many
    /// server connections: a "prepared message").
    /// - Throws: `.closed` (with the code sent) for a data frame once a close
    ///   frame has been sent: RFC 6455 section 5.5.1 allows no data after it.
    /// - Precondition: the frame is masked if and only if this is a client
    ///   (section 5.1).
    public func sendEncoded(_ bytes: [UInt8]) throws(WebSocketError) {
        precondition(bytes.count < 2 || (bytes[1] & 0x80 != 0) != isServer,
                     isServer ? "a server must not mask its frames" : "a client must mask its frames")
        writeLock.lock()
        defer { writeLock.unlock() }
        if let code = closeCodeSent, let b0 = bytes.first, b0 & 0x08 == 0 {
            throw .closed(code: code, reason: "a close frame was sent: no more data")
        }
        if let t = writeTimeout { conn.setWriteDeadline(.after(t)) }
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
    /// bytes a control frame has room for, at a Unicode scalar boundary). Code
    /// 1005 (no status) sends a close frame without a body, as gorilla does:
    /// 1005 itself may not be sent. Afterwards data frames are refused
    /// (section 5.5.1); pongs may still go out.
    /// - Precondition: `code` is 1005 or may be sent on the wire
    ///   (`CloseCode.isValidOnWire`): 1006 and 1015 are for reports only,
    ///   and the reserved ranges belong to the protocol (section 7.4).
    public func close(code: UInt16 = CloseCode.normal.rawValue, reason: String = "") throws(WebSocketError) {
        precondition(code == CloseCode.noStatus.rawValue || CloseCode.isValidOnWire(code),
                     "close code \(code) may not be sent (RFC 6455 section 7.4)")
        writeLock.lock()
        let first = closeCodeSent == nil
        if first {
            closeCodeSent = code
            closeStarted.store(true, ordering: .releasing)
        }
        writeLock.unlock()
        guard first else { return }
        let payload = ClosePayload(code: code == CloseCode.noStatus.rawValue ? nil : code, reason: reason).encode()
        try send(Frame(opcode: .close, payload: payload))
    }

    /// Whether a close frame has been sent, or is being sent (ours, or our
    /// answer to the peer's). Never waits for a write.
    public var closeFrameSent: Bool { closeStarted.load(ordering: .acquiring) }

    /// For the reader, once a close frame has gone out: shuts the socket for
    /// writing, then reads and throws away whatever the peer still sends
    /// until it closes or `timeout` passes (a lingering close,
    /// `Conn.lingeringShutdown`), so that the owner's `conn.close()` finds no
    /// unread input, whose reset could destroy the close frame before the
    /// peer has read it.
    public func linger(timeout: Duration = .seconds(1)) {
        pending = []
        conn.lingeringShutdown(timeout: timeout)
    }

    /// Fails the connection (section 7.1.7): a close frame with `code`,
    /// then the TCP connection is closed for writing (a FIN after the frame:
    /// a full close with unread input would send a reset, which can destroy
    /// the close frame before the peer reads it). Nothing more is read.
    private func fail(code: CloseCode, reason: String) throws(WebSocketError) {
        defer { try? conn.closeWrite() }
        try close(code: code.rawValue, reason: reason)
    }
}

/// Client side: connects to `ws://host:port/path` over TCP and performs the
/// handshake. For tests, benchmarks and tools.
public func dialWebSocket(host: String, port: Int, path: String = "/", origin: String? = nil,
                          readLimit: Int = 1 << 20) throws(WebSocketError) -> WebSocketConn {
    let conn: Conn
    do { conn = try Conn.dial(host, port) } catch { throw .transport(error) }
    let key = Base64.encode(secureRandomBytes(16)) // a random nonce (section 4.1)
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

/// `n` bytes from the system's random source (getrandom(2) through
/// `SystemRandomNumberGenerator`): masking keys and handshake nonces.
func secureRandomBytes(_ n: Int) -> [UInt8] {
    var rng = SystemRandomNumberGenerator()
    var out: [UInt8] = []
    out.reserveCapacity(n + 7)
    while out.count < n {
        let r = rng.next()
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: r >> (i * 8))) }
    }
    return Array(out.prefix(n))
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
