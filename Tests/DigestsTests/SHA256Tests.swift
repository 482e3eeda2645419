import Digests
import Testing

@Suite struct SHA256Tests {
    @Test("SHA-256 on FIPS 180-4's examples (NIST's SHA256.pdf, SHA2 additional): empty, 24, 448 and 896 bits",
          arguments: [
              ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
              ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
              ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
               "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
              ("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
               "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"),
          ])
    func vectors(message: String, digest: String) {
        #expect(hex(SHA256.hash(Array(message.utf8))) == digest)
    }

    @Test("A million 'a's: one shot, and streamed in odd-sized pieces, give FIPS 180-4's digest")
    func millionA() {
        let a = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        let digest = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        #expect(hex(SHA256.hash(a)) == digest)
        var s = SHA256()
        var i = 0, piece = 1
        while i < a.count {
            let n = min(piece, a.count - i)
            s.update(a[i..<i + n])
            i += n
            piece = piece * 7 % 1_013 + 1 // 1, 8, 57, 400, 776, ...: sizes from 1 to 1,013 bytes
        }
        #expect(hex(s.finish()) == digest)
    }

    @Test("Lengths around the padding boundary agree between one shot and two updates")
    func paddingBoundary() {
        for n in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129] {
            let data = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            for cut in [0, n / 2, n] {
                var s = SHA256()
                s.update(data.prefix(cut))
                s.update(data.dropFirst(cut))
                #expect(s.finish() == SHA256.hash(data), "length \(n), cut at \(cut)")
            }
        }
        #expect(SHA256.hash([]).count == SHA256.digestLength)
    }
}
