import Channels
import GMP
import Glibc
import Redis
import Synchronization
import WebSocket

// A room: gorilla's hub, one per room. The room's hub G owns its members
// and selects over register, unregister, posts, presence (`/who`) and the
// batches its log G hands back; a busy room never delays a quiet one, each has its Gs.
//
// A message's way: the sender's read pump posts it; the hub takes the
// sender's name and passes it to the room's log G (a buffered channel; if
// it is full the sender gets "busy", the hub never waits); the log G numbers
// a batch of posts, appends them to the room's log in one write (History.swift),
// syncs if the policy is `always`, moves the room's committed mark
// (`durable`) and hands the batch back; the hub then keeps each in its tail
// (the newest messages, in memory), acks each sender (its acks of a batch in
// one object) and delivers the batch to every member as one object, encoded
// once (`Prepared`): a batch takes one place in a member's send buffer, so
// bursts the rate limits admit cannot overflow members that read. So a delivered message is
// always in the log, synced under `always` (a client never sees a number
// that a crash could give to another message, short of a power cut under
// `interval` or `never`), and the hub never waits for the disk. With
// `--fsync interval` the log G also syncs within 100 ms of a write, by
// itself. Without a data directory the hub numbers and commits the posts
// waiting at once, as one batch, and the tail is all the history there is.
//
// Joining, and the seam between catch-up and live messages: a joiner's
// register carries `since` (the newest message it has, or none). The hub
// answers in its own G, so nothing is committed in between: it pushes the
// messages after `since` from its tail (or the last `history` of them), then
// the "joined" line, into the member's send buffer, and the member gets
// every later message as it is committed. When the tail does not reach back
// to `since`, the hub answers "read the log" and does not register: the
// joiner reads the log after `since` up to the committed mark itself,
// writes it to the socket, and registers again with `since` = the last
// message it wrote. What the log G committed but the hub has not taken yet
// may be among it: a `since` between the hub's newest and the committed
// mark is one the client has, and it gets nothing at or below it
// (`skipThrough`). So each message reaches the joiner once, in order, with
// no gap. A `since` past the mark (a server that lost its history, say) gets
// a "reset" line and the room's last `history`.
//
// With `--redis` (Cluster.swift) the log G is the room's Redis G: it
// appends a batch of posts with the append script, pipelined, and hands
// back only their numbers (the senders' acks). Messages, this node's own
// included, come to the hub from the node's subscription (`incoming`), in
// order; one that skips numbers is held while the Redis G reads the gap
// from the stream (`fills`), and once the room's subscription is confirmed,
// at first and after it was lost, the hub reads what follows its newest
// (`subscribed`, then `resync`). A message the stream no longer
// has is skipped, and the members get a `gap` line for it. While Redis is unreachable, posts are refused with an
// error line. Catch-up reads the stream instead of the disk.
//
// A client's `send` channel is never closed, so any G may offer to it
// (`offer`: never blocking); a client whose buffer is full is kicked:
// `kicked` is closed, once, and its write pump closes the connection with
// 1001 (as when the server stops). Pumps talk to the hub through
// `join`, `leave`, `post` and `presence`, which give up once the room or the
// server has stopped, so no G waits for ever on a hub that is gone.

/// One connected client: its socket, its send buffer, its name.
final class Client: @unchecked Sendable {
    // @unchecked: `ws` is read by one G, the read pump (its contract), and
    // written by the write pump and the read pump (frames are serialized);
    // `send` and `kicked` are channels; `_name` is guarded by `lock`; the
    // rest are `let`s.
    let ws: WebSocketConn
    let send = Chan<Prepared>(capacity: 256)
    /// Closed once, by `kick`: the write pump closes the connection.
    let kicked = Chan<Void>()
    private let kickedOnce = Atomic<Bool>(false)
    let peer: String
    let format: ChatFormat
    /// With auth on, who its token says it is (its name, and the rooms it
    /// may join); nil without auth.
    let identity: TokenClaims?
    private let lock = FutexLock(compact: ())
    private var _name: String?

    init(ws: WebSocketConn, peer: String, format: ChatFormat, identity: TokenClaims? = nil) {
        self.ws = ws
        self.peer = peer
        self.format = format
        self.identity = identity
        _name = identity?.name
    }

