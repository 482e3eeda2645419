import CGMP
import Glibc
import Synchronization

// Deadlock detection: "fatal error: all goroutines are asleep - deadlock!"
//
// Go reports a deadlock when no goroutine can ever run again. Here Gs live
// beside plain threads, any of which could ready a G at any time, so the
// rule is narrower, and never reports a program that could still move:
//
//  - some thread waits in `GMP.run` (the program waits for a G that cannot
//    come back), and
//  - no plain thread has ever touched a G (readied or started one, other than
//    `GMP.run`'s own), waited in the runtime (a channel, Mutex, WaitGroup or
//    socket on a thread), or armed a timer, and no Swift task has waited on
//    a channel or been awaited by `GMP.await`: once one has, the check is off
//    for the life of the process (`foreignSeen`), and
//  - every P is idle (no spare lent), no M spins, no G is queued, none is in
//    `GMP.blocking`, no timer is on any heap (a sleeping G is not stuck), and
//    nobody waits on the poller (sockets, signals: the outside world can wake
//    them), and
//  - all of that has held, with no scheduling counter moving, for a second
//    (sysmon looks at each tick; the cheap conditions come first).
//
// A thread (or task) the runtime has never seen is invisible to it: a G
// that waits for a value only such a thread will send, more than a second
// later, is reported. `GMP_DEADLOCK=off` turns the check off; `report` prints the
// report and goes on; `fatal` (the default) prints it and exits with status 2.

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
    /// A plain thread readied or started a G, waits in the runtime or armed a
    /// timer: no deadlock is reported from now on.
    @inline(__always) func noteForeignThread() {
        if !foreignSeen.load(ordering: .relaxed) { foreignSeen.store(true, ordering: .relaxed) }
    }

    /// Whether, right now, no G can run again (see the rule above); sysmon only.
    func looksDeadlocked() -> Bool {
        if deadlockMode == .off || runWaiters.load(ordering: .sequentiallyConsistent) == 0
            || foreignSeen.load(ordering: .relaxed) {
            return false
        }
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
/// and at what progress count.
struct DeadlockWatch {
    var since: Int64 = 0
    var progress = 0
    var reported = false

    /// How long the world must look deadlocked before it is reported.
    static let grace: Int64 = 1_000_000_000

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
        } else if !reported && now - since >= DeadlockWatch.grace {
            reported = true // once per stuck state (`report` mode goes on)
            s.reportDeadlock()
        }
    }
}
