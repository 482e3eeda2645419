import CGMP
import Synchronization

/// A record of one waiting party in a wait queue (Go's `sudog`): the G, the
/// Swift task, or the plain thread that waits, a pointer to its value slot,
/// and which `select` it belongs to. The building block for channels; cached
/// per P.
///
/// Fields are owned by whoever holds the lock of the queue the sudog is on,
/// and by the waiting party itself before it enqueues and after it wakes.
@usableFromInline package struct SudogState {
    /// Room for a value of up to `Sudog.slotSize` bytes (alignment up to 8)
    /// that the waker moves in or out while the party waits, instead of a
    /// slot on the party's stack. See `slot`. First, so that its address is
    /// the state's (no offset to look up on the channel paths).
    var storage: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    /// The waiting G, or nil for a task (`resume`) or a plain thread (which
    /// sleeps on `note`).
    @usableFromInline package var g: G?
    /// For a Swift task that waits (suspended, not blocking a thread): the
    /// continuation `ready()` resumes. Set by the task before it enqueues.
    @usableFromInline package var resume: UnsafeContinuation<Void, Never>?
    /// For a task: set, under the queue's lock, by a cancellation that took
    /// the sudog off its queue before any waker did.
    @usableFromInline package var cancelled = false
    /// Value slot of the waiting party: a sender's value to move out, or a
    /// receiver's uninitialized slot to move a value into.
    @usableFromInline package var elem: UnsafeMutableRawPointer?
    /// Set by the waker: true if a value was exchanged, false if woken by close.
    @usableFromInline package var success = false
    /// For `select`: the select's shared state (nil for plain operations).
    @usableFromInline package var select: UnsafeMutableRawPointer?
    /// For `select`: which case this sudog stands for.
    @usableFromInline package var caseIndex = 0
    /// The channel (identity) this sudog waits on.
    @usableFromInline package var chan: UnsafeMutableRawPointer?
    /// Links in a wait queue.
    @usableFromInline package var next: Sudog?
    @usableFromInline package var prev: Sudog?
    /// Why the party waits (for the goroutine dump), set before it parks.
    @usableFromInline package var reason = WaitReason.unknown
    /// Set when `elem` points into the waiting G's own stack: the waker will
    /// copy a value into or out of it, so the stack must stay whole while
    /// the G waits (it is not trimmed, Trim.swift). Use `slot` instead where
    /// the value fits.
    @usableFromInline package var pinsStack = false

    /// Thread parker, for plain threads only.
    var note: Note?
    /// For a plain thread waiting on several sudogs at once (`select`): the
    /// parker of the one it sleeps on.
    var sharedNote: Note?
}

