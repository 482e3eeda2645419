@testable import Chat
import Channels
import Foundation
import GMP
import GMPTestSupport
import Glibc
import Redis
import Testing

/// Inside a G: `c` says `/nick name`; "ok" if it got the name, else the
/// error's text (nil if the connection ended).
private func nick(_ c: EnvelopeClient, _ name: String) -> String? {
    c.say("/nick \(name)")
    guard let l = c.until({ $0.type == "info" || $0.type == "error" })?.last else { return nil }
    return l.type == "info" && l.text == "you are now \(name)" ? "ok" : l.text
}

/// Inside a G: the next private message `c` gets, as "FROM: TEXT".
private func nextPrivate(_ c: EnvelopeClient) -> String? {
    c.until({ $0.type == "private" })?.last.map { "\($0.object["from"] as? String ?? "?"): \($0.text)" }
}

/// Inside a G: the next error line `c` gets (its text).
private func nextError(_ c: EnvelopeClient) -> String? { c.until({ $0.type == "error" })?.last?.text }

/// Inside a G: the names `/who` lists for `c`'s room.
private func who(_ c: EnvelopeClient) -> [String] {
    c.say("/who")
    return (c.until({ $0.type == "who" })?.last?.object["names"] as? [String]) ?? []
}

/// Inside a G: `c` claims `name` again and again (every 100 ms) until it
/// gets it or `seconds` pass; whether it did.
private func claimEventually(_ c: EnvelopeClient, _ name: String, within seconds: Double) -> Bool {
    waitFor(seconds: seconds, every: 100_000_000) { nick(c, name) == "ok" }
}

/// ChatApp nodes sharing a redis-server of their own; `stop` ends those
/// still running.
private final class Nodes: @unchecked Sendable {
    // @unchecked: the processes are ended by `stop` alone, from the test's
    // task; a G of the test only reads their ids and ports.
    let redis: RedisServer
    let apps: [Process]
    let ports: [Int]

    init(_ count: Int = 2) throws {
        redis = try RedisServer()
        var apps: [Process] = []
        var ports: [Int] = []
        for _ in 0..<count {
            do {
                let (app, port) = try startChatApp(extraArguments: ["--redis", redis.urlString])
                apps.append(app)
                ports.append(port)
            } catch {
                for a in apps { a.terminate(); a.waitUntilExit() }
                throw error
            }
        }
        self.apps = apps
        self.ports = ports
    }

    func stop() {
        for a in apps where a.isRunning {
            a.terminate()
            a.waitUntilExit()
        }
    }
}

@Suite("Names across nodes: the Redis side's message form")
struct ClusterNamesFormTests {
    @Test("A private message's form on a node's channel reads back as it was written; what is not of that form is refused")
    func form() {
        for (to, from, text) in [("ann", "bob", "hello there"), ("é", "", " spaced  "), ("a b", "x1", "")] {
            let e = ClusterNames.encode(to: to, from: from, text: text)
            let d = ClusterNames.decode(Array(e.utf8))
            #expect(d?.to == to && d?.from == from && d?.text == text)
        }
        for bad in ["", "3 an", "x ann", "-1 ann", "3 ann", "3 ann9 bob", "99999999 a"] {
            #expect(ClusterNames.decode(Array(bad.utf8)) == nil, "\(bad)")
        }
    }
}

