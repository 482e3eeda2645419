import Channels
import Digests
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
//   chat:{R}:ids, chat:{R}:idt   client ids stored lately (below)
//   chat:rooms     a sorted set: rooms with members somewhere, by expiry
// where m is "<time ms> <bytes in the name> <name><text>". Names and private
// messages have keys of their own (chat:name:{NAME}, chat:node:<id>):
// ClusterNames.swift.
//
// Presence: every node writes, every `heartbeat`, the members of each of
// its rooms into the room's hash under its own id, stamped to expire three
// heartbeats later; `/who` and `/rooms` add up the fields that have not
// expired. A node that dies stops counting within that time; one that
// stops cleanly removes its fields. (The stamps are the writers' clocks:
// nodes whose clocks disagree by seconds would count too long or too little.)
//
// Appending is one Lua script: INCR, XADD with MAXLEN ~ retain, PUBLISH.
// Redis runs a script whole, so numbers are global and gap-free, the
// stream holds them in order, and the channel carries them in order: every
// node sees 1, 2, 3, … unless its subscription was away (reconnecting), and
// then the gap shows in the numbers and is read back from the stream. A
// node delivers its own messages as it does the others' (by the channel, or
// the stream for a gap), each number once, so never twice. Chosen over
// Redis Streams' own IDs (time-based, not gap-free) and over a channel per
// node (more subscriptions, the same ordering problem).
//
// A batch of posts is one transaction, MULTI, SCRIPT LOAD, EVALSHA for
// each, EXEC (the commands from the script's `RedisScript`), written at
// once: nothing runs between them, so no EVALSHA meets a script cache
// another client flushed (NOSCRIPT), and a sender's messages are numbered
// in its order. (EVALSHA alone, resending those
// refused with NOSCRIPT, put them after later ones that had run.)
//
// A message with a client id: the script remembers, per room, a hash of
// the id, the sender's name and the text, with the number it got
//   chat:{R}:ids   a hash, dedup key → number
//   chat:{R}:idt   a sorted set, the same keys by when (Redis's clock, ms)
// for 10 minutes, at most the last 10,000 a room; a post whose key is
// there is not stored again: its ack carries the first one's number. So a
// client told that its message's outcome is unknown (Redis did not answer
// in time: it may have run) sends it again with the same id and it is
// stored once. (Ids are per client, not per room: the name and text in the
// key keep two clients that pick the same id apart, unless they also send
// the same text under the same name.)
//
// A node has two connections for commands: appends go on one of their own
// (pipelined, never behind a read), everything else on the other, stream
// reads 500 entries a request (so a catch-up of thousands lets presence and
// other rooms' reads through between its pages). Its dispatcher takes the
// subscriber's events as they come (nothing is polled): it hands each
// published message to its room without waiting (a room whose queue is full
// loses it there and reads it back from the stream), and each confirmation
// of a room's subscription, the first and those after a reconnection, to
// the room, which then reads from the stream what was published before it.
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

    /// The client ids the room has stored: a hash, dedup key → number,
    /// and a sorted set of the same keys by when (ms, Redis's clock).
    var idsKey: String { "chat:{\(room)}:ids" }
    var idTimesKey: String { "chat:{\(room)}:idt" }
    /// How long, and how many, client ids a room remembers.
    static let idWindowMilliseconds = 600_000
    static let idsKept = 10_000

    // KEYS: seq, log, channel, ids, idt. ARGV: m, retain, dedup key ("":
    // none), window ms, ids kept. A key seen already answers its number
    // and does nothing else; a new one is remembered after the message is
    // kept, and the oldest (past the window, or past the count) forgotten.
    static let appendScript = """
        local key = ARGV[3]
        if key ~= '' then
          local seen = redis.call('HGET', KEYS[4], key)
          if seen then return tonumber(seen) end
        end
        local seq = redis.call('INCR', KEYS[1])
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-1', 'm', ARGV[1])
        redis.call('PUBLISH', KEYS[3], seq .. ' ' .. ARGV[1])
        if key ~= '' then
          local t = redis.call('TIME')
          local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
          local window = tonumber(ARGV[4])
          redis.call('HSET', KEYS[4], key, seq)
          redis.call('ZADD', KEYS[5], now, key)
          local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. (now - window), 'LIMIT', 0, 100)
          local extra = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[5])
          if extra > #old then old = redis.call('ZRANGE', KEYS[5], 0, extra - 1) end
          if #old > 0 then
            redis.call('HDEL', KEYS[4], unpack(old))
            redis.call('ZREM', KEYS[5], unpack(old))
          end
          redis.call('PEXPIRE', KEYS[4], window)
          redis.call('PEXPIRE', KEYS[5], window)
        end
        return seq
        """
    /// The append script, for EVALSHA (its SHA-1 computed once).
    static let script = RedisScript(appendScript)

    /// What the append script remembers of a message with a client id: its
    /// id, sender and text (a retry is the same three), hashed (SHA-1, in
    /// lower-case hex).
    static func dedupKey(id: String, from: String, text: String) -> String {
        hex(SHA1.hash("\(id.utf8.count) \(id)\(from.utf8.count) \(from)\(text)".utf8))
    }

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

    /// A message to append.
    struct Appending: Sendable {
        var time: Int64
        var from: String
        var text: String
        /// The client's id for it (nil: none; never de-duplicated).
        var id: String? = nil
    }

    /// What became of a message sent to the append script.
    enum Outcome: Sendable, Equatable {
        /// Kept and published under this number (or it had been: a retry).
        case stored(UInt64)
        /// Not kept: Redis refused it, or it was never sent.
        case refused(RedisError)
        /// It may have been kept: sent, and no answer came.
        case unknown(RedisError)

        init(failure e: RedisError) { self = e.mayHaveRun ? .unknown(e) : .refused(e) }
    }

    /// The commands that append `messages`: one transaction that loads the
    /// script and runs it for each (see `append`).
    func appendCommands(_ messages: [Appending]) -> [[String]] {
        var commands: [[String]] = [["MULTI"], Self.script.load]
        commands.reserveCapacity(messages.count + 3)
        let keys = [seqKey, logKey, channel, idsKey, idTimesKey]
        for m in messages {
            let key = m.id.map { Self.dedupKey(id: $0, from: m.from, text: m.text) } ?? ""
            commands.append(Self.script.evalSHA(keys: keys, args: [Self.encode(time: m.time, from: m.from, text: m.text),
                                                                   String(retain), key, String(Self.idWindowMilliseconds),
                                                                   String(Self.idsKept)]))
        }
        commands.append(["EXEC"])
        return commands
    }

    /// What became of each message, from the replies to `appendCommands`.
    func outcomes(_ replies: [RedisReply], count: Int) -> [Outcome] {
        func each(_ v: RESPValue) -> Outcome {
            switch v {
            case .integer(let n) where n > 0: .stored(UInt64(n))
            case .error(let e): .refused(.server(e))
            default: .unknown(.protocolError("the append script answered \(v)"))
            }
        }
        guard replies.count == count + 3 else { return Array(repeating: .unknown(.protocolError("replies missing")), count: count) }
        if case .failure(.server) = replies[0] {
            // No transaction (MULTI refused): each ran by itself.
            return replies[2..<(count + 2)].map { r in
                switch r {
                case .success(let v): each(v)
                case .failure(.server(let e)): .refused(.server(e))
                case .failure(let e): Outcome(failure: e)
                }
            }
        }
        switch replies[count + 2] {
        case .failure(let e): // EXECABORT (refused while queued: none ran), or no answer
            return Array(repeating: Outcome(failure: e), count: count)
        case .success(.array(let items)) where items.count == count + 1:
            return items.dropFirst().map(each)
        case .success(let v):
            return Array(repeating: .unknown(.protocolError("EXEC answered \(v)")), count: count)
        }
    }

    /// Numbers, keeps and publishes messages, pipelined in one write: what
    /// became of each, in order.
    ///
    /// One transaction (MULTI, SCRIPT LOAD, an EVALSHA each, EXEC): nothing
    /// runs between its commands, so the script is there for every
    /// EVALSHA even if another client flushes scripts meanwhile, and the
    /// messages are numbered in their order (an EVALSHA refused with
    /// NOSCRIPT and sent again would go after later ones that ran). A
    /// message with a client id that the room has stored (within
    /// `idWindowMilliseconds`, among its last `idsKept`) is not stored
    /// again: its answer is the first one's number.
    func append(_ messages: [Appending], on c: RedisConnection) -> [Outcome] {
        outcomes(c.pipeline(appendCommands(messages)), count: messages.count)
    }

    /// The room's newest number (0: none yet).
    func newest(on c: RedisConnection) throws(RedisError) -> UInt64 {
        let v = try c.call("GET", seqKey)
        if v == .null { return 0 }
        guard let n = v.int, n >= 0 else { throw .protocolError("\(seqKey) holds \(v)") }
        return UInt64(n)
    }

    /// Entries a stream read asks for at a time: a catch-up of thousands
    /// is several replies, and what else waits on the connection goes
    /// between them.
    static let readPage = 500

    /// Up to `limit` entries numbered after `after`, oldest first (from the
    /// oldest kept, if those are gone), read `readPage` at a time.
    func read(after: UInt64, limit: Int, on c: RedisConnection) throws(RedisError) -> [Entry] {
        var out: [Entry] = []
        var from = after
        while out.count < limit {
            let n = min(Self.readPage, limit - out.count)
            let page = try entries(c.call("XRANGE", logKey, "(\(from)-1", "+", "COUNT", String(n)))
            out += page
            guard page.count == n, let last = page.last else { break }
            from = last.seq
        }
        return out
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

/// This node's connections to Redis (see the top of the file): a client
/// for appends only (every room's Redis G pipelines its batches there, so
/// an ack never waits behind a read), a client for the rest (catch-up and
/// fill reads, presence, `/rooms`, names), one subscriber for every loaded
/// room's channel and the node's own, and a dispatcher G that hands each
/// of the subscriber's events on: a message to its room's hub; a room's
/// subscription confirmed to the room (it reads from the stream what it may
/// have missed); a connection lost (the node is degraded: logged,
/// `chat_redis_up` 0) or back.
final class ClusterNode: @unchecked Sendable {
    // @unchecked: `routes` and `roomsCache` are guarded by `lock` (a few
    // instructions, never across a park); the rest are Redis clients,
    // atomics and settings.
    let url: RedisURL
    /// Reads, presence and the rest (not appends).
    let client: RedisClient
    /// Appends (the rooms' Redis Gs).
    let appender: RedisClient
    let subscriber: RedisSubscriber
    /// Messages a room's stream keeps, about.
    let retain: Int
    /// Whether the subscription is up (the node is not degraded).
    let up = Atomic<Bool>(false)
    /// This node's name in the presence hashes.
    let nodeID: String
    /// The names this node's clients hold, and private messages (ClusterNames.swift).
    let names: ClusterNames
    /// How often presence is written, and how long it counts.
    static let heartbeat: Int64 = 2_000_000_000
    static let presenceMilliseconds: Int64 = 3 * heartbeat / 1_000_000
    private let lock = FutexLock()
    private var routes: [String: Room] = [:]

    init(url: RedisURL, retain: Int, quit: Chan<Void>) {
        self.url = url
        self.retain = retain
        client = RedisClient(url: url)
        appender = RedisClient(url: url)
        subscriber = RedisSubscriber(url: url)
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        let name = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        nodeID = "\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        names = ClusterNames(nodeID: nodeID, redis: client, subscriber: subscriber)
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
    /// `heartbeat`, and its names' claims refreshed; its fields removed
    /// and its names released when the server stops.
    private func beat(_ quit: Chan<Void>) {
        var written: Set<String> = []
        while true {
            names.refresh()
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
                names.releaseAll()
                client.close()
                appender.close()
                return
            }
        }
    }

    /// The other nodes' members of `room` (what has not expired), added up.
    func presence(of room: String) -> [Presence] {
        guard let v = try? client.call("HGETALL", Self.whoKey(room)) else { return [] }
        let (out, expired) = presences(v)
        if !expired.isEmpty { _ = client.pipeline([["HDEL", Self.whoKey(room)] + expired]) }
        return out
    }

    /// The other nodes' fields of a presence hash (HGETALL's answer) that
    /// have not expired, and the nodes whose fields have.
    private func presences(_ v: RESPValue) -> (present: [Presence], expired: [String]) {
        guard let items = v.elements else { return ([], []) }
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
        return (out, expired)
    }

    /// How long the other nodes' counts for `/rooms` are used again.
    static let roomsCacheNanoseconds: Int64 = 1_000_000_000
    /// The other nodes' members by room, and when they were read (GMP.now); guarded by `lock`.
    private var roomsCache: (at: Int64, others: [String: Int])?

    /// Rooms with members on any node, with every node's count, the fullest
    /// first (at most 100); `here`: this node's loaded rooms and members.
    /// The other nodes' counts cost one round trip (the listed rooms'
    /// presence hashes in one pipeline) and are used again for
    /// `roomsCacheNanoseconds`.
    func roomsAcrossNodes(here: [(name: String, members: Int)]) -> [(name: String, members: Int)] {
        var others: [String: Int]
        if let cached = lock.withLock({ roomsCache }), GMP.now - cached.at < Self.roomsCacheNanoseconds {
            others = cached.others
        } else {
            others = [:]
            let now = wallClockMilliseconds()
            if let v = try? client.call("ZRANGEBYSCORE", "chat:rooms", String(now), "+inf", "LIMIT", "0", "100"),
               let names = v.elements?.compactMap(\.string) {
                let replies = client.pipeline(names.map { ["HGETALL", Self.whoKey($0)] } + [["ZREMRANGEBYSCORE", "chat:rooms", "-inf", String(now)]])
                for (name, r) in zip(names, replies) {
                    guard case .success(let v) = r else { continue }
                    others[name] = presences(v).present.reduce(0) { $0 + $1.names.count + $1.anonymous }
                }
            }
            let read = others
            lock.withLock { roomsCache = (GMP.now, read) }
        }
        var counts: [String: Int] = others
        for (name, n) in here { counts[name, default: 0] += n }
        return Array(fullestFirst(counts.map { (name: $0.key, members: $0.value) }).prefix(100))
    }

    /// Messages the dispatcher could not queue for a room whose hub was
    /// behind (they were read back from the stream).
    let overflows = Atomic<Int>(0)

    /// The dispatcher G: the subscriber's events, as they come. Messages to
    /// their rooms, without waiting for any (see `overflows`); a room's
    /// subscription confirmed (at first, and again after each reconnection)
    /// to the room, which then reads from the stream what was published
    /// before it; the connection's ups and downs to the log and `up`.
    private func dispatch(_ quit: Chan<Void>) {
        defer { subscriber.close() } // (the presence G closes the client, after its last words)
        while true {
            var stop = false
            select { s in
                if let r = s.receive(subscriber.events) {
                    guard case .value(let event) = r else { stop = true; return } // (closed: only after close)
                    switch event {
                    case .message(let m):
                        if m.channel == names.channel { return names.receive(m.payload) } // a private message
                        guard let name = RedisRoomStore.room(ofChannel: m.channel),
                              let room = lock.withLock({ routes[name] }),
                              let e = RedisRoomStore.decode(published: m.payload) else { return }
                        // Never waits for one room: a room whose queue is full
                        // (its hub behind) loses the message here and reads it
                        // back from the stream (a gap, or the resync).
                        if !room.incoming.trySend(e) {
                            _ = room.resync.trySend(())
                            overflows.add(1, ordering: .relaxed)
                        }
                    case .subscribed(let ch):
                        // From now on the channel brings everything: what came
                        // before (or while the connection was away) is in the stream.
                        guard let name = RedisRoomStore.room(ofChannel: ch), let room = lock.withLock({ routes[name] }) else { return }
                        _ = room.subscribed.trySend(())
                    case .connected, .disconnected:
                        let isUp = event == .connected
                        if isUp != up.exchange(isUp, ordering: .relaxed) {
                            log(isUp ? "redis: connected to \(url)" : "redis: lost \(url); degraded: messages are refused until it is back")
                        }
                    }
                }
                if s.receive(quit) != nil { stop = true }
            }
            if stop { return }
        }
    }
}
