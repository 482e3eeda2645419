import GMP

// Channels (Go's runtime/chan.go)
//
// A channel is a lock, a ring buffer of `capacity` values (allocated when
// the first value is buffered), and two wait queues of sudogs: receivers
// waiting for a value (`recvq`) and senders waiting for room or a receiver
// (`sendq`). A waiter's value slot is in its sudog when the value fits (32
// bytes), so that a waker never writes into a parked G's stack, which may
// be trimmed (GMP's Trim.swift); a bigger value stays in the waiter's frame
// and pins its stack for the wait.
//
// Invariants (under `lock`):
//  - At least one of `sendq` and `recvq` is empty (select aside: a select
//    may sit on both queues of one channel, see Select.swift).
//  - `count > 0` implies `recvq` is empty (a receiver would have taken it).
//  - `count < capacity` implies `sendq` is empty (a sender would have filled it).
//  - A closed channel has an empty `sendq` (close wakes every sender).
//
// Operations:
//  - send: a waiting receiver gets the value directly (copied into its slot)
//    and is readied on the sender's P (`runnext`); else the value goes into
//    the buffer; else the sender parks on `sendq`.
//  - receive: a waiting sender (the buffer is then full, or unbuffered) is
//    served FIFO: the receiver takes the buffer's head and the sender's value
//    goes into the tail (unbuffered: straight from the sender); else the
//    buffer's head; else closed; else park on `recvq`.
//  - close: wakes every receiver ("closed") and every sender (which then
//    traps: send on a closed channel is a programming error, as in Go).
//  Gs are readied only after the channel's lock is released.

/// A channel's mutable state (Go's `hchan` minus the buffer), guarded by the
/// lock word that sits just before it on the same cache line.
@usableFromInline struct ChanState {
    @usableFromInline var qcount = 0
    @usableFromInline var sendx = 0
    @usableFromInline var recvx = 0
    @usableFromInline var closed = false
    @usableFromInline var recvq = WaitQueue()
    @usableFromInline var sendq = WaitQueue()

    @usableFromInline init() {}
}

/// The untyped part of a channel: lock, queues, counters. `Chan<T>` adds
/// the typed buffer. `select` works on this level.
public class AnyChan: @unchecked Sendable {
    // @unchecked: every mutable field (in `st`) is guarded by `lock`.
    @usableFromInline let lock: FutexLock
    /// Lock word at offset 0, `ChanState` at offset 16, 64-byte aligned:
    /// an operation touches one or two cache lines, not one per field.
    @usableFromInline let st: UnsafeMutablePointer<ChanState>
    /// Buffer size; 0 for an unbuffered (rendezvous) channel.
    public let capacity: Int

