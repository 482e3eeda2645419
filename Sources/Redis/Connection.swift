import Channels
import GMP
import NetPoller
import Synchronization

// One connection to Redis. Commands are pipelined: any number of Gs may
// send at once, each command is written whole (the write lock, a GMPMutex,
// so a G waiting for it parks), and its reply channel joins the queue of
// pending replies in the same critical section, so the queue's order is the
// order of the bytes on the wire. Redis answers in that order; the
// connection's reader G parses replies as they arrive (`RESPReader`: a
// reply that takes many reads is parsed once) and hands each to the
// oldest pending channel. Out-of-band values (RESP3 pushes, or everything
// on a subscriber connection once it has logged in) go to `pushes` instead.
//
// Time-outs are the poller's read deadline: while a reply is pending the
// read has a deadline `timeout` after the oldest one was sent or the latest
// reply came; with none pending it has none (an idle connection waits for ever). A deadline that
// passes, a read or write that fails, or bytes that are not RESP break the
// connection: every pending command fails with that error (it may or may
// not have run), later ones at once with `.notSent` (they did not), and the
// socket is closed. (`RedisClient` makes a new one.)

/// A reply, or why there is none.
public typealias RedisReply = Result<RESPValue, RedisError>

/// One connection to Redis (see the top of the file).
public final class RedisConnection: @unchecked Sendable {
    // @unchecked: `pending`, `head` and `failure` are guarded by `qlock`
    // (held for a few instructions, never across a park); writes are
    // serialized by `writeLock`; the rest is immutable.
    private let conn: Conn
    /// How long a reply may take.
    public let timeout: Duration
    private let writeLock = GMPMutex()
    private let qlock = FutexLock()
    private var pending: [Chan<RedisReply>] = []
    private var head = 0
    private var failure: RedisError?
    private let subscriber: Bool
    /// Set once a subscriber connection has logged in: from then on every
    /// value is a push (before, its login's replies go to their callers).
    private var pubsub = false
    /// Out-of-band values: RESP3 pushes, or every value on a subscriber connection (nil: none expected).
    let pushes: Chan<RESPValue>?
    /// Closed when the reader G has ended (the connection is broken or closed).
    let ended = Chan<Void>()
    /// Closed once the connection is broken (by `fail`).
    private let broken = Chan<Void>()

    private init(conn: Conn, timeout: Duration, subscriber: Bool, pushes: Chan<RESPValue>?) {
        self.conn = conn
        self.timeout = timeout
        self.subscriber = subscriber
        self.pushes = pushes
    }

    deinit { qlock.free() }

    /// Connects to `url` within `timeout`, logs in (`AUTH`)
    /// and selects its database; with `resp3`, speaks RESP3 (`HELLO 3`).
    /// `subscriber`: every value Redis sends goes to `pushes` (a connection
    /// in pub/sub mode, see `RedisSubscriber`), and commands are sent with
    /// `post`.
    /// - Throws: `.connectionLost` if it cannot connect, `.server` if Redis refuses the login.
    public static func connect(_ url: RedisURL, timeout: Duration = .seconds(5), resp3: Bool = false,
                               subscriber: Bool = false, pushes: Chan<RESPValue>? = nil) throws(RedisError) -> RedisConnection {
        let conn: Conn
        do { conn = try Conn.dial(url.host, url.port, timeout: timeout) } catch {
            throw .connectionLost("cannot connect to \(url.host):\(url.port): \(error)")
        }
        let c = RedisConnection(conn: conn, timeout: timeout, subscriber: subscriber, pushes: pushes)
        go { c.readReplies() }
        var login: [[String]] = []
        if resp3 {
            var hello = ["HELLO", "3"]
            if let p = url.password { hello += ["AUTH", url.user ?? "default", p] }
            login.append(hello)
        } else if let p = url.password {
            login.append(url.user.map { ["AUTH", $0, p] } ?? ["AUTH", p])
        }
        if url.db != 0 { login.append(["SELECT", String(url.db)]) }
        for cmd in login {
            // (A subscriber is not in pub/sub mode yet: its login has replies.)
            let reply = c.enqueue(encodeCommand(cmd))
            do { _ = try c.wait(reply) } catch {
                c.close()
                throw error
            }
        }
        if subscriber { c.qlock.withLock { c.pubsub = true } }
        return c
    }

    /// Sends a command without waiting: its reply comes on the channel
    /// (buffered; nobody need read it). Commands sent one after another from
    /// one G are answered in that order, and any number may be in flight.
    public func send(_ args: [String]) -> Chan<RedisReply> {
        enqueue(encodeCommand(args))
    }

    /// Sends a command of binary-safe arguments without waiting.
    public func send(bytes args: [[UInt8]]) -> Chan<RedisReply> {
        var out: [UInt8] = []
        encodeCommand(args, into: &out)
        return enqueue(out)
    }

    /// Sends a command and waits for its reply.
    /// - Throws: `.server` for an error reply; `.timeout`, `.connectionLost`, `.closed`.
    @discardableResult
    public func call(_ args: String...) throws(RedisError) -> RESPValue { try call(args) }

    /// Sends a command and waits for its reply.
    @discardableResult
    public func call(_ args: [String]) throws(RedisError) -> RESPValue { try wait(send(args)) }

