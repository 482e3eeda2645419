// Digests: the hash functions, the MAC and the base64 the package writes
// itself, so that it needs no package ("packages: none").
//
//   SHA1.swift     SHA-1 (FIPS 180-4): the WebSocket handshake's
//                  Sec-WebSocket-Accept and Redis's EVALSHA script names.
//                  Not for security.
//   SHA256.swift   SHA-256 (FIPS 180-4)
//   HMAC.swift     HMAC-SHA256 (RFC 2104), and comparing MACs in constant time
//   Base64.swift   base64 (RFC 4648): padded, for HTTP headers; URL-safe and
//                  unpadded, for JSON Web Tokens
//   (this file)    `hex`: a digest in lower-case hex, as Redis names scripts
//                  and the standards print their vectors
//
// Only the package's own modules import it (it is no product), so its API
// is `package`. Everything here is a value type without locks: use one
// value from one G at a time; the one-shot functions may run anywhere.
//
// This file: the framing that SHA-1 and SHA-256 share (FIPS 180-4 sections
// 5.1.1 and 6.x.2). Both cut the message into 64-byte blocks and fold each
// into a state of 32-bit words with a compression function; the last block
// is padded with a 1 bit, zeros, and the message's length in bits as a
// 64-bit big-endian number, taking one more block when fewer than 9 bytes
// are left. Only the compression function and the state differ, so each
// hash writes those two and gets `absorb` and `pad` from `BlockHash`.

/// A hash of the FIPS 180-4 family with 64-byte blocks: its state and its
/// compression function. `absorb` and `pad` do the rest.
///
/// Invariant: `pending` holds fewer than 64 bytes between calls, the input
/// since the last block compressed; `length` counts every byte absorbed.
protocol BlockHash {
    /// Input not compressed yet: fewer than 64 bytes.
    var pending: [UInt8] { get set }
    /// Bytes absorbed so far (the message length, wrapping at 2^64 bytes).
    var length: UInt64 { get set }
    /// Folds one 64-byte block into the state.
    mutating func compress(_ block: [UInt8])
}

extension BlockHash {
    /// Feeds `bytes`, compressing each block as it fills.
    /// - Complexity: O(*n*) in the length of `bytes`.
    mutating func absorb<S: Sequence>(_ bytes: S) where S.Element == UInt8 {
        for b in bytes {
            pending.append(b)
            length &+= 1
            if pending.count == 64 {
                compress(pending)
                pending.removeAll(keepingCapacity: true)
            }
        }
    }

    /// Pads the message (a 1 bit, zeros, its length in bits) and compresses
    /// the last block or two. The state then holds the digest; absorbing
    /// more afterwards hashes nothing meaningful.
    mutating func pad() {
        let bits = length &* 8
        pending.append(0x80)
        if pending.count > 56 {
            while pending.count < 64 { pending.append(0) }
            compress(pending)
            pending.removeAll(keepingCapacity: true)
        }
        while pending.count < 56 { pending.append(0) }
        for i in (0..<8).reversed() { pending.append(UInt8(truncatingIfNeeded: bits >> (UInt64(i) * 8))) }
        compress(pending)
        pending.removeAll(keepingCapacity: true)
    }
}

/// Word `i` of a 64-byte block, read big-endian (FIPS 180-4 section 3.1).
@inline(__always)
func bigEndianWord(_ block: [UInt8], _ i: Int) -> UInt32 {
    UInt32(block[4 * i]) << 24 | UInt32(block[4 * i + 1]) << 16 | UInt32(block[4 * i + 2]) << 8 | UInt32(block[4 * i + 3])
}

/// `words` as bytes, each word big-endian: how a digest is written out.
func bigEndianBytes(_ words: [UInt32]) -> [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(4 * words.count)
    for w in words {
        out += [UInt8(w >> 24), UInt8(truncatingIfNeeded: w >> 16), UInt8(truncatingIfNeeded: w >> 8), UInt8(truncatingIfNeeded: w)]
    }
    return out
}

/// `bytes` in lower-case hex, two digits a byte (a digest as Redis names a
/// script by it, and as the standards print their vectors).
package func hex(_ bytes: [UInt8]) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}
