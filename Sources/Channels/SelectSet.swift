import GMP

// SelectSet: a select whose cases are built once and waited on in a loop
// (Go's reflect.Select over prebuilt cases; Tokio's select! over futures
// kept across iterations).
//
// `select { }` builds its cases on every call: it retains and releases
// every case's channel, lays out a value slot per case and runs its body
// twice. A server's event loop selects over the same channels thousands of
// times, so a SelectSet does that work once: it holds its channels (one
// retain each, for its life), gives every case a value slot of its own on
// the heap, and each `wait` runs the same select as `select { }` (random
// poll order, locks in address order, one sudog per case when it parks;
// Select.swift) over those cases. The time-out and the default of a wait
// are arguments of that wait, not cases.
//
// A case is switched off as Go code does it, by giving it a nil channel
// (`setChannel(nil, for:)`). A send case goes with a value: `setValue`
// loads it, and a send case with no value loaded is off, as if its channel
// were nil; when it fires its value is gone and it is off until the next
// `setValue`. A receive case that fired keeps its value in its slot until
// `value(of:)` takes it (or the next wait drops it).
//
// A SelectSet belongs to one G (or thread) at a time: it is not Sendable.

/// A select built once and waited on many times.
///
/// ```swift
/// let set = SelectSet()
/// let work = set.receive(jobs), stop = set.receive(quit)
/// loop: while true {
///     switch set.wait() {
///     case work: handle(set.value(of: work))   // Received<Job>: .value or .closed
///     case stop: break loop
///     default: break
///     }
/// }
/// ```
/// Cost per wait: a lock per distinct channel polled, nothing retained or
/// allocated unless it parks (then a sudog per case, and a timer with a
/// time-out).
public final class SelectSet {
    // Not Sendable: one G uses a set at a time, so its fields need no
    // dynamic exclusivity checks (`@exclusivity(unchecked)`).
    /// The cases and the scratch arena (both on the heap, grown with the
    /// cases), and `Select.run`.
    @exclusivity(unchecked) @usableFromInline var s: Select
    /// Per case: the channel it was given (retained by this set), nil for none.
    @exclusivity(unchecked) @usableFromInline var channels: [Unmanaged<AnyChan>?] = []
    /// Per case: destroys the value in its slot (which has the case's type).
    @exclusivity(unchecked) private var deinitSlot: [(UnsafeMutableRawPointer) -> Void] = []
    /// The receive case whose value may still sit in its slot.
    @exclusivity(unchecked) @usableFromInline var lastFired = -1

    /// An empty set of cases.
    public init() {
        // Sized for a pump's two cases; both grow with more (a set lives as
        // long as its G, so its bytes count per idle connection).
        let cases = UnsafeMutablePointer<Select.Case>.allocate(capacity: 2)
        let arena = UnsafeMutableRawPointer.allocate(byteCount: SelectSet.arenaBytes(2), alignment: 16)
        s = Select(arena: arena, cases: cases)
        s.cases.capacity = 2
        s.cases.onHeap = true
        s.arenaCapacity = SelectSet.arenaBytes(2)
    }

    /// Scratch a wait needs for `cases` cases: two words each.
    private static func arenaBytes(_ cases: Int) -> Int { 16 * cases }

    deinit {
        for i in 0..<s.cases.count {
            let c = s.cases[i]
            if c.slotFull { deinitSlot[i](c.slot!) }
            c.slot!.deallocate()
            channels[i]?.release()
        }
        s.cases.free()
        s.arena.deallocate()
    }

    /// A receive case of a `SelectSet`: what `wait` returns when it fires.
    public struct ReceiveCase<T>: Hashable, Sendable {
        /// Its position in the set (what `wait` returns).
        public let index: Int

        /// `case c:` in a `switch` over what `wait` returned.
        @inlinable public static func ~= (c: ReceiveCase<T>, fired: Int) -> Bool { c.index == fired }
    }

    /// A send case of a `SelectSet`.
    public struct SendCase<T>: Hashable, Sendable {
        /// Its position in the set (what `wait` returns).
        public let index: Int

        /// `case c:` in a `switch` over what `wait` returned.
        @inlinable public static func ~= (c: SendCase<T>, fired: Int) -> Bool { c.index == fired }
    }

    /// Adds a case that receives from `channel` (nil: never ready, until
    /// `setChannel` gives it one).
    public func receive<T>(_ channel: Chan<T>?) -> ReceiveCase<T> {
        ReceiveCase(index: add(.receive, channel, T.self))
    }

    /// Adds a case that sends to `channel`, off until `setValue` loads a
    /// value into it.
    public func send<T>(_ channel: Chan<T>?) -> SendCase<T> {
        SendCase(index: add(.send, channel, T.self))
    }

