import GMP

// Channels in async code.
//
// In an `async` context, `try await chan.send(v)` and `try await
// chan.receive()` pick these overloads. A task waits on a channel as a G or
// a plain thread does, with a sudog on the channel's queue, so Gs, tasks
// and threads meet one another in any combination; but the task suspends
// instead of blocking its thread: the sudog holds its continuation
// (`SudogState.resume`), `Sudog.ready()` resumes it, and the thread goes
// back to Swift's pool meanwhile. (The blocking forms trap when they would
// wait inside a task: Sudog.blockedTaskMessage.)
//
// First the operation is tried without waiting (`trySend`, `tryReceive`).
// Else the task takes a sudog, puts its value slot in it (the sudog's slot
// when the value fits, a heap cell when not: a task's frame is no place a
// waker may write into), and suspends: under the channel's lock it tries
// once more, and only if that fails (and the task is not cancelled yet)
// stores the continuation and enqueues the sudog.
//
// Cancellation. The wait runs inside `withTaskCancellationHandler`. The
// handler takes the channel's lock; if the sudog is still queued, no waker
// has it, so the handler removes it, marks it `cancelled` and resumes the
// task, which throws `CancellationError`: a value to send is still in the
// slot and is destroyed, never delivered. If a waker dequeued it first, the
// exchange has happened and the operation returns normally (a cancelled
// task learns of it at its next check). A cancel before the enqueue is seen
// by the `Task.isCancelled` check under the lock: Swift sets the flag before
// it runs handlers, and the handler finds nothing to remove.
//
// The deadlock check cannot see what a task will do; it sees the threads
// that could run it (GMP's Deadlock.swift): a task that waits on a channel
// while a timer or a thread of Swift's or Dispatch's can still move it keeps
// the check from reporting.

extension AnyChan {
    /// Suspends the current task on `sendq` (or `recvq`) with `sg`, whose
    /// `elem` is set, unless `attempt` completes the operation under the
    /// lock first or the task is cancelled. `attempt` runs with the lock
    /// held and returns whether the operation completed, whether a value
    /// was exchanged, and a party to ready. After this returns, `sg` holds
    /// the verdict: `cancelled`, or `success` (false: closed).
    func suspend(_ sg: Sudog, sending: Bool,
                 attempt: () -> (done: Bool, exchanged: Bool, wake: Sudog?)) async {
        sg.s.pointee.chan = identity
        sg.s.pointee.reason = sending ? .chanSend : .chanReceive
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (k: UnsafeContinuation<Void, Never>) in
                lock.lock()
                let (done, exchanged, wake) = attempt()
                if done {
                    sg.s.pointee.success = exchanged
                    lock.unlock()
                    wake?.ready()
                    k.resume()
                } else if Task.isCancelled {
                    sg.s.pointee.cancelled = true
                    lock.unlock()
                    k.resume()
                } else {
                    sg.s.pointee.resume = k
                    if sending { sendq.enqueue(sg) } else { recvq.enqueue(sg) }
                    lock.unlock()
                }
            }
        } onCancel: {
            self.lock.lock()
            let removed = sending ? self.sendq.remove(sg) : self.recvq.remove(sg)
            if removed { sg.s.pointee.cancelled = true }
            self.lock.unlock()
            if removed { sg.ready() } // no waker has it: resume the task ourselves
        }
        sg.resumed()
    }
}

extension Chan {
    /// Sends `value` from async code: suspends the task (not its thread)
    /// until a receiver (a G, a task or a thread) takes the value or the
    /// buffer has room.
    ///
    /// Throws `CancellationError` if the task is cancelled while it waits;
    /// the value is then not delivered and the channel is as if the send had
    /// never begun. A send that can complete at once completes, cancelled or
    /// not. Traps if the channel is closed, or closed while the task waits,
    /// as a send from a G does.
    public func send(_ value: T) async throws(CancellationError) {
        if trySend(value) { return }
        let sg = Sudog.acquireForTask()
        defer { sg.release() }
        let (elem, heap) = Self.valueSlot(in: sg)
        elem.initialize(to: value)
        let raw = UnsafeMutableRawPointer(elem)
        sg.s.pointee.elem = raw
        await suspend(sg, sending: true) {
            let (sent, wake) = sendLocked(raw)
            return (sent, sent, wake)
        }
        let sent = sg.s.pointee.success && !sg.s.pointee.cancelled
        if !sent { elem.deinitialize(count: 1) }
        heap?.deallocate()
        if sg.s.pointee.cancelled { throw CancellationError() }
        if !sent { fatalError("send on closed channel") }
    }

    /// Receives a value from async code: suspends the task (not its thread)
    /// until a value is available, or returns `.closed` once the channel is
    /// closed and drained.
    ///
    /// Throws `CancellationError` if the task is cancelled while it waits;
    /// no value is then taken from the channel. A receive that can complete
    /// at once completes, cancelled or not.
    public func receive() async throws(CancellationError) -> Received<T> {
        switch tryReceive() {
        case .value(let v): return .value(v)
        case .closed: return .closed
        case .empty: break
        }
        let sg = Sudog.acquireForTask()
        defer { sg.release() }
        let (elem, heap) = Self.valueSlot(in: sg)
        defer { heap?.deallocate() }
        let raw = UnsafeMutableRawPointer(elem)
        sg.s.pointee.elem = raw
        await suspend(sg, sending: false) {
            let (done, received, wake) = receiveLocked(raw)
            return (done, received, wake)
        }
        if sg.s.pointee.cancelled { throw CancellationError() }
        return sg.s.pointee.success ? .value(elem.move()) : .closed
    }

    /// Where a waiting task's value lives: the sudog's slot when a `T` fits
    /// there, else a heap cell (returned as `heap`, for the caller to free).
    private static func valueSlot(in sg: Sudog) -> (UnsafeMutablePointer<T>, heap: UnsafeMutablePointer<T>?) {
        if Sudog.fitsSlot(T.self) { return (sg.slot.assumingMemoryBound(to: T.self), nil) }
        let cell = UnsafeMutablePointer<T>.allocate(capacity: 1)
        return (cell, cell)
    }
}

extension Chan: AsyncSequence {
    public typealias Failure = Never

    /// Receives values in async code (`for await v in chan`) until the
    /// channel is closed and drained, or the task is cancelled (then it
    /// ends, as `AsyncStream`'s iteration does, and no value is lost: one
    /// is taken only when it is returned).
    public struct AsyncIterator: AsyncIteratorProtocol {
        let chan: Chan<T>
        public mutating func next() async -> T? {
            guard case .value(let v)? = try? await chan.receive() else { return nil }
            return v
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(chan: self) }
}