    init(bufferSize: Int) {
        precondition(bufferSize >= 0, "makechan: size out of range")
        self.capacity = bufferSize
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 16 + MemoryLayout<ChanState>.stride, alignment: 64)
        lock = FutexLock(word: raw)
        st = (raw + 16).bindMemory(to: ChanState.self, capacity: 1)
        st.initialize(to: ChanState())
    }

    deinit {
        st.deinitialize(count: 1)
        (UnsafeMutableRawPointer(st) - 16).deallocate()
    }

    @inlinable var qcount: Int {
        get { st.pointee.qcount }
        set { st.pointee.qcount = newValue }
    }
    @inlinable var closed: Bool {
        get { st.pointee.closed }
        set { st.pointee.closed = newValue }
    }
    @inlinable var recvq: WaitQueue {
        _read { yield st.pointee.recvq }
        _modify { yield &st.pointee.recvq }
    }
    @inlinable var sendq: WaitQueue {
        _read { yield st.pointee.sendq }
        _modify { yield &st.pointee.sendq }
    }

    /// Number of values in the buffer.
    public var count: Int { lock.withLock { qcount } }

    /// Whether a party (a G, a task, a thread) waits to receive from (or
    /// selects on a receive from) this channel. For tests, which wait on it
    /// rather than guess.
    var hasWaitingReceiver: Bool { lock.withLock { !recvq.isEmpty } }
    /// Whether a party (a G, a task, a thread) waits to send on this channel. For tests.
    var hasWaitingSender: Bool { lock.withLock { !sendq.isEmpty } }
    /// How many parties (Gs, tasks, threads, select cases) wait to receive. For tests.
    var waitingReceivers: Int { lock.withLock { recvq.count } }

    @inlinable var identity: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    // Typed buffer operations, implemented by Chan<T>. Lock held.
    @usableFromInline func bufPush(from elem: UnsafeMutableRawPointer) { fatalError("abstract") }
    @usableFromInline func bufPop(into elem: UnsafeMutableRawPointer) { fatalError("abstract") }
    @usableFromInline func moveValue(from src: UnsafeMutableRawPointer, to dst: UnsafeMutableRawPointer) { fatalError("abstract") }
    func freeSlot(_ p: UnsafeMutableRawPointer, initialized: Bool) { fatalError("abstract") }
    /// Destroys the value at `p` (for select slots in its arena).
    func deinitSlot(_ p: UnsafeMutableRawPointer) { fatalError("abstract") }

    /// Lock held: tries to send the value at `elem` without blocking. On
    /// success the value has been moved out of `elem`, and the sudog to
    /// ready (if any) is returned for the caller to ready after unlocking.
    @inlinable @inline(__always)
    func sendLocked(_ elem: UnsafeMutableRawPointer) -> (sent: Bool, wake: Sudog?) {
        if closed {
            lock.unlock()
            fatalError("send on closed channel")
        }
        if let sg = recvq.dequeue() {
            moveValue(from: elem, to: sg.s.pointee.elem!)
            sg.s.pointee.success = true
            return (true, sg)
        }
        if qcount < capacity {
            bufPush(from: elem)
            return (true, nil)
        }
        return (false, nil)
    }

    /// Lock held: tries to receive into `elem` (uninitialized) without
    /// blocking. Returns whether the operation completed and whether a value
    /// was received (false: closed and drained), plus a sudog to ready.
    @inlinable @inline(__always)
    func receiveLocked(_ elem: UnsafeMutableRawPointer) -> (done: Bool, received: Bool, wake: Sudog?) {
        if let sg = sendq.dequeue() {
            if capacity == 0 {
                moveValue(from: sg.s.pointee.elem!, to: elem)
            } else {
                // Full buffer: take the head, the sender's value goes to the tail.
                bufPop(into: elem)
                bufPush(from: sg.s.pointee.elem!)
            }
            sg.s.pointee.success = true
            return (true, true, sg)
        }
        if qcount > 0 {
            bufPop(into: elem)
            return (true, true, nil)
        }
        if closed { return (true, false, nil) }
        return (false, false, nil)
    }

    /// Lock held: waits on `sendq` or `recvq` with the value slot `elem`,
    /// releasing the lock once parked. Returns the waker's verdict: true if
    /// a value was exchanged (a sent value is gone from `elem`, a received
    /// one is in it), false if woken by `close` (a value to send is still in
    /// `elem`). With `inSudog` (the value fits `Sudog.slot`) the waker works
    /// on the sudog's slot, and the value moves between it and `elem` here;
    /// else on `elem` itself, which pins the stack for the wait (Trim.swift).
    /// Always inlined: as a call of its own, each park retained and released
    /// the channel around it (pingpong 178 -> 222 ns).
    @inlinable @inline(__always)
    func parkLocked(elem: UnsafeMutableRawPointer, sending: Bool, inSudog: Bool) -> Bool {
        let sg = Sudog.acquire()
        if inSudog {
            if sending { moveValue(from: elem, to: sg.slot) }
            sg.s.pointee.elem = sg.slot
        } else {
            sg.s.pointee.elem = elem
            sg.s.pointee.pinsStack = true
        }
        sg.s.pointee.chan = identity
        sg.s.pointee.reason = sending ? .chanSend : .chanReceive
        if sending { sendq.enqueue(sg) } else { recvq.enqueue(sg) }
        sg.park(unlocking: lock)
        let ok = sg.s.pointee.success
        if inSudog && ok != sending { moveValue(from: sg.slot, to: elem) } // received, or not sent
        sg.release()
        return ok
    }

    /// Closes the channel: receivers drain the buffer and then get "closed";
    /// every waiting receiver and sender wakes. Closing twice traps.
    public func close() {
        lock.lock()
        if closed {
            lock.unlock()
            fatalError("close of closed channel")
        }
        closed = true
        var wake: [Sudog] = []
        while let sg = recvq.dequeue() {
            sg.s.pointee.success = false
            wake.append(sg)
        }
        while let sg = sendq.dequeue() {
            sg.s.pointee.success = false
            wake.append(sg)
        }
        lock.unlock()
        for sg in wake { sg.ready() }
    }
}

