import CGMP
import Glibc

// Chaos scheduling (GMP_CHAOS=<seed>): the scheduler makes the choices that
// are free, that no program may rely on, at random, as Go's scheduler does
// under the race detector, to shake out code (and tests) that assume an
// order nobody promised. Under chaos:
//
//  - a G that is readied or started skips `runnext` half the time (it joins
//    the tail of the local queue instead of running next);
//  - a readied G goes to the global queue one time in four (so Gs readied
//    together run in a scrambled order, and may run on another P);
//  - a batch of Gs from the poller is shuffled before it is queued;
//  - a blocking channel send or receive, `select`, a `SelectSet` wait,
//    `Mutex.lock` and `WaitGroup.wait` first yield one time in four;
//  - steal victims are drawn at random (as always), from the seeded streams.
//
// Every choice draws from the drawing thread's own stream, seeded from the
// chaos seed and the order in which threads first draw, so a seed replays the
// same choices wherever the threads' interleaving repeats (on one P, most
// of it does); the OS still decides when threads run. A failure under chaos
// is reported with its seed: `GMP.chaosSeed`, the goroutine dump's header,
// and .ci/run's message. Off, each hook costs one load of the seed.
//
// A yield point is at the entry of an operation that may block anyway, before
// it takes any lock, and only on a G (never on g0, in a timer callback or in
// `GMP.blocking`). Code that calls such an operation while it holds a thread
// lock (a FutexLock, Synchronization's Mutex) may now yield holding it, as it
// may already park holding it; on one P that can wedge the thread either way.

enum Chaos {
    /// The seed in a GMP_CHAOS value: nil for off (unset, empty, or zero),
    /// `.failure` for something that is not a number.
    static func seed(_ value: String?) -> Result<UInt64, ChaosError>? {
        guard let value, !value.isEmpty else { return nil }
        guard let seed = UInt64(value) else { return .failure(ChaosError(value: value)) }
        return seed == 0 ? nil : .success(seed)
    }

    struct ChaosError: Error {
        let value: String
    }

    /// Reads GMP_CHAOS (a seed, a positive integer; unset, empty or 0: off).
    /// Once, when the scheduler starts, before any M does.
    static func configure(_ value: String?) {
        switch seed(value) {
        case nil:
            gmp_chaos_set(0)
        case .success(let s)?:
            gmp_chaos_set(s)
        case .failure(let e)?:
            gmp_fatal("fatal error: GMP_CHAOS=\(e.value) must be a seed, a positive integer (0: off)")
        }
    }

    /// Shuffles `list` under chaos (Fisher-Yates from the thread's stream).
    static func shuffle(_ list: inout GList) {
        guard gmp_chaos_get() != 0, list.count > 1 else { return }
        var gs: [G] = []
        while let g = list.pop() { gs.append(g) }
        for i in stride(from: gs.count - 1, to: 0, by: -1) {
            gs.swapAt(i, Int(gmp_fastrand() % UInt32(i + 1)))
        }
        for g in gs { list.push(g) }
    }
}

extension GMP {
    /// The GMP_CHAOS seed this process runs (or, before the scheduler has
    /// started, will run) under, or nil when chaos scheduling is off.
    public static var chaosSeed: UInt64? {
        if gmp_chaos_configured() { return gmp_chaos_get() == 0 ? nil : gmp_chaos_get() }
        if case .success(let s)? = Chaos.seed(getenv("GMP_CHAOS").map { String(cString: $0) }) { return s }
        return nil
    }

    /// A point where, under chaos scheduling, the calling G may yield (one
    /// time in four) before a blocking operation. Nothing otherwise, nor on
    /// a plain thread. For synchronization built outside this package.
    @inlinable @inline(__always)
    public static func chaosPoint() {
        if gmp_chaos_coin(4) { chaosYield() }
    }

    @usableFromInline static func chaosYield() {
        // Not in a G running a task's job: it must not switch away (Executor.swift).
        if let (_, g) = currentGWithP(), !g.s.pointee.runsJob { yield() }
    }
}
