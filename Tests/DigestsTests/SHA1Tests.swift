import Digests
import Testing

@Suite struct SHA1Tests {
    @Test("SHA-1 on the standard test vectors (FIPS 180 examples)")
    func vectors() {
        #expect(hex(SHA1.hash(Array("abc".utf8))) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(hex(SHA1.hash([])) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(hex(SHA1.hash(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)))
                == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
        #expect(hex(SHA1.hash([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)))
                == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
        // Lengths around the padding boundary (55, 56, 63, 64 bytes) agree with incremental updates.
        for n in [55, 56, 63, 64, 65, 119, 120] {
            let data = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            var s = SHA1()
            s.update(data.prefix(7))
            s.update(data.dropFirst(7))
            #expect(s.finish() == SHA1.hash(data))
        }
    }
}
