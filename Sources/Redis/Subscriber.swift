import Channels
import GMP
import Synchronization

// Pub/sub: a connection of its own in subscriber mode (RESP2: after
// SUBSCRIBE it only takes (P)SUBSCRIBE, (P)UNSUBSCRIBE and PING, and
// everything it sends is a push), run by one G that turns
// "message"/"pmessage" pushes into `RedisMessage`s on `messages`. The
// channels and patterns asked for are remembered: when the connection is
// lost (a read or write fails, or no answer to the G's PING, sent every
// `timeout`, within two of them) the G reconnects with a back-off (100 ms
// doubling to 5 s) and subscribes to all of them again. Messages published
// while it was away are lost (pub/sub keeps nothing): the owner learns of
// each (re)connection from `connects` and `isConnected` (the chat's Cluster
// looks at them on a tick, then reads what it missed from its streams), or
// from `onStateChange` if it passed one, and catches up some other way.

/// A message published on a channel.
public struct RedisMessage: Sendable, Equatable {
    /// The channel it was published on.
    public let channel: String
    /// What was published.
    public let payload: [UInt8]
    /// The pattern it matched (PSUBSCRIBE), nil for a plain subscription.
    public let pattern: String?
}

/// A pub/sub subscriber that reconnects by itself (see the top of the file).
public final class RedisSubscriber: @unchecked Sendable {
    // @unchecked: `channels`, `patterns` and `connection` are guarded by
    // `lock` (a few instructions, never across a park); the rest are
    // channels, atomics and immutable settings.
    /// Where Redis is.
    public let url: RedisURL
    /// How long a dial, or an answer to a PING, may take.
    public let timeout: Duration
    /// `timeout` in nanoseconds.
    let timeoutNanoseconds: Int64
    /// The messages, in the order Redis sent them (buffered; when it is
    /// full the subscriber waits, and Redis buffers, up to its own limit).
    public let messages: Chan<RedisMessage>
    /// Connections made: 1 once connected, one more per reconnection.
    public let connects = Atomic<Int>(0)
    private let connectedNow = Atomic<Bool>(false)
    private let onStateChange: (@Sendable (Bool) -> Void)?
    private let lock = FutexLock()
    private var channels: Set<String> = []
    private var patterns: Set<String> = []
    private var connection: RedisConnection?
    /// Channels Redis has confirmed on the current connection.
    private var confirmed: Set<String> = []
    private let quit = Chan<Void>()
    private let closedOnce = Atomic<Bool>(false)
    /// Closed when the subscriber's G has ended (after `close`).
    public let finished = Chan<Void>()

    /// Starts subscribing (to nothing yet: `subscribe`). `onStateChange`
    /// is called with true on each connection and false when one is lost,
    /// from the subscriber's G. `timeout` (a dial's limit, and the PING
    /// period) must be positive: a zero or negative one traps here.
    public init(url: RedisURL, timeout: Duration = .seconds(5), buffer: Int = 1024,
                onStateChange: (@Sendable (Bool) -> Void)? = nil) {
        guard timeout > .zero else { fatalError("RedisSubscriber: the timeout must be positive, not \(timeout)") }
        self.url = url
        self.timeout = timeout
        timeoutNanoseconds = GMP.nanoseconds(timeout)
        messages = Chan<RedisMessage>(capacity: buffer)
        self.onStateChange = onStateChange
        go { self.run() }
    }

    deinit { lock.free() }

    /// Whether it is connected now (and has asked for its subscriptions;
    /// `isSubscribed` says when Redis has confirmed one).
    public var isConnected: Bool { connectedNow.load(ordering: .acquiring) }

    /// Whether Redis has confirmed the subscription to `channel` on the
    /// current connection: from then on every message published there
    /// comes, until the connection is lost.
    public func isSubscribed(_ channel: String) -> Bool { lock.withLock { confirmed.contains(channel) } }

    /// Subscribes to `channels` (now if connected, and after every reconnection).
    public func subscribe(_ channels: [String]) { change(channels, add: true, pattern: false) }

    /// Subscribes to the channels matching `patterns` (PSUBSCRIBE).
    public func subscribe(patterns: [String]) { change(patterns, add: true, pattern: true) }

    /// Unsubscribes from `channels`.
    public func unsubscribe(_ channels: [String]) { change(channels, add: false, pattern: false) }

