// Base64 (RFC 4648), in the two forms the package speaks:
//
//   standard (section 4)  A-Z a-z 0-9 + /, padded with "=" to a multiple of
//                         4 characters: HTTP headers (the WebSocket key and
//                         accept values).
//   URL (section 5)       A-Z a-z 0-9 - _, never padded: JSON Web Tokens
//                         (RFC 7515 section 2, "base64url").
//
// Every 3 bytes become 4 characters of 6 bits each; a last group of 1 or 2
// bytes becomes 2 or 3 characters, whose low 4 or 2 bits are unused. The URL
// decoder takes only the canonical spelling, those unused bits zero, so one
// byte string has exactly one URL form: a token's signature cannot be
// respelled and still pass. (The standard decoder ignores those bits, as it
// always has: browsers write them as zero anyway.) A length of 4n + 1
// characters is impossible in either form: one character carries 6 bits,
// not a byte.

/// Base64 (RFC 4648), standard and URL-safe.
package enum Base64 {
    private static let standard = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let url = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Encodes `bytes` in the standard alphabet, padded with "=".
    /// - Complexity: O(*n*).
    package static func encode(_ bytes: [UInt8]) -> String { encode(bytes, alphabet: standard, padded: true) }

    /// Decodes standard, padded base64, or returns nil if `text` is not
    /// that: a length that is not a multiple of 4, a character outside the
    /// alphabet, "=" anywhere but in the last two places.
    /// - Complexity: O(*n*).
    package static func decode(_ text: some StringProtocol) -> [UInt8]? {
        var chars = Array(text.utf8)
        guard chars.count % 4 == 0 else { return nil }
        for _ in 0..<2 where chars.last == UInt8(ascii: "=") { chars.removeLast() }
        return decode(chars, url: false)
    }

    /// Encodes `bytes` in the URL-safe alphabet, without padding (base64url).
    /// - Complexity: O(*n*).
    package static func encodeURL(_ bytes: [UInt8]) -> String { encode(bytes, alphabet: url, padded: false) }

    /// Decodes base64url, or returns nil if `text` is not that in its
    /// canonical form: padding, a character outside the URL alphabet, a
    /// length of 4n + 1, or unused low bits that are not zero.
    /// - Complexity: O(*n*).
    package static func decodeURL(_ text: some StringProtocol) -> [UInt8]? { decode(Array(text.utf8), url: true) }

    private static func encode(_ bytes: [UInt8], alphabet: [UInt8], padded: Bool) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let n = min(3, bytes.count - i) // bytes in this group
            var group: UInt32 = 0
            for j in 0..<3 { group = group << 8 | (j < n ? UInt32(bytes[i + j]) : 0) }
            for j in 0...n { out.append(alphabet[Int(group >> (18 - 6 * UInt32(j)) & 63)]) }
            if padded { out += [UInt8](repeating: UInt8(ascii: "="), count: 3 - n) }
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The 6-bit value of the character `c` in one alphabet or the other.
    private static func value(_ c: UInt8, url: Bool) -> UInt32? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return UInt32(c - UInt8(ascii: "A"))
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return UInt32(c - UInt8(ascii: "a")) + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(c - UInt8(ascii: "0")) + 52
        case UInt8(ascii: "+") where !url, UInt8(ascii: "-") where url: return 62
        case UInt8(ascii: "/") where !url, UInt8(ascii: "_") where url: return 63
        default: return nil
        }
    }

    /// Decodes characters without padding; `url` picks the alphabet and
    /// asks for the canonical form.
    private static func decode(_ chars: [UInt8], url: Bool) -> [UInt8]? {
        guard chars.count % 4 != 1 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count * 3 / 4)
        var bits: UInt32 = 0 // the last `count` bits not yet written out
        var count: UInt32 = 0
        for c in chars {
            guard let v = value(c, url: url) else { return nil }
            bits = bits << 6 | v
            count += 6
            if count >= 8 {
                count -= 8
                out.append(UInt8(truncatingIfNeeded: bits >> count))
                bits &= (1 << count) - 1
            }
        }
        if url && bits != 0 { return nil } // the unused low bits of the last character
        return out
    }
}
