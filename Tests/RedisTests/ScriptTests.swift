import GMP
import GMPTestSupport
import Redis
import Testing

@Suite(.serialized, .enabled(if: haveRedis, "needs redis-server (apt-get install redis-server; .ci/run installs it)"))
struct ScriptTests {
    static let incrBy = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")

    @Test("A script's SHA-1 is the name SCRIPT LOAD answers; its commands are EVALSHA, SCRIPT LOAD and EVAL with keys counted")
    func sha() async throws {
        #expect(RedisScript("").sha1 == "da39a3ee5e6b4b0d3255bfef95601890afd80709") // SHA-1 of nothing
        #expect(Self.incrBy.evalSHA(keys: ["k"], args: ["2"]) == ["EVALSHA", Self.incrBy.sha1, "1", "k", "2"])
        #expect(Self.incrBy.load == ["SCRIPT", "LOAD", Self.incrBy.source])
        #expect(Self.incrBy.eval(args: ["x"]) == ["EVAL", Self.incrBy.source, "0", "x"])
        let server = try RedisServer()
        let scripts = [Self.incrBy, RedisScript("return 'é ✓'"), RedisScript("-- a comment\r\nreturn {1, 2}\n")]
        let r = await runG { () -> [String]? in
            guard let c = try? RedisConnection.connect(server.url) else { return nil }
            defer { c.close() }
            return scripts.map { (try? c.call($0.load))?.string ?? "?" }
        } ?? nil
        #expect(r == scripts.map(\.sha1))
    }

    @Test("run on a fresh server (NOSCRIPT, loaded, run once), again (EVALSHA alone), and after SCRIPT FLUSH; on a connection and on a client; a script's own error is thrown")
    func runLoadsWhenMissing() async throws {
        let server = try RedisServer()
        let r = await runG { () -> [String]? in
            guard let c = try? RedisConnection.connect(server.url) else { return nil }
            let client = RedisClient(url: server.url, timeout: .seconds(5))
            defer { c.close(); client.close() }
            var out: [String] = []
            func note(_ body: () throws -> RESPValue) {
                do {
                    let v = try body()
                    out.append(v.elements.map { "[" + $0.compactMap(\.string).joined(separator: ",") + "]" } ?? v.string ?? "\(v)")
                } catch { out.append("\(error)") }
            }
            note { try Self.incrBy.run(on: c, keys: ["n"], args: ["1"]) } // fresh: NOSCRIPT, then loaded
            note { try Self.incrBy.run(on: c, keys: ["n"], args: ["10"]) }
            note { try c.call("SCRIPT", "EXISTS", Self.incrBy.sha1) }
            _ = try? c.call("SCRIPT", "FLUSH")
            note { try Self.incrBy.run(on: client, keys: ["n"], args: ["100"]) } // flushed: loaded again
            _ = try? c.call("SCRIPT", "FLUSH")
            note { try Self.incrBy.run(on: c, keys: ["n"], args: ["1000"]) }
            note { try RedisScript("return redis.call('NOSUCH')").run(on: client) }
            note { try RedisScript("this is not Lua").run(on: c) } // the load's error, not NOSCRIPT
            note { try c.call("GET", "n") }
            return out
        } ?? nil
        #expect(r?.prefix(5) == ["1", "11", "[1]", "111", "1111"], "\(r ?? [])")
        #expect(r?[5].hasPrefix("Redis: ") == true && r?[5].contains("NOSCRIPT") == false, "\(r ?? [])")
        #expect(r?[6].hasPrefix("Redis: ERR") == true && r?[6].contains("NOSCRIPT") == false, "\(r ?? [])")
        #expect(r?.last == "1111", "\(r ?? [])")
    }
}
