import Chat
import Foundation
import Testing

// Signed identities (Token.swift): what verifies, what each rule refuses,
// and a token from another implementation.

private let secret = Array("correct horse battery staple".utf8)
private let verifier = TokenVerifier(secret: secret)
private let now = Date(timeIntervalSince1970: 1_700_000_000)
private let later = Date(timeIntervalSince1970: 4_102_444_800) // 2100-01-01

/// Why `verifier` refuses `token` at `now`; nil if it takes it.
private func refusal(_ token: String, at time: Date = now) -> TokenError? {
    do {
        _ = try verifier.verify(token, now: time)
        return nil
    } catch {
        return error
    }
}

/// A token with this payload (a JSON text), the usual header and `secret`.
private func signed(_ payload: String, header: String = #"{"alg":"HS256","typ":"JWT"}"#) -> String {
    signToken(header: header, payload: payload, secret: secret)
}

@Suite struct TokenTests {
    @Test("A minted token verifies to its claims, with and without rooms")
    func roundTrip() throws {
        for claims in [TokenClaims(name: "ann", expires: later),
                       TokenClaims(name: "bob", expires: later, rooms: ["ops", "dev-1"]),
                       TokenClaims(name: "Zoë_ünïcode", expires: Date(timeIntervalSince1970: 1_700_000_000.5), rooms: []),
                       TokenClaims(name: String(repeating: "x", count: ChatCommand.maxNameLength), expires: later)] {
            let token = mintToken(claims, secret: secret)
            #expect(try verifier.verify(token, now: now) == claims)
        }
        let anyRoom = TokenClaims(name: "ann", expires: later)
        #expect(anyRoom.mayJoin("ops"))
        let someRooms = TokenClaims(name: "ann", expires: later, rooms: ["ops"])
        #expect(someRooms.mayJoin("ops") && !someRooms.mayJoin("dev"))
    }

    @Test("A token minted by Python's standard library verifies")
    func python() throws {
        // python3 -c 'import base64,hashlib,hmac,json; b=lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode(); s=b(json.dumps({"alg":"HS256","typ":"JWT"}).encode())+"."+b(json.dumps({"sub":"ann","exp":4102444800,"rooms":["lobby","ops"]}).encode()); print(s+"."+b(hmac.new(b"correct horse battery staple",s.encode(),hashlib.sha256).digest()))'
        let token = "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9"
            + ".eyJzdWIiOiAiYW5uIiwgImV4cCI6IDQxMDI0NDQ4MDAsICJyb29tcyI6IFsibG9iYnkiLCAib3BzIl19"
            + ".RwZm3BJDZkTsLA2WK9KP_wI0S3YE3EdEU86_lzt0W_o"
        #expect(try verifier.verify(token, now: now) == TokenClaims(name: "ann", expires: later, rooms: ["lobby", "ops"]))
        #expect(refusal(token, at: later) == .expired)
        #expect(throws: TokenError.badSignature) { try TokenVerifier(secret: Array("another secret".utf8)).verify(token, now: now) }
    }

    @Test("Over 4 KiB is refused before anything else; not three parts is refused")
    func shape() {
        let payload = #"{"sub":"ann","exp":4102444800,"pad":""#
        let long = signed(payload + String(repeating: "x", count: 3_000) + "\"}")
        #expect(long.utf8.count > TokenVerifier.maxLength)
        #expect(refusal(long) == .tooLong)
        #expect(refusal(String(repeating: "a", count: TokenVerifier.maxLength + 1)) == .tooLong)
        #expect(refusal(String(repeating: "a", count: TokenVerifier.maxLength)) == .notThreeParts)
        let token = mintToken(TokenClaims(name: "ann", expires: later), secret: secret)
        for bad in ["", ".", "..", "abc", "a.b", "a.b.c.d", token + ".", "." + token, token.replacingOccurrences(of: ".", with: "")] {
            #expect(refusal(bad) == (bad == ".." ? .notJSONObject : .notThreeParts), "\(bad)")
        }
    }

