import Digests
import Foundation

// Signed identities: with auth on, a client proves its name with a token
// that the application's own backend signed with a secret it shares with
// the chat: a JSON Web Token (RFC 7519) in the compact form of RFC 7515,
// HMAC-SHA256 ("HS256") only:
//
//   base64url(header) "." base64url(payload) "." base64url(HMAC(secret, the first two parts as sent))
//
//   header   {"alg": "HS256", "typ": "JWT"}        typ optional
//   payload  {"sub": "ann", "exp": 4102444800, "rooms": ["ops", "dev"]}
//
// `sub` is the client's name, one `/nick` would take, in NFC; `exp` the end of the
// token's life, a JSON number of seconds since 1970 (RFC 7519's NumericDate;
// a fraction is allowed); `rooms`, if present, the only rooms the client may
// join. `nbf` (not before), if present, is checked as `exp` is; `iat` and
// any other claim are ignored. There is no leeway: the backend and the chat
// keep their clocks right (NTP) and the backend gives its tokens a life of
// minutes, not seconds.
//
// `TokenVerifier.verify` takes a string a stranger sent and checks, in
// this order, failing at the first problem with its `TokenError`:
//   1. at most 4 KiB (`maxLength`): a limit before any work;
//   2. three parts split at ".", each canonical base64url: no padding, only
//      the URL alphabet, no impossible length, no stray low bits, so that a
//      token has one spelling and a signature cannot be respelled;
//   3. the header: a JSON object whose `alg` is exactly "HS256" (never
//      "none", nor an asymmetric algorithm that would take the secret for a
//      public key), `typ` if present "JWT" (RFC 7515 compares media types
//      case-insensitively), and no `crit` (extensions it would have to know);
//   4. the signature: HMAC-SHA256 of the first two parts, compared in
//      constant time (`constantTimeEquals`), before the payload is parsed:
//      the claims' parser never sees a stranger's bytes;
//   5. the claims: a JSON object with `sub`, `exp` (a number, not a bool or
//      a string), and if present `nbf` and `rooms` (room names); then the
//      time: expired at `exp` and after, not valid before `nbf`.
// No input makes it trap: every step is total on bytes, and the JSON parser
// (Foundation's JSONDecoder) reports what it cannot read.
//
// `mintToken` and `signToken` make tokens as a backend would, for the tests,
// the fuzz target and examples. What to do with a refusal (a 401 before the
// upgrade) and with the claims (`/nick` refused, a room outside `rooms`
// refused) is the server's.

/// What a verified token says: who its holder is, until when, and which
/// rooms it may join.
package struct TokenClaims: Equatable, Sendable {
    /// `sub`: the holder's name, one that `/nick` would take.
    package var name: String
    /// `exp`: when the token stops being valid.
    package var expires: Date
    /// `rooms`: the rooms the holder may join; nil (no claim) for any room.
    package var rooms: [String]?

    /// Claims for `name`, valid until `expires`, for `rooms` (nil: any room).
    package init(name: String, expires: Date, rooms: [String]? = nil) {
        self.name = name
        self.expires = expires
        self.rooms = rooms
    }

    /// Whether the claims let their holder join `room`.
    /// - Complexity: O(*r*) in the number of rooms claimed.
    package func mayJoin(_ room: String) -> Bool { rooms?.contains(room) ?? true }
}

/// Why a token was refused: one case per rule, in the order they are
/// checked (see the top of Token.swift).
package enum TokenError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Over `TokenVerifier.maxLength` bytes.
    case tooLong
    /// Not three parts separated by ".".
    case notThreeParts
    /// A part that is not canonical base64url.
    case badBase64URL
    /// A header or payload that is not a JSON object.
    case notJSONObject
    /// A header whose `alg` is missing or not "HS256".
    case badAlgorithm
    /// A header whose `typ` is not "JWT", or that has `crit`.
    case badHeader
    /// A signature that is not the secret's.
    case badSignature
    /// A claim that is missing (`sub`, `exp`) or not what it must be; the
    /// associated value is its name.
    case badClaim(String)
    /// The token's `exp` has come.
    case expired
    /// The token's `nbf` has not come yet.
    case notYetValid

    /// What was wrong, for a log line or a 401's body.
    package var description: String {
        switch self {
        case .tooLong: "the token is longer than \(TokenVerifier.maxLength) bytes"
        case .notThreeParts: "the token is not three parts separated by dots"
        case .badBase64URL: "a part of the token is not base64url"
        case .notJSONObject: "the token's header or payload is not a JSON object"
        case .badAlgorithm: "the token is not signed with HS256"
        case .badHeader: "the token's header has a typ other than JWT, or crit"
        case .badSignature: "the token's signature is wrong"
        case .badClaim("sub"): "the token's sub is missing or not a name /nick would take"
        case .badClaim("rooms"): "the token's rooms claim is not an array of room names (\(ChatCommand.roomNameRule))"
        case .badClaim(let claim): "the token's \(claim) claim is missing or not a number"
        case .expired: "the token has expired"
        case .notYetValid: "the token is not valid yet"
        }
    }
}