    private func change(_ names: [String], add: Bool, pattern: Bool) {
        guard !names.isEmpty else { return }
        let c: RedisConnection? = lock.withLock {
            if pattern {
                if add { patterns.formUnion(names) } else { patterns.subtract(names) }
            } else {
                if add { channels.formUnion(names) } else { channels.subtract(names) }
                if !add { confirmed.subtract(names) } // (a quick subscribe again waits for its own confirmation)
            }
            return connection
        }
        let verb = (add ? "" : "UN") + (pattern ? "PSUBSCRIBE" : "SUBSCRIBE")
        try? c?.post([verb] + names) // (a lost connection re-subscribes all when it is back)
    }

    /// Stops: closes the connection and ends the G.
    public func close() {
        if closedOnce.exchange(true, ordering: .acquiringAndReleasing) { return }
        quit.close()
        lock.withLock { connection }?.close()
    }

    private func setState(_ up: Bool) {
        connectedNow.store(up, ordering: .releasing)
        onStateChange?(up)
    }

    /// Waits `ns`; false if closed meanwhile.
    private func pause(_ ns: Int64) -> Bool {
        var open = true
        select { s in
            if s.receive(quit) != nil { open = false }
            if s.timeout(after: .nanoseconds(ns)) {}
        }
        return open
    }

    private func run() {
        defer { finished.close() }
        var backoff: Int64 = 0
        while !closedOnce.load(ordering: .acquiring) {
            let pushes = Chan<RESPValue>(capacity: 64)
            let c: RedisConnection
            do { c = try RedisConnection.connect(url, timeout: timeout, subscriber: true, pushes: pushes) } catch {
                backoff = RedisClient.nextBackoff(backoff)
                if !pause(backoff) { return }
                continue
            }
            let (chs, pats) = lock.withLock { () -> ([String], [String]) in
                connection = c
                return (channels.sorted(), patterns.sorted())
            }
            if closedOnce.load(ordering: .acquiring) { c.close(); return } // closed while connecting
            if !chs.isEmpty { try? c.post(["SUBSCRIBE"] + chs) }
            if !pats.isEmpty { try? c.post(["PSUBSCRIBE"] + pats) }
            connects.add(1, ordering: .relaxed)
            backoff = 0
            setState(true)
            serve(c, pushes)
            lock.withLock {
                connection = nil
                confirmed = []
            }
            c.close()
            setState(false)
        }
    }

    /// Turns pushes into messages until the connection is lost or closed.
    private func serve(_ c: RedisConnection, _ pushes: Chan<RESPValue>) {
        let pinger = Ticker(every: timeout)
        defer { pinger.stop() }
        var lastHeard = GMP.now
        var up = true
        while up {
            select { s in
                if let r = s.receive(pushes), case .value(let v) = r {
                    lastHeard = GMP.now
                    if let e = v.elements, e.count == 3, let kind = e[0].string, let ch = e[1].string,
                       kind == "subscribe" || kind == "unsubscribe" {
                        lock.withLock { if kind == "subscribe" { confirmed.insert(ch) } else { confirmed.remove(ch) } }
                    }
                    if let m = Self.message(v) {
                        if !messages.send(m, unless: quit) { up = false }
                        lastHeard = GMP.now // (a consumer that was slow is not a silent peer)
                    }
                }
                if s.receive(pinger.channel) != nil {
                    if GMP.now - lastHeard > 2 * timeoutNanoseconds { // no answer to two PINGs: a silent peer
                        up = false
                    } else {
                        up = (try? c.post(["PING"])) != nil
                    }
                }
                if s.receive(c.ended) != nil { up = false }
                if s.receive(quit) != nil { up = false }
            }
        }
    }

    /// A "message" or "pmessage" push as a message; nil for the rest
    /// (subscription confirmations, PING's answers).
    static func message(_ v: RESPValue) -> RedisMessage? {
        guard let e = v.elements, let kind = e.first?.string else { return nil }
        switch kind {
        case "message" where e.count == 3:
            guard let ch = e[1].string, case .bulk(let p) = e[2] else { return nil }
            return RedisMessage(channel: ch, payload: p, pattern: nil)
        case "pmessage" where e.count == 4:
            guard let pat = e[1].string, let ch = e[2].string, case .bulk(let p) = e[3] else { return nil }
            return RedisMessage(channel: ch, payload: p, pattern: pat)
        default:
            return nil
        }
    }
}
