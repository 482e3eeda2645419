import GMP
import Synchronization

// select (Go's runtime/select.go)
//
// `select { s in ... }` runs its body twice. The first pass registers the
// cases (each `s.receive(c)`, `s.send(c, v)`, `s.timeout(...)`,
// `s.otherwise()` call records one case and returns nil/false; send values
// are autoclosures evaluated exactly once, here; the channel of each case is
// the one given on this pass). Then the select runs:
//  1. order the distinct channels by address: whenever all of them are
//     locked, it is in that order (no deadlock between selects that share
//     channels);
//  2. poll the cases in a random order (fairness); the first that can go,
//     goes (first one channel lock at a time; if none was ready, again
//     under all the locks, so that "none ready" is a consistent view);
//  3. none: the `otherwise` case if there is one; else enqueue a sudog on
//     every case's channel (a receive case whose value fits takes it in its
//     sudog's slot; a send case or a bigger value pins the stack for the
//     wait, see Chan.swift), arm the time-out, and park, releasing all locks
//     once parked. The first operation to claim the select (a CAS on its
//     shared `done` word, see WaitQueue.dequeue) wins; the others skip its
//     sudogs. After waking, lock again and dequeue the losing sudogs.
// The second pass delivers: the winning case's call returns its value/true,
// the others nil/false, so the body's `if` for that case runs.
//
// A case on a nil channel is never ready. A select with no cases and no
// `otherwise` blocks forever, as in Go. Send on a closed channel traps.

/// Runs a Go `select` over the cases that `body` registers.
///
/// ```swift
/// select { s in
///     if let r = s.receive(requests) { handle(r) }      // Received<T>: .value or .closed
///     if s.send(replies, answer) { sent() }
///     if s.timeout(after: .milliseconds(50)) { timedOut() }
///     if s.otherwise() { nothingReady() }               // Go's `default`
/// }
/// ```
/// The body must register the same cases in the same order on both of its
/// passes, up to the case that fires (plain `if`s as above do, even when a
/// handler changes what later `if`s would register). Send values are
/// evaluated exactly once, as Go's are; channel arguments are evaluated on
/// both passes (only the first pass's channel is used), so keep them free of
/// side effects (variables and properties are). Cost: one lock per distinct channel,
/// plus a sudog per case and a timer when it has to wait.
@inlinable public func select(_ body: (inout Select) -> Void) {
    GMP.chaosPoint()
    // The cases and their value slots live on this stack (heap only past 8
    // cases or a 512-byte arena).
    withUnsafeTemporaryAllocation(of: Select.Case.self, capacity: 8) { caseBuf in
        withUnsafeTemporaryAllocation(byteCount: Select.arenaSize, alignment: 16) { arena in
            var s = Select(arena: arena.baseAddress!, cases: caseBuf.baseAddress!)
            body(&s)
            let fired = s.run()
            s.phase = .deliver(fired)
            s.position = 0
            body(&s)
            if s.position <= fired {
                fatalError("select: the body registered different cases on its second pass")
            }
            s.cleanup()
        }
    }
}

/// The cases of one `select` (see `select(_:)`).
public struct Select {
    @usableFromInline enum Kind { case receive, send, timeout, otherwise }

    @usableFromInline struct Case {
        @usableFromInline var kind: Kind
        /// Retained once at registration and released by `cleanup`; used
        /// unretained in between (no reference counting on shared channels).
        @usableFromInline var chan: Unmanaged<AnyChan>?
        @usableFromInline var slot: UnsafeMutableRawPointer?
        /// The slot was allocated on the heap (the arena was full).
        @usableFromInline var slotOnHeap = false
        /// Send: the slot still holds the value. Receive: it holds a received value.
        @usableFromInline var slotFull = false
        @usableFromInline var received = false
        @usableFromInline var deadline: Int64 = 0
        /// A receive case whose value fits `Sudog.slot`.
        @usableFromInline var fitsSudog = false

        @usableFromInline init(kind: Kind, deadline: Int64 = 0) {
            self.kind = kind
            self.deadline = deadline
        }
    }