    deinit { lock.free() }

    /// Set by `/nick` (the directory G, or with Redis `ClusterNames`: they keep names unique).
    var name: String? {
        get { lock.withLock { _name } }
        set { lock.withLock { _name = newValue } }
    }

    /// Makes the write pump close the connection (1001). True for the call
    /// that did it, false if it was done already.
    @discardableResult
    func kick() -> Bool {
        if kickedOnce.exchange(true, ordering: .acquiringAndReleasing) { return false }
        kicked.close()
        return true
    }

    /// Queues `m` for the write pump, unless `m` has nothing in this client's
    /// format. A full buffer means the client does not read fast enough: it
    /// is kicked, and the answer is false.
    @discardableResult
    func offer(_ m: Prepared, _ metrics: ChatMetrics) -> Bool {
        guard m.payload(format) != nil else { return true }
        if send.trySend(m) { return true }
        if kick() {
            metrics.bump(.slowDrops)
            log("dropped slow client \(peer)")
        }
        return false
    }
}

/// A message from a client on its way through a room.
struct Post: Sendable {
    let from: Client
    var name = ""
    let text: String
    /// The client's id for it (echoed in its answer), if it gave one.
    var id: String? = nil
    /// When the read pump took it (GMP.now).
    let receivedAt: Int64
}

/// Posts numbered and logged (or refused: `error`), from the log G to the hub.
struct Batch: Sendable {
    let entries: [Entry]
    let posts: [Post]
    let error: StoreError?
    /// With `error`: the posts may have been stored after all (Redis did
    /// not answer in time); their answers say so, and a retry with the same
    /// client id is stored at most once.
    var unknown = false
    /// With Redis: the posts' numbers (their messages come by the subscription).
    var acks: [UInt64] = []
    /// With Redis: `entries` were read from the stream to fill a gap; the
    /// last read of a fill (`done`) lets the hub ask for the next.
    var fill = false
    var done = false
    /// With Redis: a fill that could not read the stream (the gap stays held).
    var failedFill = false
    /// With Redis: the room's counter is behind the hub's newest (Redis lost
    /// data): the hub starts again from this number.
    var rewound: UInt64?
}

/// A join: the client, and the newest message it has (nil: give it the
/// room's last `history` messages).
struct Joining: Sendable {
    let client: Client
    let since: UInt64?
    /// Whether the answer may be `readLog` (false after a read found nothing:
    /// then a gap is reported and the tail served).
    let mayReadLog: Bool
    let reply: Chan<JoinAnswer>
}

enum JoinAnswer: Sendable {
    /// A member now.
    case joined
    /// Not a member: the tail does not reach back to `since`; read the log.
    case readLog
}

/// Who is in a room: the names, and how many have none.
struct Presence: Sendable, Equatable {
    var names: [String]
    var anonymous: Int

    /// The presence of several places together.
    static func + (a: Presence, b: Presence) -> Presence {
        Presence(names: (a.names + b.names).sorted(), anonymous: a.anonymous + b.anonymous)
    }
}

/// What every room shares: the server's settings for history, its
/// counters, and its quit channel.
struct RoomSettings: Sendable {
    /// Messages a joiner gets (without `since`).
    var history = 50
    /// Messages the hub keeps in memory (at least `history`).
    var tailLength: Int { max(history, 128) }
    var policy = FsyncPolicy.interval
    var metrics: ChatMetrics
    var quit: Chan<Void>
}