    @Test("A part that is not canonical base64url is refused: padding, other characters, impossible lengths, stray bits")
    func base64url() {
        let token = mintToken(TokenClaims(name: "ann", expires: later), secret: secret)
        let parts = token.split(separator: ".").map(String.init)
        func with(_ i: Int, _ part: String) -> String {
            var p = parts
            p[i] = part
            return p.joined(separator: ".")
        }
        for i in 0..<3 {
            #expect(refusal(with(i, parts[i] + "=")) == .badBase64URL)
            #expect(refusal(with(i, "A")) == .badBase64URL)      // 4n+1 characters: no byte string
            #expect(refusal(with(i, "AAAAA")) == .badBase64URL)
            #expect(refusal(with(i, "+" + parts[i].dropFirst())) == .badBase64URL)
            #expect(refusal(with(i, "*" + parts[i].dropFirst())) == .badBase64URL)
            #expect(refusal(with(i, " " + parts[i])) == .badBase64URL)
        }
        // The signature is 32 bytes: 43 characters whose last carries 2 unused bits.
        #expect(parts[2].count == 43)
        let sig = Array(parts[2].utf8)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        let last = alphabet.firstIndex(of: sig[42])!
        for stray in 1..<4 { // the same 32 bytes, respelled with low bits set
            let respelled = String(decoding: sig.dropLast() + [alphabet[last | stray]], as: UTF8.self)
            #expect(refusal(with(2, respelled)) == .badBase64URL)
        }
    }

    @Test("A header or payload that is not a JSON object is refused")
    func notObjects() {
        let payload = #"{"sub":"ann","exp":4102444800}"#
        for bad in ["", "[]", "[1]", "3", #""x""#, "null", "true", "not json", #"{"alg":"HS256""#, "{\u{0}}"] {
            #expect(refusal(signed(payload, header: bad)) == .notJSONObject, "header \(bad)")
            #expect(refusal(signed(bad)) == .notJSONObject, "payload \(bad)")
        }
        // Bytes that are not UTF-8 at all.
        #expect(refusal("__57.e30.AAAA") == .notJSONObject) // base64url of FF FE 7B; e30 is {}
    }

    @Test("alg must be exactly HS256: none, RS256, HS384, another spelling or none at all are refused, signed or not")
    func algorithm() {
        let payload = #"{"sub":"ann","exp":4102444800}"#
        for header in [#"{"alg":"none","typ":"JWT"}"#, #"{"alg":"none"}"#, #"{"alg":"RS256","typ":"JWT"}"#,
                       #"{"alg":"HS384"}"#, #"{"alg":"hs256"}"#, #"{"alg":"HS256 "}"#, #"{"typ":"JWT"}"#, "{}",
                       #"{"alg":null}"#, #"{"alg":256}"#, #"{"alg":["HS256"]}"#] {
            let token = signed(payload, header: header)
            #expect(refusal(token) == .badAlgorithm, "\(header)")
            // An unsecured JWT (RFC 7519 section 6): an empty signature.
            let unsigned = token[..<token.lastIndex(of: ".")!] + "."
            #expect(refusal(String(unsigned)) == .badAlgorithm, "\(header), unsigned")
        }
    }

    @Test("typ, if present, must be JWT (in any case); crit is refused; other header fields are ignored")
    func header() throws {
        let payload = #"{"sub":"ann","exp":4102444800}"#
        for good in [#"{"alg":"HS256"}"#, #"{"typ":"jwt","alg":"HS256"}"#, #"{"alg":"HS256","kid":"key-1"}"#] {
            #expect(refusal(signed(payload, header: good)) == nil, "\(good)")
        }
        for bad in [#"{"alg":"HS256","typ":"JOSE"}"#, #"{"alg":"HS256","typ":null}"#, #"{"alg":"HS256","typ":1}"#,
                    #"{"alg":"HS256","crit":["exp"]}"#] {
            #expect(refusal(signed(payload, header: bad)) == .badHeader, "\(bad)")
        }
    }

