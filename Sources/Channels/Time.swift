import GMP

// Time on channels (Go's time.NewTicker, time.NewTimer, time.After)
//
// Each is a `Chan<GMP.Instant>` of capacity 1 fed by a GMP `Timer`, whose
// callback runs on an M outside any G: it only ever `trySend`s, so it never
// blocks, and a value nobody has taken yet makes the next one be dropped
// (a ticker's reader that falls behind misses ticks; they never queue up).
// The value sent is the instant the fire was due (Go 1.23 sends that too),
// not the instant the callback happened to run.
//
// A Ticker or ChannelTimer keeps its state in a `TimeCore` under a lock:
// whether a fire is pending, when it is due, the period (0: one-shot). The
// callback, `stop` and `reset` all run under that lock, which gives Go
// 1.23's guarantee: once `stop` or `reset` has returned, no value from
// before it is received. Each of them drains the buffered value while it
// holds the lock, and a callback that comes later finds the fire no longer
// pending (stopped), or due later (reset) and does nothing. That check is
// by state, not by which arming of the GMP timer fired: a callback that was
// claimed before a `reset` and runs after it sends only if the new instant
// has come as well, which is then a right tick to send (once: it re-arms,
// and the reset's own heap entry dies with that).
//
// A ticker's next tick is due at the next multiple of the period after
// "now" (counted from its start or its last reset), as Go adjusts `when`:
// after a slow stretch it does not fire the ticks it missed in a burst.
//
// Ownership: the Ticker (or ChannelTimer) holds its GMP timer; the timer's
// callback holds the core strongly and the core holds the timer weakly, so
// nothing holds the Ticker but its users. A Ticker stops in its `deinit`
// (else it would tick, unseen, for ever). A ChannelTimer does not: it fires
// once, into its channel, for whoever still holds the channel (as Go's
// timers do), and then everything is freed, as with `after`. The one place
// that spells GMP.Timer's deadline type is `arm(_:at:)`.

/// A `Timer` armed for `when`: the one place that spells the deadline type
/// of GMP's timers.
@inline(__always)
private func arm(_ timer: Timer, at when: GMP.Instant) {
    timer.reset(at: when)
}

/// The instant `duration` from `now`, never before `now` (Go's `when(d)`:
/// a zero or negative duration is now; saturating: a duration too long for
/// the clock is the distant future, which never comes).
@inline(__always)
private func instant(_ duration: Duration, after now: GMP.Instant) -> GMP.Instant {
    duration <= .zero ? now : now + duration
}

/// The state a `Ticker` or a `ChannelTimer` shares with its timer's callback.
final class TimeCore: @unchecked Sendable {
    // @unchecked: `pending`, `when`, `period` are guarded by `lock` (so no
    // dynamic exclusivity checks: `@exclusivity(unchecked)`); `timer`
    // is set once, in `start`, before the timer is first armed.
    let lock = FutexLock(compact: ())
    let channel = Chan<GMP.Instant>(capacity: 1)
    /// A fire is to come (armed and not yet sent; for a ticker: running).
    @exclusivity(unchecked) var pending = false
    /// When it is due.
    @exclusivity(unchecked) var when = GMP.Instant(nanoseconds: 0)
    /// A ticker's period in nanoseconds (> 0); 0 for a one-shot timer.
    @exclusivity(unchecked) var period: Int64 = 0
    /// The timer whose callback this is. Weak: the timer's callback holds
    /// this core, and the owner (Ticker, ChannelTimer) holds the timer.
    weak var timer: Timer?

    init() {}

    deinit { lock.free() }

    /// Makes the timer (owned by the caller), armed for `when` (nil: stopped).
    func start(when: GMP.Instant?, period: Int64) -> Timer {
        let t = Timer { [self] in self.fire() }
        lock.lock()
        timer = t
        self.period = period
        if let when {
            self.when = when
            pending = true
            arm(t, at: when)
        }
        lock.unlock()
        return t
    }

