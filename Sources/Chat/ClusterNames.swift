import Channels
import GMP
import Redis
import Synchronization

// Names across nodes: with `--redis URL`, a name taken by `/nick` is one
// across the cluster, and `/msg NAME TEXT` reaches NAME on whichever node
// holds it. This file is the Redis side of that (claims, their refresh and
// release, private messages out and in); Directory.swift calls it from the
// read pumps, Cluster.swift's presence G refreshes and its dispatcher hands
// it this node's channel. Without Redis names stay in the directory G.
//
// Keys and channels:
//   chat:name:{NAME}   "<node id> <claim number>": who holds NAME, expiring
//                      `ttlMilliseconds` (3 presence heartbeats, 6 s) after
//                      its last refresh
//   chat:node:<id>     a pub/sub channel per node: private messages to the
//                      names it holds, "<to bytes> <to><from bytes> <from><text>"
//
// Claiming is `SET chat:name:{NAME} <value> NX PX ttl`: Redis runs one
// command at a time, so of two clients racing for a name, on one node or
// two, exactly one gets OK and the other nil ("the name is taken"). The
// value is new for every claim (the node's id and a counter), so a release
// is a compare-and-delete (a Lua script: DEL only if the value is still
// this claim's) and never frees a claim made since by someone else. Once
// Redis said OK the client gets the name here (`held`, and `Client.name`)
// and its old name is released, before the client is told (so once it reads
// "you are now …", its old name is free on every node): a client is never
// without a name it had while it asks for another, and a claim that fails
// (Redis refused it, or cannot be reached) leaves the old name as it was.
// A claim whose answer did not come in time may have been set: its
// compare-and-delete is sent after it, and if Redis is away, the key expires.
//
// Who does it: the asking read pump, in its own G, which may block (at most
// the client's time-out, 5 s, when Redis does not answer, and nothing within
// the back-off after a failed dial). Not the directory G: it serves every
// client's joins and leaves, and a claim there would hold them all up behind
// Redis. So with Redis the directory keeps no names at all; `held` below,
// under a lock of a few instructions, is this node's table of names, read by
// the dispatcher (it never waits) to deliver private messages.
//
// Refresh: every presence heartbeat (2 s) the presence G runs, for every
// claim in `held`, in one pipelined round, a script that extends the key if
// it still holds the claim's value, sets it again if it is gone (Redis lost
// it: restarted without its data, or away longer than the expiry) and
// answers 0 if someone else holds it now; that client loses the name and is
// told so with an error line. Releases happen on `/nick` to another name, on
// disconnect (`forget`), and for every held name when the server drains
// or stops (`releaseAll`: then no claim is taken any more, so the clients,
// told to reconnect, find their names free on another node); a
// node that dies holds its names until they expire: at most 6 s after its
// last refresh. A release is written after every refresh that saw the
// claim (the refresh takes its snapshot and writes it holding `wire`, a
// release writes holding `wire` after taking the claim out of `held`), so a
// refresh never sets again a name just released.
//
// Private messages: to a name held here, straight into the client's buffer
// (no Redis). Otherwise GET the name's key (nil: "nobody is called NAME"),
// and PUBLISH the message on the holder's node channel, which only that node
// subscribes to (on the subscriber it has for its rooms): delivered once, or
// not at all. PUBLISH answering 0 receivers means the node is not listening
// (it died, its name not yet expired, or its subscription is reconnecting):
// the sender gets "nobody is called NAME (its node is not answering)". A
// Redis that cannot be asked: an error line says the message was not sent
// (or, with no answer in time, may not have been delivered). The receiving
// node hands the message to the client holding the name when it arrives; if
// there is none by then (it left in flight) the message is dropped: at most
// once, never twice, and the sender is not told.

/// This node's names in Redis and private messages across nodes (see the top of the file).
final class ClusterNames: @unchecked Sendable {
    // @unchecked: `held` is guarded by `lock` (a few instructions, never
    // across a park); `wire` orders writes to Redis; the rest is immutable,
    // a Redis client and an atomic counter.

    /// A name this node holds: the claim's value in Redis, and the client.
    private struct Holder {
        let value: String
        let client: Client
        /// The client's server's counters (a slow client dropped by an offer).
        let metrics: ChatMetrics
    }

    /// This node's id (the first word of its claims' values).
    let nodeID: String
    /// Where claims, lookups and publishes go (the node's client for reads and presence).
    private let redis: RedisClient
    /// This node's channel: private messages to the names it holds.
    let channel: String
    /// How long a claim lasts after its last refresh: 3 presence heartbeats.
    static let ttlMilliseconds: Int64 = ClusterNode.presenceMilliseconds

    private let lock = FutexLock()
    private var held: [String: Holder] = [:]
    /// Set by `releaseAll` (the server drains or stops): no claim is taken in.
    private var closing = false
    /// Held while a refresh takes its snapshot and writes it, and while a
    /// release writes (see the top of the file).
    private let wire = GMPMutex()
    private let claims = Atomic<UInt64>(0)

