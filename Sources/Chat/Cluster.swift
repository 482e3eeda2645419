import Channels
import Foundation
import GMP
import Glibc
import Redis
import Synchronization
import WebSocket

// Several nodes, one chat: with `--redis URL` a room's messages are
// numbered, kept and broadcast through Redis, and every node delivers them
// to its own members. This file is the Redis side of a room (keys, the
// append script, reading back); Room.swift runs it.
//
// Keys of room R (in braces: one hash slot per room, should Redis be a cluster):
//   chat:{R}:seq   the room's last sequence number (INCR)
//   chat:{R}:log   a stream, one entry per message, ID "<seq>-1", field m
//   chat:{R}       the pub/sub channel: "<seq> <m>"
//   chat:{R}:who   presence: a hash, a field per node, "<expires ms> <JSON>"
//   chat:rooms     a sorted set: rooms with members somewhere, by expiry
// where m is "<time ms> <bytes in the name> <name><text>".
//
// Presence: every node writes, every `heartbeat`, the members of each of
// its rooms into the room's hash under its own id, stamped to expire three
// heartbeats later; `/who` and `/rooms` add up the fields that have not
// expired. A node that dies stops counting within that time; one that
// stops cleanly removes its fields. (The stamps are the writers' clocks:
// nodes whose clocks disagree by seconds would count too long or too little.)
//
// Appending is one Lua script (EVALSHA, EVAL the first time): INCR, XADD
// with MAXLEN ~ retain, PUBLISH. Redis runs a script whole, so numbers are
// global and gap-free, the stream holds them in order, and the channel
// carries them in order: every node sees 1, 2, 3, … unless its subscription
// was away (reconnecting), and then the gap shows in the numbers and is
// read back from the stream. A node delivers its own messages as it does
// the others' (by the channel, or the stream for a gap), each number once,
// so never twice. Chosen over Redis Streams' own
// IDs (time-based, not gap-free) and over a channel per node (more
// subscriptions, the same ordering problem).
//
// Redis must keep its data across a restart (an append-only file; RDB
// snapshots lose the last minutes): one that lost data hands out numbers
// again. A node notices when its subscription comes back (the room's
// counter is behind what it delivered), logs it, sends its members a
// "reset" and goes on from Redis's number; messages in between may be
// missed by members of other nodes.

/// A room's history and broadcast in Redis (see the top of the file).
struct RedisRoomStore: Sendable {
    let room: String
    var seqKey: String { "chat:{\(room)}:seq" }
    var logKey: String { "chat:{\(room)}:log" }
    /// The room's pub/sub channel.
    var channel: String { "chat:{\(room)}" }
    /// Messages the stream keeps, about (MAXLEN ~).
    let retain: Int

    static let appendScript = """
        local seq = redis.call('INCR', KEYS[1])
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-1', 'm', ARGV[1])
        redis.call('PUBLISH', KEYS[3], seq .. ' ' .. ARGV[1])
        return seq
        """
    static let appendSHA = sha1Hex(Array(appendScript.utf8))

    /// The room a channel is for, if it is one of ours.
    static func room(ofChannel ch: String) -> String? {
        guard ch.hasPrefix("chat:{"), ch.hasSuffix("}") else { return nil }
        return String(ch.dropFirst(6).dropLast())
    }

    /// "<time> <name bytes> <name><text>".
    static func encode(time: Int64, from: String, text: String) -> String {
        "\(time) \(from.utf8.count) \(from)\(text)"
    }