/// A room's channels and its hub G's loop (`run`).
final class Room: @unchecked Sendable {
    // @unchecked: the `let`s are channels and atomics; `initialTail` and
    // `log` are handed to the room's two Gs at their start and not touched
    // by anyone else after.
    let name: String
    let settings: RoomSettings
    private let register = Chan<Joining>()
    private let unregister = Chan<Client>()
    private let posts = Chan<Post>()
    private let snapshots = Chan<Chan<Presence>>()
    /// Batches from the log G (buffered: the log G goes on while the hub delivers).
    private let committed = Chan<Batch>(capacity: 64)
    /// Closed by the directory to end the room (no members left).
    let closing = Chan<Void>()
    /// Closed by the hub G when it ends; the log G then drains, syncs and ends.
    let hubDone = Chan<Void>()
    /// Closed by the log G (or the hub, without one) when the room is all done.
    let finished = Chan<Void>()
    /// Members now (the hub's count) and the newest message's number.
    let members = Atomic<Int>(0)
    let newest = Atomic<UInt64>(0)
    /// The newest message in the log for good (written, and synced under
    /// `always`): set by the log G before it hands a batch back (by the hub
    /// without a log). Catch-up reads no further.
    let durable = Atomic<UInt64>(0)
    /// Posts for the log G (nil: no data directory).
    private let logInput: Chan<Post>?
    private var initialTail: [Entry]
    private var log: RoomLog?
    /// With Redis: the room's keys and the node's connections.
    let cluster: (store: RedisRoomStore, node: ClusterNode)?
    /// With Redis: messages from the node's subscription, in order.
    let incoming = Chan<Entry>(capacity: 1024)
    /// With Redis: the subscription came back; read what was missed.
    let resync = Chan<Void>(capacity: 1)
    /// With Redis: the node's subscription to the room's channel was
    /// confirmed (the dispatcher, each time; the Redis G makes it a resync).
    let subscribed = Chan<Void>(capacity: 1)
    /// With Redis: the hub asks its Redis G to read the stream after a number.
    let fills = Chan<UInt64>(capacity: 1)

    init(name: String, settings: RoomSettings, tail: [Entry], log: RoomLog?,
         cluster: (store: RedisRoomStore, node: ClusterNode)? = nil) {
        self.name = name
        self.settings = settings
        self.initialTail = tail
        self.log = log
        self.cluster = cluster
        logInput = log == nil && cluster == nil ? nil : Chan<Post>(capacity: 1024)
        newest.store(tail.last?.seq ?? log?.last ?? 0, ordering: .relaxed)
        durable.store(newest.load(ordering: .relaxed), ordering: .relaxed)
    }

    /// Moves the committed mark up to `seq` (never down: several Gs move it).
    func raiseDurable(to seq: UInt64) {
        var d = durable.load(ordering: .relaxed)
        while d < seq {
            let (done, now) = durable.compareExchange(expected: d, desired: seq, ordering: .relaxed)
            if done { return }
            d = now
        }
    }

    /// Starts the room's Gs.
    func start() {
        if let input = logInput {
            if cluster != nil { go { self.runRedis(input) } } else { go { self.runLog(input) } }
        }
        go { self.run() }
    }

    /// Whether the room has a log, on disk or in Redis (catch-up may read it).
    var logged: Bool { logInput != nil }

    /// Up to `limit` messages after `after` from the room's log (catch-up):
    /// the disk's up to the committed mark, or Redis's stream (whose entries
    /// are all committed: the mark moves up to what was read). Empty if
    /// there is no log, or it holds nothing after `after` (retention).
    /// `cursor`: where the disk's last page stopped (RoomLog.read).
    /// - Throws: the log cannot be read now (Redis away, a disk error):
    ///   never an empty answer, which the joiner would report as a gap.
    func readLog(after: UInt64, limit: Int, dataDir: String?, cursor: inout LogCursor?) throws(StoreError) -> [Entry] {
        if let (store, node) = cluster {
            do throws(RedisError) {
                let c = try node.client.connection()
                let top = try store.newest(on: c)
                let es = try store.read(after: after, limit: limit, on: c)
                raiseDurable(to: max(es.last?.seq ?? 0, min(after, top))) // numbers Redis has given are committed
                return es
            } catch {
                throw StoreError("Redis: \(error)")
            }
        }
        guard let dataDir else { return [] }
        return try RoomLog.read(dir: dataDir + "/" + name, after: after, through: durable.load(ordering: .acquiring), limit: limit,
                                cursor: &cursor)
    }

    /// Sends `value` on `c` unless the room or the server stops first.
    private func call<T>(_ c: Chan<T>, _ value: T) -> Bool {
        c.send(value, unless: closing, settings.quit)
    }

    /// Registers `client` (see the top of this file); nil if the room or
    /// the server has stopped.
    func join(_ client: Client, since: UInt64?, mayReadLog: Bool = true) -> JoinAnswer? {
        let reply = Chan<JoinAnswer>(capacity: 1)
        let j = Joining(client: client, since: since, mayReadLog: mayReadLog, reply: reply)
        guard call(register, j) else { return nil }
        return reply.receive().value
    }

