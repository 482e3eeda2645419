import Digests
import Testing

@Suite struct HMACTests {
    /// RFC 4231 section 4: key, data, and HMAC-SHA256 (case 5's truncated to 128 bits).
    static let cases: [(case: Int, key: [UInt8], data: [UInt8], mac: String)] = [
        (1, [UInt8](repeating: 0x0B, count: 20), Array("Hi There".utf8),
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (2, Array("Jefe".utf8), Array("what do ya want for nothing?".utf8),
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (3, [UInt8](repeating: 0xAA, count: 20), [UInt8](repeating: 0xDD, count: 50),
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
        (4, Array(1...25), [UInt8](repeating: 0xCD, count: 50),
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
        (5, [UInt8](repeating: 0x0C, count: 20), Array("Test With Truncation".utf8),
         "a3b6167473100ee06e0c796c2955552b"),
        (6, [UInt8](repeating: 0xAA, count: 131), Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8),
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
        (7, [UInt8](repeating: 0xAA, count: 131),
         Array(("This is a test using a larger than block-size key and a larger than block-size data. "
             + "The key needs to be hashed before being used by the HMAC algorithm.").utf8),
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
    ]

    @Test("HMAC-SHA256 on RFC 4231's test cases 1 to 7 (keys shorter than the block, and longer ones, hashed first)",
          arguments: cases.map(\.case))
    func rfc4231(_ n: Int) {
        let v = Self.cases[n - 1]
        let mac = HMACSHA256.authenticate(v.data, key: v.key)
        #expect(mac.count == HMACSHA256.codeLength)
        #expect(hex(mac).hasPrefix(v.mac)) // case 5 gives only the first 128 bits
        #expect(v.mac.count == (n == 5 ? 32 : 64))
    }

    @Test("A streamed message gives the one-shot code")
    func streaming() {
        let v = Self.cases[6]
        var mac = HMACSHA256(key: v.key)
        for chunk in stride(from: 0, to: v.data.count, by: 13) { mac.update(v.data[chunk..<min(chunk + 13, v.data.count)]) }
        #expect(hex(mac.finish()) == v.mac)
    }

    @Test("A key of exactly one block is used as it is; one byte longer is hashed first")
    func blockSizedKeys() {
        let key64 = [UInt8](repeating: 0x42, count: 64)
        #expect(HMACSHA256.authenticate([1, 2, 3], key: key64) != HMACSHA256.authenticate([1, 2, 3], key: SHA256.hash(key64)))
        let key65 = [UInt8](repeating: 0x42, count: 65)
        #expect(HMACSHA256.authenticate([1, 2, 3], key: key65) == HMACSHA256.authenticate([1, 2, 3], key: SHA256.hash(key65)))
    }

    @Test("constantTimeEquals: equal bytes only; a difference anywhere, or another length, is unequal")
    func constantTime() {
        let a = SHA256.hash(Array("a".utf8))
        #expect(constantTimeEquals(a, a))
        #expect(constantTimeEquals([], []))
        for i in a.indices {
            var b = a
            b[i] ^= 0x01
            #expect(!constantTimeEquals(a, b), "differing at \(i)")
        }
        #expect(!constantTimeEquals(a, Array(a.dropLast())))
        #expect(!constantTimeEquals(Array(a.dropLast()), a))
        #expect(!constantTimeEquals(a, a + [0]))     // a zero byte more is still another length
        #expect(!constantTimeEquals([], [0]))
    }
}
