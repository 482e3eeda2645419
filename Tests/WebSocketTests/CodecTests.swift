import Testing
import WebSocket

// SHA-1 and base64 are tested in DigestsTests.

@Suite struct AcceptTests {
    @Test("Sec-WebSocket-Accept for RFC 6455's sample key")
    func accept() {
        #expect(webSocketAccept(key: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }
}

@Suite struct FrameTests {
    let hello = Array("Hello".utf8)

    @Test("RFC 6455 section 5.7 examples decode and encode exactly")
    func rfcExamples() throws {
        let unmasked: [UInt8] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        let masked: [UInt8] = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        #expect(try Frame.decode(unmasked[...], masked: false, maxPayload: 1 << 20)?.0 == Frame(opcode: .text, payload: hello))
        #expect(try Frame.decode(masked[...], masked: true, maxPayload: 1 << 20)?.0 == Frame(opcode: .text, payload: hello))
        #expect(Frame(opcode: .text, payload: hello).encode() == unmasked)
        #expect(Frame(opcode: .text, payload: hello).encode(mask: [0x37, 0xfa, 0x21, 0x3d]) == masked)
        // Fragmented "Hel" + "lo".
        let first: [UInt8] = [0x01, 0x03, 0x48, 0x65, 0x6c]
        let last: [UInt8] = [0x80, 0x02, 0x6c, 0x6f]
        #expect(try Frame.decode(first[...], masked: false, maxPayload: 100)?.0 == Frame(fin: false, opcode: .text, payload: Array("Hel".utf8)))
        #expect(try Frame.decode(last[...], masked: false, maxPayload: 100)?.0 == Frame(opcode: .continuation, payload: Array("lo".utf8)))
        // Ping "Hello".
        #expect(Frame(opcode: .ping, payload: hello).encode() == [0x89, 0x05] + hello)
        // 256 bytes: 16-bit length; 65536 bytes: 64-bit length.
        let b256 = Frame(opcode: .binary, payload: [UInt8](repeating: 1, count: 256)).encode()
        #expect(Array(b256.prefix(4)) == [0x82, 0x7E, 0x01, 0x00])
        let b64k = Frame(opcode: .binary, payload: [UInt8](repeating: 2, count: 65536)).encode()
        #expect(Array(b64k.prefix(10)) == [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
        let (f, used) = try #require(try Frame.decode(b64k[...], masked: false, maxPayload: 1 << 20))
        #expect(used == b64k.count && f.payload.count == 65536)
    }

    @Test("Truncated input asks for more bytes at every cut")
    func truncated() throws {
        let full = Frame(opcode: .binary, payload: [UInt8](repeating: 9, count: 300)).encode(mask: [1, 2, 3, 4])
        for cut in 0..<full.count {
            #expect(try Frame.decode(full[0..<cut], masked: true, maxPayload: 1000) == nil)
        }
        #expect(try Frame.decode(full[...], masked: true, maxPayload: 1000)?.1 == full.count)
    }

    @Test("Protocol violations: the right close codes")
    func violations() {
        func code(_ bytes: [UInt8], masked: Bool = false, max: Int = 1000) -> CloseCode? {
            do { _ = try Frame.decode(bytes[...], masked: masked, maxPayload: max); return nil } catch { return error.code }
        }
        #expect(code([0xC1, 0x00]) == .protocolError)                 // RSV1 set
        #expect(code([0x83, 0x00]) == .protocolError)                 // reserved data opcode
        #expect(code([0x8B, 0x00]) == .protocolError)                 // reserved control opcode
        #expect(code([0x09, 0x00]) == .protocolError)                 // fragmented ping
        #expect(code([0x89, 0x7E, 0x00, 0x7E]) == .protocolError)     // control frame of 126 bytes
        #expect(code([0x81, 0x00], masked: true) == .protocolError)   // unmasked client frame
        #expect(code([0x81, 0x80, 1, 2, 3, 4]) == .protocolError)     // masked server frame
        #expect(code([0x82, 0x7E, 0x04, 0x00], max: 512) == .messageTooBig)
        #expect(code([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1]) == .protocolError) // top bit of 64-bit length
    }
}
