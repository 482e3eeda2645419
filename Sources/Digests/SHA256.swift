// SHA-256 (FIPS 180-4 section 6.2), for HMAC-SHA256 (HMAC.swift) and so
// for the signed tokens the chat takes (Chat's Token.swift).
//
// The state is eight 32-bit words; each 64-byte block is expanded to a
// schedule of 64 words and folded in by 64 rounds. The round constants K
// are the first 32 bits of the fractional parts of the cube roots of the
// first 64 primes, and the initial state those of the square roots of the
// first 8 (FIPS 180-4 sections 4.2.2 and 5.3.3). The standard's vectors in
// DigestsTests check every one of them.

/// Computes SHA-256 digests (32 bytes).
package struct SHA256: BlockHash {
    /// The digest's length in bytes.
    package static let digestLength = 32
    /// The block's length in bytes (what HMAC pads its key to).
    package static let blockLength = 64

    private var h: [UInt32] = [0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A, 0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19]
    var pending = [UInt8]()
    var length: UInt64 = 0

    /// A digest in progress, with no input yet.
    package init() { pending.reserveCapacity(64) }

    /// The digest of `bytes`.
    /// - Complexity: O(*n*) in the input's length.
    package static func hash<S: Sequence>(_ bytes: S) -> [UInt8] where S.Element == UInt8 {
        var s = SHA256()
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
        return bigEndianBytes(h)
    }

    private static let k: [UInt32] = [
        0x428A_2F98, 0x7137_4491, 0xB5C0_FBCF, 0xE9B5_DBA5, 0x3956_C25B, 0x59F1_11F1, 0x923F_82A4, 0xAB1C_5ED5,
        0xD807_AA98, 0x1283_5B01, 0x2431_85BE, 0x550C_7DC3, 0x72BE_5D74, 0x80DE_B1FE, 0x9BDC_06A7, 0xC19B_F174,
        0xE49B_69C1, 0xEFBE_4786, 0x0FC1_9DC6, 0x240C_A1CC, 0x2DE9_2C6F, 0x4A74_84AA, 0x5CB0_A9DC, 0x76F9_88DA,
        0x983E_5152, 0xA831_C66D, 0xB003_27C8, 0xBF59_7FC7, 0xC6E0_0BF3, 0xD5A7_9147, 0x06CA_6351, 0x1429_2967,
        0x27B7_0A85, 0x2E1B_2138, 0x4D2C_6DFC, 0x5338_0D13, 0x650A_7354, 0x766A_0ABB, 0x81C2_C92E, 0x9272_2C85,
        0xA2BF_E8A1, 0xA81A_664B, 0xC24B_8B70, 0xC76C_51A3, 0xD192_E819, 0xD699_0624, 0xF40E_3585, 0x106A_A070,
        0x19A4_C116, 0x1E37_6C08, 0x2748_774C, 0x34B0_BCB5, 0x391C_0CB3, 0x4ED8_AA4A, 0x5B9C_CA4F, 0x682E_6FF3,
        0x748F_82EE, 0x78A5_636F, 0x84C8_7814, 0x8CC7_0208, 0x90BE_FFFA, 0xA450_6CEB, 0xBEF9_A3F7, 0xC671_78F2,
    ]

    /// Rotates `x` right by `n` bits (ROTR in FIPS 180-4).
    @inline(__always)
    private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { x >> n | x << (32 - n) }

    mutating func compress(_ block: [UInt8]) {
        var w = [UInt32](repeating: 0, count: 64)
        for t in 0..<16 { w[t] = bigEndianWord(block, t) }
        for t in 16..<64 {
            let s0 = Self.rotr(w[t - 15], 7) ^ Self.rotr(w[t - 15], 18) ^ w[t - 15] >> 3
            let s1 = Self.rotr(w[t - 2], 17) ^ Self.rotr(w[t - 2], 19) ^ w[t - 2] >> 10
            w[t] = s1 &+ w[t - 7] &+ s0 &+ w[t - 16]
        }
        var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
        for t in 0..<64 {
            let sum1 = Self.rotr(e, 6) ^ Self.rotr(e, 11) ^ Self.rotr(e, 25)
            let choose = (e & f) ^ (~e & g)
            let t1 = hh &+ sum1 &+ choose &+ Self.k[t] &+ w[t]
            let sum0 = Self.rotr(a, 2) ^ Self.rotr(a, 13) ^ Self.rotr(a, 22)
            let majority = (a & b) ^ (a & c) ^ (b & c)
            let t2 = sum0 &+ majority
            hh = g
            g = f
            f = e
            e = d &+ t1
            d = c
            c = b
            b = a
            a = t1 &+ t2
        }
        for (i, v) in [a, b, c, d, e, f, g, hh].enumerated() { h[i] &+= v }
    }
}
