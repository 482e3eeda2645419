// RFC 6455 framing (section 5): the codec only, independent of sockets.

/// A frame's opcode.
public enum Opcode: UInt8, Sendable {
    /// 0x0: a continuation frame, the next fragment of a fragmented message.
    case continuation = 0x0
    /// 0x1: a text frame, the first (or only) frame of a UTF-8 text message.
    case text = 0x1
    /// 0x2: a binary frame, the first (or only) frame of a binary message.
    case binary = 0x2
    /// 0x8: a connection close frame (control), optionally with a close code
    /// and a reason.
    case close = 0x8
    /// 0x9: a ping (control), to be answered with a pong carrying the same
    /// payload.
    case ping = 0x9
    /// 0xA: a pong (control), the answer to a ping, or an unsolicited
    /// heartbeat.
    case pong = 0xA

    /// Close, ping and pong are control frames.
    public var isControl: Bool { rawValue & 0x8 != 0 }
}

/// Close status codes (RFC 6455 section 7.4.1).
public enum CloseCode: UInt16, Sendable {
    /// 1000, normal closure: the purpose of the connection is fulfilled.
    case normal = 1000
    /// 1001, going away: the endpoint is leaving (a server shutting down, a
    /// browser navigating away from the page).
    case goingAway = 1001
    /// 1002, protocol error: the peer broke the protocol.
    case protocolError = 1002
    /// 1003, unsupported data: a type of data the endpoint cannot accept
    /// (such as binary for one that takes only text).
    case unsupportedData = 1003
    /// 1005, no status received: reported when a close frame had no code.
    /// Never sent on the wire.
    case noStatus = 1005
    /// 1006, abnormal closure: reported when the connection ended without a
    /// close frame. Never sent on the wire.
    case abnormal = 1006
    /// 1007, invalid frame payload data: data inconsistent with the message
    /// type, such as a text message that is not UTF-8.
    case invalidPayload = 1007
    /// 1008, policy violation: a message breaks the endpoint's policy (the
    /// generic code when no more specific one fits).
    case policyViolation = 1008
    /// 1009, message too big: a message too large to process.
    case messageTooBig = 1009
    /// 1010, mandatory extension: sent by a client when the server did not
    /// negotiate an extension the client requires.
    case missingExtension = 1010
    /// 1011, internal error: the server met an unexpected condition that
    /// keeps it from fulfilling the request.
    case internalError = 1011
    /// IANA's registrations after the RFC: the service restarts, or cannot
    /// serve this now (a client should reconnect later).
    case serviceRestart = 1012, tryAgainLater = 1013

    /// Whether `code` may appear in a close frame on the wire (RFC 6455
    /// section 7.4): 1000-1003 and 1007-1014 (1012-1014 are IANA's later
    /// registrations), and 3000-4999 (libraries, applications). 1005, 1006
    /// and 1015 are for reports only and must never be sent; 1004, the rest
    /// of 1000-2999 and everything else is reserved or invalid. A peer that
    /// sends one gets a protocol error (1002).
    public static func isValidOnWire(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }
}

/// A protocol violation found while decoding: the connection is to be
/// closed with `code`.
public struct FrameError: Error, Equatable, Sendable {
    /// The code to fail the connection with.
    public let code: CloseCode
    /// What was wrong, for logs and the close frame.
    public let reason: String

    /// A violation to be answered with `code`.
    public init(code: CloseCode, reason: String) {
        self.code = code
        self.reason = reason
    }
}

/// One WebSocket frame (payload already unmasked).
public struct Frame: Equatable, Sendable {
    /// The FIN bit: this is the final fragment of its message (always true
    /// for control frames and unfragmented messages).
    public var fin: Bool
    /// What the frame carries.
    public var opcode: Opcode
    /// The application data, unmasked.
    public var payload: [UInt8]

    /// A frame with the given fields (final unless `fin` is false).
    public init(fin: Bool = true, opcode: Opcode, payload: [UInt8]) {
        self.fin = fin
        self.opcode = opcode
        self.payload = payload
    }