    /// Unregisters `client` (nothing if it is not a member).
    func leave(_ client: Client) { _ = call(unregister, client) }

    /// Hands a message to the room.
    func post(_ client: Client, _ text: String, id: String? = nil, receivedAt: Int64) {
        _ = call(posts, Post(from: client, text: text, id: id, receivedAt: receivedAt))
    }

    /// The members now: their names, and how many have none (nil if the room has ended).
    func presence() -> Presence? {
        let reply = Chan<Presence>(capacity: 1)
        guard call(snapshots, reply) else { return nil }
        return reply.receive().value
    }

    // MARK: - The hub G

    private struct Member {
        let client: Client
        /// Messages up to this one reached it some other way (its join).
        var skipThrough: UInt64
    }

    /// The hub's loop; `start` runs it in its own G.
    private func run() {
        var members: [ObjectIdentifier: Member] = [:]
        var tail = Tail(entries: initialTail, limit: settings.tailLength)
        initialTail = []
        var last = newest.load(ordering: .relaxed)
        var stopping = false
        let metrics = settings.metrics
        func remove(_ c: Client) {
            members.removeValue(forKey: ObjectIdentifier(c))
            self.members.store(members.count, ordering: .relaxed)
        }
        func offer(_ m: Prepared, to c: Client) -> Bool {
            if c.offer(m, metrics) { return true }
            remove(c)
            return false
        }
        /// Messages to every member that does not have them yet, as one
        /// object: a batch takes one place in each member's send buffer, so
        /// a burst the limits admit (several senders' whole bursts in a
        /// batch of 256) cannot overflow a member that reads. `receipts`:
        /// when this server's read pumps took them (for the delivery time).
        func deliver(_ es: [Entry], receipts: [Int64]) {
            guard let first = es.first?.seq, let newest = es.last?.seq else { return }
            last = newest
            for e in es { tail.append(e) }
            let m = Prepared.messages(es, room: name, receipts: receipts)
            // A hold for every member up front (one atomic add, not one per
            // member), given back for those it did not reach, with the hub's own.
            let timed = !receipts.isEmpty
            let n = members.count
            if timed { m.holders.add(n, ordering: .relaxed) }
            var reached = 0
            for member in members.values {
                if member.skipThrough < first {
                    if offer(m, to: member.client) { reached += 1 }
                } else if member.skipThrough < newest { // it joined with some of them (rare)
                    _ = offer(.messages(es.drop { $0.seq <= member.skipThrough }, room: name), to: member.client)
                }
            }
            m.release(metrics, count: timed ? n - reached + 1 : 1) // the unused holds and the hub's
        }
        /// Each sender's acks of a batch, as one object per sender, in order.
        func ack(_ acked: some Sequence<(Post, UInt64)>) {
            for (client, posts) in Self.bySender(acked) where client.format == .json {
                client.offer(.acks(room: name, posts.map { (seq: $0.1, id: $0.0.id) }), metrics)
            }
        }
        // With Redis: messages by number, held until those before them came;
        // a read of the stream (a fill) at a time, another wanted after it
        // (a resync, or a gap it left), and a failed one retried in a second.
        var held: [UInt64: Entry] = [:]
        var filling = false, fillWanted = false
        let retry = ChannelTimer() // stopped until a fill fails
        defer { retry.stop() }
        var receipts: [UInt64: Int64] = [:] // this node's posts acked before their message came
        func fill() {
            if filling {
                fillWanted = true
                return
            }
            filling = fills.trySend(last)
            fillWanted = !filling
        }
        func accept(_ es: [Entry]) {
            for e in es {
                if e.seq > last {
                    held[e.seq] = e
                } else if let known = tail.after(e.seq - 1).first, known.seq == e.seq, known != e {
                    fill() // the same number for another message: Redis lost data (the fill finds it rewound)
                }
            }
            var ready: [Entry] = [], times: [Int64] = []
            while let e = held.removeValue(forKey: (ready.last?.seq ?? last) + 1) {
                ready.append(e)
                if let t = receipts.removeValue(forKey: e.seq) { times.append(t) }
            }
            deliver(ready, receipts: times)
            newest.store(last, ordering: .relaxed)
            raiseDurable(to: last)
            if receipts.count > 1_000 { receipts = receipts.filter { $0.key > last } }
            if !held.isEmpty { fill() } // a gap: read it from the stream
        }
        func commit(_ b: Batch) {
            // The sender hears of its message even if it has moved on to another room.
            if let error = b.error {
                metrics.bump(.historyErrors, by: b.posts.count)
                let line = b.unknown
                    ? "error: your message may or may not have been stored (\(error)); send it again with the same id"
                    : "error: your message was not stored (\(error)); try again later"
                // One object per sender (as its acks): a burst refused whole
                // takes one place in its buffer.
                for (client, posts) in Self.bySender(b.posts.map { ($0, ()) }) {
                    client.offer(.refusals(line, ids: posts.map(\.0.id), unknown: b.unknown), metrics)
                }
                return
            }
            if !b.acks.isEmpty {
                ack(zip(b.posts, b.acks))
                for (p, seq) in zip(b.posts, b.acks) where seq > last && receipts.count < 10_000 { receipts[seq] = p.receivedAt }
                return
            }
            if b.fill {
                if b.done { filling = false }
                if b.failedFill {
                    retry.reset(.seconds(1))
                    return
                }
                if let to = b.rewound {
                    // Redis lost data and will hand out these numbers again: start
                    // again from its newest, and tell the members to forget theirs.
                    Chat.log("room \(name): Redis's last number went back from \(last) to \(to) (it lost data); going on from \(to)")
                    let was = last
                    last = to
                    held = [:]
                    receipts = [:]
                    tail = Tail(entries: [], limit: settings.tailLength)
                    newest.store(to, ordering: .relaxed)
                    durable.store(to, ordering: .relaxed)
                    for key in Array(members.keys) {
                        members[key]!.skipThrough = min(members[key]!.skipThrough, to)
                        _ = offer(.reset(room: name, since: was, newest: to, count: 0), to: members[key]!.client)
                    }
                    fill()
                    return
                }
                // What the stream no longer has (trimmed, or a number its
                // script gave but could not keep) is skipped.
                if let first = b.entries.first, first.seq > last + 1 {
                    // The members hear of it, as a joiner would (a `gap` line).
                    for member in members.values where member.skipThrough < first.seq - 1 {
                        let from = max(last, member.skipThrough) + 1
                        _ = offer(.gap(room: name, from: from, to: first.seq - 1), to: member.client)
                    }
                    last = first.seq - 1
                    held = held.filter { $0.key > last }
                }
                accept(b.entries)
                if b.done && (fillWanted || !held.isEmpty) {
                    // Held messages are in the stream: an empty read came before
                    // them; read again (in a second, not in a loop).
                    fillWanted = false
                    if b.entries.isEmpty { retry.reset(.seconds(1)) } else { fill() }
                }
                return
            }
            ack(zip(b.posts, b.entries.map(\.seq)))
            deliver(b.entries, receipts: b.posts.map(\.receivedAt))
            newest.store(last, ordering: .relaxed)
            if logInput == nil { durable.store(last, ordering: .relaxed) }
        }
        func admit(_ j: Joining) {
            var push: [Prepared] = []
            var skip = last
            let history = tail.last(settings.history)
            if let since = j.since {
                if since >= last {
                    if since <= durable.load(ordering: .relaxed) {
                        skip = since // the log is ahead of the hub: the client has those
                    } else if cluster != nil && j.mayReadLog && since > last {
                        // Maybe from another node that is ahead of this one: Redis knows.
                        j.reply.send(.readLog)
                        return
                    } else {
                        push.append(.reset(room: name, since: since, newest: last, count: history.count))
                        if !history.isEmpty { push.append(.messages(history, room: name)) }
                    }
                } else if let oldest = tail.oldest, oldest <= since + 1 {
                    let after = tail.after(since)
                    if let first = after.first, first.seq > since + 1 { // numbers the stream no longer had
                        push.append(.gap(room: name, from: since + 1, to: first.seq - 1))
                    }
                    if !after.isEmpty { push.append(.messages(after, room: name)) }
                } else if logged && j.mayReadLog {
                    j.reply.send(.readLog)
                    return
                } else {
                    let oldest = tail.oldest ?? last + 1
                    push.append(.gap(room: name, from: since + 1, to: oldest - 1))
                    if oldest <= last { push.append(.messages(tail.after(since), room: name)) }
                }
            } else if !history.isEmpty && j.client.format == .json { // text: gorilla's protocol, live lines only
                push.append(.messages(history, room: name))
            }
            members[ObjectIdentifier(j.client)] = Member(client: j.client, skipThrough: skip)
            self.members.store(members.count, ordering: .relaxed)
            push.append(.joined(room: name, seq: last)) // last: what came before it is history
            for m in push where !offer(m, to: j.client) { break }
            j.reply.send(.joined)
        }
        /// A post with its sender's name, unless the sender was dropped meanwhile.
        func named(_ p: Post) -> Post? {
            guard members[ObjectIdentifier(p.from)] != nil else { return nil }
            var p = p
            p.name = p.from.name ?? ""
            return p
        }
        func handle(_ first: Post) {
            if let logInput {
                guard let p = named(first) else { return }
                if !logInput.trySend(p) {
                    _ = offer(.refusal("error: the server is busy; your message was not stored", id: p.id), to: p.from)
                }
                return
            }
            // Without a log: the posts waiting now, numbered and committed as one batch.
            var waiting = [first]
            while waiting.count < 256, case .value(let p) = posts.tryReceive() { waiting.append(p) }
            let ps = waiting.compactMap(named)
            guard !ps.isEmpty else { return }
            let time = wallClockMilliseconds()
            let es = ps.enumerated().map { i, p in Entry(seq: last + 1 + UInt64(i), time: time, from: p.name, text: p.text) }
            metrics.bump(.historyAppends, by: es.count)
            commit(Batch(entries: es, posts: ps, error: nil))
        }
        while !stopping {
            select { s in
                if let r = s.receive(register), case .value(let j) = r { admit(j) }
                if let r = s.receive(unregister), case .value(let c) = r { remove(c) }
                if let r = s.receive(posts), case .value(let p) = r { handle(p) }
                if let r = s.receive(committed), case .value(let b) = r { commit(b) }
                if let r = s.receive(incoming), case .value(let e) = r {
                    var es = [e] // and those queued behind it: delivered as one batch
                    while es.count < 256, case .value(let more) = incoming.tryReceive() { es.append(more) }
                    accept(es)
                }
                if s.receive(resync) != nil { fill() }
                if s.receive(retry.channel) != nil { fill() }
                if let r = s.receive(snapshots), case .value(let reply) = r {
                    let names = members.values.compactMap(\.client.name).sorted()
                    reply.send(Presence(names: names, anonymous: members.count - names.count))
                }
                if s.receive(closing) != nil { stopping = true }
                if s.receive(settings.quit) != nil {
                    for m in members.values { m.client.kick() } // write pumps send close 1001 and stop
                    stopping = true
                }
            }
        }
        // What the log G still commits is answered (its senders hear of it,
        // in whatever room they are now): its input closes, and the hub takes
        // batches until the log G has ended.
        if let logInput {
            logInput.close()
            var draining = true
            while draining {
                select { s in
                    if let r = s.receive(committed), case .value(let b) = r { commit(b) }
                    if s.receive(finished) != nil { draining = false }
                }
            }
        }
        hubDone.close()
        if logInput == nil { finished.close() }
    }