/// The result of a receive: a value, or the channel was closed (and drained).
/// (A separate enum keeps `Chan<Int?>` unambiguous: `.value(nil)` is a nil
/// that was sent, `.closed` is the end.)
public enum Received<T> {
    /// A value that was sent.
    case value(T)
    /// The channel is closed and its buffer drained: no value will come.
    case closed

    /// The value, or nil when closed (ambiguous for optional `T`; match the
    /// enum there).
    public var value: T? {
        if case .value(let v) = self { return v }
        return nil
    }
}

extension Received: Sendable where T: Sendable {}
extension Received: Equatable where T: Equatable {}

/// The result of a non-blocking receive.
public enum TryReceived<T> {
    /// A value that was sent.
    case value(T)
    /// The channel is closed and its buffer drained.
    case closed
    /// Nothing to receive now (the receive would block).
    case empty
}

extension TryReceived: Sendable where T: Sendable {}
extension TryReceived: Equatable where T: Equatable {}

/// A Go channel carrying values of type `T`.
///
/// `Chan(capacity: 0)` is unbuffered: a send waits for a receiver (a
/// rendezvous). With `capacity: n` up to n values are buffered. Blocking
/// operations park the G (or block a plain thread on a futex); they never
/// block the M. Channels may be used from Gs, plain threads and Swift tasks
/// alike: in async code `try await send(_:)`, `try await receive()` and
/// `for await v in channel` suspend the task instead (AsyncChan.swift), and
/// the blocking forms trap if they would wait there.
///
/// Send on a closed channel, and closing a closed channel, trap with Go's
/// messages. `for v in channel` receives until the channel is closed and
/// drained.
public final class Chan<T: Sendable>: AnyChan, Sequence, @unchecked Sendable {
    // @unchecked: the buffer and indices are guarded by `lock` (`buf` is
    // `@exclusivity(unchecked)`: the lock, not a dynamic check, keeps it apart).
    /// The ring of `capacity` values, made when the first value is buffered
    /// (guarded by `lock`): a channel that never buffers a value, such as an
    /// idle client's send queue, costs no buffer.
    @exclusivity(unchecked) @usableFromInline var buf: UnsafeMutablePointer<T>?

    /// Makes a channel. `capacity` 0 (the default) is unbuffered.
    public init(capacity: Int = 0) {
        super.init(bufferSize: capacity)
    }

    deinit {
        guard let buf else { return }
        var i = st.pointee.recvx
        for _ in 0..<qcount {
            (buf + i).deinitialize(count: 1)
            i = i + 1 == capacity ? 0 : i + 1
        }
        buf.deallocate()
    }

    @inlinable override func bufPush(from elem: UnsafeMutableRawPointer) {
        let x = st.pointee.sendx
        let b = buf ?? makeBuffer()
        (b + x).moveInitialize(from: elem.assumingMemoryBound(to: T.self), count: 1)
        st.pointee.sendx = x + 1 == capacity ? 0 : x + 1
        st.pointee.qcount += 1
    }

