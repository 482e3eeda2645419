// Async code in a G: `GMP.await { try await something() }`.
//
// The closure runs as a Swift task that prefers `GMP.executor` (Executor.swift):
// its jobs run as Gs, so from a G the task starts on the caller's P and, when
// it ends, readies the caller there, with no thread of Swift's pool woken
// either way (what it awaits may run elsewhere: a task it starts without the
// preference, an actor). The G that called parks, as on a channel, and its
// M and P go on running other Gs. When the task finishes it stores its
// result and readies the G, which returns the value or rethrows the error.
// From a plain thread (no G) the thread itself sleeps until then.
//
// The hand-over, under `lock`: the task sets `done` and readies the G only
// if the G has parked (`parked`); the G parks only if the task is not done
// yet, and is released from the lock once parked (GMP.park(unlocking:)), so
// the task's ready can never come before the park it ends.
//
// The deadlock check sees a task through the threads it runs on: while a
// task runs, or waits for a timer or I/O of Swift's or Dispatch's, some
// thread is not quietly blocked, and no deadlock is reported
// (Deadlock.swift).

/// What one `GMP.await` call shares with its task.
private final class AwaitState<T: Sendable, E: Error>: @unchecked Sendable {
    // @unchecked: `result`, `done` and `parked` are guarded by `lock`; the
    // waiting party reads `result` after the hand-over above, which orders it.
    let lock = FutexLock(compact: ())
    @exclusivity(unchecked) var result: Result<T, E>?
    @exclusivity(unchecked) var done = false
    @exclusivity(unchecked) var parked = false
    /// The G that waits, or nil for a plain thread (which sleeps on `note`).
    let g: G?
    let note: Note?

    init(g: G?) {
        self.g = g
        note = g == nil ? Note() : nil
    }

    deinit {
        lock.free()
        note?.free()
    }

    /// The task's end: store the result and wake whoever waits.
    func finish(_ r: Result<T, E>) {
        lock.lock()
        result = r
        done = true
        let wake = parked
        lock.unlock()
        if let g {
            if wake { GMP.ready(g) }
        } else {
            note!.wakeup()
        }
    }
}

extension GMP {
    /// Runs `body` as a Swift task and waits for it: in a G, only the G
    /// parks (its M and P run other Gs meanwhile); on a plain thread, the
    /// thread sleeps. Returns the task's value or rethrows its error, with
    /// its type (`GMP.await { 42 }` needs no `try`).
    ///
    /// The task prefers `GMP.executor`: its jobs run as Gs, so `body` is
    /// async code in full, and a blocking wait inside it (a sync channel
    /// operation, a socket read, `sleep`, a `Mutex`) traps with a message
    /// naming the async form; `GMP.blocking` works there. To cancel the task
    /// from the G's side, pass a `Context` (`GMP.await(context:_:)`, in the
    /// Contexts module).
    public static func `await`<T: Sendable, E: Error>(_ body: @escaping @Sendable () async throws(E) -> T) throws(E) -> T {
        try awaitTask(body, started: nil)
    }

    /// `await(_:)`, calling `started` with the task's handle once it is
    /// made, before the caller waits (so that it can cancel the task).
    package static func awaitTask<T: Sendable, E: Error>(_ body: @escaping @Sendable () async throws(E) -> T,
                                                         started: ((Task<Void, Never>) -> Void)?) throws(E) -> T {
        let state = AwaitState<T, E>(g: currentG)
        let task = Task(executorPreference: GMP.executor) {
            let r: Result<T, E>
            do throws(E) { r = .success(try await body()) } catch { r = .failure(error) }
            state.finish(r)
        }
        started?(task)
        if let g = state.g {
            state.lock.lock()
            if state.done {
                state.lock.unlock()
            } else {
                state.parked = true
                g.noteWait(.await)
                GMP.park(unlocking: state.lock)
            }
        } else {
            state.note!.sleep()
        }
        state.lock.lock()
        let r = state.result!
        state.lock.unlock()
        return try r.get()
    }
}