    /// The names of node `nodeID`, through `redis`; subscribes `subscriber`
    /// to the node's channel (its dispatcher hands what comes to `receive`).
    init(nodeID: String, redis: RedisClient, subscriber: RedisSubscriber) {
        self.nodeID = nodeID
        self.redis = redis
        channel = Self.channel(of: nodeID)
        subscriber.subscribe([channel])
    }

    deinit { lock.free() }

    /// The key that says who holds `name`.
    static func key(_ name: String) -> String { "chat:name:{\(name)}" }

    /// The channel of node `id`.
    static func channel(of id: String) -> String { "chat:node:\(id)" }

    // KEYS: the name's key. ARGV: the claim's value.
    static let releaseScript = RedisScript("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """)

    // KEYS: the name's key. ARGV: the claim's value, the expiry (ms).
    // 1: still ours, extended; 2: it was gone, set again; 0: someone else's.
    static let refreshScript = RedisScript("""
        local v = redis.call('GET', KEYS[1])
        if v == ARGV[1] then
          redis.call('PEXPIRE', KEYS[1], ARGV[2])
          return 1
        end
        if not v then
          redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
          return 2
        end
        return 0
        """)

    // MARK: - Claims (read pumps)

    /// Claims `name` for `client` in Redis and, if it gets it, gives it to
    /// the client and releases its old name. Blocks the caller for a round
    /// trip (at most the client's time-out). Nil if the client has the name
    /// now; else the error line: the name is taken, or Redis could not be
    /// asked (the client keeps the name it had).
    func claim(_ name: String, for client: Client, metrics: ChatMetrics) -> String? {
        let (own, isClosing) = lock.withLock { (held[name]?.client === client, closing) }
        if own { return nil } // (its own already)
        if isClosing { return "error: the server is restarting; ask for the name once you have reconnected" }
        let value = "\(nodeID) \(claims.add(1, ordering: .relaxed).newValue)"
        let answer: RESPValue
        do {
            answer = try redis.call("SET", Self.key(name), value, "NX", "PX", String(Self.ttlMilliseconds))
        } catch {
            if error.mayHaveRun { release([(name, value)]) } // it may have been set: undone (or it expires)
            return "error: the name \(name) cannot be claimed now (\(error)); "
                + (client.name.map { "you are still \($0)" } ?? "you have no name yet")
        }
        guard answer != .null else { return "error: the name \(name) is taken" }
        guard answer == .simple("OK") else { return "error: the name \(name) cannot be claimed now (Redis answered \(answer))" }
        let (displaced, old, closed): (Holder?, (String, String)?, Bool) = lock.withLock {
            if closing { return (nil, nil, true) } // (releaseAll ran meanwhile: this claim is undone below)
            // Someone here held it, but its claim had lapsed (Redis away
            // past the expiry) and Redis gave the name out again.
            var displaced: Holder?
            if let h = held[name], h.client !== client {
                displaced = h
                if h.client.name == name { h.client.name = nil }
            }
            var old: (String, String)?
            if let previous = client.name, previous != name, let h = held[previous], h.client === client {
                held.removeValue(forKey: previous)
                old = (previous, h.value)
            }
            held[name] = Holder(value: value, client: client, metrics: metrics)
            client.name = name
            return (displaced, old, false)
        }
        if closed {
            release([(name, value)])
            return "error: the server is restarting; ask for the name once you have reconnected"
        }
        if let displaced { Self.tellLost(name, displaced) }
        if let old { release([old], wait: true) }
        return nil
    }

    /// Releases the name `client` holds (it has gone).
    func forget(_ client: Client) {
        guard let name = client.name else { return }
        let gone: (String, String)? = lock.withLock {
            guard let h = held[name], h.client === client else { return nil }
            held.removeValue(forKey: name)
            return (name, h.value)
        }
        if let gone { release([gone]) }
    }

    /// The client here called `name`, if any.
    func holder(of name: String) -> Client? { lock.withLock { held[name]?.client } }

    /// Sends compare-and-deletes for claims already out of `held`, after
    /// any refresh that saw them (`wire`); `wait`: for the answers too.
    /// Redis away: they expire.
    private func release(_ gone: [(name: String, value: String)], wait: Bool = false) {
        guard !gone.isEmpty, let c = try? redis.connection() else { return }
        wire.lock()
        let replies = c.send(pipeline: gone.map { Self.releaseScript.eval(keys: [Self.key($0.name)], args: [$0.value]) })
        wire.unlock()
        if wait { for r in replies { _ = try? c.wait(r) } }
    }

    // MARK: - Refresh (the presence G)

