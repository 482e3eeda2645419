// HMAC-SHA256 (RFC 2104 with SHA-256; RFC 4231's vectors in DigestsTests):
// a message authentication code, what signs and checks the chat's tokens.
//
//   HMAC(K, m) = H((K' ^ opad) || H((K' ^ ipad) || m))
//
// where K' is the key padded with zeros to the hash's 64-byte block (a key
// longer than the block is first hashed to 32 bytes), ipad the byte 0x36
// repeated and opad 0x5C. The inner hash starts at `init` and takes the
// message as it comes; `finish` runs the outer one.
//
// A MAC a stranger sent is checked with `constantTimeEquals`, whose time
// does not depend on where the two differ: comparing with `==` stops at the
// first difference, and timing that lets one guess a valid MAC a byte at
// a time.

/// Computes HMAC-SHA256 codes (32 bytes).
package struct HMACSHA256 {
    /// The code's length in bytes.
    package static let codeLength = SHA256.digestLength

    private var inner = SHA256()
    private var outerPad: [UInt8]

    /// A code in progress under `key` (any length; RFC 2104 recommends at
    /// least 32 bytes of randomness), with no message yet.
    /// - Complexity: O(*k*) in the key's length.
    package init(key: [UInt8]) {
        var block = key.count > SHA256.blockLength ? SHA256.hash(key) : key
        block += [UInt8](repeating: 0, count: SHA256.blockLength - block.count)
        inner.update(block.map { $0 ^ 0x36 })
        outerPad = block.map { $0 ^ 0x5C }
    }

    /// The code of `message` under `key`.
    /// - Complexity: O(*n* + *k*) in the message's and the key's lengths.
    package static func authenticate<S: Sequence>(_ message: S, key: [UInt8]) -> [UInt8] where S.Element == UInt8 {
        var mac = HMACSHA256(key: key)
        mac.update(message)
        return mac.finish()
    }

    /// Feeds more of the message.
    /// - Complexity: O(*n*) in the length of `bytes`.
    package mutating func update<S: Sequence>(_ bytes: S) where S.Element == UInt8 { inner.update(bytes) }

    /// Finishes and returns the code. Call it once; the value is spent
    /// afterwards.
    /// - Complexity: O(1).
    package mutating func finish() -> [UInt8] {
        var outer = SHA256()
        outer.update(outerPad)
        outer.update(inner.finish())
        return outer.finish()
    }
}

/// Whether `a` and `b` hold the same bytes, in a time that depends on their
/// lengths only, never on where they differ: every byte of the longer is
/// read, and arrays of different lengths are unequal. For comparing a MAC
/// a stranger sent with the one it should be.
/// - Complexity: O(max(*a*, *b*)), always.
@inline(never) // one loop for every caller: no inlined copy the optimizer could specialize on the data
package func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt(bitPattern: a.count ^ b.count)
    for i in 0..<max(a.count, b.count) {
        // A missing byte reads as 0 and the lengths already differ; the
        // bounds tests depend on lengths only.
        let x = i < a.count ? a[i] : 0
        let y = i < b.count ? b[i] : 0
        difference |= UInt(x ^ y)
    }
    return difference == 0
}