@Suite(.serialized, .enabled(if: haveRedis, "needs redis-server (apt-get install redis-server; .ci/run installs it)"))
struct ClusterNamesTests {
    @Test("Two nodes: ann on node 1, bob on node 2; bob cannot take ann; bob's /msg ann reaches ann on node 1 once; a name online nowhere gets 'nobody is called'; a name on the same node is reached too")
    func scenario() async throws {
        let nodes = try Nodes()
        defer { nodes.stop() }
        let (portA, portB) = (nodes.ports[0], nodes.ports[1])
        let r = await runG(procs: 2, timeout: 60) { () -> [String]? in
            guard let x = EnvelopeClient(port: portA), let y = EnvelopeClient(port: portB), let w = EnvelopeClient(port: portA)
            else { return nil }
            defer { x.close(); y.close(); w.close() }
            var out: [String] = []
            out.append("ann: \(nick(x, "ann") ?? "?")")
            out.append("bob: \(nick(y, "bob") ?? "?")")
            out.append("bob as ann: \(nick(y, "ann") ?? "?")")
            out.append("cat: \(nick(w, "cat") ?? "?")")
            y.say("/msg ann hello")
            out.append(nextPrivate(x) ?? "nothing")
            // Once: the next private message ann gets is the next one sent.
            y.say("/msg ann second")
            out.append(nextPrivate(x) ?? "nothing")
            w.say("/msg ann from here") // the same node: no Redis on the way
            out.append(nextPrivate(x) ?? "nothing")
            x.say("/msg bob back")
            out.append(nextPrivate(y) ?? "nothing")
            y.say("/msg zed anyone?")
            out.append(nextError(y) ?? "no error")
            x.say("/msg zed anyone?")
            out.append(nextError(x) ?? "no error")
            return out
        } ?? nil
        #expect(r == ["ann: ok", "bob: ok", "bob as ann: the name ann is taken", "cat: ok",
                      "bob: hello", "bob: second", "cat: from here", "ann: back",
                      "nobody is called zed", "nobody is called zed"])
    }

    @Test("Races: 12 names, each claimed at once by a client on each of two nodes; exactly one wins each, and a /msg to the name reaches the winner")
    func race() async throws {
        let nodes = try Nodes()
        defer { nodes.stop() }
        let (portA, portB) = (nodes.ports[0], nodes.ports[1])
        let n = 12
        let r = await runG(procs: 2, timeout: 90) { () -> [String]? in
            let clients = (0..<(2 * n)).compactMap { i in EnvelopeClient(port: i % 2 == 0 ? portA : portB) }
            guard clients.count == 2 * n, let sender = EnvelopeClient(port: portB) else { return nil }
            defer { for c in clients { c.close() }; sender.close() }
            for c in clients + [sender] { guard c.until({ $0.type == "joined" }) != nil else { return nil } }
            // Every client asks at once (the names "n0".."n11", client 2k on node 1 and 2k+1 on node 2).
            let start = Chan<Void>()
            let results = Chan<(Int, String)>(capacity: 2 * n)
            for (i, c) in clients.enumerated() {
                go {
                    _ = start.receive()
                    results.send((i, nick(c, "n\(i / 2)") ?? "?"))
                }
            }
            start.close()
            var got = [String](repeating: "", count: 2 * n)
            for _ in 0..<(2 * n) {
                guard let (i, s) = results.receive().value else { return nil }
                got[i] = s
            }
            var out: [String] = []
            for k in 0..<n {
                let pair = [got[2 * k], got[2 * k + 1]]
                guard pair.sorted() == ["ok", "the name n\(k) is taken"] else {
                    out.append("n\(k): \(pair)")
                    continue
                }
                let winner = clients[got[2 * k] == "ok" ? 2 * k : 2 * k + 1]
                sender.say("/msg n\(k) to the winner")
                out.append(nextPrivate(winner) == "someone: to the winner" ? "ok" : "n\(k): no message")
            }
            return out
        } ?? nil
        #expect(r == Array(repeating: "ok", count: n))
    }

    @Test("Release: a name given up with /nick is free on the other node once the client is told; a name whose client disconnects is free soon after (a held one never would be: it is refreshed)")
    func release() async throws {
        let nodes = try Nodes()
        defer { nodes.stop() }
        let (portA, portB) = (nodes.ports[0], nodes.ports[1])
        let r = await runG(procs: 2, timeout: 60) { () -> [String]? in
            guard let x = EnvelopeClient(port: portA), let y = EnvelopeClient(port: portB) else { return nil }
            defer { x.close(); y.close() }
            var out: [String] = []
            out.append(nick(x, "ann") ?? "?")
            out.append(nick(y, "ann") ?? "?")
            out.append(nick(x, "anna") ?? "?")
            out.append(nick(y, "ann") ?? "?") // at once: no retry
            // ann (y, node 2) now messages anna (x, node 1) and back.
            y.say("/msg anna hi")
            out.append(nextPrivate(x) ?? "nothing")
            x.say("/msg ann hi")
            out.append(nextPrivate(y) ?? "nothing")
            out.append(nick(y, "anna") ?? "?")
            x.close() // node 1 notices, and releases anna
            out.append(claimEventually(y, "anna", within: 15) ? "anna free after the disconnect" : "anna still held")
            return out
        } ?? nil
        #expect(r == ["ok", "the name ann is taken", "ok", "ok", "ann: hi", "anna: hi",
                      "the name anna is taken", "anna free after the disconnect"])
    }

    @Test("A draining node lets its names go before its clients hear 1012: a client that reconnects to the other node at once takes its name back, no retry; a /msg to it meanwhile is answered 'nobody is called', not lost")
    func drainReleases() async throws {
        let nodes = try Nodes()
        defer { nodes.stop() }
        let (portA, portB) = (nodes.ports[0], nodes.ports[1])
        let pidA = nodes.apps[0].processIdentifier
        let r = await runG(procs: 2, timeout: 60) { () -> [String]? in
            guard let x = EnvelopeClient(port: portA), let y = EnvelopeClient(port: portB) else { return nil }
            defer { x.close(); y.close() }
            var out: [String] = []
            out.append(nick(x, "ann") ?? "?")
            out.append(nick(y, "bob") ?? "?")
            kill(pidA, SIGTERM)
            while x.next() != nil {} // to its close
            out.append("x closed with \(x.closeCode.map(String.init) ?? "none")")
            y.say("/msg ann are you there")
            out.append(nextError(y) ?? "no answer")
            guard let x2 = EnvelopeClient(port: portB) else { return out + ["no reconnect"] }
            defer { x2.close() }
            out.append(nick(x2, "ann") ?? "?") // at once: no retry
            y.say("/msg ann welcome back")
            out.append(nextPrivate(x2) ?? "nothing")
            return out
        } ?? nil
        #expect(r == ["ok", "ok", "x closed with 1012", "nobody is called ann", "ok", "bob: welcome back"])
    }

    @Test("A node killed (-9) holding a name: its claim lives while the node refreshes it, and the name is free within the expiry (6 s) after the kill")
    func expiry() async throws {
        let nodes = try Nodes()
        defer { nodes.stop() }
        let (portA, portB) = (nodes.ports[0], nodes.ports[1])
        let url = try RedisURL(nodes.redis.urlString)
        let node1 = nodes.apps[0].processIdentifier
        let r = await runG(procs: 2, timeout: 60) { () -> [String]? in
            let rc = RedisClient(url: url)
            defer { rc.close() }
            guard let x = EnvelopeClient(port: portA) else { return nil }
            defer { x.close() }
            var out: [String] = []
            out.append(nick(x, "ann") ?? "?")
            // Refreshed: the key's time to live goes back up (it is set to
            // 6 s and counts down between heartbeats, every 2 s).
            func pttl() -> Int64 { (try? rc.call("PTTL", ClusterNames.key("ann")))?.int ?? -3 }
            var low = pttl()
            let refreshed = waitFor(seconds: 10, every: 50_000_000) {
                let now = pttl()
                defer { low = min(low, now) }
                return now > low + 200
            }
            out.append(refreshed ? "refreshed" : "not refreshed (\(low))")
            kill(node1, SIGKILL)
            let killed = GMP.now
            guard let y = EnvelopeClient(port: portB) else { return nil }
            defer { y.close() }
            guard claimEventually(y, "ann", within: 15) else { return out + ["never free"] }
            let after = Double(GMP.now - killed) / 1e9
            out.append(after < 6 + 2 ? "free within the expiry" : "free after \(after) s")
            return out
        } ?? nil
        #expect(r == ["ok", "refreshed", "free within the expiry"])
    }

    @Test("A claim Redis lost (its key gone) is set again by the next refresh; one that someone else's replaced is taken from its client, who is told, and the other's claim is left alone")
    func lapsedClaims() async throws {
        let nodes = try Nodes(1)
        defer { nodes.stop() }
        let portA = nodes.ports[0]
        let url = try RedisURL(nodes.redis.urlString)
        let r = await runG(procs: 2, timeout: 60) { () -> [String]? in
            let rc = RedisClient(url: url)
            defer { rc.close() }
            guard let x = EnvelopeClient(port: portA) else { return nil }
            defer { x.close() }
            let key = ClusterNames.key("ann")
            func holder() -> String { (try? rc.call("GET", key))?.string ?? "none" }
            var out: [String] = []
            out.append(nick(x, "ann") ?? "?")
            _ = try? rc.call("DEL", key) // as if Redis had restarted without its data
            out.append(waitFor(seconds: 10, every: 50_000_000) { holder() != "none" } ? "set again" : "still gone")
            _ = try? rc.call("SET", key, "elsewhere 1") // as if another node had taken it while this one was away
            out.append(nextError(x) ?? "no error")
            out.append("\(who(x)) \(holder())")
            out.append(nick(x, "anna") ?? "?")
            return out
        } ?? nil
        #expect(r == ["ok", "set again",
                      "your name ann was taken on another node while this one could not reach Redis; choose one with /nick",
                      "[] elsewhere 1", "ok"])
    }

    @Test("Redis down when a name is claimed: an error line, and the client keeps its old name; a /msg to another node's name says it was not sent")
    func redisDown() async throws {
        let nodes = try Nodes()
        defer { nodes.stop() }
        let (portA, portB) = (nodes.ports[0], nodes.ports[1])
        let r = await runG(procs: 2, timeout: 60) { () -> [String]? in
            guard let x = EnvelopeClient(port: portA), let y = EnvelopeClient(port: portB) else { return nil }
            defer { x.close(); y.close() }
            var out: [String] = []
            out.append(nick(x, "ann") ?? "?")
            out.append(nick(y, "bob") ?? "?")
            nodes.redis.kill()
            let refused = nick(x, "anna") ?? "?"
            out.append(refused.hasPrefix("the name anna cannot be claimed now (") && refused.hasSuffix("; you are still ann")
                       ? "refused" : refused)
            out.append("\(who(x))")
            x.say("/msg bob hi")
            let unsent = nextError(x) ?? "?"
            out.append(unsent.hasPrefix("the message to bob was not sent (") || unsent.hasPrefix("the message to bob may not have been delivered (")
                       ? "not sent" : unsent)
            return out
        } ?? nil
        #expect(r == ["ok", "ok", "refused", "[\"ann\"]", "not sent"])
    }
}
