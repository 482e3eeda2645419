import Channels
import GMP
import Synchronization

// Pub/sub: a connection of its own in subscriber mode (RESP2: after
// SUBSCRIBE it only takes (P)SUBSCRIBE, (P)UNSUBSCRIBE and PING, and
// everything it sends is a push), run by one G that turns pushes into
// `RedisEvent`s on one channel, `events`, in the order they happened:
// `.connected` (a connection is up and its subscriptions are asked for),
// `.subscribed(channel)` (Redis confirmed one: every message published there
// from now on comes), `.message` ("message"/"pmessage" pushes) and
// `.disconnected` (the connection was lost). The channels and patterns asked
// for are remembered: when the connection is lost (a read or write fails, or
// no answer to the G's PING, sent every `timeout`, within two of them) the G
// reconnects with a back-off (100 ms doubling to 5 s) and subscribes to all
// of them again, so each is confirmed again. Messages published while it was
// away are lost (pub/sub keeps nothing): the owner catches up some other
// way once a channel's `.subscribed` comes (the chat's Cluster reads the
// room's stream then). One channel for all of it, so an owner sees a
// confirmation after the messages before it and before those after it,
// and never needs to poll. `events` is closed when the G ends (`close`).

/// A message published on a channel.
public struct RedisMessage: Sendable, Equatable {
    /// The channel it was published on.
    public let channel: String
    /// What was published.
    public let payload: [UInt8]
    /// The pattern it matched (PSUBSCRIBE), nil for a plain subscription.
    public let pattern: String?
}

/// What a `RedisSubscriber` delivers, in the order it happened.
public enum RedisEvent: Sendable, Equatable {
    /// A message published on a subscribed channel, or one matching a pattern.
    case message(RedisMessage)
    /// Redis confirmed the subscription to this channel (SUBSCRIBE) on the
    /// current connection: every message published there from now on comes,
    /// until the connection is lost. Again after each reconnection.
    case subscribed(String)
    /// A connection is up and its subscriptions are asked for (the first,
    /// or after a reconnection: what was published meanwhile is lost).
    case connected
    /// The connection was lost; the subscriber is reconnecting.
    case disconnected
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
    /// Messages, confirmations and the connection's ups and downs, in the
    /// order they happened (buffered; when it is full the subscriber waits,
    /// and Redis buffers, up to its own limit). Closed once the subscriber
    /// has stopped (`close`).
    public let events: Chan<RedisEvent>
    private let connectedNow = Atomic<Bool>(false)
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

    /// Starts subscribing (to nothing yet: `subscribe`); `events` holds up
    /// to `buffer` events. `timeout` (a dial's limit, and the PING period)
    /// must be positive: a zero or negative one traps here.
    public init(url: RedisURL, timeout: Duration = .seconds(5), buffer: Int = 1024) {
        guard timeout > .zero else { fatalError("RedisSubscriber: the timeout must be positive, not \(timeout)") }
        self.url = url
        self.timeout = timeout
        timeoutNanoseconds = GMP.nanoseconds(timeout)
        events = Chan<RedisEvent>(capacity: buffer)
        go { self.run() }
    }

    deinit { lock.free() }

    /// Whether it is connected now (and has asked for its subscriptions;
    /// `isSubscribed` says when Redis has confirmed one). To wait for a
    /// change, wait on `events`.
    public var isConnected: Bool { connectedNow.load(ordering: .acquiring) }

    /// Whether Redis has confirmed the subscription to `channel` on the
    /// current connection: from then on every message published there
    /// comes, until the connection is lost. (`.subscribed` on `events` says
    /// when it happens.)
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

    /// Records the connection's state and tells the owner (not once `close`
    /// was called: a subscriber closed is not "disconnected").
    private func setState(_ up: Bool) {
        connectedNow.store(up, ordering: .releasing)
        if closedOnce.load(ordering: .acquiring) { return }
        _ = events.send(up ? .connected : .disconnected, unless: quit)
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
        defer {
            events.close() // (only this G sends on it)
            finished.close()
        }
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

    /// Turns pushes into events until the connection is lost or closed.
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
                        // (A channel unsubscribed meanwhile is not confirmed: its
                        // SUBSCRIBE's answer came before the UNSUBSCRIBE's. One asked
                        // for twice is confirmed twice: a second owner may be waiting.)
                        let wanted = lock.withLock {
                            if kind == "subscribe" && channels.contains(ch) {
                                confirmed.insert(ch)
                                return true
                            }
                            confirmed.remove(ch)
                            return false
                        }
                        if wanted {
                            if !events.send(.subscribed(ch), unless: quit) { up = false }
                            lastHeard = GMP.now
                        }
                    }
                    if let m = Self.message(v) {
                        if !events.send(.message(m), unless: quit) { up = false }
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