    /// An entry from its number and `encode`'s form; nil if it is not one.
    static func decode(seq: UInt64, _ m: [UInt8]) -> Entry? {
        let parts = m.split(separator: UInt8(ascii: " "), maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let time = Int64(String(decoding: parts[0], as: UTF8.self)),
              let n = Int(String(decoding: parts[1], as: UTF8.self)), n >= 0, n <= parts[2].count else { return nil }
        let rest = parts[2]
        let name = rest.prefix(n)
        return Entry(seq: seq, time: time, from: String(decoding: name, as: UTF8.self),
                     text: String(decoding: rest.dropFirst(n), as: UTF8.self))
    }

    /// A message from the channel: "<seq> <m>".
    static func decode(published payload: [UInt8]) -> Entry? {
        guard let space = payload.firstIndex(of: UInt8(ascii: " ")),
              let seq = UInt64(String(decoding: payload[..<space], as: UTF8.self)), seq > 0, seq <= UInt64(Int64.max) else {
            return nil // (INCR's numbers are Int64s: anything else was not published by a node)
        }
        return decode(seq: seq, Array(payload[(space + 1)...]))
    }

    /// Numbers, keeps and publishes messages, pipelined in one write; the
    /// number of each, or why it failed.
    func append(_ messages: [(time: Int64, from: String, text: String)], on c: RedisConnection) -> [Result<UInt64, RedisError>] {
        func evalsha(_ m: (time: Int64, from: String, text: String)) -> [String] {
            ["EVALSHA", Self.appendSHA, "3", seqKey, logKey, channel, Self.encode(time: m.time, from: m.from, text: m.text),
             String(retain)]
        }
        var replies = c.pipeline(messages.map(evalsha))
        // The first time on a Redis: the script is not loaded yet. Those
        // refused for it are sent again (only those: the others ran).
        func noScript(_ r: RedisReply) -> Bool { if case .failure(.server(let e)) = r { e.hasPrefix("NOSCRIPT") } else { false } }
        let again = replies.indices.filter { noScript(replies[$0]) }
        if !again.isEmpty {
            _ = try? c.call(["SCRIPT", "LOAD", Self.appendScript])
            for (i, r) in zip(again, c.pipeline(again.map { evalsha(messages[$0]) })) { replies[i] = r }
        }
        return replies.map { r in
            switch r {
            case .success(.integer(let n)) where n > 0: .success(UInt64(n))
            case .success(let v): .failure(.protocolError("the append script answered \(v)"))
            case .failure(let e): .failure(e)
            }
        }
    }

    /// The room's newest number (0: none yet).
    func newest(on c: RedisConnection) throws(RedisError) -> UInt64 {
        let v = try c.call("GET", seqKey)
        if v == .null { return 0 }
        guard let n = v.int, n >= 0 else { throw .protocolError("\(seqKey) holds \(v)") }
        return UInt64(n)
    }

    /// Up to `limit` entries numbered after `after`, oldest first (from the
    /// oldest kept, if those are gone).
    func read(after: UInt64, limit: Int, on c: RedisConnection) throws(RedisError) -> [Entry] {
        let v = try c.call("XRANGE", logKey, "(\(after)-1", "+", "COUNT", String(limit))
        return try entries(v)
    }

    /// The newest `count` entries, oldest first.
    func last(_ count: Int, on c: RedisConnection) throws(RedisError) -> [Entry] {
        guard count > 0 else { return [] }
        return try entries(c.call("XREVRANGE", logKey, "+", "-", "COUNT", String(count))).reversed()
    }

    private func entries(_ v: RESPValue) throws(RedisError) -> [Entry] {
        guard let items = v.elements else { throw .protocolError("a stream read answered \(v)") }
        var out: [Entry] = []
        for item in items {
            guard let pair = item.elements, pair.count == 2, let id = pair[0].string,
                  let seq = id.split(separator: "-").first.flatMap({ UInt64($0) }),
                  let fields = pair[1].elements, fields.count == 2, case .bulk(let m) = fields[1],
                  let e = Self.decode(seq: seq, m) else {
                throw .protocolError("a stream entry that is not a message: \(item)")
            }
            out.append(e)
        }
        return out
    }
}

/// SHA-1 of `bytes` in lower-case hex (a script's EVALSHA name).
func sha1Hex(_ bytes: [UInt8]) -> String {
    SHA1.hash(bytes).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

/// This node's connections to Redis (see the top of the file): a client
/// for commands (shared by the rooms' Redis Gs and catch-up readers), one
/// subscriber for every loaded room's channel, and a dispatcher G that
/// hands each message to its room's hub. It watches the subscriber: when
/// it is lost the node is degraded (logged, `chat_redis_up` 0), and when it
/// comes back every room reads from the stream what it may have missed.
final class ClusterNode: @unchecked Sendable {
    // @unchecked: `routes` is guarded by `lock` (a few instructions, never
    // across a park); the rest are Redis clients, atomics and settings.
    let url: RedisURL
    let client: RedisClient
    let subscriber: RedisSubscriber
    /// Messages a room's stream keeps, about.
    let retain: Int
    /// Whether the subscription is up (the node is not degraded).
    let up = Atomic<Bool>(false)
    /// This node's name in the presence hashes.
    let nodeID: String
    /// How often presence is written, and how long it counts.
    static let heartbeat: Int64 = 2_000_000_000
    static let presenceMilliseconds: Int64 = 3 * heartbeat / 1_000_000
    private let lock = FutexLock()
    private var routes: [String: Room] = [:]

    init(url: RedisURL, retain: Int, quit: Chan<Void>) {
        self.url = url
        self.retain = retain
        client = RedisClient(url: url)
        subscriber = RedisSubscriber(url: url)
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        nodeID = "\(String(cString: host))-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        go { self.dispatch(quit) }
        go { self.beat(quit) }
    }

    deinit { lock.free() }

    func store(_ room: String) -> RedisRoomStore { RedisRoomStore(room: room, retain: retain) }

    /// Routes `room`'s channel to it, and subscribes.
    func add(_ room: Room) {
        lock.withLock { routes[room.name] = room }
        subscriber.subscribe([store(room.name).channel])
    }

    /// Stops routing to `room` (unloaded).
    func remove(_ room: Room) {
        let gone: Bool = lock.withLock {
            guard routes[room.name] === room else { return false }
            routes.removeValue(forKey: room.name)
            return true
        }
        if gone { subscriber.unsubscribe([store(room.name).channel]) }
    }

    private func rooms() -> [Room] { lock.withLock { Array(routes.values) } }

    // MARK: Presence

    private static func whoKey(_ room: String) -> String { "chat:{\(room)}:who" }

    /// The presence G: this node's members of each room into Redis every
    /// `heartbeat`; its fields removed when the server stops.
    private func beat(_ quit: Chan<Void>) {
        var written: Set<String> = []
        while true {
            var present: [(String, Presence)] = []
            for room in rooms() where room.members.load(ordering: .relaxed) > 0 {
                if let p = room.presence(), !p.names.isEmpty || p.anonymous > 0 { present.append((room.name, p)) }
            }
            let expires = wallClockMilliseconds() + Self.presenceMilliseconds
            var commands: [[String]] = []
            for (room, p) in present {
                let value = "\(expires) {\"names\":[\(p.names.map(jsonString).joined(separator: ","))],\"anonymous\":\(p.anonymous)}"
                commands += [["HSET", Self.whoKey(room), nodeID, value],
                             ["PEXPIRE", Self.whoKey(room), String(Self.presenceMilliseconds)],
                             ["ZADD", "chat:rooms", String(expires), room]]
            }
            let now = Set(present.map(\.0))
            for room in written.subtracting(now) { commands.append(["HDEL", Self.whoKey(room), nodeID]) }
            if !commands.isEmpty { _ = client.pipeline(commands) } // (Redis away: the fields expire, and come back with it)
            written = now
            var stop = false
            select { s in
                if s.receive(quit) != nil { stop = true }
                if s.timeout(after: .nanoseconds(Self.heartbeat)) {}
            }
            if stop {
                if !written.isEmpty { _ = client.pipeline(written.map { ["HDEL", Self.whoKey($0), nodeID] }) }
                client.close()
                return
            }
        }
    }

    /// The other nodes' members of `room` (what has not expired), added up.
    func presence(of room: String) -> [Presence] {
        guard let v = try? client.call("HGETALL", Self.whoKey(room)), let items = v.elements else { return [] }
        let now = wallClockMilliseconds()
        var out: [Presence] = []
        var expired: [String] = []
        for i in stride(from: 0, to: items.count - 1, by: 2) where items[i].string != nodeID {
            guard let text = items[i + 1].string, let space = text.firstIndex(of: " "), let expires = Int64(text[..<space]) else { continue }
            guard expires > now else { // a node that died: its field goes
                if let node = items[i].string { expired.append(node) }
                continue
            }
            guard let obj = try? JSONSerialization.jsonObject(with: Data(text[text.index(after: space)...].utf8)) as? [String: Any],
                  let names = obj["names"] as? [String], let anonymous = obj["anonymous"] as? Int else { continue }
            out.append(Presence(names: names, anonymous: anonymous))
        }
        if !expired.isEmpty { _ = client.pipeline([["HDEL", Self.whoKey(room)] + expired]) }
        return out
    }

    /// Rooms with members on any node, with every node's count, the fullest
    /// first (at most 100); `here`: this node's loaded rooms and members.
    func roomsAcrossNodes(here: [(name: String, members: Int)]) -> [(name: String, members: Int)] {
        let now = wallClockMilliseconds()
        var counts: [String: Int] = [:]
        for (name, n) in here { counts[name] = n }
        if let v = try? client.call("ZRANGEBYSCORE", "chat:rooms", String(now), "+inf", "LIMIT", "0", "100"),
           let names = v.elements?.compactMap(\.string) {
            for name in names {
                let others = presence(of: name).reduce(0) { $0 + $1.names.count + $1.anonymous }
                counts[name, default: 0] += others
            }
        }
        _ = client.pipeline([["ZREMRANGEBYSCORE", "chat:rooms", "-inf", String(now)]])
        return Array(fullestFirst(counts.map { (name: $0.key, members: $0.value) }).prefix(100))
    }

    /// The dispatcher G: messages to their rooms; the subscriber's state,
    /// checked every 200 ms, to the log and the rooms.
    private func dispatch(_ quit: Chan<Void>) {
        let tick = Chan<Void>(capacity: 1)
        let ticker = Timer { _ = tick.trySend(()) }
        ticker.reset(at: GMP.deadline(afterNanoseconds: 200_000_000))
        defer {
            ticker.stop()
            subscriber.close() // (the presence G closes the client, after its last words)
        }
        var connects = 0
        while true {
            var stop = false
            select { s in
                if let r = s.receive(subscriber.messages), case .value(let m) = r {
                    guard let name = RedisRoomStore.room(ofChannel: m.channel),
                          let room = lock.withLock({ routes[name] }),
                          let e = RedisRoomStore.decode(published: m.payload) else { return }
                    select { t in
                        if t.send(room.incoming, e) {}
                        if t.receive(room.closing) != nil {}
                        if t.receive(quit) != nil { stop = true }
                    }
                }
                if s.receive(tick) != nil {
                    let now = subscriber.connects.load(ordering: .relaxed)
                    let isUp = subscriber.isConnected
                    if isUp != up.load(ordering: .relaxed) {
                        up.store(isUp, ordering: .relaxed)
                        log(isUp ? "redis: connected to \(url)" : "redis: lost \(url); degraded: messages are refused until it is back")
                    }
                    if isUp && now != connects { // (re)connected: what was published meanwhile is in the streams
                        connects = now
                        for room in rooms() { _ = room.resync.trySend(()) }
                    }
                    ticker.reset(at: GMP.deadline(afterNanoseconds: 200_000_000))
                }
                if s.receive(quit) != nil { stop = true }
            }
            if stop { return }
        }
    }
}
