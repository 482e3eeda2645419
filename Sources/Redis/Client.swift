import Channels
import GMP
import Synchronization

// A Redis client that outlives its connections: commands go to the current
// connection (pipelined, `RedisConnection`); once that breaks, the next
// command makes a new one, but not before the back-off after the last
// failed attempt has passed (100 ms, doubling to 5 s, reset by a
// connection that works), so a Redis that is down costs a failed dial per
// back-off, not one per command. A command that was in flight when the
// connection broke fails (`.connectionLost` or `.timeout`): it may or may
// not have run, and only the caller knows whether it may be sent again. One
// that found no connection (none could be made, or the back-off is not
// over) fails with `.notSent`: it did not run.

/// A Redis client with reconnection (see the top of the file).
public final class RedisClient: @unchecked Sendable {
    // @unchecked: `current`, `backoff` and `nextAttempt` are guarded by
    // `lock` (a GMPMutex: a G waiting for it parks, also across a dial).
    /// Where Redis is.
    public let url: RedisURL
    /// How long a reply, or a dial, may take.
    public let timeout: Duration
    private let lock = GMPMutex()
    private var current: RedisConnection?
    private var backoff: Int64 = 0
    private var nextAttempt: Int64 = 0
    private var closed = false

    /// The longest wait between two attempts to connect.
    package static let maxBackoff: Int64 = 5_000_000_000

    /// The wait after a failed attempt, given the one before (0: none yet):
    /// 100 ms, doubling to `maxBackoff`.
    static func nextBackoff(_ previous: Int64) -> Int64 { min(max(previous * 2, 100_000_000), maxBackoff) }

    /// A client for `url`; it connects on the first command.
    public init(url: RedisURL, timeout: Duration = .seconds(5)) {
        self.url = url
        self.timeout = timeout
    }

    /// The current connection, or a new one.
    /// - Throws: `.connectionLost` if Redis cannot be reached (now, or at
    ///   the last attempt, within the back-off); `.closed` once closed.
    public func connection() throws(RedisError) -> RedisConnection {
        lock.lock()
        defer { lock.unlock() }
        if closed { throw .closed }
        if let c = current, !c.isBroken { return c }
        current = nil
        let now = GMP.now
        if now < nextAttempt {
            throw .connectionLost("\(url): reconnecting in \((nextAttempt - now) / 1_000_000) ms")
        }
        do {
            let c = try RedisConnection.connect(url, timeout: timeout)
            current = c
            backoff = 0
            nextAttempt = 0
            return c
        } catch {
            backoff = Self.nextBackoff(backoff)
            nextAttempt = GMP.now + backoff
            throw error
        }
    }

    /// Whether the last command found (or made) a working connection.
    public var isConnected: Bool {
        lock.lock()
        defer { lock.unlock() }
        return current.map { !$0.isBroken } ?? false
    }

    /// Sends a command and waits for its reply.
    /// - Throws: `.server` for an error reply; `.connectionLost`, `.timeout`, `.closed`.
    @discardableResult
    public func call(_ args: String...) throws(RedisError) -> RESPValue { try call(args) }

    /// Sends a command and waits for its reply.
    @discardableResult
    public func call(_ args: [String]) throws(RedisError) -> RESPValue { try sendable().call(args) }

    /// Sends several commands in one write and waits for every reply, in order.
    public func pipeline(_ commands: [[String]]) -> [RedisReply] {
        do { return try sendable().pipeline(commands) } catch {
            return commands.map { _ in .failure(error) }
        }
    }

    /// `connection()`, its failure as `.notSent` (no command of the caller's was written).
    private func sendable() throws(RedisError) -> RedisConnection {
        do { return try connection() } catch {
            throw .notSent("\(error)")
        }
    }

    /// Closes the client and its connection.
    public func close() {
        lock.lock()
        closed = true
        let c = current
        current = nil
        lock.unlock()
        c?.close()
    }
}
