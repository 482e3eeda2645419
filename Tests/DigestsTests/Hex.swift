// Hex, the form the standards print their vectors in (Digests' `hex`
// writes it).

/// The bytes `text` spells in hex (two digits a byte).
func bytes(hex text: String) -> [UInt8] {
    let digits = Array(text.utf8)
    return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
}
