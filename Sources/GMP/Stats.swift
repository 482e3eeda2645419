import CGMP
import Synchronization

/// A snapshot of the scheduler (`GMP.stats`). Counters are read without
/// stopping anything, so a snapshot taken while Gs run is approximate.
public struct Stats: Sendable, CustomStringConvertible {
    /// Milliseconds since the runtime started.
    public var uptimeMs: Int
    /// Number of Ps (GMPPROCS).
    public var procs: Int
    /// Ps with nothing to run.
    public var idleProcs: Int
    /// Worker threads (Ms) ever started.
    public var threads: Int
    /// Ms parked with nothing to do.
    public var idleThreads: Int
    /// Ms looking for work.
    public var spinningThreads: Int
    /// Gs ever created.
    public var created: Int
    /// Gs created and not yet finished.
    public var live: Int
    /// Gs waiting in run queues (global plus local).
    public var runnable: Int
    /// Gs parked (channel, lock, timer, I/O).
    public var parked: Int
    /// Length of the global run queue.
    public var globalQueue: Int
    /// Length of each P's local queue (including `runnext`).
    public var localQueues: [Int]
    /// Gs each P has run (time slices started).
    public var schedTicks: [Int]
    /// Successful steals from other Ps.
    public var steals: Int
    /// Times sysmon saw a G run over 10 ms without parking.
    public var longRuns: Int
    /// Ps retaken from blocking calls and handed to other Ms.
    public var handoffs: Int
    /// Spare Ps lent now, beyond GMPPROCS, because a G keeps its P past its
    /// time slice while work waits behind it.
    public var spareProcs: Int
    /// Times a spare P was lent.
    public var spareLends: Int
    /// Timer entries on the heaps (armed, or stopped and not yet dropped).
    public var timers: Int
    /// Stacks ever mapped.
    public var stacksMapped: Int
    /// Parked Gs whose stack pages were given back (GMP.stackTrimAfter), now.
    public var trimmedStacks: Int
    /// Times a stack was trimmed, ever.
    public var stackTrims: Int
    /// Bytes of the trimmed Gs' stacks kept aside (the frames they use).
    public var trimmedBytes: Int
    /// System calls made to trim stacks, ever (neighbours share a range, and
    /// 64 ranges share a call where the kernel batches them).
    public var trimCalls: Int

    static func capture(_ s: Scheduler) -> Stats {
        let n = s.procs.load(ordering: .acquiring)
        var created = s.createdNoP.load(ordering: .relaxed)
        var exited = 0, parks = 0, readies = s.readiesNoP.load(ordering: .relaxed), steals = 0
        var local: [Int] = [], ticks: [Int] = []
        for i in 0..<n {
            let p = s.allP(i)
            created += p.pointee.created.load(ordering: .relaxed)
            exited += p.pointee.exited.load(ordering: .relaxed)
            parks += p.pointee.parks.load(ordering: .relaxed)
            readies += p.pointee.readies.load(ordering: .relaxed)
            steals += p.pointee.steals.load(ordering: .relaxed)
            local.append(p.pointee.runq.count)
            ticks.append(Int(p.pointee.schedTick.load(ordering: .relaxed)))
        }
        // Counters of Ps removed by setProcs stay in their P objects, as do
        // those of spare Ps.
        var others: [P] = []
        var i = n
        while i < Scheduler.maxProcs, let p = s.allPIfCreated(i) {
            others.append(p)
            i += 1
        }
        for p in others + s.allSpares() {
            created += p.pointee.created.load(ordering: .relaxed)
            exited += p.pointee.exited.load(ordering: .relaxed)
            parks += p.pointee.parks.load(ordering: .relaxed)
            readies += p.pointee.readies.load(ordering: .relaxed)
            steals += p.pointee.steals.load(ordering: .relaxed)
        }
        let (idleThreads, threads) = s.lock.withLock { (s.nmidle, s.allm.count) }
        let global = s.runqSize.load(ordering: .relaxed)
        let trims = s.trims.load(ordering: .relaxed)
        return Stats(
            uptimeMs: Int((gmp_nanotime() - s.startTime) / 1_000_000),
            procs: n,
            idleProcs: s.npidle.load(ordering: .relaxed),
            threads: threads,
            idleThreads: idleThreads,
            spinningThreads: s.nmspinning.load(ordering: .relaxed),
            created: created,
            live: created - exited,
            runnable: global + local.reduce(0, +),
            parked: max(0, parks - readies),
            globalQueue: global,
            localQueues: local,
            schedTicks: ticks,
            steals: steals,
            longRuns: s.longRuns.load(ordering: .relaxed),
            handoffs: s.handoffs.load(ordering: .relaxed),
            spareProcs: s.nspare.load(ordering: .relaxed),
            spareLends: s.spareLends.load(ordering: .relaxed),
            timers: s.timerCount(),
            stacksMapped: s.stackPool.counts().carved,
            trimmedStacks: trims - s.untrims.load(ordering: .relaxed),
            stackTrims: trims,
            trimmedBytes: s.trimmedBytes.load(ordering: .relaxed),
            trimCalls: s.trimCalls.load(ordering: .relaxed))
    }

    /// One line in the style of Go's `GODEBUG=schedtrace`.
    public var traceLine: String {
        "SCHED \(uptimeMs)ms: gmpprocs=\(procs) idleprocs=\(idleProcs) threads=\(threads) "
            + "spinningthreads=\(spinningThreads) idlethreads=\(idleThreads) runqueue=\(globalQueue) "
            + "[\(localQueues.map(String.init).joined(separator: " "))] steals=\(steals) "
            + "liveg=\(live) parked=\(parked) timers=\(timers) longruns=\(longRuns) handoffs=\(handoffs) spareprocs=\(spareProcs) "
            + "trimmed=\(trimmedStacks)"
    }

    public var description: String { traceLine }
}
