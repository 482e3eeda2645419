import CGMP
import Synchronization

// Spare Ps: compensation for a G that keeps its P.
//
// Swift code cannot be preempted safely, and a P cannot be taken from a G
// that runs on it without an ownership check on every hot path (see the
// design comment in Scheduler.swift). So when a G runs past its time slice
// while work waits behind it, sysmon lends a spare P to an M instead: one
// more P than GMPPROCS, for as long as there is something to do.
//
// Protocol:
//  - sysmon (`Sysmon.retake`) counts the Ps, real and lent spares alike,
//    whose G has run over 10 ms without a switch and that have work
//    waiting: queued Gs, a due timer, or (for a real P) Gs on the global
//    queue. If there are more of those than spares lent, fewer than
//    GMPPROCS spares are lent (CPU-bound Gs must not fan out into a
//    thread each), no P is idle and no M spins, it calls `startSpare`: a
//    spare P (a free one, or a new one up to `maxSpares`, its sysmon
//    history cleared) goes to an M that starts spinning.
//  - The M runs the ordinary scheduler loop on it. A spare is not in
//    `0..<procs` (it is published in `allp` from `maxProcs` up, and
//    `nsparesMade` says how far), and is the only P its M touches: it steals
//    from the others (even the only real one, with GMPPROCS=1), runs their
//    due timers in its last steal round, polls, and runs what it finds.
//  - A lent spare is a P like any other to the rest: thieves steal from it
//    (`stealWork` walks the real Ps and then every spare ever made, skipping
//    those not lent), its queue counts in the re-check before an M sleeps,
//    its timers in `earliestTimer` (the poller's time-out), and a G that
//    hogs it is compensated with another spare. So work that lands on a
//    spare (a G it readies, starts or polls, a timer on its heap) runs as
//    soon as any P is free, not only when the spare's own G lets go.
//  - When it finds nothing, when the world is being stopped, or when there
//    are more spares lent than Ps with a G past its slice (the hog parked:
//    `sparesUnwanted`, looked at each time the M schedules), the M gives the
//    spare back (`retireSpare`): anything left in its queue goes to the
//    global queue, its timers move to P 0's heap (where every M sees them),
//    and the P returns to the free list. So a G that yields in a loop, or a
//    pair that ping-pongs, on a spare cannot keep it lent after the hog is
//    gone: GMPPROCS Ps again. A G on a spare that enters `GMP.blocking`
//    gives it back the same way (`entersyscall`): sysmon retakes only real
//    Ps, so the spare would otherwise stay lent for the call's length.
//  - A spare never becomes an idle P and is never counted by a
//    stop-the-world: its G may run on while the world is stopped, touching
//    only its own P and shared state under its locks. A G on a spare that
//    calls `setProcs` resizes as a plain thread does.
//
// Spare Ps have ids from `Scheduler.maxProcs` up (`GMP.currentProcessor`
// shows them); at most `maxSpares` are made.

extension Scheduler {
    /// Lends a spare P to an M (sysmon only). Does nothing while the world is
    /// being stopped or when every spare is lent.
    func startSpare() {
        lock.lock()
        if stopRequested.load(ordering: .acquiring) {
            lock.unlock()
            return
        }
        var spare = spareFree
        if let p = spare {
            spareFree = p.sched.pointee.link
            p.sched.pointee.link = nil
        } else if spareAll.count < Scheduler.maxSpares {
            let p = P.allocate(capacity: 1)
            p.initialize(to: PState(id: Scheduler.maxProcs + spareAll.count))
            publishSpare(p, spareAll.count)
            spareAll.append(p)
            nsparesMade.store(spareAll.count, ordering: .releasing)
            spare = p
        }
        guard let p = spare else {
            lock.unlock()
            return
        }
        p.sysmon.pointee = PSysmon() // (a spare lent again starts with no history: sysmon is the caller)
        nspare.add(1, ordering: .relaxed)
        spareLends.add(1, ordering: .relaxed)
        lock.unlock()
        nmspinning.add(1, ordering: .sequentiallyConsistent) // startm's contract for a spinning start
        startm(p, spinning: true)
    }

    /// Gives back the spare P that `m` holds (its owner only): its queued Gs
    /// go to the global queue, its timers to P 0, the P to the free list.
    /// `m` is left without a P.
    func retireSpare(_ m: M) {
        let p = releasep(m)
        precondition(p.isSpare, "retireSpare: not a spare P")
        var moved = GList()
        for item in p.pointee.runq.drain() { moved.push(G.from(bits: item)) }
        p.pointee.timerLock.lock()
        let entries = p.timers.pointee.takeAll()
        p.pointee.timer0When.store(0, ordering: .releasing)
        p.pointee.timerLock.unlock()
        var first: Int64 = 0
        if !entries.isEmpty {
            let heir = allP(0)
            heir.pointee.timerLock.lock()
            for e in entries { heir.timers.pointee.pushOwned(e) }
            first = heir.timers.pointee.first?.when ?? 0
            heir.pointee.timer0When.store(first, ordering: .releasing)
            heir.pointee.timerLock.unlock()
        }
        lock.lock()
        if !moved.isEmpty { globrunqputbatch(moved) }
        p.pointee.status.store(PStatus.stopped.rawValue, ordering: .releasing)
        p.sched.pointee.link = spareFree
        spareFree = p
        nspare.subtract(1, ordering: .relaxed)
        lock.unlock()
        if first != 0 { wakeNetPoller(first) }
        if !moved.isEmpty { wakeP() }
    }

    /// Whether `m` holds a spare P that is no longer needed: more spares are
    /// lent than Ps have a G past its slice (sysmon's last count).
    @inline(__always) func sparesUnwanted(_ m: M) -> Bool {
        m.pointee.p!.isSpare && nspare.load(ordering: .relaxed) > nhogs.load(ordering: .relaxed)
    }

    /// Every spare P ever made (for stats).
    func allSpares() -> [P] {
        lock.withLock { spareAll }
    }
}
