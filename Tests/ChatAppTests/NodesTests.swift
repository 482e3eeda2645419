import Channels
import Foundation
import GMP
import GMPTestSupport
import Glibc
import NetPoller
import Synchronization
import Testing

/// Inside a G: `client` reads until it has seen message number `upTo`
/// (or its connection ends); the numbers and texts of the messages, in order.
private func messages(_ c: EnvelopeClient, upTo: UInt64) -> [(UInt64, String)] {
    var out: [(UInt64, String)] = []
    while let l = c.next() {
        guard l.type == "message", let s = l.seq else { continue }
        out.append((s, l.text))
        if s >= upTo { break }
    }
    return out
}

@Suite(.serialized, .enabled(if: haveRedis, "needs redis-server (apt-get install redis-server; .ci/run installs it)"))
struct NodesTests {
    @Test("Two nodes through Redis: three clients on each send 30 messages; every client gets all 180 once, numbered 1 to 180 with no gap, each sender's in its order; a client that joins with since=0 reads them back from the stream")
    func twoNodes() async throws {
        let redis = try RedisServer()
        let (a, portA) = try startChatApp(extraArguments: ["--redis", redis.urlString, "--rate", "0"])
        defer { a.terminate(); a.waitUntilExit() }
        let (b, portB) = try startChatApp(extraArguments: ["--redis", redis.urlString, "--rate", "0"])
        defer { b.terminate(); b.waitUntilExit() }
        let r = await runG(procs: 2, timeout: 60) { () -> [String]? in
            let clients = [portA, portA, portA, portB, portB, portB].compactMap { EnvelopeClient(port: $0) }
            guard clients.count == 6 else { return nil }
            defer { for c in clients { c.close() } }
            for c in clients { guard c.until({ $0.type == "joined" }) != nil else { return nil } }
            let results = Chan<String>(capacity: 6)
            for (i, c) in clients.enumerated() {
                go {
                    let got = messages(c, upTo: 180)
                    var problems: [String] = []
                    if got.map(\.0) != Array(1...180) { problems.append("numbers \(got.map(\.0).prefix(10))… (\(got.count))") }
                    for s in 0..<6 {
                        let ks = got.compactMap { $0.1.hasPrefix("c\(s)-") ? Int($0.1.dropFirst(3)) : nil }
                        if ks != Array(0..<30) { problems.append("sender \(s): \(ks)") }
                    }
                    results.send(problems.isEmpty ? "ok" : "client \(i): " + problems.joined(separator: "; "))
                }
            }
            for (i, c) in clients.enumerated() {
                go { for k in 0..<30 { c.say("c\(i)-\(k)"); if k % 5 == 4 { GMP.sleep(nanoseconds: 1_000_000) } } }
            }
            var out: [String] = []
            for _ in 0..<6 { out.append(results.receive().value ?? "?") }
            // More than the room's tail (128): catch-up reads the stream.
            guard let late = EnvelopeClient(port: portB, query: "since=0"), let lines = late.until({ $0.type == "joined" }) else {
                return out + ["no late client"]
            }
            late.close()
            let seqs = lines.filter { $0.type == "message" }.compactMap(\.seq)
            out.append(seqs == Array(1...180) ? "ok" : "since=0: \(seqs.count) messages, \(seqs.prefix(5))…")
            return out
        } ?? nil
        #expect(r == Array(repeating: "ok", count: 7))
    }

    @Test("Presence spans nodes: /who and /rooms count the members of both; a node killed (-9) stops counting within a bounded time")
    func presence() async throws {
        let redis = try RedisServer()
        let (a, portA) = try startChatApp(extraArguments: ["--redis", redis.urlString])
        defer { a.terminate(); a.waitUntilExit() }
        let (b, portB) = try startChatApp(extraArguments: ["--redis", redis.urlString])
        defer { if b.isRunning { b.terminate(); b.waitUntilExit() } }
        let r = await runG(procs: 2, timeout: 60) { () -> [String]? in
            guard let x = EnvelopeClient(port: portA), let y = EnvelopeClient(port: portB), let z = EnvelopeClient(port: portB)
            else { return nil }
            defer { x.close(); y.close(); z.close() }
            x.say("/nick ann")
            y.say("/nick bob")
            guard x.until({ $0.type == "info" }) != nil, y.until({ $0.type == "info" }) != nil else { return nil }
            func who() -> String {
                x.say("/who")
                guard let l = x.until({ $0.type == "who" })?.last else { return "?" }
                return "\((l.object["names"] as? [String]) ?? []) +\(l.object["anonymous"] ?? "?")"
            }
            func rooms() -> String {
                x.say("/rooms")
                guard let l = x.until({ $0.type == "rooms" })?.last, let list = l.object["rooms"] as? [[String: Any]] else { return "?" }
                return list.map { "\($0["name"]!)=\($0["members"]!)" }.joined(separator: ",")
            }
            var out: [String] = []
            var seen = ""
            _ = waitFor(seconds: 15, every: 100_000_000) { seen = who(); return seen == "[\"ann\", \"bob\"] +1" }
            out.append(seen)
            out.append(rooms())
            kill(b.processIdentifier, SIGKILL)
            let start = GMP.now
            _ = waitFor(seconds: 30, every: 200_000_000) { seen = who(); return seen == "[\"ann\"] +0" }
            out.append(seen)
            out.append(GMP.now - start < 15_000_000_000 ? "forgotten in time" : "late")
            return out
        } ?? nil
        #expect(r == ["[\"ann\", \"bob\"] +1", "lobby=3", "[\"ann\"] +0", "forgotten in time"])
    }

