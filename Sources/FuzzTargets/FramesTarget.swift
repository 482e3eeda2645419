import WebSocket

// The frame decoder and message assembly, as a reader sees a byte stream.
// The first input byte picks the side (bit 0: a server, expecting masked
// frames) and the read limit (bits 1-3); the rest is the stream.
//
// Properties: a decoded frame consumed exactly its bytes, every shorter
// prefix of them is "not yet a frame" (never an error), it encodes back to
// the same bytes when its length was written in the shortest form (and to a
// frame that decodes the same in any case); control frames are final and
// at most 125 bytes. The assembler agrees with a plain model of RFC 6455
// section 5.4 on every event: messages are the data payloads joined, text is
// UTF-8, nothing over the read limit is delivered, and a close payload
// carries a code that may be sent on the wire.

func fuzzFrames(_ input: [UInt8]) {
    guard let mode = input.first else { return }
    let masked = mode & 1 != 0
    let readLimit = [0, 1, 7, 125, 126, 300, 65536, 1 << 20][Int(mode >> 1) & 7]
    var stream = Array(input.dropFirst())
    var assembler = MessageAssembler(readLimit: readLimit)
    // The model: the data payloads of the message in progress.
    var model: (kind: Opcode, bytes: [UInt8])?
    while true {
        let decoded: (Frame, Int)?
        do {
            decoded = try Frame.decode(stream[...], masked: masked, maxPayload: readLimit)
        } catch {
            check([.protocolError, .messageTooBig].contains(error.code), "decoder failed with \(error.code)")
            return
        }
        guard let (frame, used) = decoded else { return }
        let raw = Array(stream[..<used])
        stream.removeFirst(used)
        checkFrame(frame, raw: raw, masked: masked, readLimit: readLimit)

        // The model's verdict on this frame.
        var expected: Result<MessageAssembler.Event?, FrameError>
        switch frame.opcode {
        case .ping: expected = .success(.ping(frame.payload))
        case .pong: expected = .success(.pong(frame.payload))
        case .close:
            expected = Result { () throws(FrameError) in .close(try ClosePayload(parsing: frame.payload)) }
        case .text, .binary, .continuation:
            if frame.opcode == .continuation {
                guard model != nil else {
                    expected = .failure(FrameError(code: .protocolError, reason: ""))
                    break
                }
                model!.bytes += frame.payload
            } else {
                guard model == nil else {
                    expected = .failure(FrameError(code: .protocolError, reason: ""))
                    break
                }
                model = (frame.opcode, frame.payload)
            }
            if model!.bytes.count > readLimit {
                expected = .failure(FrameError(code: .messageTooBig, reason: ""))
            } else if !frame.fin {
                expected = .success(nil)
            } else if model!.kind == .binary {
                expected = .success(.message(.binary(model!.bytes)))
                model = nil
            } else if let s = String(validating: model!.bytes, as: UTF8.self) {
                expected = .success(.message(.text(s)))
                model = nil
            } else {
                expected = .failure(FrameError(code: .invalidPayload, reason: ""))
            }
        }
        do {
            let event = try assembler.push(frame)
            guard case .success(let want) = expected else {
                check(false, "the assembler took a \(frame.opcode) frame the model refuses")
                return
            }
            check(event == want, "the assembler gave \(String(describing: event)), the model \(String(describing: want))")
            check(assembler.inMessage == (model != nil), "the assembler's message state differs from the model's")
            switch event {
            case .message(.text(let s))?:
                check(s.utf8.count <= readLimit, "a text message over the read limit")
            case .message(.binary(let b))?:
                check(b.count <= readLimit, "a binary message over the read limit")
            case .close(let c)?:
                check(c.code.map(CloseCode.isValidOnWire) ?? frame.payload.isEmpty, "close code \(String(describing: c.code))")
                return // a reader stops at a close frame
            default:
                break
            }
        } catch {
            guard case .failure(let want) = expected else {
                check(false, "the assembler refused a \(frame.opcode) frame the model takes: \(error)")
                return
            }
            check(error.code == want.code, "the assembler failed with \(error.code), the model with \(want.code)")
            return // the connection is failed
        }
    }
}

/// Properties of one decoded frame and the bytes it came from.
private func checkFrame(_ frame: Frame, raw: [UInt8], masked: Bool, readLimit: Int) {
    check(frame.payload.count <= readLimit, "a frame over the read limit")
    if frame.opcode.isControl {
        check(frame.fin && frame.payload.count <= 125, "a fragmented or long control frame")
    }
    let header = raw.count - frame.payload.count
    check([2, 4, 10].map { $0 + (masked ? 4 : 0) }.contains(header), "a header of \(header) bytes")
    // Every shorter prefix is a frame not yet complete.
    for cut in Set([0, 1, 2, 3, header - 1, header, raw.count - 1]) where cut >= 0 && cut < raw.count {
        do {
            let d = try Frame.decode(raw[..<cut], masked: masked, maxPayload: readLimit)
            check(d == nil, "a prefix of \(cut) bytes decoded as a frame")
        } catch {
            check(false, "a prefix of \(cut) bytes was refused (\(error)) where the whole frame is fine")
        }
    }
    // Encoded again, with the same mask: the same bytes if the length was
    // in its shortest form; a frame that decodes the same in any case.
    let mask = masked ? Array(raw[(header - 4)..<header]) : nil
    let encoded = frame.encode(mask: mask)
    let n = frame.payload.count
    let shortest = (raw[1] & 0x7F) == (n < 126 ? UInt8(n) : n <= 0xFFFF ? 126 : 127)
    if shortest { check(encoded == raw, "the frame does not encode back to its bytes") }
    do {
        let back = try Frame.decode(encoded[...], masked: masked, maxPayload: readLimit)
        check(back.map { $0.0 == frame && $0.1 == encoded.count } ?? false, "the encoded frame decodes differently")
    } catch {
        check(false, "the encoded frame is refused: \(error)")
    }
}