    /// Extends every claim held here, in one pipelined round; a name that
    /// someone else holds now is taken from its client (told with an
    /// error line). Redis away: nothing (the claims expire unless it is back
    /// in time; a refresh then sets them again if nobody took them).
    func refresh() {
        guard let c = try? redis.connection() else { return }
        wire.lock()
        let snapshot = lock.withLock { held.map { (name: $0.key, value: $0.value.value) } }
        guard !snapshot.isEmpty else {
            wire.unlock()
            return
        }
        // The script is loaded in the same write; one flushed in between
        // fails NOSCRIPT, and that name waits for the next heartbeat.
        let commands = [Self.refreshScript.load]
            + snapshot.map { Self.refreshScript.evalSHA(keys: [Self.key($0.name)], args: [$0.value, String(Self.ttlMilliseconds)]) }
        let replies = c.send(pipeline: commands)
        wire.unlock()
        _ = try? c.wait(replies[0])
        for (claim, r) in zip(snapshot, replies.dropFirst()) {
            switch try? c.wait(r) {
            case .integer(0)?: lose(claim.name, value: claim.value)
            case .integer(2)?: log("names: \(claim.name) was gone from Redis; claimed again")
            default: break
            }
        }
    }

    /// Takes `name` from its client here if it still holds the claim
    /// `value`, which someone else's has replaced in Redis.
    private func lose(_ name: String, value: String) {
        let loser: Holder? = lock.withLock {
            guard let h = held[name], h.value == value else { return nil }
            held.removeValue(forKey: name)
            if h.client.name == name { h.client.name = nil }
            return h
        }
        if let loser { Self.tellLost(name, loser) }
    }

    private static func tellLost(_ name: String, _ h: Holder) {
        log("names: \(name) is held on another node now (this node's claim lapsed)")
        let advice = h.client.identity == nil ? "choose one with /nick" : "private messages to it reach the other holder; reconnect to claim it again"
        h.client.offer(.error("error: your name \(name) was taken on another node while this one could not reach Redis; "
                              + advice), h.metrics)
    }

    /// Releases every name held here and waits for Redis's answers (at
    /// most the client's time-out); from then on no name is claimed here.
    /// The server drains or stops: its clients are about to reconnect,
    /// perhaps to another node, and must find their names free there; a
    /// private message to one of them meanwhile is answered "nobody is
    /// called NAME" instead of being lost with the connection.
    func releaseAll() {
        let all = lock.withLock {
            closing = true
            let all = held
            held = [:]
            return all
        }
        release(all.map { ($0.key, $0.value.value) }, wait: true)
    }

    // MARK: - Private messages

    /// Sends a private message from `from` to the client called `to`, here
    /// or on another node (see the top of the file). Nil if it was
    /// delivered or published; else the error line for the sender.
    func send(from: Client, to: String, text: String) -> String? {
        let fromName = from.name ?? "someone"
        if let h = lock.withLock({ held[to] }) {
            h.client.offer(.privateMessage(from: fromName, text: text), h.metrics)
            return nil
        }
        func failed(_ e: RedisError) -> String {
            "error: the message to \(to) " + (e.mayHaveRun ? "may not have been delivered" : "was not sent") + " (\(e))"
        }
        let value: RESPValue
        do { value = try redis.call("GET", Self.key(to)) } catch { return failed(error) }
        // Ours in Redis but not here: a claim on its way in or out.
        guard let holder = value.string, let space = holder.lastIndex(of: " "), holder[..<space] != nodeID else {
            return "error: nobody is called \(to)"
        }
        let receivers: RESPValue
        do {
            receivers = try redis.call("PUBLISH", Self.channel(of: String(holder[..<space])), Self.encode(to: to, from: fromName, text: text))
        } catch {
            return failed(error)
        }
        guard let n = receivers.int, n > 0 else { return "error: nobody is called \(to) (its node is not answering)" }
        return nil
    }

    /// A message published on this node's channel (from the dispatcher,
    /// which never waits): to the client called so here, if there is one.
    func receive(_ payload: [UInt8]) {
        guard let (to, from, text) = Self.decode(payload), let h = lock.withLock({ held[to] }) else { return }
        h.client.offer(.privateMessage(from: from, text: text), h.metrics)
    }

    /// "<to bytes> <to><from bytes> <from><text>".
    static func encode(to: String, from: String, text: String) -> String {
        "\(to.utf8.count) \(to)\(from.utf8.count) \(from)\(text)"
    }

    /// `encode`'s parts; nil if `payload` is not of that form.
    static func decode(_ payload: [UInt8]) -> (to: String, from: String, text: String)? {
        var rest = payload[...]
        func field() -> String? {
            guard let space = rest.firstIndex(of: UInt8(ascii: " ")), space > rest.startIndex, space - rest.startIndex <= 6,
                  let n = Int(String(decoding: rest[..<space], as: UTF8.self)), n >= 0, n <= rest.endIndex - space - 1 else {
                return nil
            }
            let start = space + 1
            rest = rest[(start + n)...]
            return String(decoding: payload[start..<(start + n)], as: UTF8.self)
        }
        guard let to = field(), let from = field() else { return nil }
        return (to, from, String(decoding: rest, as: UTF8.self))
    }
}