    private func add<T>(_ kind: Select.Kind, _ channel: Chan<T>?, _: T.Type) -> Int {
        var c = Select.Case(kind: kind)
        let slot = UnsafeMutablePointer<T>.allocate(capacity: 1)
        c.slot = UnsafeMutableRawPointer(slot)
        c.slotOnHeap = true
        c.fitsSudog = kind == .receive && Sudog.fitsSlot(T.self)
        let ch = channel.map { Unmanaged<AnyChan>.passRetained($0) }
        if kind == .receive { c.chan = ch }
        s.cases.append(c)
        if s.arenaCapacity < SelectSet.arenaBytes(s.cases.capacity) {
            s.arena.deallocate()
            s.arenaCapacity = SelectSet.arenaBytes(s.cases.capacity)
            s.arena = .allocate(byteCount: s.arenaCapacity, alignment: 16)
        }
        channels.append(ch)
        deinitSlot.append { $0.assumingMemoryBound(to: T.self).deinitialize(count: 1) }
        return s.cases.count - 1
    }

    /// Gives a receive case another channel (nil switches it off).
    public func setChannel<T>(_ channel: Chan<T>?, for c: ReceiveCase<T>) {
        dropValue(c.index)
        replaceChannel(c.index, channel)
        s.cases[c.index].chan = channels[c.index]
    }

    /// Gives a send case another channel (nil switches it off); a loaded
    /// value stays loaded.
    public func setChannel<T>(_ channel: Chan<T>?, for c: SendCase<T>) {
        replaceChannel(c.index, channel)
        s.cases[c.index].chan = s.cases[c.index].slotFull ? channels[c.index] : nil
    }

    private func replaceChannel<T>(_ i: Int, _ channel: Chan<T>?) {
        let old = channels[i]
        channels[i] = channel.map { Unmanaged<AnyChan>.passRetained($0) }
        old?.release()
    }

    /// Loads the value a send case sends when it fires (replacing one
    /// loaded before), and switches the case on if it has a channel.
    @inlinable public func setValue<T>(_ value: T, for c: SendCase<T>) {
        let slot = s.cases[c.index].slot!.assumingMemoryBound(to: T.self)
        if s.cases[c.index].slotFull {
            slot.pointee = value
        } else {
            slot.initialize(to: value)
            s.cases[c.index].slotFull = true
        }
        s.cases[c.index].chan = channels[c.index]
    }

    /// After `c` fired: the value received, or `.closed` (the channel was
    /// closed and drained). Traps if `c` was not the case that fired last or
    /// its value was already taken.
    @inlinable public func value<T>(of c: ReceiveCase<T>) -> Received<T> {
        guard lastFired == c.index else {
            fatalError("SelectSet.value(of:): case \(c.index) is not the receive that fired last, or was taken")
        }
        lastFired = -1
        guard s.cases[c.index].received else { return .closed }
        s.cases[c.index].slotFull = false
        s.cases[c.index].received = false
        return .value(s.cases[c.index].slot!.assumingMemoryBound(to: T.self).move())
    }

    /// Waits until a case can go and performs it; returns that case's index
    /// (compare it with the cases, or `switch` over them). With every case
    /// off it blocks for ever, as an empty `select {}` does.
    public func wait() -> Int {
        GMP.chaosPoint()
        return perform(deadline: 0, timeout: false, otherwise: false)
    }

    /// As `wait()`, giving up after `duration`: nil when it timed out.
    public func wait(timeout duration: Duration) -> Int? {
        wait(deadlineNanoseconds: GMP.deadline(afterNanoseconds: GMP.nanoseconds(duration)))
    }

    /// As `wait()`, giving up at `deadline`: nil when it passed.
    public func wait(deadline: GMP.Instant) -> Int? {
        wait(deadlineNanoseconds: deadline.nanoseconds)
    }

    /// `wait(deadline:)` on the raw `GMP.now` time base.
    package func wait(deadlineNanoseconds deadline: Int64) -> Int? {
        GMP.chaosPoint()
        let i = perform(deadline: deadline, timeout: true, otherwise: false)
        return i == s.cases.count ? nil : i
    }

    /// Performs a case that can go now, if any (Go's select with a
    /// `default`): its index, or nil when none could.
    public func poll() -> Int? {
        let i = perform(deadline: 0, timeout: false, otherwise: true)
        return i == s.cases.count + 1 ? nil : i
    }

    private func perform(deadline: Int64, timeout: Bool, otherwise: Bool) -> Int {
        if lastFired >= 0 { dropValue(lastFired) }
        s.arenaUsed = 0
        let n = s.cases.count
        let i = s.run(deadline: deadline, deadlineIndex: timeout ? n : -1, defaultIndex: otherwise ? n + 1 : -1)
        if i < n {
            if s.cases[i].kind == .send {
                s.cases[i].chan = nil // sent: off until the next value
            } else {
                lastFired = i
            }
        }
        return i
    }

    /// Drops a received value that was never taken.
    private func dropValue(_ i: Int) {
        if lastFired == i { lastFired = -1 }
        guard s.cases[i].kind == .receive else { return }
        if s.cases[i].slotFull { deinitSlot[i](s.cases[i].slot!) }
        s.cases[i].slotFull = false
        s.cases[i].received = false
    }
}
