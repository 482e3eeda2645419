import Digests
import Testing

@Suite struct Base64Tests {
    @Test("Base64 on RFC 4648's vectors, both ways; bad input is rejected")
    func vectors() {
        let cases = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="),
                     ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        for (plain, coded) in cases {
            #expect(Base64.encode(Array(plain.utf8)) == coded)
            #expect(Base64.decode(coded) == Array(plain.utf8))
        }
        #expect(Base64.decode("Zm9") == nil)
        #expect(Base64.decode("Zm9*") == nil)
        #expect(Base64.decode("Z===") == nil)
        #expect(Base64.decode("====") == nil)
        #expect(Base64.decode("Zg=A") == nil)
        #expect(Base64.decode("Zg==Zg==") == nil)   // padding only at the end
        #expect(Base64.decode("-_8=") == nil)       // the URL alphabet is not the standard one
    }

    @Test("base64url: RFC 4648's vectors without padding, both ways; the alphabet's last two are - and _")
    func urlVectors() {
        let cases = [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"),
                     ("fooba", "Zm9vYmE"), ("foobar", "Zm9vYmFy")]
        for (plain, coded) in cases {
            #expect(Base64.encodeURL(Array(plain.utf8)) == coded)
            #expect(Base64.decodeURL(coded) == Array(plain.utf8))
        }
        #expect(Base64.encodeURL([0xFB, 0xFF, 0xBF]) == "-_-_")
        #expect(Base64.encode([0xFB, 0xFF, 0xBF]) == "+/+/")
        #expect(Base64.decodeURL("-_-_") == [0xFB, 0xFF, 0xBF])
        // Every length and every byte value survives the round trip.
        for n in 0..<70 {
            let data = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 250) }
            #expect(Base64.decodeURL(Base64.encodeURL(data)) == data)
            #expect(Base64.decode(Base64.encode(data)) == data)
        }
    }

    @Test("base64url takes only the canonical form: no padding, no other characters, no 4n+1 length, no stray low bits")
    func urlRefusals() {
        #expect(Base64.decodeURL("Zg==") == nil)
        #expect(Base64.decodeURL("Zm8=") == nil)
        #expect(Base64.decodeURL("+/+/") == nil)
        #expect(Base64.decodeURL("Zm9v Zg") == nil)
        #expect(Base64.decodeURL("Zm9v\n") == nil)
        #expect(Base64.decodeURL("Z") == nil)
        #expect(Base64.decodeURL("Zm9vY") == nil)
        #expect(Base64.decodeURL("Zh") == nil)  // "f" with its last 4 bits set: Zg is the one spelling
        #expect(Base64.decodeURL("Zm9") == nil) // "fo" with stray bits: Zm8
        #expect(Base64.decodeURL("Zé") == nil)
    }
}
