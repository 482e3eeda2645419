import Channels
import GMP
import Redis

// A room's Redis Gs (`--redis`, Cluster.swift): the log G of a room whose
// messages live in a Redis stream, in four Gs.
//
// The append G takes a batch of posts and writes it on the node's append
// connection (the append script in one transaction, Cluster.swift) without
// waiting for the answer: it hands the replies to the answer G and takes
// the next batch. So a post is sent as soon as it is taken, and while Redis
// hangs it is answered within one time-out of being sent (the connection's
// deadline), never behind the batches before it. The answer G waits for
// each batch's replies, in order, and hands the hub only the numbers (the
// senders' acks): the messages themselves reach the hub from the node's
// subscription. A post is refused (not stored: Redis refused it, or it was
// never written) or its outcome is unknown (written, and no answer came: it
// may have been stored, and a retry with the same client id is stored at
// most once); the hub says which.
//
// The fill G reads the stream when the hub asks (a gap, or the subscription
// came back), after a number, 1,000 entries at a time, on the node's other
// connection: a fill never holds up an append, nor an append a fill.
//
// The watch G waits for the room's subscription to be confirmed (the
// dispatcher hands it each confirmation, Cluster.swift) and asks the hub to
// read what was published before it: at first (if none comes within 10 s,
// all the same), and after each reconnection.

extension Room {
    /// A batch written and not yet answered.
    private struct InFlight: Sendable {
        let posts: [Post]
        /// The replies to come, on `connection`; or why it was not written.
        let replies: Result<(RedisConnection, [Chan<RedisReply>]), RedisError>
    }

    /// With Redis: appends batches of posts (pipelined, the append script)
    /// and hands back their numbers, or refuses them; the fill G reads the
    /// stream when the hub asks (`fills`). Ends once the hub has ended and
    /// closed its input, and every batch written has its answer.
    func runRedis(_ input: Chan<Post>) {
        guard let (store, node) = cluster else { return }
        go { self.watchSubscription() }
        go { self.runFills(store, node) }
        let written = Chan<InFlight>(capacity: 16)
        go { self.answer(written, store) }
        defer { written.close() } // the answer G drains it, then closes `finished`
        while case .value(let first) = input.receive() {
            let posts = Self.batch(first, input)
            let time = wallClockMilliseconds()
            let messages = posts.map { RedisRoomStore.Appending(time: time, from: $0.name, text: $0.text, id: $0.id) }
            let replies: Result<(RedisConnection, [Chan<RedisReply>]), RedisError>
            do throws(RedisError) {
                let c = try node.appender.connection()
                replies = .success((c, c.send(pipeline: store.appendCommands(messages))))
            } catch {
                replies = .failure(.notSent("\(error)"))
            }
            written.send(InFlight(posts: posts, replies: replies))
        }
    }

    /// How long a room waits for its first subscription's confirmation
    /// before it reads the stream all the same.
    static let firstConfirmation: Int64 = 10_000_000_000

    /// The watch G: each confirmation of the room's subscription (the
    /// dispatcher's `subscribed`: at first, and after each reconnection) is
    /// a resync, so the hub reads what was published before it; if the first
    /// does not come within `firstConfirmation`, a resync all the same.
    /// Until the hub has ended.
    private func watchSubscription() {
        let deadline = GMP.now + Self.firstConfirmation
        var waiting = true // (for the first confirmation)
        while true {
            var resync = false, stop = false
            select { s in
                if s.receive(subscribed) != nil { resync = true }
                if waiting, s.deadline(atNanoseconds: deadline) { resync = true }
                if s.receive(hubDone) != nil { stop = true }
            }
            if stop { return }
            if resync {
                waiting = false
                _ = self.resync.trySend(())
            }
        }
    }

    /// The answer G: each batch's replies, in order, to the hub.
    private func answer(_ written: Chan<InFlight>, _ store: RedisRoomStore) {
        defer { finished.close() }
        while case .value(let b) = written.receive() {
            let outcomes: [RedisRoomStore.Outcome]
            switch b.replies {
            case .failure(let e):
                outcomes = b.posts.map { _ in .refused(e) }
            case .success(let (c, replies)):
                let got = replies.map { r in Result { () throws(RedisError) -> RESPValue in try c.wait(r) } }
                outcomes = store.outcomes(got, count: b.posts.count)
            }
            var acked: [(Post, UInt64)] = []
            var refused: [Post] = [], unknown: [Post] = []
            var refusal: RedisError?, silence: RedisError?
            for (p, o) in zip(b.posts, outcomes) {
                switch o {
                case .stored(let seq): acked.append((p, seq))
                case .refused(let e): refused.append(p); refusal = e
                case .unknown(let e): unknown.append(p); silence = e
                }
            }
            if !acked.isEmpty {
                settings.metrics.bump(.historyAppends, by: acked.count)
                handBack(Batch(entries: [], posts: acked.map(\.0), error: nil, acks: acked.map(\.1)))
            }
            if let refusal {
                let why = if case .server = refusal { "Redis refused it: \(refusal)" } else { "Redis is unreachable: \(refusal)" }
                handBack(Batch(entries: [], posts: refused, error: StoreError(why)))
            }
            if let silence {
                var batch = Batch(entries: [], posts: unknown, error: StoreError("Redis did not answer: \(silence)"))
                batch.unknown = true
                handBack(batch)
            }
        }
    }

    /// The fill G: reads the stream after the number the hub asks for (on
    /// the node's read connection), until the hub has ended.
    private func runFills(_ store: RedisRoomStore, _ node: ClusterNode) {
        while true {
            var asked: UInt64?
            select { s in
                if let r = s.receive(fills), case .value(let after) = r { asked = after }
                if s.receive(hubDone) != nil {}
            }
            guard let after = asked else { return }
            if let c = try? node.client.connection(), let top = try? store.newest(on: c), top < after {
                handBack(Batch(entries: [], posts: [], error: nil, fill: true, done: true, rewound: top))
                continue
            }
            var from = after
            while true { // the stream after `from`, 1,000 at a time
                guard let c = try? node.client.connection(), let es = try? store.read(after: from, limit: 1_000, on: c) else {
                    handBack(Batch(entries: [], posts: [], error: nil, fill: true, done: true, failedFill: true))
                    break
                }
                let done = es.count < 1_000
                handBack(Batch(entries: es, posts: [], error: nil, fill: true, done: done))
                if done { break }
                from = es.last!.seq
            }
        }
    }
}