    /// The timer's callback (on an M, outside any G): sends the due instant
    /// unless the reader has not taken the last one, and re-arms a ticker.
    func fire() {
        lock.lock()
        defer { lock.unlock() }
        guard pending else { return } // stopped (or a one-shot that has fired)
        let now = GMP.Instant.now
        guard when <= now else { return } // an earlier arming's fire: reset since
        _ = channel.trySend(when) // full: the reader is behind, and misses this one
        guard period > 0 else {
            pending = false
            return
        }
        // The next multiple of the period after now (Go: when += period * (1 + -delta/period)).
        let (late, o1) = now.nanoseconds.subtractingReportingOverflow(when.nanoseconds)
        let (step, o2) = period.multipliedReportingOverflow(by: (o1 ? Int64.max : late) / period + 1)
        let (next, o3) = when.nanoseconds.addingReportingOverflow(step)
        when = o1 || o2 || o3 ? .distantFuture : GMP.Instant(nanoseconds: next)
        if let timer { arm(timer, at: when) }
    }

    /// Lock held: takes a value nobody has received yet out of the channel.
    private func drain() -> Bool {
        if case .value = channel.tryReceive() { return true }
        return false
    }

    /// Stops future fires and drops a value not yet received. Returns
    /// whether a fire was pending or its value unreceived.
    func stop() -> Bool {
        lock.lock()
        let was = pending
        pending = false
        timer?.stop()
        let drained = drain()
        lock.unlock()
        return was || drained
    }

    /// Re-arms for `after` from now (a ticker: with `period` from now on),
    /// dropping a value not yet received. Returns as `stop` does.
    func reset(after duration: Duration, period: Int64) -> Bool {
        lock.lock()
        let was = pending
        let drained = drain()
        when = instant(duration, after: .now)
        self.period = period
        pending = true
        if let timer { arm(timer, at: when) }
        lock.unlock()
        return was || drained
    }
}

/// Go's `time.Ticker`: a channel that receives the instant of each tick,
/// every `period`.
///
/// ```swift
/// let ticker = Ticker(every: .seconds(1))
/// defer { ticker.stop() }
/// while running {
///     select { s in
///         if let r = s.receive(ticker.channel), case .value(let t) = r { report(at: t) }
///         if s.receive(quit) != nil { running = false }
///     }
/// }
/// ```
///
/// The ticks are due at start + period, start + 2·period, …; the value is
/// the instant a tick was due (not when it was received). The channel holds
/// one tick: a reader that falls behind misses ticks (they are dropped, not
/// queued), and the next tick after a slow stretch is the next multiple of
/// the period still to come, as in Go.
///
/// As in Go 1.23, once `stop()` or `reset(_:)` returns, no tick from before
/// it is received (a tick waiting in the channel is dropped). Keep the
/// ticker, not just its channel: a Ticker that is released stops (its
/// timer would otherwise go on for ever), and its channel gets nothing more.
///
/// - Complexity: Each tick costs a timer fire, O(log n) in the P's timer
///   heap; a Ticker holds one timer, nothing while it is stopped.
public final class Ticker: Sendable {
    /// Where the ticks arrive (capacity 1). Only the ticker sends on it:
    /// never send on it or close it (a tick sent on a closed channel traps).
    public let channel: Chan<GMP.Instant>
    private let core: TimeCore
    private let timer: Timer

    /// Starts a ticker whose first tick is due `period` from now.
    ///
    /// A period of zero or less is a programming error and traps, as Go's
    /// `NewTicker` panics. A period too long for the clock never ticks.
    public init(every period: Duration) {
        guard period > .zero else { fatalError("non-positive interval for NewTicker: \(period)") }
        core = TimeCore()
        channel = core.channel
        let now = GMP.Instant.now
        timer = core.start(when: instant(period, after: now), period: Self.nanoseconds(period))
    }

    deinit { _ = core.stop() }

    /// Stops the ticker: no more ticks are sent, and a tick sent but not
    /// yet received is dropped (Go 1.23). A receiver blocked on `channel`
    /// stays blocked. Stopping a stopped ticker does nothing; `reset(_:)`
    /// starts it again.
    public func stop() {
        _ = core.stop()
    }