    @Test("A signature that is not the secret's is refused: another secret, another payload's, cut, lengthened, empty")
    func signature() {
        let token = mintToken(TokenClaims(name: "ann", expires: later), secret: secret)
        let other = mintToken(TokenClaims(name: "eve", expires: later), secret: secret)
        let body = token[..<token.lastIndex(of: ".")!]
        let signature = token[token.index(after: token.lastIndex(of: ".")!)...]
        let otherSignature = other[other.index(after: other.lastIndex(of: ".")!)...]
        #expect(refusal(mintToken(TokenClaims(name: "ann", expires: later), secret: Array("wrong".utf8))) == .badSignature)
        #expect(refusal(mintToken(TokenClaims(name: "ann", expires: later), secret: [])) == .badSignature)
        #expect(refusal(body + "." + otherSignature) == .badSignature)
        #expect(refusal(body + "." + signature.dropLast(3)) == .badSignature)   // 40 characters: 30 bytes
        #expect(refusal(body + "." + signature + "A") == .badSignature)         // 44 characters: 33 bytes
        #expect(refusal(body + ".") == .badSignature)
        // A bad signature is found before the claims are read: these would be refused for their claims.
        let expired = signToken(header: #"{"alg":"HS256"}"#, payload: #"{"sub":"ann","exp":1}"#, secret: Array("wrong".utf8))
        #expect(refusal(expired) == .badSignature)
        #expect(refusal(signToken(header: #"{"alg":"HS256"}"#, payload: "[]", secret: [1])) == .badSignature)
    }

    @Test("exp is required and a number: a bool, a string, null, an array or an object is refused")
    func expiry() throws {
        for bad in [#"{"sub":"ann"}"#, #"{"sub":"ann","exp":true}"#, #"{"sub":"ann","exp":false}"#,
                    #"{"sub":"ann","exp":"4102444800"}"#, #"{"sub":"ann","exp":null}"#, #"{"sub":"ann","exp":[4102444800]}"#,
                    #"{"sub":"ann","exp":{}}"#] {
            #expect(refusal(signed(bad)) == .badClaim("exp"), "\(bad)")
        }
        #expect(refusal(signed(#"{"sub":"ann","exp":1e400}"#)) == .badClaim("exp")) // a number no Double holds
        #expect(try verifier.verify(signed(#"{"sub":"ann","exp":4.1e9}"#), now: now).expires
                == Date(timeIntervalSince1970: 4.1e9))
    }

    @Test("sub must be a name /nick takes, in NFC: not missing, not a number, no space or colon, at most 32 characters, nothing invisible, no combining mark first")
    func subject() {
        let long = String(repeating: "x", count: ChatCommand.maxNameLength + 1)
        for bad in [#"{"exp":4102444800}"#, #"{"sub":1,"exp":4102444800}"#, #"{"sub":null,"exp":4102444800}"#,
                    #"{"sub":["ann"],"exp":4102444800}"#,
                    #"{"sub":"","exp":4102444800}"#, #"{"sub":"ann lee","exp":4102444800}"#,
                    #"{"sub":"ann:1","exp":4102444800}"#, #"{"sub":"\#(long)","exp":4102444800}"#,
                    #"{"sub":"ann\nlee","exp":4102444800}"#, #"{"sub":"ann\n","exp":4102444800}"#,
                    #"{"sub":" ann","exp":4102444800}"#, #"{"sub":"ann\t","exp":4102444800}"#,
                    #"{"sub":"ann\u2028","exp":4102444800}"#] {
            #expect(refusal(signed(bad)) == .badClaim("sub"), "\(bad)")
        }
        // A combining mark first, a name not in NFC (/nick would store its NFC twin), invisible characters.
        #expect(refusal(signed(#"{"sub":"\u0301","exp":4102444800}"#)) == .badClaim("sub"))
        #expect(refusal(signed(#"{"sub":"\u0301x","exp":4102444800}"#)) == .badClaim("sub"))
        #expect(refusal(signed(#"{"sub":"e\u0301","exp":4102444800}"#)) == .badClaim("sub"))
        #expect(refusal(signed(#"{"sub":"\u00e9","exp":4102444800}"#)) == nil)
        #expect(refusal(signed(#"{"sub":"ann\u200b","exp":4102444800}"#)) == .badClaim("sub"))
        #expect(refusal(signed(#"{"sub":"\u202eann","exp":4102444800}"#)) == .badClaim("sub"))
        // The first claim checked is sub, then exp.
        #expect(refusal(signed(#"{"sub":"a b","exp":true}"#)) == .badClaim("sub"))
    }

