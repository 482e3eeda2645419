import Channels
import GMP
import Redis

// A room's Redis G (`--redis`, Cluster.swift): the log G of a room whose
// messages live in a Redis stream. It appends batches of posts with the
// append script, pipelined, and hands back only their numbers (the senders'
// acks): the messages themselves reach the hub from the node's
// subscription. When the hub finds a gap (or the subscription came back) it
// asks for a fill: the stream read after a number, 1,000 entries at a time.

extension Room {
    /// With Redis: appends batches of posts (pipelined, the append script)
    /// and hands back their numbers, or refuses them while Redis is away;
    /// reads the stream when the hub asks (`fills`). Ends once the hub has
    /// ended and closed its input.
    func runRedis(_ input: Chan<Post>) {
        guard let (store, node) = cluster else { return }
        defer { finished.close() }
        // Once the subscription is confirmed, read what was published before it.
        go {
            let deadline = GMP.now + 10_000_000_000
            while !node.subscriber.isSubscribed(store.channel) && GMP.now < deadline {
                if case .closed = self.hubDone.tryReceive() { return }
                GMP.sleep(nanoseconds: 5_000_000)
            }
            _ = self.resync.trySend(())
        }
        var open = true
        while open {
            select { s in
                if let r = s.receive(input) {
                    guard case .value(let first) = r else {
                        open = false
                        return
                    }
                    let posts = Self.batch(first, input)
                    let time = wallClockMilliseconds()
                    let results: [Result<UInt64, RedisError>]
                    do throws(RedisError) {
                        let c = try node.client.connection()
                        results = store.append(posts.map { (time, $0.name, $0.text) }, on: c)
                    } catch {
                        results = posts.map { _ in .failure(error) }
                    }
                    var acked: [(Post, UInt64)] = []
                    var refused: [Post] = []
                    var why: RedisError?
                    for (p, r) in zip(posts, results) {
                        switch r {
                        case .success(let seq): acked.append((p, seq))
                        case .failure(let e): refused.append(p); why = e
                        }
                    }
                    if !acked.isEmpty {
                        settings.metrics.bump(.historyAppends, by: acked.count)
                        handBack(Batch(entries: [], posts: acked.map(\.0), error: nil, acks: acked.map(\.1)))
                    }
                    if let why {
                        handBack(Batch(entries: [], posts: refused, error: StoreError("Redis is unreachable: \(why)")))
                    }
                }
                if let r = s.receive(fills), case .value(let after) = r {
                    if let c = try? node.client.connection(), let top = try? store.newest(on: c), top < after {
                        handBack(Batch(entries: [], posts: [], error: nil, fill: true, done: true, rewound: top))
                        return
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
    }
}
