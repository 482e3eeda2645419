import CGMP
import Glibc
import Synchronization

// Deadlock detection: "fatal error: all goroutines are asleep - deadlock!"
//
// Go reports a deadlock when no goroutine can ever run again. Here Gs live
// beside threads the runtime does not own (the main thread, the user's own,
// Swift's cooperative pool, Dispatch's workers), any of which could ready a
// G at any time, so a report needs a proof that none of them can. The rule,
// which never reports a program that could still move:
//
//  - some thread waits in `GMP.run` (the program waits for a G), and
//  - every P is idle (no spare lent), no M spins, no G is queued, none is in
//    `GMP.blocking`, no timer is on any heap (a sleeping G is not stuck), and
//    nobody waits on the poller (sockets, signals: the outside world can wake
//    them), and
//  - all of that has held, with no scheduling counter moving, for a second
//    (sysmon looks at each tick; the cheap conditions come first), and then
//  - every thread of the process that is not the runtime's own (its Ms,
//    sysmon, the SIGQUIT watcher) sits in a *quiet* wait: blocked with no
//    time-out where only another thread of the process can wake it (a
//    private futex: a mutex, a condition variable, a semaphore, a channel
//    or `GMP.run` waited on by a plain thread; `sigsuspend`; an epoll wait
//    on nothing but eventfds and disarmed timerfds, as Dispatch's idle
//    manager), as /proc/self/task shows it twice in a row with no thread
//    having run in between (CGMP's threads.c), and the scheduler's counters
//    still have not moved. A thread that sleeps, waits with a time-out
//    (`Task.sleep` and `asyncAfter` arm one of Dispatch's timers), reads a
//    pipe or a socket, polls, or runs means "cannot tell": nothing is
//    reported, and sysmon looks again (at most every 100 ms) while the
//    world stays still. So does a signal the process could send itself
//    (an armed `alarm`/`setitimer`, a POSIX timer, a child process); one
//    from another process is outside the rule, as in Go.
//
// So a G that waits for a Swift task, a Dispatch timer or a thread of the
// user's that is still doing something is never reported, however long it
// waits; a program whose every thread is stuck is, wherever its threads
// touched the runtime before. `GMP_DEADLOCK=off` turns the check off;
// `report` prints the report and goes on; `fatal` (the default) prints it
// and exits with status 2.

/// What to do about a deadlock (`GMP_DEADLOCK`).
enum DeadlockMode {
    case off, report, fatal

    init(environment value: String?) {
        switch value {
        case nil, "fatal": self = .fatal
        case "report": self = .report
        case "off": self = .off
        case let v?: gmp_fatal("fatal error: GMP_DEADLOCK=\(v) must be off, report or fatal")
        }
    }
}

extension Scheduler {
    /// Adds the calling thread to the runtime's own (an M, sysmon, the
    /// SIGQUIT watcher), which the deadlock check does not ask about.
    func registerOwnThread() {
        let tid = gmp_gettid()
        ownThreadsLock.lock()
        ownThreads.append(tid)
        ownThreadsLock.unlock()
    }

    /// Whether every thread that is not the runtime's own sits in a quiet
    /// wait (see the rule above); sysmon only.
    func foreignThreadsQuiet() -> Bool {
        ownThreadsLock.lock()
        let own = ownThreads
        ownThreadsLock.unlock()
        return own.withUnsafeBufferPointer { gmp_threads_quiet($0.baseAddress, Int32($0.count)) }
    }

    /// Whether, right now, no G can run again (see the rule above); sysmon only.
    func looksDeadlocked() -> Bool {
        if deadlockMode == .off || runWaiters.load(ordering: .sequentiallyConsistent) == 0 { return false }
        let n = procs.load(ordering: .acquiring)
        guard npidle.load(ordering: .sequentiallyConsistent) == n, nspare.load(ordering: .relaxed) == 0,
              nmspinning.load(ordering: .sequentiallyConsistent) == 0, runqSize.load(ordering: .acquiring) == 0,
              nsyscall.load(ordering: .relaxed) == 0, !stopRequested.load(ordering: .acquiring) else { return false }
        for i in 0..<n where allP(i).pointee.timer0When.load(ordering: .acquiring) != 0 { return false }
        return !poller.hasWaiters
    }

    /// A number that changes whenever the scheduler does anything: created,
    /// parked, readied or scheduled Gs.
    func progress() -> Int {
        var sum = createdNoP.load(ordering: .relaxed) &+ readiesNoP.load(ordering: .relaxed)
        for i in 0..<procs.load(ordering: .acquiring) {
            let p = allP(i)
            sum = sum &+ p.pointee.created.load(ordering: .relaxed) &+ p.pointee.parks.load(ordering: .relaxed)
                &+ p.pointee.readies.load(ordering: .relaxed) &+ Int(p.pointee.schedTick.load(ordering: .relaxed))
        }
        return sum
    }

    /// Prints the deadlock report; exits with status 2 unless the mode is `report`.
    func reportDeadlock() {
        let st = Stats.capture(self)
        var text = "fatal error: all goroutines are asleep - deadlock!\n\n"
        text += "\(st.parked) goroutine(s) parked; none runnable, in a blocking call, sleeping on a timer or waiting "
        text += "on a socket; GMP.run waits for ever.\n"
        text += "(GMP_DEADLOCK=off turns this check off, =report reports without exiting.)\n\n" + dump()
        _ = text.withCString { write(2, $0, strlen($0)) }
        if deadlockMode == .fatal { _exit(2) }
    }
}

/// sysmon's view of a possible deadlock: since when it has looked like one,
/// at what progress count, and when it may next ask the threads.
struct DeadlockWatch {
    var since: Int64 = 0
    var progress = 0
    var reported = false
    var nextLook: Int64 = 0

    /// How long the world must look deadlocked before it is reported.
    static let grace: Int64 = 1_000_000_000
    /// How often, at most, the threads are asked while they cannot tell.
    static let relook: Int64 = 100_000_000

    /// One look, at `now` (sysmon only).
    mutating func check(_ s: Scheduler, now: Int64) {
        guard s.looksDeadlocked() else {
            since = 0
            reported = false
            return
        }
        let p = s.progress()
        if since == 0 || p != progress {
            since = now
            progress = p
            reported = false
        } else if !reported && now - since >= DeadlockWatch.grace && now >= nextLook {
            nextLook = now + DeadlockWatch.relook
            // The threads, then the scheduler again: nothing moved meanwhile.
            guard s.foreignThreadsQuiet(), s.looksDeadlocked(), s.progress() == p else { return }
            reported = true // once per stuck state (`report` mode goes on)
            s.reportDeadlock()
        }
    }
}
