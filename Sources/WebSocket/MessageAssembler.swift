// Message assembly (RFC 6455 sections 5.4 to 5.6 and 7.4): what a reader
// does with each decoded frame, independent of sockets. Data frames are
// joined into messages (a message's fragments may be interleaved with control
// frames, never with another message's), text is checked to be UTF-8, a
// message over the read limit is refused, and a close frame's payload is
// checked (its code must be one that may be sent on the wire, its reason
// UTF-8). Every violation is a `FrameError` carrying the code the connection
// is to be failed with; the caller sends the close frame.

/// A close frame's payload (RFC 6455 section 5.5.1): empty, or a status code
/// and a UTF-8 reason.
public struct ClosePayload: Equatable, Sendable {
    /// The status code; nil when the payload is empty (reported as 1005, "no
    /// status", which is never sent).
    public var code: UInt16?
    /// The reason (empty when there is none).
    public var reason: String

    /// A payload with `code` (nil: none, and then no reason is sent) and `reason`.
    public init(code: UInt16?, reason: String = "") {
        self.code = code
        self.reason = reason
    }

    /// Parses a received close frame's payload.
    /// - Throws: 1002 for a 1-byte payload or a code that may not be sent
    ///   (`CloseCode.isValidOnWire`: 1004-1006, 1015, 0-999, 1016-2999,
    ///   5000 and up); 1007 for a reason that is not UTF-8.
    public init(parsing payload: [UInt8]) throws(FrameError) {
        if payload.isEmpty {
            self.init(code: nil)
            return
        }
        guard payload.count >= 2 else {
            throw FrameError(code: .protocolError, reason: "close payload of 1 byte")
        }
        let code = UInt16(payload[0]) << 8 | UInt16(payload[1])
        guard CloseCode.isValidOnWire(code) else {
            throw FrameError(code: .protocolError, reason: "invalid close code \(code)")
        }
        guard let reason = String(validating: payload[2...], as: UTF8.self) else {
            throw FrameError(code: .invalidPayload, reason: "close reason is not UTF-8")
        }
        self.init(code: code, reason: reason)
    }

    /// The payload on the wire: empty without a code, else the code and as
    /// much of the reason as fits a control frame (125 bytes in all), cut at
    /// a Unicode scalar boundary (valid UTF-8; a combining mark may be cut
    /// from its base).
    public func encode() -> [UInt8] {
        guard let code else { return [] }
        var payload = [UInt8(code >> 8), UInt8(truncatingIfNeeded: code)]
        for s in reason.unicodeScalars {
            if payload.count + UTF8.width(s) > 125 { break }
            payload += String(s).utf8
        }
        return payload
    }
}

/// Joins decoded frames into messages and says what each frame asks of the
/// reader. One per reader; `push` the frames in the order they arrived.
public struct MessageAssembler: Sendable {
    /// Largest message accepted (all fragments together).
    public let readLimit: Int
    private var fragments: [UInt8] = []
    private var kind: Opcode?

    /// What a frame asks of the reader.
    public enum Event: Equatable, Sendable {
        /// A whole message (text already checked to be UTF-8).
        case message(Message)
        /// Answer with a pong carrying this payload.
        case ping([UInt8])
        /// A pong arrived with this payload.
        case pong([UInt8])
        /// The peer closed: answer with a close frame (echoing its code) and
        /// stop reading.
        case close(ClosePayload)
    }

    /// An assembler for messages of at most `readLimit` bytes.
    public init(readLimit: Int) {
        self.readLimit = readLimit
    }

    /// Whether a fragmented message has begun and not yet ended.
    public var inMessage: Bool { kind != nil }

    /// Takes the next frame. Returns nil for a fragment that does not end
    /// its message.
    /// - Throws: `FrameError` with 1002 for a data frame inside another
    ///   message, a continuation outside one, or a bad close payload; 1007
    ///   for text (or a close reason) that is not UTF-8; 1009 for a message
    ///   over `readLimit`. After a throw the connection is to be failed.
    public mutating func push(_ f: Frame) throws(FrameError) -> Event? {
        switch f.opcode {
        case .ping:
            return .ping(f.payload)
        case .pong:
            return .pong(f.payload)
        case .close:
            return .close(try ClosePayload(parsing: f.payload))
        case .text, .binary:
            if kind != nil {
                throw FrameError(code: .protocolError, reason: "new message inside a fragmented one")
            }
            kind = f.opcode
            fragments = f.payload
        case .continuation:
            if kind == nil {
                throw FrameError(code: .protocolError, reason: "continuation without a message")
            }
            fragments += f.payload
        }
        if fragments.count > readLimit {
            throw FrameError(code: .messageTooBig, reason: "message over \(readLimit) bytes")
        }
        guard f.fin, let k = kind else { return nil }
        kind = nil
        let payload = fragments
        fragments = []
        if k == .binary { return .message(.binary(payload)) }
        guard let s = String(validating: payload, as: UTF8.self) else {
            throw FrameError(code: .invalidPayload, reason: "text is not UTF-8")
        }
        return .message(.text(s))
    }
}
