// Abuse limits: what one client, or one address, may take of the server.
//
// Messages: each connection's read pump runs a token bucket (`rate` a second,
// `burst` at once). A message over it is refused (the client gets one error
// line per run of refusals) and never reaches the hub, so a flood cannot fill
// the other clients' send buffers and get them dropped as slow. Refusals are
// a debt forgiven at the same rate: a client that keeps sending at more than
// twice the rate runs its debt over `burst` and is closed with 1008 (policy
// violation); one that is less fast than that only has its excess refused.
// Control frames (pings) are not counted: each costs one pong, written
// within the write wait.
//
// Connections: counted from accept until the connection's G is done with it
// (its write pump may hold the socket a little longer, up to the write wait),
// in total and per remote address (the IP, without the port). One over either
// limit is answered 503 at once, without its request being read, and closed
// after at most a second: it never reaches the upgrade. Behind a reverse
// proxy every client has the proxy's address: there, `--max-conns-per-ip 0`.
import GMP

/// Open connections, in total and per remote address.
final class ConnectionLimits: @unchecked Sendable {
    // @unchecked: `total` and `perAddress` are guarded by `lock` (held for a
    // few instructions, never across a park).
    private let lock = FutexLock()
    private let maxTotal: Int
    private let maxPerAddress: Int
    private var total = 0
    private var perAddress: [String: Int] = [:]

    /// Limits of `maxTotal` and `maxPerAddress` connections (0: none).
    init(maxTotal: Int, maxPerAddress: Int) {
        self.maxTotal = maxTotal
        self.maxPerAddress = maxPerAddress
    }

    deinit { lock.free() } // (found by LeakSanitizer: the lock's word was never freed)

    /// The address part of "IP:port" or "[IPv6]:port".
    static func address(of peer: String) -> String {
        guard let colon = peer.lastIndex(of: ":") else { return peer }
        return String(peer[..<colon])
    }

    /// Counts a connection from `address`, unless one more would pass a
    /// limit: then nothing is counted and the answer is false.
    func admit(_ address: String) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        let mine = perAddress[address, default: 0]
        if (maxTotal > 0 && total >= maxTotal) || (maxPerAddress > 0 && mine >= maxPerAddress) { return false }
        total += 1
        perAddress[address] = mine + 1
        return true
    }

    /// Uncounts a connection `admit` counted.
    func release(_ address: String) {
        lock.lock()
        defer { lock.unlock() }
        total -= 1
        let left = perAddress[address, default: 1] - 1
        perAddress[address] = left > 0 ? left : nil
    }

    /// (connections open, distinct addresses): for tests and diagnostics.
    var counts: (total: Int, addresses: Int) {
        lock.lock()
        defer { lock.unlock() }
        return (total, perAddress.count)
    }
}

/// A token bucket for one connection's messages, with the debt of its
/// refusals (see the top of this file).
struct MessageRateLimiter {
    /// What to do with a message.
    enum Verdict: Equatable {
        /// Pass it on.
        case pass
        /// Refuse it; `first` for the first refusal after a message passed
        /// (the one that gets an error line).
        case refuse(first: Bool)
        /// Refuse it and close the connection with 1008.
        case close
    }

    let rate: Double
    let burst: Double
    private var tokens: Double
    private var debt = 0.0
    private var last: Int64
    private var limited = false

    /// `rate` messages a second (0: no limit), `burst` at once; full at `now`.
    init(rate: Double, burst: Int, now: Int64) {
        self.rate = rate
        self.burst = Double(max(burst, 1))
        tokens = self.burst
        last = now
    }

    /// The verdict on a message arriving at `now` (nanoseconds, `GMP.now`).
    mutating func take(now: Int64) -> Verdict {
        guard rate > 0 else { return .pass }
        let refill = Double(max(now - last, 0)) / 1e9 * rate
        last = max(now, last)
        tokens = min(burst, tokens + refill)
        debt = max(0, debt - refill)
        if tokens >= 1 {
            tokens -= 1
            limited = false
            return .pass
        }
        debt += 1
        if debt > burst { return .close }
        defer { limited = true }
        return .refuse(first: !limited)
    }
}