    @usableFromInline enum Phase { case register, deliver(Int) }

    @usableFromInline static let arenaSize = 512

    @usableFromInline var phase = Phase.register
    @usableFromInline var cases: CaseList
    @usableFromInline var position = 0
    @usableFromInline var arena: UnsafeMutableRawPointer
    /// The arena's size: `arenaSize` on the stack of `select { }`; a
    /// `SelectSet` keeps a smaller one of its own (scratch only).
    @usableFromInline var arenaCapacity = Select.arenaSize
    @usableFromInline var arenaUsed = 0

    @usableFromInline init(arena: UnsafeMutableRawPointer, cases: UnsafeMutablePointer<Case>) {
        self.arena = arena
        self.cases = CaseList(base: cases, capacity: 8)
    }

    /// The registered cases: a fixed buffer on the caller's stack, moved to
    /// the heap if a select has more than it holds. `Case` is trivial (no
    /// reference counting when read or copied).
    @usableFromInline struct CaseList {
        @usableFromInline var base: UnsafeMutablePointer<Case>
        @usableFromInline var capacity: Int
        @usableFromInline var count = 0
        @usableFromInline var onHeap = false

        @usableFromInline init(base: UnsafeMutablePointer<Case>, capacity: Int) {
            self.base = base
            self.capacity = capacity
        }

        /// Inlined, so that the caller builds the case in place (a case
        /// built on the stack and then copied stalls on store forwarding).
        @inlinable @inline(__always)
        mutating func append(_ c: Case) {
            if count == capacity { grow() }
            (base + count).initialize(to: c)
            count += 1
        }

        @usableFromInline @inline(never)
        mutating func grow() {
            let bigger = UnsafeMutablePointer<Case>.allocate(capacity: capacity * 2)
            bigger.moveInitialize(from: base, count: count)
            if onHeap { base.deallocate() }
            base = bigger
            capacity *= 2
            onHeap = true
        }

        @inlinable subscript(i: Int) -> Case {
            get { base[i] }
            nonmutating set { base[i] = newValue }
        }

        func free() {
            base.deinitialize(count: count)
            if onHeap { base.deallocate() }
        }
    }

    /// A value slot for a `T`: from the arena, or the heap when full. It
    /// needs no channel: a channel passed to this mutating method was
    /// retained and released around the call, a fifth of a select's time.
    @inlinable mutating func slot<T>(for _: T.Type) -> (UnsafeMutableRawPointer, Bool) {
        let align = MemoryLayout<T>.alignment
        let start = (arenaUsed + align - 1) / align * align
        let size = Swift.max(MemoryLayout<T>.stride, 1)
        if align <= 16 && start + size <= arenaCapacity {
            arenaUsed = start + size
            return (arena + start, false)
        }
        return (UnsafeMutableRawPointer(UnsafeMutablePointer<T>.allocate(capacity: 1)), true)
    }

    /// Second pass: the position of this call and whether it is the winner.
    /// Calls after the winner (whose handler may have changed what the body
    /// registers) are not counted and never win.
    @inlinable mutating func next() -> (Int, Bool) {
        guard case .deliver(let f) = phase, position <= f else { return (-1, false) }
        let i = position
        position += 1
        return (i, f == i)
    }

    @inlinable var registering: Bool {
        if case .register = phase { return true }
        return false
    }

    /// A receive case: returns the result when this case fires, else nil.
    /// `.closed` means the channel was closed and drained. A nil channel is
    /// never ready.
    @inlinable public mutating func receive<T>(_ channel: Chan<T>?) -> Received<T>? {
        if registering {
            var rec = Case(kind: .receive)
            if let c = channel {
                rec.chan = Unmanaged<AnyChan>.passRetained(c)
                (rec.slot, rec.slotOnHeap) = slot(for: T.self)
                rec.fitsSudog = Sudog.fitsSlot(T.self)
            }
            cases.append(rec)
            position += 1
            return nil
        }
        let (i, won) = next()
        guard won else { return nil }
        guard cases[i].received else { return .closed }
        cases[i].slotFull = false
        return .value(cases[i].slot!.assumingMemoryBound(to: T.self).move())
    }

