// SHA-1 (FIPS 180-4 section 6.1), for the WebSocket handshake's
// Sec-WebSocket-Accept and the names Redis gives scripts (EVALSHA).
// Not for security: RFC 6455 uses it only to prove the server read the key,
// and Redis only to name a script. Sign with HMAC-SHA256 (HMAC.swift).

/// Computes SHA-1 digests (20 bytes).
package struct SHA1: BlockHash {
    private var h: (UInt32, UInt32, UInt32, UInt32, UInt32) =
        (0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0)
    var pending = [UInt8]()
    var length: UInt64 = 0

    /// A digest in progress, with no input yet.
    package init() { pending.reserveCapacity(64) }

    /// The digest of `bytes`.
    /// - Complexity: O(*n*) in the input's length.
    package static func hash<S: Sequence>(_ bytes: S) -> [UInt8] where S.Element == UInt8 {
        var s = SHA1()
        s.update(bytes)
        return s.finish()
    }

    /// Feeds more input.
    /// - Complexity: O(*n*) in the length of `bytes`.
    package mutating func update<S: Sequence>(_ bytes: S) where S.Element == UInt8 { absorb(bytes) }

    /// Pads, finishes and returns the digest. Call it once; the value is
    /// spent afterwards.
    /// - Complexity: O(1).
    package mutating func finish() -> [UInt8] {
        pad()
        return bigEndianBytes([h.0, h.1, h.2, h.3, h.4])
    }

    mutating func compress(_ block: [UInt8]) {
        var w = [UInt32](repeating: 0, count: 80)
        for i in 0..<16 { w[i] = bigEndianWord(block, i) }
        for i in 16..<80 {
            let x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
            w[i] = x << 1 | x >> 31
        }
        var (a, b, c, d, e) = h
        for i in 0..<80 {
            let f: UInt32, k: UInt32
            switch i {
            case 0..<20: f = (b & c) | (~b & d); k = 0x5A82_7999
            case 20..<40: f = b ^ c ^ d; k = 0x6ED9_EBA1
            case 40..<60: f = (b & c) | (b & d) | (c & d); k = 0x8F1B_BCDC
            default: f = b ^ c ^ d; k = 0xCA62_C1D6
            }
            let t = (a << 5 | a >> 27) &+ f &+ e &+ k &+ w[i]
            e = d
            d = c
            c = b << 30 | b >> 2
            b = a
            a = t
        }
        h = (h.0 &+ a, h.1 &+ b, h.2 &+ c, h.3 &+ d, h.4 &+ e)
    }
}
