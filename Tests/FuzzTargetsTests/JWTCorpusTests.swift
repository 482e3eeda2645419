import Chat
import Foundation
import FuzzTargets
import Testing

@Suite struct JWTCorpusTests {
    @Test("The jwt seeds named valid* verify and the others do not, so mutations start on both sides of every check")
    func seedsVerify() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus/jwt")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        let verifier = TokenVerifier(secret: jwtCorpusSecret)
        #expect(names.contains { $0.hasPrefix("valid") })
        for name in names {
            let token = String(decoding: try Data(contentsOf: dir.appendingPathComponent(name)), as: UTF8.self) // as the target reads it
            let taken = (try? verifier.verify(token, now: jwtCorpusNow)) != nil
            #expect(taken == name.hasPrefix("valid"), "\(name)")
        }
    }
}