    /// A send case: returns true when this case fired (the value was sent).
    /// `value` is evaluated once, on the first pass, even for a nil channel.
    @inlinable public mutating func send<T>(_ channel: Chan<T>?, _ value: @autoclosure () -> T) -> Bool {
        if registering {
            let c = channel
            let v = value() // evaluated even for a nil channel, as in Go
            var rec = Case(kind: .send)
            if let c {
                rec.chan = Unmanaged<AnyChan>.passRetained(c)
                (rec.slot, rec.slotOnHeap) = slot(for: T.self)
                rec.slot!.assumingMemoryBound(to: T.self).initialize(to: v)
                rec.slotFull = true
            }
            cases.append(rec)
            position += 1
            return false
        }
        let (_, won) = next()
        return won
    }

    /// `timeout(after:)` in nanoseconds (`Int64.max`: never).
    package mutating func timeout(afterNanoseconds nanoseconds: Int64) -> Bool {
        deadline(atNanoseconds: GMP.deadline(afterNanoseconds: nanoseconds))
    }

    /// A time-out case: fires when nothing else did within `duration` (one
    /// too long for the clock never fires).
    public mutating func timeout(after duration: Duration) -> Bool {
        timeout(afterNanoseconds: GMP.nanoseconds(duration))
    }

    /// A deadline case: fires when nothing else did by `deadline` (one
    /// already past fires at once unless another case is ready).
    public mutating func deadline(at deadline: GMP.Instant) -> Bool {
        self.deadline(atNanoseconds: deadline.nanoseconds)
    }

    /// `deadline(at:)` on the raw `GMP.now` time base.
    package mutating func deadline(atNanoseconds deadline: Int64) -> Bool {
        if registering {
            cases.append(Case(kind: .timeout, deadline: deadline))
            position += 1
            return false
        }
        return next().1
    }

    /// Go's `default`: fires at once if no other case is ready.
    public mutating func otherwise() -> Bool {
        if registering {
            cases.append(Case(kind: .otherwise))
            position += 1
            return false
        }
        return next().1
    }

    @usableFromInline mutating func cleanup() {
        defer { cases.free() }
        for i in 0..<cases.count {
            let c = cases[i]
            if let ch = c.chan {
                if let slot = c.slot {
                    ch._withUnsafeGuaranteedRef {
                        if c.slotOnHeap {
                            $0.freeSlot(slot, initialized: c.slotFull)
                        } else if c.slotFull {
                            $0.deinitSlot(slot)
                        }
                    }
                }
                ch.release()
            }
        }
    }

    /// `count` words of scratch from the arena (or the heap: `heap` is set).
    private mutating func scratch(_ count: Int, heap: inout Bool) -> UnsafeMutablePointer<UInt> {
        let start = (arenaUsed + 7) / 8 * 8
        if start + count * 8 <= arenaCapacity {
            arenaUsed = start + count * 8
            return (arena + start).bindMemory(to: UInt.self, capacity: count)
        }
        heap = true
        return .allocate(capacity: count)
    }

    /// Performs the select; returns the index of the case that fired. A
    /// `SelectSet` passes its wait's time-out and default here instead of as
    /// cases: `deadlineIndex`/`defaultIndex` are then what fires for them
    /// (indexes past the cases), -1 for none.
    @usableFromInline mutating func run(deadline extraDeadline: Int64 = 0, deadlineIndex extraDeadlineIndex: Int = -1,
                      defaultIndex extraDefault: Int = -1) -> Int {
        var heap = false
        let words = scratch(2 * Swift.max(cases.count, 1), heap: &heap)
        defer { if heap { words.deallocate() } }
        return run(pollBuf: words, lockBuf: words + Swift.max(cases.count, 1),
                   deadline: extraDeadline, deadlineIndex: extraDeadlineIndex, defaultIndex: extraDefault)
    }