/// Handle to a pooled `SudogState`.
@usableFromInline package struct Sudog: Equatable, @unchecked Sendable {
    // @unchecked: a sudog is handed between parties under queue locks and the
    // park/ready protocol, which order every access.
    @usableFromInline package let s: UnsafeMutablePointer<SudogState>

    /// Takes a sudog for the caller (its G, or its thread), from the current
    /// P's cache when there is one. Cost: a few loads; an allocation only when
    /// the caches are empty.
    @usableFromInline
    package static func acquire() -> Sudog {
        let sg: Sudog
        if let m = currentM(), let p = m.pointee.p, let cached = p.own.pointee.sudogCache.popLast() {
            sg = cached
        } else {
            sg = Scheduler.shared.sudogGet()
        }
        let g = GMP.currentG
        sg.s.pointee.g = g
        if g == nil && sg.s.pointee.note == nil { sg.s.pointee.note = Note() }
        sg.s.pointee.note?.clear()
        return sg
    }

    /// Takes a sudog for a Swift task, which waits by suspending: it sets
    /// `resume` before it enqueues the sudog, and `ready()` resumes it.
    package static func acquireForTask() -> Sudog {
        Scheduler.shared.sudogGet()
    }

    /// Bytes a value may take to live in `slot`.
    @usableFromInline
    package static let slotSize = 32

    /// A value slot inside the sudog (`slotSize` bytes, 8-aligned), for a
    /// waiting party's value: a waker that moves a value into or out of it
    /// touches the sudog, not the waiter's stack, so the waiter's stack can
    /// be trimmed while it waits.
    @inlinable @inline(__always) package var slot: UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(s) // `storage` is the first field (checked in `Scheduler.sudogGet`)
    }

    /// Whether a `T` fits in `slot`.
    @inlinable @inline(__always) package static func fitsSlot<T>(_: T.Type) -> Bool {
        MemoryLayout<T>.size <= slotSize && MemoryLayout<T>.alignment <= 8
    }

    /// Gives the sudog back (it must be on no queue).
    @usableFromInline
    package func release() {
        s.pointee.elem = nil
        s.pointee.select = nil
        s.pointee.chan = nil
        s.pointee.next = nil
        s.pointee.prev = nil
        s.pointee.success = false
        s.pointee.reason = .unknown
        s.pointee.pinsStack = false
        s.pointee.g = nil
        s.pointee.resume = nil
        s.pointee.cancelled = false
        s.pointee.sharedNote = nil
        if let m = currentM(), let p = m.pointee.p, p.own.pointee.sudogCache.count < 128 {
            p.own.pointee.sudogCache.append(self)
        } else {
            Scheduler.shared.sudogPut(self)
        }
    }

    /// Parks the waiting party, releasing `lock` once it is safely parked
    /// (for a G: on the scheduler's stack). Returns when `ready()` is called.
    @usableFromInline
    package func park(unlocking lock: FutexLock) {
        if let g = s.pointee.g {
            g.noteWait(s.pointee.reason, pinsStack: s.pointee.pinsStack)
            GMP.park(unlocking: lock)
        } else {
            if let message = blockedTaskMessage() {
                lock.unlock()
                gmp_fatal(message)
            }
            let note = s.pointee.note!
            lock.unlock()
            note.sleep()
        }
    }

    /// Nil, unless the plain thread about to sleep here runs a Swift task
    /// and waits on a channel: sleeping would hold a thread of Swift's
    /// cooperative pool (as many threads as cores) for as long as the wait
    /// lasts, and a few such waits hang every task of the process, silently.
    /// Then the message for the trap that replaces the hang. Not on the main
    /// thread (the main actor's, not the pool's) nor on the runtime's own
    /// threads (`GMP.blocking` inside a task's job on `GMP.executor`).
    func blockedTaskMessage() -> String? {
        let what: String
        switch s.pointee.reason {
        case .chanReceive: what = "a channel receive would block; use `try await chan.receive()`"
        case .chanSend: what = "a channel send would block; use `try await chan.send(value)`"
        case .select: what = "a select would block; use the async forms of the channel operations"
        default: return nil
        }
        guard currentM() == nil, !gmp_is_main_thread(), withUnsafeCurrentTask(body: { $0 != nil }) else { return nil }
        return "fatal error: \(what) (in async code a blocking wait holds the task's thread, on Swift's "
            + "concurrency pool one of as many as there are cores, which can hang every task of the process)"
    }

    /// Makes `other` (taken by the same thread for the same wait) wake this
    /// sudog's parker, so a plain thread can wait on several sudogs at once.
    package func shareParker(with other: Sudog) {
        if s.pointee.g == nil { other.s.pointee.sharedNote = s.pointee.note }
    }

    /// Parks the waiting party, releasing every lock in `locks` once it is
    /// safely parked. For `select`, which holds the locks of all its channels.
    package func park(unlocking locks: [FutexLock]) {
        if let g = s.pointee.g {
            g.noteWait(s.pointee.reason, pinsStack: s.pointee.pinsStack)
            GMP.park(unlocking: locks)
        } else {
            if let message = blockedTaskMessage() {
                for l in locks { l.unlock() }
                gmp_fatal(message)
            }
            let note = s.pointee.note!
            for l in locks { l.unlock() }
            note.sleep()
        }
    }

    /// For a task that `ready()` resumed, once it runs again: the waker's
    /// writes to the sudog (the verdict, the value) happen before what the
    /// task reads next. The resume goes through the concurrency runtime and
    /// Dispatch, which ThreadSanitizer does not see into; this tells it.
    package func resumed() {
        gmp_tsan_acquire(UnsafeMutableRawPointer(s))
    }

    /// Wakes the waiting party. Call it after releasing the queue's lock.
    @usableFromInline
    package func ready() {
        if let g = s.pointee.g {
            Scheduler.shared.ready(g)
        } else if let k = s.pointee.resume {
            gmp_tsan_release(UnsafeMutableRawPointer(s)) // see `resumed()`
            k.resume() // the task may release the sudog at once: do not touch it after this
        } else {
            (s.pointee.sharedNote ?? s.pointee.note!).wakeup()
        }
    }
}

extension Scheduler {
    func sudogGet() -> Sudog {
        if let sg = sudogLock.withLock({ sudogFree.popLast() }) { return sg }
        // Sudog.slot relies on this (Swift lays out a struct's fields in order).
        precondition(MemoryLayout<SudogState>.offset(of: \.storage) == 0, "SudogState.storage must come first")
        let s = UnsafeMutablePointer<SudogState>.allocate(capacity: 1)
        s.initialize(to: SudogState())
        return Sudog(s: s)
    }

    func sudogPut(_ sg: Sudog) {
        sudogLock.lock()
        if sudogFree.count < 4096 {
            sudogFree.append(sg)
            sudogLock.unlock()
            return
        }
        sudogLock.unlock()
        sg.s.pointee.note?.free()
        sg.s.deinitialize(count: 1)
        sg.s.deallocate()
    }
}
