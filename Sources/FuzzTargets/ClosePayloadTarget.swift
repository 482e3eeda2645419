import WebSocket

// A close frame's payload (RFC 6455 sections 5.5.1 and 7.4): what is taken
// has no code (empty payload) or one that may be sent on the wire, and a
// UTF-8 reason, and encodes back to the same bytes; what is refused is a
// 1-byte payload or a code that may not be sent (1002), or a reason that is
// not UTF-8 (1007).

func fuzzClosePayload(_ bytes: [UInt8]) {
    let payload = Array(bytes.prefix(125)) // a control frame's most
    do {
        let c = try ClosePayload(parsing: payload)
        check((c.code == nil) == payload.isEmpty, "a code read from \(payload.count) bytes: \(String(describing: c.code))")
        if let code = c.code { check(CloseCode.isValidOnWire(code), "close code \(code) accepted") }
        check(c.encode() == payload, "the close payload does not encode back to its bytes")
    } catch {
        switch error.code {
        case .protocolError:
            let code = payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : 0
            check(payload.count == 1 || !CloseCode.isValidOnWire(code), "1002 for a good code \(code)")
        case .invalidPayload:
            check(payload.count >= 2 && String(validating: payload[2...], as: UTF8.self) == nil, "1007 for a UTF-8 reason")
        default:
            check(false, "close payload refused with \(error.code)")
        }
    }
    // Any code that may be sent, and any reason, survive the trip (the
    // reason cut at a scalar boundary to fit).
    if bytes.count >= 2 {
        let code = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        let reason = String(decoding: bytes.dropFirst(2), as: UTF8.self)
        guard CloseCode.isValidOnWire(code) else { return }
        let wire = ClosePayload(code: code, reason: reason).encode()
        check(wire.count <= 125, "an encoded close payload of \(wire.count) bytes")
        do {
            let back = try ClosePayload(parsing: wire)
            // (A prefix in Unicode scalars: the cut may fall between a
            // character's base and its combining marks, still valid UTF-8.)
            check(back.code == code && reason.unicodeScalars.starts(with: back.reason.unicodeScalars),
                  "the close payload came back as \(back)")
            check(wire.count == 2 + reason.utf8.count || wire.count > 121, "the reason was cut short needlessly")
        } catch {
            check(false, "an encoded close payload is refused: \(error)")
        }
    }
}
