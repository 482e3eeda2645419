import CGMP

// Gs as an executor for Swift tasks (SE-0417's TaskExecutor).
//
// `GMP.executor` runs each job a task enqueues (its start, and each resumption
// after a suspension) as a G: `enqueue` starts a G that runs the job and ends.
// So a task with this executor preference runs on our Ms and Ps, on the run
// queues beside the Gs, and a G that wakes such a task (a channel send, the
// end of a `GMP.await`) puts it on its own P's `runnext`, as it would a G:
// the round trip stays on one core, with no thread woken in Swift's pool.
//
// A job's synchronous part runs on the G's stack (GMP.stackSize); its async
// frames live in the task's own allocator, as on any executor. A job must
// run to its next suspension on one thread: Swift keeps the running task in
// thread-local state, and a G that switched away mid-job would resume on
// whatever M picks it up, with another task (or none) recorded there (seen:
// the task allocator's "freed pointer was not the last allocation"). So the
// G is marked (`runsJob`) while the job runs, and
//  - a switch away (a blocking channel operation, select, sleep, yield, a
//    Mutex or socket wait, GMP.await) traps on the scheduler's side with a
//    message pointing to the async forms;
//  - `GMP.blocking` leaves the P as in any G (sysmon hands it on, and a
//    stop-the-world can stop it), and its body runs as on a plain thread: a
//    channel operation, `sleep` or a Mutex in it blocks the thread, as
//    documented, instead of switching the G away. On return the G takes
//    its P back, or any idle one, on the same thread; failing both, the
//    thread waits for one (Scheduler.exitsyscallSlow) instead of queueing
//    the G for another M. A long computation holds its P as any G's does;
//  - chaos scheduling (Chaos.swift) never yields such a G.
// The blocking channel forms trap for a task on Swift's pool as well, but
// there only where a thread would sleep in a channel wait (Sudog.swift).
//
// The deadlock check cannot see when a suspended task will be enqueued
// again (by Swift's timers, an actor, another executor), but it sees the
// thread that will do it: a Dispatch timer pending, or a thread that runs,
// is not a quiet wait, and nothing is reported (Deadlock.swift).
//
// Jobs enqueued from outside the runtime (a timer of Swift's, another
// executor) go to the global run queue, as `go` from a plain thread does.

/// Runs Swift tasks as Gs: see `GMP.executor`.
public final class GMPTaskExecutor: TaskExecutor {
    fileprivate init() {}

    /// Starts a G that runs `job`.
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        go { [self] in
            let g = currentM()!.pointee.curg!
            g.s.pointee.runsJob = true
            job.runSynchronously(on: asUnownedTaskExecutor())
            g.s.pointee.runsJob = false
        }
    }
}

extension Scheduler {
    /// A G running a task's job switched away (parked, slept, yielded): the
    /// job would go on, later, on whatever M picks the G up, where Swift's
    /// thread-local record of the running task is not its own. Fatal.
    func jobSwitchedAway(_ g: G) -> Never {
        let what = g.s.pointee.waitReason == .unknown ? "a yield or wait" : "\(g.s.pointee.waitReason.description)"
        gmp_fatal("fatal error: a task on GMP.executor blocked its goroutine (\(what)): a task's job must run to its "
                  + "next await on one thread, since Swift keeps the running task in thread-local state; use the async "
                  + "forms (`try await chan.receive()`, `try await chan.send(v)`, `Task.sleep`, `Task.yield`)")
    }
}

extension GMP {
    /// A `TaskExecutor` that runs tasks on the runtime's Ms and Ps, as Gs:
    /// `Task(executorPreference: GMP.executor) { ... }`, or
    /// `withTaskExecutorPreference(GMP.executor) { ... }` for a scope.
    public static let executor = GMPTaskExecutor()
}