    @usableFromInline @inline(never)
    func makeBuffer() -> UnsafeMutablePointer<T> {
        let b = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(capacity, 1))
        buf = b
        return b
    }

    @inlinable override func bufPop(into elem: UnsafeMutableRawPointer) {
        let x = st.pointee.recvx
        elem.assumingMemoryBound(to: T.self).moveInitialize(from: buf! + x, count: 1) // (pushed before)
        st.pointee.recvx = x + 1 == capacity ? 0 : x + 1
        st.pointee.qcount -= 1
    }

    @inlinable override func moveValue(from src: UnsafeMutableRawPointer, to dst: UnsafeMutableRawPointer) {
        dst.assumingMemoryBound(to: T.self).moveInitialize(from: src.assumingMemoryBound(to: T.self), count: 1)
    }

    /// Sends `value`, parking until a receiver takes it or there is room.
    @inlinable public func send(_ value: T) {
        GMP.chaosPoint()
        withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { slot in
            let p = slot.baseAddress!
            p.initialize(to: value)
            let raw = UnsafeMutableRawPointer(p)
            lock.lock()
            // The common case on a straight path: room in the buffer and no
            // receiver waiting (what `sendLocked` does then, spelled out).
            if !closed && recvq.isEmpty && qcount < capacity {
                bufPush(from: raw)
                lock.unlock()
                return
            }
            let (sent, wake) = sendLocked(raw)
            if sent {
                lock.unlock()
                wake?.ready()
                return
            }
            if !parkLocked(elem: raw, sending: true, inSudog: Sudog.fitsSlot(T.self)) {
                p.deinitialize(count: 1)
                fatalError("send on closed channel")
            }
        }
    }

    /// Sends `value` if that can be done without waiting. Returns false if
    /// it would block. Traps if the channel is closed.
    @inlinable public func trySend(_ value: T) -> Bool {
        withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { slot in
            let p = slot.baseAddress!
            p.initialize(to: value)
            lock.lock()
            let (sent, wake) = sendLocked(UnsafeMutableRawPointer(p))
            lock.unlock()
            if sent {
                wake?.ready()
            } else {
                p.deinitialize(count: 1)
            }
            return sent
        }
    }

    /// Receives a value, parking until one is available, or `.closed` once
    /// the channel is closed and drained.
    @inlinable public func receive() -> Received<T> {
        GMP.chaosPoint()
        return withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { slot in
            let p = slot.baseAddress!
            let raw = UnsafeMutableRawPointer(p)
            lock.lock()
            // The common case on a straight path: a buffered value and no
            // sender waiting (what `receiveLocked` does then, spelled out).
            if qcount > 0 && sendq.isEmpty {
                bufPop(into: raw)
                lock.unlock()
                return .value(p.move())
            }
            let (done, received, wake) = receiveLocked(raw)
            if done {
                lock.unlock()
                wake?.ready()
                return received ? .value(p.move()) : .closed
            }
            return parkLocked(elem: raw, sending: false, inSudog: Sudog.fitsSlot(T.self)) ? .value(p.move()) : .closed
        }
    }

    /// Receives without waiting: a value, `.closed`, or `.empty`.
    @inlinable public func tryReceive() -> TryReceived<T> {
        withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { slot in
            let p = slot.baseAddress!
            lock.lock()
            let (done, received, wake) = receiveLocked(UnsafeMutableRawPointer(p))
            lock.unlock()
            wake?.ready()
            if !done { return .empty }
            return received ? .value(p.move()) : .closed
        }
    }

    override func deinitSlot(_ p: UnsafeMutableRawPointer) {
        p.assumingMemoryBound(to: T.self).deinitialize(count: 1)
    }

    override func freeSlot(_ p: UnsafeMutableRawPointer, initialized: Bool) {
        let t = p.assumingMemoryBound(to: T.self)
        if initialized { t.deinitialize(count: 1) }
        t.deallocate()
    }

    /// Iterates over received values until the channel is closed and drained.
    public struct Iterator: IteratorProtocol {
        @usableFromInline let chan: Chan<T>
        @inlinable init(chan: Chan<T>) { self.chan = chan }
        /// The next value received, or nil once the channel is closed and drained.
        @inlinable public mutating func next() -> T? {
            if case .value(let v) = chan.receive() { return v }
            return nil
        }
    }

    /// An iterator that receives until the channel is closed and drained.
    @inlinable public func makeIterator() -> Iterator { Iterator(chan: self) }
}

/// Closes `channel`; closing a nil channel traps, as in Go.
public func close<T>(_ channel: Chan<T>?) {
    guard let channel else { fatalError("close of nil channel") }
    channel.close()
}
