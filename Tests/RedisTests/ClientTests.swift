import Channels
import Foundation
import GMP
import GMPTestSupport
import Glibc
import NetPoller
import Redis
import Synchronization
import Testing

extension RedisServer {
    var url: RedisURL { try! RedisURL(urlString) }
}

@Suite(.serialized, .enabled(if: haveRedis, "needs redis-server (apt-get install redis-server; .ci/run installs it)"))
struct ClientTests {
    @Test("Commands and replies against a real redis-server: strings, integers, nulls, arrays, an error reply thrown as .server")
    func basics() async throws {
        let server = try RedisServer()
        let r = await runG { () -> [String]? in
            guard let c = try? RedisConnection.connect(server.url) else { return nil }
            defer { c.close() }
            var out: [String] = []
            out.append((try? c.call("SET", "k", "v é"))?.string ?? "?")
            out.append((try? c.call("GET", "k"))?.string ?? "?")
            out.append((try? c.call("INCRBY", "n", "41")).map { "\($0)" } ?? "?")
            out.append((try? c.call("GET", "missing")).map { "\($0)" } ?? "?")
            _ = try? c.call("RPUSH", "l", "a", "b")
            out.append((try? c.call("LRANGE", "l", "0", "-1"))?.elements?.compactMap(\.string).joined(separator: ",") ?? "?")
            do { try c.call("NOSUCH") } catch { out.append("\(error)") }
            out.append(c.isBroken ? "broken" : "still fine")
            return out
        } ?? nil
        #expect(r == ["OK", "v é", "integer(41)", "null", "a,b", "Redis: ERR unknown command 'NOSUCH', with args beginning with: ",
                      "still fine"])
    }

    @Test("Pipelining: 10 Gs send 1,000 INCRs each on one connection without waiting; every reply goes to its sender, in order")
    func pipelining() async throws {
        let server = try RedisServer()
        let r = await runG(procs: 2) { () -> Bool? in
            guard let c = try? RedisConnection.connect(server.url) else { return nil }
            defer { c.close() }
            let ok = Chan<Bool>(capacity: 10)
            for g in 0..<10 {
                go {
                    let replies = (0..<1_000).map { _ in c.send(["INCR", "counter:\(g)"]) } // all in flight
                    var good = true
                    for (i, reply) in replies.enumerated() where (try? c.wait(reply)) != .integer(Int64(i + 1)) { good = false }
                    ok.send(good)
                }
            }
            var all = true
            for _ in 0..<10 { all = all && ok.receive() == .value(true) }
            // And a batch in one write.
            let batch = c.pipeline([["SET", "a", "1"], ["GET", "a"], ["NOSUCH"], ["GET", "a"]])
            let shapes = batch.map { r -> String in
                switch r {
                case .success(let v): v.string ?? "\(v)"
                case .failure: "failure"
                }
            }
            return all && shapes == ["OK", "1", "failure", "1"] // (an error reply is a .server failure)
        } ?? nil
        #expect(r == true)
    }

    @Test("AUTH and SELECT from the URL (redis://:password@host:port/db), for commands and for a subscriber; a wrong password is a .server error")
    func authAndSelect() async throws {
        let server = try RedisServer(args: ["--requirepass", "s3cret"])
        let r = await runG { () -> [String]? in
            var u = server.url
            u.password = "s3cret"
            u.db = 2
            guard let c = try? RedisConnection.connect(u) else { return nil }
            defer { c.close() }
            _ = try? c.call("SET", "where", "db2")
            u.db = 0
            guard let d = try? RedisConnection.connect(u) else { return nil }
            defer { d.close() }
            let inZero = (try? d.call("GET", "where")).map { "\($0)" } ?? "?"
            _ = try? d.call("SELECT", "2")
            let inTwo = (try? d.call("GET", "where"))?.string ?? "?"
            // A subscriber logs in (its login has replies) before pub/sub starts.
            u.db = 2
            let sub = RedisSubscriber(url: u, timeout: .seconds(1))
            defer { sub.close() }
            sub.subscribe(["news"])
            var heard = "nothing"
            if sub.next(within: 10, { $0 == .subscribed("news") }) != nil {
                _ = try? d.call("PUBLISH", "news", "hello")
                if case .message(let m)? = sub.next(within: 10, { if case .message = $0 { true } else { false } }) {
                    heard = String(decoding: m.payload, as: UTF8.self)
                }
            }
            u.password = "wrong"
            var refused = "connected"
            do { _ = try RedisConnection.connect(u) } catch { refused = "\(error)" }
            return [inZero, inTwo, heard, refused]
        } ?? nil
        #expect(r?.prefix(3) == ["null", "db2", "hello"])
        #expect(r?.last?.hasPrefix("Redis: WRONGPASS") == true, "\(r ?? [])")
    }

    @Test("RESP3 (HELLO 3): a hash comes back as a map")
    func resp3() async throws {
        let server = try RedisServer()
        let r = await runG { () -> RESPValue? in
            guard let c = try? RedisConnection.connect(server.url, resp3: true) else { return nil }
            defer { c.close() }
            _ = try? c.call("HSET", "h", "f", "v")
            return try? c.call("HGETALL", "h")
        } ?? nil
        #expect(r == .map([RESPPair(.bulk(Array("f".utf8)), .bulk(Array("v".utf8)))]))
    }

    @Test("A server that never answers: the call fails with .timeout at the read deadline (it may have run), a call after it with .notSent (it did not); one that sends garbage: .protocolError")
    func timeoutAndGarbage() async throws {
        let r = await runG(procs: 2) { () -> [String]? in
            guard let silent = try? Listener(port: 0), let noisy = try? Listener(port: 0) else { return nil }
            defer { silent.close(); noisy.close() }
            go { if let c = try? silent.accept() { _ = try? c.read(max: 100); _ = try? c.read(max: 100); c.close() } }
            go { if let c = try? noisy.accept() { _ = try? c.read(max: 100); try? c.write("?what\r\n"); _ = try? c.read(max: 100) } }
            var u = RedisURL()
            u.port = silent.port
            guard let c = try? RedisConnection.connect(u, timeout: .milliseconds(200)) else { return nil }
            let start = GMP.now
            var out: [String] = []
            do { try c.call("PING") } catch { out.append("\(error)") }
            out.append(GMP.now - start < 5_000_000_000 ? "in time" : "late")
            do throws(RedisError) { try c.call("PING") } catch {
                out.append("then \(error) \(error.mayHaveRun ? "may have run" : "did not run")")
            }
            u.port = noisy.port
            guard let d = try? RedisConnection.connect(u) else { return nil }
            do { try d.call("PING") } catch { out.append("\(error)") }
            return out
        } ?? nil
        #expect(r == ["Redis: no reply in time", "in time",
                      "then Redis: not sent (the connection broke before: Redis: no reply in time) did not run",
                      "Redis protocol: an unknown type byte 63 at byte 0"])
    }

    @Test("Redis killed and started again: RedisClient fails fast meanwhile (back-off), then reconnects by itself; the subscriber reports connected, subscribed, disconnected, then connected and subscribed again, and gets messages again")
    func reconnection() async throws {
        final class Servers: @unchecked Sendable { var list: [RedisServer] = [] } // (one G uses it at a time)
        let servers = Servers()
        let server = try RedisServer()
        servers.list.append(server)
        let port = server.port
        let r = await runG(procs: 2, timeout: 60) { () -> [String]? in
            let client = RedisClient(url: server.url, timeout: .seconds(1))
            let sub = RedisSubscriber(url: server.url, timeout: .seconds(1))
            defer { sub.close(); client.close() }
            sub.subscribe(["room:a"])
            var events: [String] = []
            // The events up to the first one `until` accepts (nil: none within 15 s).
            func record(_ until: (RedisEvent) -> Bool) -> RedisEvent? {
                sub.next(within: 15) { e in
                    events.append(Self.name(e))
                    return until(e)
                }
            }
            var out: [String] = []
            // Published once the subscription is confirmed: it comes.
            func published(_ text: String) -> String {
                guard record({ $0 == .subscribed("room:a") }) != nil else { return "not confirmed" }
                _ = try? client.call("PUBLISH", "room:a", text)
                guard case .message(let m)? = record({ if case .message = $0 { true } else { false } }) else { return "no \(text)" }
                return "got " + String(decoding: m.payload, as: UTF8.self)
            }
            out.append(published("before"))
            server.kill()
            guard record({ $0 == .disconnected }) != nil else { return out + ["no disconnected"] }
            // (Not `isConnected` here: a killed server's listening socket may
            // outlive its connections for a moment, and take a redial.)
            do { try client.call("PING") } catch { out.append("down: \(error)") }
            // Within the back-off after a failed dial, a call fails at once, without dialling.
            var backingOff = false
            for _ in 0..<3 {
                do { try client.call("PING") } catch { backingOff = backingOff || "\(error)".contains("reconnecting in") }
            }
            out.append(backingOff ? "backing off" : "no back-off")
            guard let again = try? RedisServer(port: port) else { return nil }
            servers.list.append(again)
            out.append(published("after"))
            out.append(sub.isConnected ? "connected" : "not connected")
            out.append(events.joined(separator: " "))
            return out
        } ?? nil
        let got = r ?? []
        func at(_ i: Int) -> String { i < got.count ? got[i] : "(none)" } // (a short list fails, never traps)
        #expect(at(0) == "got before", "\(got)")
        #expect(at(1).hasPrefix("down: Redis: not sent (Redis connection lost: cannot connect"), "\(got)")
        #expect(at(2) == "backing off", "\(got)")
        #expect(at(3) == "got after", "\(got)")
        #expect(at(4) == "connected", "\(got)")
        // (A failed dial is no event; a slow start of the new server could cost a connection more.)
        #expect(r?.last?.hasPrefix("connected subscribed(room:a) message disconnected connected") == true, "\(r ?? [])")
        #expect(r?.last?.hasSuffix("disconnected connected subscribed(room:a) message") == true, "\(r ?? [])")
    }

    @Test("Subscriber events: a confirmation comes for each channel, once per SUBSCRIBE, after the messages before it; events is closed once the subscriber is closed, with no disconnected")
    func confirmations() async throws {
        let server = try RedisServer()
        let r = await runG { () -> [String]? in
            guard let c = try? RedisConnection.connect(server.url) else { return nil }
            defer { c.close() }
            let sub = RedisSubscriber(url: server.url, timeout: .seconds(1))
            var events: [String] = []
            func record(_ until: RedisEvent) -> Bool {
                sub.next(within: 10) { e in
                    events.append(Self.name(e))
                    return e == until
                } != nil
            }
            sub.subscribe(["a"])
            guard record(.subscribed("a")) else { return events }
            _ = try? c.call("PUBLISH", "a", "1")
            sub.subscribe(["a"]) // again: confirmed again (another owner may wait for it)
            sub.subscribe(["c"])
            guard record(.subscribed("c")) else { return events }
            sub.close()
            var rest = 0
            while case .value = sub.events.receive() { rest += 1 } // (ends: closed)
            return events + ["closed after \(rest)"]
        } ?? nil
        #expect(r == ["connected", "subscribed(a)", "message", "subscribed(a)", "subscribed(c)", "closed after 0"], "\(r ?? [])")
    }

    /// An event's name, for a test's record.
    static func name(_ e: RedisEvent) -> String {
        switch e {
        case .message: "message"
        case .subscribed(let ch): "subscribed(\(ch))"
        case .connected: "connected"
        case .disconnected: "disconnected"
        }
    }
}

extension RedisSubscriber {
    /// Takes events until one that `accept` takes (it is given each), and
    /// returns it; nil if none came within `seconds`.
    func next(within seconds: Double, _ accept: (RedisEvent) -> Bool) -> RedisEvent? {
        let deadline = GMP.Instant.after(.seconds(seconds))
        while true {
            var got: RedisEvent?, over = false
            select { s in
                if let r = s.receive(events) {
                    if case .value(let e) = r { got = e } else { over = true }
                }
                if s.deadline(at: deadline) { over = true }
            }
            if over { return nil }
            if let got, accept(got) { return got }
        }
    }
}