    /// Stops the ticker and starts it again with `period`: the next tick is
    /// due `period` from now. A tick sent but not yet received is dropped
    /// (Go 1.23). Works on a stopped ticker too.
    ///
    /// A period of zero or less traps, as Go's `Ticker.Reset` panics.
    /// - Complexity: O(log n) in the P's timer heap.
    public func reset(_ period: Duration) {
        guard period > .zero else { fatalError("non-positive interval for Ticker.Reset: \(period)") }
        _ = core.reset(after: period, period: Self.nanoseconds(period))
    }

    /// `period` in nanoseconds, at least 1 (a period under a nanosecond
    /// ticks every nanosecond).
    private static func nanoseconds(_ period: Duration) -> Int64 { max(1, GMP.nanoseconds(period)) }
}

/// Go's `time.Timer` made by `time.NewTimer`: a channel that receives the
/// instant the timer was due, once, when it fires.
///
/// ```swift
/// let timer = ChannelTimer(after: .seconds(5))
/// select { s in
///     if let r = s.receive(replies), case .value(let reply) = r { handle(reply) }
///     if s.receive(timer.channel) != nil { giveUp() }
/// }
/// timer.stop()
/// ```
///
/// As in Go 1.23, once `stop()` or `reset(_:)` returns, no value from
/// before it is received: a value sent but not yet received is dropped, and
/// counts as a pending fire in their results. Releasing a ChannelTimer does
/// not stop it: it fires once, for whoever still holds `channel`, and is
/// then freed (stop it to free it at once).
public final class ChannelTimer: Sendable {
    /// Where the timer's instant arrives (capacity 1). Only the timer sends
    /// on it: never send on it or close it (a fire into a closed channel traps).
    public let channel: Chan<GMP.Instant>
    private let core: TimeCore
    private let timer: Timer

    /// Starts a timer that fires `duration` from now. A zero or negative
    /// duration fires at once (as in Go); one too long for the clock never
    /// fires.
    /// - Complexity: O(log n) in the P's timer heap.
    public init(after duration: Duration) {
        core = TimeCore()
        channel = core.channel
        let now = GMP.Instant.now
        timer = core.start(when: instant(duration, after: now), period: 0)
    }

    /// A stopped timer (Go's `NewTimer` followed by `Stop`): nothing fires
    /// until `reset(_:)` arms it.
    public init() {
        core = TimeCore()
        channel = core.channel
        timer = core.start(when: nil, period: 0)
    }

    /// Stops the timer. Returns true if it stopped a pending fire: the timer
    /// had not fired, or had and its value was not received yet (that value
    /// is dropped: Go 1.23). False if it was stopped, or its value was
    /// received. Afterwards `channel` receives nothing until `reset(_:)`.
    @discardableResult
    public func stop() -> Bool {
        core.stop()
    }

    /// Re-arms the timer to fire `duration` from now (a zero or negative
    /// duration: at once), whether it was pending, fired or stopped. A value
    /// sent but not yet received is dropped first (Go 1.23), so the next
    /// value received is the new fire's. Returns whether a fire was pending,
    /// as `stop()` does.
    /// - Complexity: O(log n) in the P's timer heap.
    @discardableResult
    public func reset(_ duration: Duration) -> Bool {
        core.reset(after: duration, period: 0)
    }
}

/// Go's `time.After`: a new channel that receives the instant `duration`
/// from now, once, when it comes.
///
/// ```swift
/// let timeout = after(.seconds(5)) // (not inside the select's body, which runs twice)
/// select { s in
///     if let r = s.receive(replies), case .value(let reply) = r { handle(reply) }
///     if s.receive(timeout) != nil { giveUp() }
/// }
/// ```
///
/// The timer cannot be stopped: it lives until it fires, even if nobody
/// holds the channel any more (a long duration in a loop piles up timers;
/// use a `ChannelTimer` or `select`'s `timeout(after:)` there). A duration of
/// zero or less is a programming error and traps; one too long for the
/// clock never fires.
/// - Complexity: O(log n) in the P's timer heap, to arm and to fire.
public func after(_ duration: Duration) -> Chan<GMP.Instant> {
    guard duration > .zero else { fatalError("non-positive duration for after: \(duration)") }
    let channel = Chan<GMP.Instant>(capacity: 1)
    let when = GMP.Instant.now + duration
    arm(Timer { _ = channel.trySend(when) }, at: when) // (the timer heap holds it until it fires)
    return channel
}
