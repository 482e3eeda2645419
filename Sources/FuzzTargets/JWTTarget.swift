import Chat
import Digests
import Foundation

// Signed tokens (Chat's Token.swift), two ways from one input.
//
// The bytes as a token: `verify` returns claims or a `TokenError`, never
// traps, and says `.tooLong` exactly when the token is over 4 KiB. A token
// it takes is exactly its first two parts, ".", and their HMAC under the
// secret in canonical base64url (so no other spelling of a signature, and
// no change anywhere, passes), its header's alg is HS256, and its claims
// keep the rules: a name `/nick` takes, room names, not expired. Minted
// again, its claims verify to themselves. The seeds in Fuzz/corpus/jwt are
// tokens signed with `secret`, so that mutations of them reach every check.
//
// The bytes as claims: a flags byte, then a name and room names separated
// by NULs. Minted and verified, they come back the same exactly when they
// keep the rules, and are otherwise refused for the first rule they break;
// the minted token changed in one byte (where and how, from the input) is
// refused.

/// The secret the seeds in Fuzz/corpus/jwt are signed with.
package let jwtCorpusSecret = Array("fuzz secret".utf8)
/// The time the target checks tokens at; the valid seeds expire in 2100.
package let jwtCorpusNow = Date(timeIntervalSince1970: 1_700_000_000)

private let secret = jwtCorpusSecret
private let verifier = TokenVerifier(secret: secret)
private let now = jwtCorpusNow

func fuzzJWT(_ bytes: [UInt8]) {
    verifyAsToken(bytes)
    mintAsClaims(bytes)
}

/// Whether `name` is one `/nick` takes, said again from its rule: in NFC
/// already, 1 to 32 characters and at most 128 bytes, no ":", nothing
/// invisible (control, format, separator, private-use, unassigned or
/// surrogate scalars) and no combining mark or modifier first (Command.swift).
private func takesName(_ name: String) -> Bool {
    let marks: Set<Unicode.GeneralCategory> = [.nonspacingMark, .spacingMark, .enclosingMark]
    let hidden: Set<Unicode.GeneralCategory> = [.control, .format, .surrogate, .privateUse, .unassigned,
                                                .lineSeparator, .paragraphSeparator, .spaceSeparator]
    guard let first = name.unicodeScalars.first, name.count <= ChatCommand.maxNameLength,
          name.utf8.count <= 4 * ChatCommand.maxNameLength,
          name.utf8.elementsEqual(name.precomposedStringWithCanonicalMapping.utf8) else { return false }
    return !marks.contains(first.properties.generalCategory) && !first.properties.isGraphemeExtend
        && !first.properties.isEmojiModifier
        && !name.unicodeScalars.contains { $0 == ":" || hidden.contains($0.properties.generalCategory) }
}

/// Whether `claims` keep the rules at `now`.
private func keepRules(_ claims: TokenClaims) -> Bool {
    takesName(claims.name) && (claims.rooms ?? []).allSatisfy(ChatCommand.isRoomName) && now < claims.expires
}

private func verifyAsToken(_ bytes: [UInt8]) {
    let token = String(decoding: bytes, as: UTF8.self)
    let claims: TokenClaims
    do {
        claims = try verifier.verify(token, now: now)
    } catch {
        check((error == .tooLong) == (token.utf8.count > TokenVerifier.maxLength), "\(error) for \(token.utf8.count) bytes")
        return
    }
    let utf8 = Array(token.utf8)
    let dot = utf8.lastIndex(of: UInt8(ascii: "."))! // verified: three parts
    let signingInput = Array(utf8[..<dot])
    check(utf8 == signingInput + Array(("." + Base64.encodeURL(HMACSHA256.authenticate(signingInput, key: secret))).utf8),
          "verified a token that is not its first two parts signed: \(token)")
    let headerPart = signingInput.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)[0]
    let header = Base64.decodeURL(String(decoding: headerPart, as: UTF8.self))
        .flatMap { try? JSONSerialization.jsonObject(with: Data($0)) as? [String: Any] }
    check(header?["alg"] as? String == "HS256", "verified a token whose alg is not HS256: \(token)")
    check(keepRules(claims), "verified claims that break a rule: \(claims)")
    check((try? verifier.verify(mintToken(claims, secret: secret), now: now)) == claims, "claims minted again: \(claims)")
}

private func mintAsClaims(_ bytes: [UInt8]) {
    guard let flags = bytes.first else { return }
    let fields = bytes.dropFirst().split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    // Bit 0: a rooms claim; bit 1: expired, by 0 to 63 * 997 s (0: expiring
    // now, which is expired); otherwise valid for 1 s to about 17 hours.
    let seconds = Double(flags >> 2) * 997
    let claims = TokenClaims(name: fields[0], expires: now.addingTimeInterval(flags & 2 != 0 ? -seconds : seconds + 1),
                             rooms: flags & 1 != 0 ? Array(fields.dropFirst()) : nil)
    let token = mintToken(claims, secret: secret)
    let expected: TokenError?
    if token.utf8.count > TokenVerifier.maxLength {
        expected = .tooLong
    } else if !takesName(claims.name) {
        expected = .badClaim("sub")
    } else if !(claims.rooms ?? []).allSatisfy(ChatCommand.isRoomName) {
        expected = .badClaim("rooms")
    } else if !(now < claims.expires) {
        expected = .expired
    } else {
        expected = nil
    }
    do {
        let back = try verifier.verify(token, now: now)
        check(expected == nil && back == claims, "minted \(claims), verified \(back), expected \(String(describing: expected))")
    } catch {
        check(error == expected, "minted \(claims), refused with \(error), expected \(String(describing: expected))")
    }
    // One byte changed (to another value: the XOR is never 0) is refused.
    var changed = Array(token.utf8)
    let at = (Int(flags) &* 131 &+ bytes.count) % changed.count
    changed[at] ^= bytes.last! | 1
    check((try? verifier.verify(String(decoding: changed, as: UTF8.self), now: now)) == nil,
          "\(token) with byte \(at) changed verified")
}