    // MARK: - The log G (the Redis G: RoomRedis.swift)

    /// A batch back to the hub, unless the hub has ended (the posts are
    /// in the log, or were refused: nobody is left to tell).
    func handBack(_ b: Batch) {
        _ = committed.send(b, unless: hubDone)
    }

    /// `items` by their posts' senders, in the order of each sender's first.
    static func bySender<T>(_ items: some Sequence<(Post, T)>) -> [(Client, [(Post, T)])] {
        var order: [ObjectIdentifier] = []
        var groups: [ObjectIdentifier: (Client, [(Post, T)])] = [:]
        for item in items {
            let key = ObjectIdentifier(item.0.from)
            if groups[key] == nil {
                order.append(key)
                groups[key] = (item.0.from, [])
            }
            groups[key]!.1.append(item)
        }
        return order.map { groups[$0]! }
    }

    /// `first` and the posts queued behind it, at most 256: one write, or
    /// one pipeline, for all of them.
    static func batch(_ first: Post, _ input: Chan<Post>) -> [Post] {
        var posts = [first]
        while posts.count < 256, case .value(let p) = input.tryReceive() { posts.append(p) }
        return posts
    }

    /// Numbers, logs and hands back posts in batches, and syncs: within
    /// 100 ms of a write under `interval`. Ends once the hub has ended and
    /// closed its input, with everything written synced.
    private func runLog(_ input: Chan<Post>) {
        let log = self.log!
        self.log = nil
        let metrics = settings.metrics
        let timer = ChannelTimer() // armed by a write that left the log unsynced
        var armed = false
        func observeSync() {
            if let ns = log.lastSyncNanoseconds { metrics.fsyncSeconds.observe(nanoseconds: ns) }
            log.lastSyncNanoseconds = nil
        }
        func sync() {
            do { try log.sync() } catch { Chat.log("history of \(name): \(error)") }
            observeSync()
        }
        func write(_ first: Post) {
            let posts = Self.batch(first, input)
            let batch: Batch
            do {
                // After a failed fsync the log is read back and synced before
                // anything more goes in (RoomLog.append).
                if log.broken != nil { try log.recover() }
                let time = wallClockMilliseconds()
                var entries: [Entry] = []
                entries.reserveCapacity(posts.count)
                for (i, p) in posts.enumerated() {
                    entries.append(Entry(seq: log.last + 1 + UInt64(i), time: time, from: p.name, text: p.text))
                }
                try log.append(entries) // a failed write or fsync (`always`) keeps none of them
                observeSync()
                metrics.bump(.historyAppends, by: entries.count)
                durable.store(log.last, ordering: .releasing)
                batch = Batch(entries: entries, posts: posts, error: nil)
            } catch {
                Chat.log("history of \(name): \(error)")
                batch = Batch(entries: [], posts: posts, error: error)
            }
            handBack(batch)
            if settings.policy == .interval && log.unsynced && !armed {
                timer.reset(.milliseconds(100))
                armed = true
            }
        }
        var open = true
        while open {
            select { s in
                if let r = s.receive(input) {
                    if case .value(let p) = r { write(p) } else { open = false }
                }
                if s.receive(timer.channel) != nil {
                    armed = false
                    sync()
                }
            }
        }
        timer.stop()
        log.close() // synced first, unless the policy is never
        observeSync()
        finished.close()
    }
}