    /// Sends several commands in one write and waits for every reply, in order.
    public func pipeline(_ commands: [[String]]) -> [RedisReply] {
        send(pipeline: commands).map { r in Result { () throws(RedisError) -> RESPValue in try wait(r) } }
    }

    /// Sends several commands in one write without waiting: their replies
    /// come on the channels, in order (`wait` takes one).
    public func send(pipeline commands: [[String]]) -> [Chan<RedisReply>] {
        var out: [UInt8] = []
        for c in commands { encodeCommand(c.map { Array($0.utf8) }, into: &out) }
        return enqueue(out, count: commands.count)
    }

    /// Writes a command whose answers come as pushes (`SUBSCRIBE` on a
    /// subscriber connection; on any other its reply would go to the wrong caller).
    /// - Throws: why the connection is broken.
    public func post(_ args: [String]) throws(RedisError) {
        precondition(subscriber, "RedisConnection.post: only on a subscriber connection")
        writeLock.lock()
        defer { writeLock.unlock() }
        if let f = qlock.withLock({ failure }) { throw f }
        try write(encodeCommand(args))
    }

    /// The reply on `r` (an error reply thrown as `.server`).
    public func wait(_ r: Chan<RedisReply>) throws(RedisError) -> RESPValue {
        guard case .value(let reply) = r.receive() else { throw .closed }
        switch reply {
        case .success(.error(let m)): throw .server(m)
        case .success(let v): return v
        case .failure(let e): throw e
        }
    }

    /// Whether the connection is broken or closed.
    public var isBroken: Bool { qlock.withLock { failure != nil } }

    /// Closes the connection: pending commands fail with `.closed`.
    public func close() { fail(.closed) }

    private func enqueue(_ bytes: [UInt8]) -> Chan<RedisReply> { enqueue(bytes, count: 1)[0] }

    /// Queues `count` reply channels and writes `bytes` (their commands), in
    /// one critical section of the write lock.
    private func enqueue(_ bytes: [UInt8], count: Int) -> [Chan<RedisReply>] {
        let replies = (0..<count).map { _ in Chan<RedisReply>(capacity: 1) }
        writeLock.lock()
        defer { writeLock.unlock() }
        let failed: RedisError? = qlock.withLock {
            if let failure { return failure }
            // The deadline runs from the oldest reply owed: set when the
            // queue was empty, moved on by each reply (`deliver`).
            if head == pending.count { conn.setReadDeadline(.after(timeout)) }
            pending += replies
            return nil
        }
        if let failed {
            let unsent = RedisError.notSent("the connection broke before: \(failed)")
            for r in replies { _ = r.trySend(.failure(unsent)) }
            return replies
        }
        do { try write(bytes) } catch { fail(error) } // fails these replies too
        return replies
    }

    private func write(_ bytes: [UInt8]) throws(RedisError) {
        conn.setWriteDeadline(.after(timeout))
        do { try conn.write(bytes) } catch {
            throw error == .timeout ? .timeout : .connectionLost("write: \(error)")
        }
    }

    /// Breaks the connection (once): every pending reply gets `error`.
    private func fail(_ error: RedisError) {
        let waiting: [Chan<RedisReply>]? = qlock.withLock {
            guard failure == nil else { return nil }
            failure = error
            defer { pending = []; head = 0 }
            return Array(pending[head...])
        }
        guard let waiting else { return }
        broken.close()
        for r in waiting { _ = r.trySend(.failure(error)) }
        conn.close()
    }

    /// The reader G: replies to their callers, pushes to `pushes`.
    private func readReplies() {
        defer { ended.close() }
        var reader = RESPReader() // (a reply in many reads is parsed once, not after each)
        while true {
            let more: [UInt8]
            do { more = try conn.read(max: 65536) } catch {
                fail(error == .timeout ? .timeout : error == .closed ? .closed : .connectionLost("read: \(error)"))
                return
            }
            reader.append(more)
            do {
                while let v = try reader.next() {
                    guard deliver(v) else { return }
                }
            } catch {
                fail(.protocolError(error.description))
                return
            }
        }
    }

    private func isPush(_ v: RESPValue) -> Bool {
        if case .push = v { return true }
        return false
    }

    /// Hands `v` to its caller or to `pushes`; false if the connection broke.
    private func deliver(_ v: RESPValue) -> Bool {
        let inPubsub = subscriber && qlock.withLock { pubsub }
        if isPush(v) && pushes == nil { return true } // a push nobody asked for (RESP3 invalidations): dropped
        if let pushes, inPubsub || isPush(v) {
            // (A consumer that stopped reading does not hold this G once the connection breaks.)
            return pushes.send(v, unless: broken)
        }
        let r: Chan<RedisReply>? = qlock.withLock {
            guard head < pending.count else { return nil }
            let r = pending[head]
            head += 1
            if head == pending.count {
                pending.removeAll(keepingCapacity: true)
                head = 0
                conn.setReadDeadline(nil) // idle: no reply owed
            } else {
                conn.setReadDeadline(.after(timeout))
                if head >= 64 && head * 2 >= pending.count { // compact now and then
                    pending.removeFirst(head)
                    head = 0
                }
            }
            return r
        }
        guard let r else {
            fail(.protocolError("a reply nobody waits for: \(v)"))
            return false
        }
        _ = r.trySend(.success(v))
        return true
    }
}
