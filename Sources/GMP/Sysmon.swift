import CGMP
import Glibc

/// The system monitor: a thread with no P (Go's `sysmon`).
///
/// It sleeps 20 µs, doubling up to 10 ms while it finds nothing to do, and
/// on each wake-up:
///  - retakes Ps stuck in a blocking call (`GMP.blocking`) for more than
///    one tick when there is other work, and hands them to another M;
///  - counts Gs that have run over 10 ms without parking (`Stats.longRuns`)
///    and ends a P's time slice (so `runnext` ping-pong cannot starve its
///    queue), since Swift code cannot be preempted;
///  - lends a spare P (Spares.swift), at most GMPPROCS at once, when such a
///    G holds a P that has work waiting and no P is idle, and looks every
///    millisecond while one does;
///  - polls the network if nobody has for 10 ms;
///  - reports a deadlock (Deadlock.swift) when every P has been idle, with
///    nothing that could wake a G, for a second;
///  - every 250 ms gives back the memory of free stacks that stayed unused
///    for the whole period, beyond the warm cache;
///  - every quarter of `trimAfter` trims the stacks of Gs parked longer than
///    that (Trim.swift);
///  - prints the `GMP_SCHEDTRACE` line when due.
enum Sysmon {
    static func start(_ s: Scheduler) {
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        var tid = pthread_t()
        let r = pthread_create(&tid, &attr, { _ in
            Sysmon.loop(Scheduler.shared)
        }, nil)
        pthread_attr_destroy(&attr)
        if r != 0 { gmp_fatal("fatal error: cannot start sysmon") }
    }

    static let tick: Int64 = 10_000_000 // 10 ms

    static func loop(_ s: Scheduler) -> Never {
        s.registerOwnThread()
        var idle = 0
        var delay: UInt32 = 20
        var nextScavenge: Int64 = 0
        var nextTrim: Int64 = 0
        var nextTrace = s.schedTraceMs > 0 ? gmp_nanotime() + Int64(s.schedTraceMs) * 1_000_000 : Int64.max
        var deadlock = DeadlockWatch()
        while true {
            if idle == 0 { delay = 20 } else if idle > 50 { delay = min(delay * 2, 10_000) }
            gmp_usleep(delay)
            let now = gmp_nanotime()
            s.coarseNow.store(now, ordering: .relaxed)
            let pl = s.poller
            if pl.hasWaiters && !s.polling.load(ordering: .acquiring)
                && s.lastPoll.load(ordering: .relaxed) + tick < now {
                s.lastPoll.store(now, ordering: .relaxed)
                s.injectglist(pl.poll(delayNanoseconds: 0))
            }
            let (retaken, hogs) = retake(s, now: now)
            s.nhogs.store(hogs.any, ordering: .relaxed)
            if retaken > 0 { idle = 0 } else { idle += 1 }
            // (At most GMPPROCS spares: a hog on a spare is compensated too,
            // and CPU-bound Gs must not fan out into a thread each.)
            let lent = s.nspare.load(ordering: .relaxed)
            if hogs.withWork > lent && lent < s.procs.load(ordering: .relaxed)
                && s.npidle.load(ordering: .sequentiallyConsistent) == 0
                && s.nmspinning.load(ordering: .sequentiallyConsistent) == 0 {
                s.startSpare()
            }
            // While a G holds its P past its slice, look often: work may
            // arrive behind it at any time (a timer, a socket).
            if hogs.any > 0 { delay = min(delay, 1000) }
            deadlock.check(s, now: now)
            if now >= nextScavenge {
                nextScavenge = now + 250_000_000
                s.stackPool.scavenge(keep: s.stackPool.warmLimit, idleOnly: true)
            }
            if now >= nextTrim {
                let after = s.trimAfter.load(ordering: .relaxed)
                nextTrim = now + (after > 0 ? max(after / 4, 5_000_000) : 250_000_000)
                s.trimIdleStacks(now: now)
            }
            if now >= nextTrace {
                let line = Stats.capture(s).traceLine + "\n"
                _ = line.withCString { write(1, $0, strlen($0)) }
                nextTrace = now + Int64(s.schedTraceMs) * 1_000_000
            }
        }
    }

    /// Returns how many Ps were retaken from blocking calls, and how many
    /// Ps have a G running past its slice (`any`), of which `withWork` have
    /// work waiting behind it.
    static func retake(_ s: Scheduler, now: Int64) -> (Int, hogs: (any: Int, withWork: Int)) {
        var n = 0
        var hogs = (any: 0, withWork: 0)
        let nprocs = s.procs.load(ordering: .acquiring)
        // Lent spares too: a G that hogs a spare holds up the work queued
        // behind it there as much as one on a real P (a spare never enters
        // `.syscall`: a blocking call gives it back).
        for i in 0..<(nprocs + s.nsparesMade.load(ordering: .acquiring)) {
            let p = s.anyP(i, nprocs: nprocs)
            switch p.pointee.pstatus {
            case .syscall:
                let t = p.pointee.syscallTick.load(ordering: .relaxed)
                if t != p.sysmon.pointee.syscallTick {
                    p.sysmon.pointee.syscallTick = t
                    p.sysmon.pointee.syscallWhen = now
                    continue
                }
                // Leave it if it has nothing queued, others can take new work,
                // and the call has not gone on for a whole tick.
                if p.pointee.runq.isEmpty
                    && s.nmspinning.load(ordering: .relaxed) + s.npidle.load(ordering: .relaxed) > 0
                    && p.sysmon.pointee.syscallWhen + tick > now {
                    continue
                }
                if p.pointee.status.compareExchange(expected: PStatus.syscall.rawValue, desired: PStatus.idle.rawValue,
                                            ordering: .sequentiallyConsistent).exchanged {
                    s.handoffs.add(1, ordering: .relaxed)
                    s.handoffp(p)
                    n += 1
                }
            case .running:
                let sw = p.pointee.switchTick.load(ordering: .relaxed)
                if sw != p.sysmon.pointee.switchTick {
                    p.sysmon.pointee.switchTick = sw
                    p.sysmon.pointee.switchWhen = now
                    p.sysmon.pointee.flagged = false
                } else if !p.sysmon.pointee.flagged && now - p.sysmon.pointee.switchWhen > tick {
                    p.sysmon.pointee.flagged = true
                    s.longRuns.add(1, ordering: .relaxed)
                }
                if p.sysmon.pointee.flagged {
                    hogs.any += 1
                    let t = p.pointee.timer0When.load(ordering: .acquiring)
                    // (The global queue counts for real Ps only: any M takes
                    // from it, and a spare's hog does not keep it waiting.)
                    if !p.pointee.runq.isEmpty || (t != 0 && t <= now)
                        || (!p.isSpare && s.runqSize.load(ordering: .acquiring) > 0) {
                        hogs.withWork += 1
                    }
                }
                let st = p.pointee.schedTick.load(ordering: .relaxed)
                if st != p.sysmon.pointee.schedTick {
                    p.sysmon.pointee.schedTick = st
                    p.sysmon.pointee.sliceWhen = now
                } else if now - p.sysmon.pointee.sliceWhen > tick {
                    p.pointee.sliceExpired.store(true, ordering: .relaxed)
                    p.sysmon.pointee.sliceWhen = now
                }
            default:
                continue
            }
        }
        return (n, hogs)
    }
}