/// Checks tokens signed with one secret (see the top of Token.swift).
/// Immutable: any number of Gs may share one.
package struct TokenVerifier: Sendable {
    /// The longest token taken, in bytes.
    package static let maxLength = 4096

    private let secret: [UInt8]

    /// A verifier for tokens signed with `secret`. (Refusing a short or
    /// empty secret is the configuration's job.)
    package init(secret: [UInt8]) { self.secret = secret }

    /// The claims of `token`, if it is well formed, signed with this
    /// verifier's secret, and valid at `now`.
    /// - Throws: the `TokenError` of the first rule it breaks.
    /// - Complexity: O(*n*) in the token's length, at most `maxLength`.
    package func verify(_ token: String, now: Date) throws(TokenError) -> TokenClaims {
        let bytes = Array(token.utf8)
        guard bytes.count <= Self.maxLength else { throw .tooLong }
        let parts = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw .notThreeParts }
        let decoded = parts.map { Base64.decodeURL(String(decoding: $0, as: UTF8.self)) }
        guard let header = decoded[0], let payload = decoded[1], let signature = decoded[2] else { throw .badBase64URL }
        _ = try Self.decodeJSON(Header.self, header)
        let expected = HMACSHA256.authenticate(bytes[..<parts[1].endIndex], key: secret)
        guard constantTimeEquals(expected, signature) else { throw .badSignature }
        let claims = try Self.decodeJSON(Payload.self, payload)
        guard now < claims.claims.expires else { throw .expired }
        if let notBefore = claims.notBefore, now < notBefore { throw .notYetValid }
        return claims.claims
    }

    /// `bytes` parsed as JSON into `T`, whose `init(from:)` throws a
    /// `TokenError` for a value it refuses; anything the parser refuses
    /// (not JSON, not an object) is `.notJSONObject`.
    private static func decodeJSON<T: Decodable>(_: T.Type, _ bytes: [UInt8]) throws(TokenError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch let error as TokenError {
            throw error
        } catch {
            throw .notJSONObject
        }
    }

    /// A header that passes rule 3, or a `TokenError`.
    private struct Header: Decodable {
        enum Key: String, CodingKey { case alg, typ, crit }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            guard (try? c.decode(String.self, forKey: .alg)) == "HS256" else { throw TokenError.badAlgorithm }
            if c.contains(.typ) {
                guard let type = try? c.decode(String.self, forKey: .typ), type.uppercased() == "JWT" else {
                    throw TokenError.badHeader
                }
            }
            if c.contains(.crit) { throw TokenError.badHeader }
        }
    }

    /// The claims of a payload that passes rule 5's types, or a `TokenError`.
    private struct Payload: Decodable {
        enum Key: String, CodingKey { case sub, exp, nbf, rooms }

        let claims: TokenClaims
        let notBefore: Date?

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            guard let name = try? c.decode(String.self, forKey: .sub), isChatName(name) else {
                throw TokenError.badClaim("sub")
            }
            // JSONDecoder takes numbers only: true, "1" and null are refused.
            guard let exp = try? c.decode(Double.self, forKey: .exp) else { throw TokenError.badClaim("exp") }
            var nbf: Double?
            if c.contains(.nbf) {
                guard let n = try? c.decode(Double.self, forKey: .nbf) else { throw TokenError.badClaim("nbf") }
                nbf = n
            }
            var rooms: [String]?
            if c.contains(.rooms) {
                guard let r = try? c.decode([String].self, forKey: .rooms), r.allSatisfy(ChatCommand.isRoomName) else {
                    throw TokenError.badClaim("rooms")
                }
                rooms = r
            }
            claims = TokenClaims(name: name, expires: Date(timeIntervalSince1970: exp), rooms: rooms)
            notBefore = nbf.map(Date.init(timeIntervalSince1970:))
        }
    }
}

/// Whether `name` is one that `/nick` takes, as it is: the chat's own rule
/// (`ChatCommand`), applied to the line a client would type, cleaned as
/// every line is (`cleanMessage`), and in NFC already.
func isChatName(_ name: String) -> Bool {
    // Byte for byte: a name in another normal form than NFC (which /nick
    // would have put it in) is refused, not taken for its NFC twin.
    guard case .nick(let parsed) = ChatCommand(parsing: cleanMessage("/nick " + name)) else { return false }
    return parsed.utf8.elementsEqual(name.utf8)
}

/// A token for `claims`, signed with `secret`, as an application's backend
/// mints one: header `{"alg":"HS256","typ":"JWT"}`, `exp` a whole number
/// when the time is a whole second. For tests and examples; `claims` are
/// not checked, and `expires` must be a finite time.
/// - Complexity: O(*n*) in the claims' size.
package func mintToken(_ claims: TokenClaims, secret: [UInt8]) -> String {
    struct Body: Encodable {
        let claims: TokenClaims
        enum Key: String, CodingKey { case sub, exp, rooms }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(claims.name, forKey: .sub)
            let exp = claims.expires.timeIntervalSince1970
            if exp == exp.rounded(), abs(exp) < 0x1p53 { try c.encode(Int64(exp), forKey: .exp) } else { try c.encode(exp, forKey: .exp) }
            try c.encodeIfPresent(claims.rooms, forKey: .rooms)
        }
    }
    precondition(claims.expires.timeIntervalSince1970.isFinite, "a token's exp must be a finite time")
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    // Cannot throw: strings, an array of strings and a finite number.
    let payload = try! encoder.encode(Body(claims: claims))
    return signToken(header: #"{"alg":"HS256","typ":"JWT"}"#, payload: String(decoding: payload, as: UTF8.self), secret: secret)
}

/// A token with any `header` and `payload` (JSON texts, not checked),
/// signed with `secret`: for tests of what `TokenVerifier` refuses.
/// - Complexity: O(*n*) in the texts' length.
package func signToken(header: String, payload: String, secret: [UInt8]) -> String {
    let signingInput = Base64.encodeURL(Array(header.utf8)) + "." + Base64.encodeURL(Array(payload.utf8))
    return signingInput + "." + Base64.encodeURL(HMACSHA256.authenticate(Array(signingInput.utf8), key: secret))
}
