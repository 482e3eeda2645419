import CGMP

extension GMP {
    /// A point in time on the runtime's monotonic clock: the one type every
    /// deadline in the package takes (timers, `select` deadlines, socket
    /// deadlines, contexts), as lengths of time are always a `Duration`.
    ///
    /// An instant is nanoseconds on `CLOCK_MONOTONIC` (the clock of
    /// `GMP.now`), so it does not jump when the wall clock is set and does
    /// not mean anything across processes. Arithmetic saturates instead of
    /// trapping: ``distantFuture`` plus any duration is still the distant
    /// future, and a timer armed for it never fires.
    ///
    /// ```swift
    /// conn.setReadDeadline(.now + .seconds(5))
    /// if GMP.Instant.now > deadline { ... }
    /// ```
    public struct Instant: InstantProtocol, CustomStringConvertible {
        /// Nanoseconds on the monotonic clock (the value of `GMP.now` at
        /// this instant).
        public var nanoseconds: Int64

        /// The instant `nanoseconds` on the monotonic clock.
        @inlinable public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

        /// The current instant.
        public static var now: Instant { Instant(nanoseconds: gmp_nanotime()) }

        /// An instant that never comes: a deadline that never passes.
        public static let distantFuture = Instant(nanoseconds: .max)

        /// The instant `duration` from now (saturating: a duration too long
        /// for the clock is ``distantFuture``; a negative one is in the past).
        public static func after(_ duration: Duration) -> Instant { now.advanced(by: duration) }

        /// This instant moved by `duration`, saturating at the ends of `Int64`
        /// (the distant future stays the distant future, whatever is added).
        public func advanced(by duration: Duration) -> Instant {
            if nanoseconds == .max { return self }
            let (sum, overflow) = nanoseconds.addingReportingOverflow(GMP.nanoseconds(duration))
            if overflow { return Instant(nanoseconds: duration < .zero ? .min : .max) }
            return Instant(nanoseconds: sum)
        }

        /// The duration from this instant to `other` (negative if `other` is
        /// earlier), exact: `Duration` holds any difference of two instants.
        public func duration(to other: Instant) -> Duration {
            .nanoseconds(other.nanoseconds) - .nanoseconds(nanoseconds)
        }

        /// Whether this instant is earlier than `other`.
        @inlinable public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

        /// `lhs` moved later by `rhs` (saturating).
        public static func + (lhs: Instant, rhs: Duration) -> Instant { lhs.advanced(by: rhs) }

        /// `lhs` moved earlier by `rhs` (saturating).
        public static func - (lhs: Instant, rhs: Duration) -> Instant { lhs.advanced(by: .zero - rhs) }

        /// The duration from `rhs` to `lhs`.
        public static func - (lhs: Instant, rhs: Instant) -> Duration { rhs.duration(to: lhs) }

        /// The time left until this instant (zero or negative once it has passed).
        public var remaining: Duration { Instant.now.duration(to: self) }

        /// Whether this instant has come.
        public var hasPassed: Bool { gmp_nanotime() >= nanoseconds }

        /// The instant as `"<nanoseconds>ns"` on the monotonic clock, or
        /// `"distantFuture"`.
        public var description: String { nanoseconds == .max ? "distantFuture" : "\(nanoseconds)ns" }
    }
}