    private mutating func run(pollBuf: UnsafeMutablePointer<UInt>, lockBuf: UnsafeMutablePointer<UInt>,
                              deadline extraDeadline: Int64, deadlineIndex extraDeadlineIndex: Int,
                              defaultIndex extraDefault: Int) -> Int {
        var defaultIndex = extraDefault
        var deadline = extraDeadline
        var deadlineIndex = extraDeadlineIndex
        var npoll = 0
        for i in 0..<cases.count {
            let c = cases[i]
            switch c.kind {
            case .otherwise:
                if defaultIndex >= 0 { fatalError("select: more than one otherwise case") }
                defaultIndex = i
            case .timeout:
                if deadlineIndex < 0 || c.deadline < deadline { deadline = c.deadline; deadlineIndex = i }
            case .receive, .send:
                if c.chan != nil {
                    pollBuf[npoll] = UInt(i)
                    npoll += 1
                }
            }
        }
        let poll = UnsafeMutableBufferPointer(start: pollBuf, count: npoll)
        // Random poll order (Fisher–Yates).
        if npoll > 1 {
            for i in stride(from: npoll - 1, to: 0, by: -1) {
                let j = Int(GMP.fastrand() % UInt32(i + 1))
                poll.swapAt(i, j)
            }
        }
        // Fast pass: try the cases one channel lock at a time, in the random
        // order. Finding one ready is a valid outcome whatever the others did
        // meanwhile (it was ready when taken, and the choice among ready cases
        // is ours). Finding none proves nothing (another case may have become
        // ready behind us), so that goes on to the pass under all the locks.
        if npoll > 1 {
            for pi in poll {
                let i = Int(pi)
                let slot = cases[i].slot!
                let isSend = cases[i].kind == .send
                let (outcome, wake) = cases[i].chan!._withUnsafeGuaranteedRef { ch -> (Int, Sudog?) in
                    ch.lock.lock()
                    if isSend {
                        let (sent, wake) = ch.sendLocked(slot) // traps if closed (after unlocking)
                        ch.lock.unlock()
                        return (sent ? 0 : -1, wake)
                    }
                    let (done, received, wake) = ch.receiveLocked(slot)
                    ch.lock.unlock()
                    return (done ? (received ? 1 : 2) : -1, wake)
                }
                if outcome >= 0 {
                    if isSend {
                        cases[i].slotFull = false
                    } else {
                        cases[i].received = outcome == 1
                        cases[i].slotFull = outcome == 1
                    }
                    wake?.ready()
                    return i
                }
            }
        }

        // Distinct channels in address order (insertion sort: a handful of cases).
        var nlocks = 0
        for pi in poll {
            let c = UInt(bitPattern: cases[Int(pi)].chan!.toOpaque())
            var j = nlocks
            var dup = false
            while j > 0 && lockBuf[j - 1] >= c {
                if lockBuf[j - 1] == c { dup = true; break }
                j -= 1
            }
            if dup { continue }
            var k = nlocks
            while k > j { lockBuf[k] = lockBuf[k - 1]; k -= 1 }
            lockBuf[j] = c
            nlocks += 1
        }
        let locks = UnsafeMutableBufferPointer(start: lockBuf, count: nlocks)

        if npoll == 0 && defaultIndex < 0 && deadlineIndex < 0 {
            GMP.parkForever() // select {} or only nil channels: block forever, as in Go
        }

        lockAll(locks)
        // Pass 1: anything ready now?
        for pi in poll {
            let i = Int(pi)
            let c = cases[i].chan!
            let slot = cases[i].slot!
            if cases[i].kind == .send {
                // sendLocked traps if closed (after unlocking that channel's lock).
                let (sent, wake) = c._withUnsafeGuaranteedRef { $0.sendLocked(slot) }
                if sent {
                    cases[i].slotFull = false
                    unlockAll(locks)
                    wake?.ready()
                    return i
                }
            } else {
                let (done, received, wake) = c._withUnsafeGuaranteedRef { $0.receiveLocked(slot) }
                if done {
                    cases[i].received = received
                    cases[i].slotFull = received
                    unlockAll(locks)
                    wake?.ready()
                    return i
                }
            }
        }
        if defaultIndex >= 0 {
            unlockAll(locks)
            return defaultIndex
        }
        if deadlineIndex >= 0 && deadline <= GMP.now {
            unlockAll(locks)
            return deadlineIndex
        }

        // Pass 2: wait on every case.
        let parker = Sudog.acquire()
        let state = SelectState(parker: parker, timeoutIndex: deadlineIndex)
        let raw = Unmanaged.passUnretained(state).toOpaque()
        var sudogs: [(Int, Sudog)] = []
        sudogs.reserveCapacity(npoll)
        // A receive case whose value fits takes it in its sudog's slot, so
        // the waker does not write into this stack; a send case (whose value
        // would have to be copied to every case's sudog) or a value too big
        // pins the stack for the wait (Trim.swift).
        var pins = false
        for pi in poll {
            let i = Int(pi)
            let sg = sudogs.isEmpty ? parker : Sudog.acquire()
            if !sudogs.isEmpty { parker.shareParker(with: sg) }
            let isSend = cases[i].kind == .send
            if !isSend && cases[i].fitsSudog {
                sg.s.pointee.elem = sg.slot
            } else {
                sg.s.pointee.elem = cases[i].slot
                pins = true
            }
            sg.s.pointee.select = raw
            sg.s.pointee.caseIndex = i
            cases[i].chan!._withUnsafeGuaranteedRef { c in
                sg.s.pointee.chan = c.identity
                if isSend { c.sendq.enqueue(sg) } else { c.recvq.enqueue(sg) }
            }
            sudogs.append((i, sg))
        }
        var timer: Timer?
        state.armLock.lock()
        if deadlineIndex >= 0 {
            let t = Timer { state.timeout() }
            t.reset(at: deadline)
            timer = t
        }
        // armLock goes first: once a channel lock is released, a waker can
        // claim and ready this G, which may return and free `state` (and its
        // armLock) while the scheduler is still releasing the other locks.
        var held = [state.armLock]
        for c in locks { held.append(Self.chan(c)._withUnsafeGuaranteedRef { $0.lock }) }
        parker.s.pointee.reason = .select
        parker.s.pointee.pinsStack = pins
        parker.park(unlocking: held)

        // Woken: one case (or the time-out) claimed us.
        timer?.stop()
        let winner = state.winner
        lockAll(locks)
        for (i, sg) in sudogs where i != winner {
            let isSend = cases[i].kind == .send
            cases[i].chan!._withUnsafeGuaranteedRef { c in
                if isSend { c.sendq.remove(sg) } else { c.recvq.remove(sg) }
            }
        }
        unlockAll(locks)
        var ok = true
        for (i, sg) in sudogs where i == winner {
            ok = sg.s.pointee.success
            if ok && sg.s.pointee.elem == sg.slot { // a received value, in the sudog
                cases[i].chan!._withUnsafeGuaranteedRef { $0.moveValue(from: sg.slot, to: cases[i].slot!) }
            }
        }
        for (_, sg) in sudogs { sg.release() }
        if sudogs.isEmpty { parker.release() }
        withExtendedLifetime(state) {}
        if winner == deadlineIndex { return winner }
        if cases[winner].kind == .send {
            if !ok { fatalError("send on closed channel") }
            cases[winner].slotFull = false
        } else {
            cases[winner].received = ok
            cases[winner].slotFull = ok
        }
        return winner
    }

    @inline(__always) private static func chan(_ bits: UInt) -> Unmanaged<AnyChan> {
        Unmanaged<AnyChan>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!)
    }

    private func lockAll(_ locks: UnsafeMutableBufferPointer<UInt>) {
        for c in locks { Self.chan(c)._withUnsafeGuaranteedRef { $0.lock.lock() } }
    }

    private func unlockAll(_ locks: UnsafeMutableBufferPointer<UInt>) {
        for c in locks { Self.chan(c)._withUnsafeGuaranteedRef { $0.lock.unlock() } }
    }
}