    /// Decodes one frame from the start of `bytes`. Returns the frame and how
    /// many bytes it took, or nil if `bytes` holds only part of a frame.
    /// - Parameters:
    ///   - bytes: received bytes, starting at a frame boundary.
    ///   - masked: whether the peer must mask (true when decoding client
    ///     frames on a server: an unmasked one is a protocol error; false on
    ///     a client, where a masked server frame is one).
    ///   - maxPayload: larger payloads fail with 1009 (message too big).
    /// - Throws: `FrameError` with 1002 for reserved bits or opcodes, masking
    ///   violations, fragmented or oversized control frames.
    /// - Complexity: O(*n*) in the payload's length (it is copied and
    ///   unmasked); O(1) while the frame is still incomplete.
    public static func decode(_ bytes: ArraySlice<UInt8>, masked: Bool, maxPayload: Int) throws(FrameError) -> (Frame, Int)? {
        guard bytes.count >= 2 else { return nil }
        let b0 = bytes[bytes.startIndex], b1 = bytes[bytes.startIndex + 1]
        if b0 & 0x70 != 0 { throw FrameError(code: .protocolError, reason: "reserved bits set") }
        guard let opcode = Opcode(rawValue: b0 & 0x0F) else {
            throw FrameError(code: .protocolError, reason: "reserved opcode \(b0 & 0x0F)")
        }
        let fin = b0 & 0x80 != 0
        let isMasked = b1 & 0x80 != 0
        if isMasked != masked {
            throw FrameError(code: .protocolError, reason: masked ? "unmasked client frame" : "masked server frame")
        }
        var len = UInt64(b1 & 0x7F)
        var off = 2
        if len == 126 {
            guard bytes.count >= 4 else { return nil }
            len = UInt64(bytes[bytes.startIndex + 2]) << 8 | UInt64(bytes[bytes.startIndex + 3])
            off = 4
        } else if len == 127 {
            guard bytes.count >= 10 else { return nil }
            len = 0
            for i in 2..<10 { len = len << 8 | UInt64(bytes[bytes.startIndex + i]) }
            if len >> 63 != 0 { throw FrameError(code: .protocolError, reason: "64-bit length with the top bit set") }
            off = 10
        }
        if opcode.isControl {
            if !fin { throw FrameError(code: .protocolError, reason: "fragmented control frame") }
            if len > 125 { throw FrameError(code: .protocolError, reason: "control frame longer than 125 bytes") }
        }
        if len > UInt64(maxPayload) { throw FrameError(code: .messageTooBig, reason: "frame of \(len) bytes") }
        var mask: [UInt8] = []
        if isMasked {
            guard bytes.count >= off + 4 else { return nil }
            mask = Array(bytes[(bytes.startIndex + off)..<(bytes.startIndex + off + 4)])
            off += 4
        }
        let n = Int(len)
        guard bytes.count >= off + n else { return nil }
        var payload = Array(bytes[(bytes.startIndex + off)..<(bytes.startIndex + off + n)])
        if isMasked {
            for i in 0..<n { payload[i] ^= mask[i & 3] }
        }
        return (Frame(fin: fin, opcode: opcode, payload: payload), off + n)
    }

    /// Encodes the frame: unmasked (server to client) or with `mask` (client
    /// to server), with the shortest length form.
    /// - Complexity: O(*n*) in the payload's length.
    public func encode(mask: [UInt8]? = nil) -> [UInt8] {
        precondition(mask == nil || mask!.count == 4, "a mask is 4 bytes")
        var out: [UInt8] = [(fin ? 0x80 : 0) | opcode.rawValue]
        out.reserveCapacity(payload.count + 14)
        let m: UInt8 = mask == nil ? 0 : 0x80
        let n = payload.count
        if n < 126 {
            out.append(m | UInt8(n))
        } else if n <= 0xFFFF {
            out += [m | 126, UInt8(n >> 8), UInt8(truncatingIfNeeded: n)]
        } else {
            out.append(m | 127)
            for i in (0..<8).reversed() { out.append(UInt8(truncatingIfNeeded: UInt64(n) >> (UInt64(i) * 8))) }
        }
        if let mask {
            out += mask
            for i in 0..<n { out.append(payload[i] ^ mask[i & 3]) }
        } else {
            out += payload
        }
        return out
    }
}