    @Test("rooms, if present, must be an array of room names; nbf, if present, a number")
    func roomsAndNotBefore() throws {
        for bad in [#""ops""#, "[1]", #"["Ops"]"#, #"[""]"#, #"["a b"]"#, #"["ops",null]"#, "null", "{}",
                    #"["\#(String(repeating: "r", count: 33))"]"#] {
            #expect(refusal(signed(#"{"sub":"ann","exp":4102444800,"rooms":\#(bad)}"#)) == .badClaim("rooms"), "\(bad)")
        }
        #expect(try verifier.verify(signed(#"{"sub":"ann","exp":4102444800,"rooms":["ops","r_2-b"]}"#), now: now).rooms
                == ["ops", "r_2-b"])
        for bad in [#""soon""#, "true", "null"] {
            #expect(refusal(signed(#"{"sub":"ann","exp":4102444800,"nbf":\#(bad)}"#)) == .badClaim("nbf"), "\(bad)")
        }
        // Claims the chat does not use are ignored, iat whatever its type.
        #expect(refusal(signed(#"{"sub":"ann","exp":4102444800,"iat":"yesterday","iss":"backend","x":[{}]}"#)) == nil)
    }

    @Test("A token is valid before exp and at or after nbf: expired at exp, not valid before nbf")
    func time() {
        let t = now.timeIntervalSince1970
        #expect(refusal(signed(#"{"sub":"ann","exp":\#(Int(t) + 1)}"#)) == nil)
        #expect(refusal(signed(#"{"sub":"ann","exp":\#(Int(t))}"#)) == .expired)
        #expect(refusal(signed(#"{"sub":"ann","exp":\#(Int(t) - 1)}"#)) == .expired)
        #expect(refusal(signed(#"{"sub":"ann","exp":-1e300}"#)) == .expired)
        #expect(refusal(signed(#"{"sub":"ann","exp":4102444800,"nbf":\#(Int(t))}"#)) == nil)
        #expect(refusal(signed(#"{"sub":"ann","exp":4102444800,"nbf":\#(Int(t) + 60)}"#)) == .notYetValid)
        // An expired token that is not valid yet either: exp is checked first.
        #expect(refusal(signed(#"{"sub":"ann","exp":1,"nbf":4102444800}"#)) == .expired)
    }

    @Test("A valid token changed in any one byte does not verify")
    func everyOneByteChange() {
        let token = Array(mintToken(TokenClaims(name: "ann", expires: later, rooms: ["ops"]), secret: secret).utf8)
        #expect(refusal(String(decoding: token, as: UTF8.self)) == nil)
        for i in token.indices {
            for replacement in Array("AaQg09-_.=+/ ".utf8) + [0x00, 0xFF] where replacement != token[i] {
                var changed = token
                changed[i] = replacement
                #expect(refusal(String(decoding: changed, as: UTF8.self)) != nil, "byte \(i) as \(replacement)")
            }
            var shorter = token
            shorter.remove(at: i)
            #expect(refusal(String(decoding: shorter, as: UTF8.self)) != nil, "byte \(i) removed")
        }
    }

    @Test("Every refusal says what was wrong, each in its own words")
    func descriptions() {
        let all: [TokenError] = [.tooLong, .notThreeParts, .badBase64URL, .notJSONObject, .badAlgorithm, .badHeader,
                                 .badSignature, .badClaim("sub"), .badClaim("exp"), .badClaim("nbf"), .badClaim("rooms"),
                                 .expired, .notYetValid]
        #expect(Set(all.map(\.description)).count == all.count)
        #expect(TokenError.badClaim("nbf").description.contains("nbf"))
    }
}