extension Prepared {
    /// Lets go of `count` holds on a room's messages; the last one observes
    /// the time from each one's receipt to its last write.
    func release(_ metrics: ChatMetrics, count: Int = 1) {
        guard !receipts.isEmpty, count > 0, holders.subtract(count, ordering: .acquiringAndReleasing).newValue == 0 else { return }
        let now = GMP.now
        for t in receipts where t != 0 { metrics.deliverySeconds.observe(nanoseconds: now - t) }
    }
}

/// The newest messages of a room, oldest first, at most `limit`.
struct Tail {
    private var entries: [Entry]
    private var start = 0
    let limit: Int

    init(entries: [Entry], limit: Int) {
        self.entries = Array(entries.suffix(limit))
        self.limit = limit
    }

    var oldest: UInt64? { start < entries.count ? entries[start].seq : nil }

    mutating func append(_ e: Entry) {
        entries.append(e)
        if entries.count - start > limit { start += 1 }
        if start >= limit { // compact now and then, not on every append
            entries.removeFirst(start)
            start = 0
        }
    }

    /// The newest `n`.
    func last(_ n: Int) -> ArraySlice<Entry> { entries[max(start, entries.count - n)...] }

    /// Those numbered after `seq` (found by their numbers: with Redis the
    /// tail can skip numbers the stream no longer had).
    func after(_ seq: UInt64) -> ArraySlice<Entry> {
        var lo = start, hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].seq <= seq { lo = mid + 1 } else { hi = mid }
        }
        return entries[lo...]
    }
}

/// Now, in milliseconds since 1970 (a message's time).
func wallClockMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}