    @Test("Redis restarted without its data: each node notices its numbers went back, sends its members a reset, and chat goes on from Redis's numbers")
    func redisLosesData() async throws {
        let first = try RedisServer()
        let port = first.port
        let (a, portA) = try startChatApp(extraArguments: ["--redis", first.urlString, "--rate", "0"])
        defer { a.terminate(); a.waitUntilExit() }
        let (b, portB) = try startChatApp(extraArguments: ["--redis", first.urlString, "--rate", "0"])
        defer { b.terminate(); b.waitUntilExit() }
        final class Box: @unchecked Sendable { var server: RedisServer? } // (one G at a time)
        let box = Box()
        box.server = first
        let r = await runG(procs: 2, timeout: 60) { () -> [String]? in
            guard let x = EnvelopeClient(port: portA), let y = EnvelopeClient(port: portB),
                  x.until({ $0.type == "joined" }) != nil, y.until({ $0.type == "joined" }) != nil else { return nil }
            defer { x.close(); y.close() }
            for i in 1...3 { x.say("m\(i)") }
            guard messages(y, upTo: 3).count == 3 else { return nil }
            // One that joins after them (it has up to 3 when it joins).
            guard let z = EnvelopeClient(port: portB), z.until({ $0.type == "joined" }) != nil else { return nil }
            defer { z.close() }
            box.server?.kill()
            box.server = try? RedisServer(port: port) // empty
            guard box.server != nil, let reset = y.until({ $0.type == "reset" })?.last else { return ["no reset"] }
            // The next message: number 1 again, delivered on both nodes.
            var got: (UInt64, String)?
            _ = waitFor(seconds: 15, every: 100_000_000) {
                x.say("after")
                guard x.until({ $0.type == "error" || $0.type == "ack" })?.last?.type == "ack" else { return false }
                got = messages(y, upTo: 1).first
                return true
            }
            let late = messages(z, upTo: 1).first
            return ["reset \(reset.object["since"] ?? "?")->\(reset.seq ?? 99)", got.map { "\($0.0) \($0.1)" } ?? "nothing",
                    late.map { "late: \($0.0) \($0.1)" } ?? "late: nothing"]
        } ?? nil
        #expect(r == ["reset 3->0", "1 after", "late: 1 after"])
    }

    @Test("Redis killed mid-run: messages are refused with an error line and /metrics says degraded; once it is back, both nodes reconnect by themselves and chat goes on, no number given twice")
    func redisGoesAway() async throws {
        let dir = temporaryDirectory("chat-redis")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Persistence on (an append-only file synced on every write), so a restart keeps the numbers.
        let persist = ["--appendonly", "yes", "--appendfsync", "always", "--dir", dir]
        var redis: RedisServer? = try RedisServer(args: persist)
        let port = redis!.port
        let url = redis!.urlString
        let (a, portA) = try startChatApp(extraArguments: ["--redis", url, "--rate", "0", "--metrics"])
        defer { a.terminate(); a.waitUntilExit() }
        let (b, portB) = try startChatApp(extraArguments: ["--redis", url, "--rate", "0"])
        defer { b.terminate(); b.waitUntilExit() }
        final class Box: @unchecked Sendable { var server: RedisServer? } // (one G at a time)
        let box = Box()
        box.server = redis
        redis = nil
        let r = await runG(procs: 2, timeout: 90) { () -> [String]? in
            guard let x = EnvelopeClient(port: portA), let y = EnvelopeClient(port: portB),
                  x.until({ $0.type == "joined" }) != nil, y.until({ $0.type == "joined" }) != nil else { return nil }
            defer { x.close(); y.close() }
            var out: [String] = []
            x.say("one")
            guard let first = messages(y, upTo: 1).last else { return nil }
            out.append("\(first.0) \(first.1)")
            box.server?.kill()
            box.server = nil
            // Degraded: a message is refused (say it until the node has noticed; one
            // written as Redis died has an unknown outcome), and /metrics says so.
            var refused = ""
            _ = waitFor(seconds: 15, every: 50_000_000) {
                x.say("while down")
                guard let l = x.until({ $0.type == "error" || $0.type == "ack" })?.last, l.type == "error",
                      l.object["outcome"] as? String == "refused" else { return false }
                refused = l.text
                return true
            }
            out.append(refused.hasPrefix("your message was not stored (Redis is unreachable") ? "refused" : "not refused: \(refused)")
            _ = waitFor(seconds: 10, every: 50_000_000) { httpGet(portA, "/metrics").contains("\nchat_redis_up 0\n") }
            out.append(httpGet(portA, "/metrics").contains("\nchat_redis_up 0\n") ? "degraded" : "not degraded")
            guard let again = try? RedisServer(port: port, args: persist) else { return out + ["redis did not restart"] }
            box.server = again
            guard waitFor(seconds: 20, every: 50_000_000, { httpGet(portA, "/metrics").contains("\nchat_redis_up 1\n") }) else {
                return out + ["not back"]
            }
            // Back: the next message gets the next number on both nodes.
            var next: (UInt64, String)?
            _ = waitFor(seconds: 15, every: 100_000_000) {
                x.say("two")
                guard let l = x.until({ $0.type == "error" || $0.type == "ack" })?.last else { return false }
                return l.type == "ack"
            }
            next = messages(y, upTo: 2).last
            out.append(next.map { "\($0.0) \($0.1)" } ?? "nothing")
            return out
        } ?? nil
        #expect(r == ["1 one", "refused", "degraded", "2 two"])
    }
}
