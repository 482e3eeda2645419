import CGMP
import Glibc
import Synchronization

// Goroutine scheduler
//
// The scheduler's job is to distribute ready-to-run goroutines (G) over
// worker threads (M). An M runs Gs only while it holds a P (logical
// processor); there are GMPPROCS Ps. This is Go's runtime/proc.go design:
//
//  - Each P has a local run queue (RunQueue: 256-slot lock-free ring plus a
//    `runnext` slot). A G readied by the running G goes to `runnext` and runs
//    next on the same P, inheriting the time slice, so a ping-ponging pair
//    stays on one core. New Gs go to `runnext` too (as in Go).
//  - A global run queue (linked list under `lock`) takes overflow (half a
//    full ring at once), Gs readied from plain threads and Gs whose M came
//    back from a blocking call without a P. Every 61st schedule a P looks at
//    the global queue first, so it cannot starve.
//  - `findRunnable`: timers, runnext/local queue, global queue (a batch),
//    the poller without blocking, then stealing: 4 rounds over the other Ps in
//    random order, half of a victim's queue each time, its runnext and due
//    timers only in the last round. Nothing found: give the P back, re-check
//    every queue, then block in the poller (one M at a time, time-out = the
//    earliest timer) or sleep on the M's futex note.
//
// Worker thread parking/unparking (the lost wake-up protocol)
//
// We must not leave a runnable G with an idle P and no M looking, and we
// must not wake Ms needlessly. An M is *spinning* when it holds a P and
// looks for work without having found any; at most about half of the busy
// Ps may have one. Rules:
//  1. Whoever makes a G runnable (ready, go, injected poll results) publishes
//     it first and then calls `wakeP`, which starts a spinning M only if there
//     is an idle P and no M is spinning already (CAS nmspinning 0 -> 1).
//  2. A spinning M that finds work stops spinning (`resetSpinning`) and calls
//     `wakeP` again, so a burst of work wakes Ms one by one, as needed.
//  3. A spinning M that finds nothing gives back its P, decrements
//     nmspinning (sequentially consistent RMW: a full barrier) and only then
//     re-checks every P's run queue, the global queue and the timers before it
//     sleeps. Either the submitter of rule 1 sees nmspinning == 0 and wakes
//     someone, or the M's re-check sees the work.
//  Submissions to the local queue of the P we are running on need no wake-up
//  for correctness (this M will run them); `wakeP` there is for parallelism.
//
// Blocking system calls: `GMP.blocking` marks the P `.syscall` and leaves it.
// sysmon (a thread with no P) retakes a P that stayed in `.syscall` over one
// of its ticks (20 µs and up) when there is other work, and hands it to another
// M. On return the M takes its P back if it is still `.syscall`, else any idle
// P, else it queues the G globally and sleeps. (A G running a Swift task's
// job must not change M, so on its return it waits for a P on its own
// thread instead: Executor.swift.)
//
// Scheduling is cooperative: a G runs until it parks, yields, sleeps, blocks
// or ends. sysmon counts Gs that ran over 10 ms without parking (`longRuns`).
//
// A G that keeps its P (it computes, or calls a blocking function without
// `GMP.blocking`) cannot be preempted: Swift code stopped at an arbitrary
// instruction may hold malloc's lock or a pthread mutex, and the thread that
// stopped it could deadlock on the same lock. Nor is the P taken from under
// it, as a blocking call's is: the running G reaches its P's owner-only
// state (run queue, caches) through `m.p` without a check, and an ownership
// check on every `go`, `ready` and channel hand-off would cost the hot paths.
// Instead the runtime compensates (see Spares.swift), as Java's virtual
// threads do for a pinned carrier: when sysmon sees a G run past its 10 ms
// slice while work waits behind it (queued Gs, due timers, the global
// queue) and no P is idle, it lends a *spare P*, beyond GMPPROCS, to an M.
// That M steals the hogged P's queue, runs its timers and polls, like any
// spinning M; when it finds nothing more to do it gives the spare back. The
// hog itself runs on; GMPPROCS is unchanged.

/// The runtime: one per process.
final class Scheduler: @unchecked Sendable {
    // @unchecked: fields are atomics, `let`s, or guarded by `lock` as marked.
    // The guarded `var`s are `@exclusivity(unchecked)`: their lock (or, for
    // `trimCursor`, sysmon's sole ownership) keeps accesses apart, so a
    // dynamic exclusivity check would only cost a thread-local access set
    // per field access on the scheduler's paths.

    static let shared = Scheduler()

    static let maxProcs = 1024
    /// At most this many spare Ps lent at once (ids `maxProcs...`).
    static let maxSpares = 64

    /// Guards: the global run queue, idle P and M lists, `allm`, `stopWait`.
    let lock = FutexLock()
    /// Guards the global free G list (apart from `lock`, as Go's
    /// `sched.gFree.lock`: refilling free Gs must not wait behind the run queue).
    let gFreeLock = FutexLock()

    // Global run queue (lock).
    @exclusivity(unchecked) var runq = GList()
    let runqSize = Atomic<Int>(0)

    // Idle Ps (lock), count readable without it.
    @exclusivity(unchecked) var pidle: P?
    let npidle = Atomic<Int>(0)

    // Ms (lock).
    @exclusivity(unchecked) var midle: M?
    @exclusivity(unchecked) var nmidle = 0
    @exclusivity(unchecked) var allm: [M] = []
    let nmspinning = Atomic<Int>(0)

    // Ps: slots published with release, never freed. Real Ps at 0..<procs,
    // spares at maxProcs..<maxProcs + nsparesMade (Spares.swift).
    private let allp: UnsafeMutablePointer<Atomic<UInt>>
    let procs = Atomic<Int>(0)

    // Stop the world (resize).
    let stopRequested = Atomic<Bool>(false)
    @exclusivity(unchecked) var stopWait = 0 // lock
    let stopNote = Note()
    // Spare Ps (lock): the free ones (linked through `sched.link`), every one
    // ever made (never freed, for stats), and how many are lent now.
    @exclusivity(unchecked) var spareFree: P?
    @exclusivity(unchecked) var spareAll: [P] = []
    let nspare = Atomic<Int>(0)
    let spareLends = Atomic<Int>(0)
    /// Ps whose G has run past its slice, as sysmon last saw them.
    let nhogs = Atomic<Int>(0)

    // Deadlock detection (Deadlock.swift).
    let deadlockMode: DeadlockMode
    /// Threads blocked in `GMP.run`.
    let runWaiters = Atomic<Int>(0)
    /// Gs inside `GMP.blocking`.
    let nsyscall = Atomic<Int>(0)

    // The goroutine dump (Dump.swift): every G state there is, guarded by
    // `allgLock` (each G knows its index), and a clock sysmon keeps (a G that
    // parks stamps it: no clock read on the park path).
    let allgLock = FutexLock()
    @exclusivity(unchecked) var allgs: ContiguousArray<G> = []
    let coarseNow = Atomic<Int64>(gmp_nanotime())

    // Idle stack trimming (Trim.swift): after how long parked (ns, 0: never),
    // and counts of stacks trimmed and restored, bytes saved aside now, and
    // madvise calls made.
    let trimAfter: Atomic<Int64>
    let trims = Atomic<Int>(0)
    let untrims = Atomic<Int>(0)
    let trimmedBytes = Atomic<Int>(0)
    let trimCalls = Atomic<Int>(0)
    /// Where sysmon's next trim pass starts in `allgs` (sysmon only).
    @exclusivity(unchecked) var trimCursor = 0

    /// One resize at a time. A G-aware mutex, taken by `setProcs` before it
    /// goes to g0: a G that waits for it parks and its P can stop, where a
    /// thread lock would hold the P running and deadlock the resize it waits for.
    let resizeMutex = GMPMutex()

    // Poller.
    private let pollerRef = Atomic<UInt>(0)
    /// Pollers replaced by `install`, still retained (guarded by `lock`).
    @exclusivity(unchecked) private var retiredPollers: [UInt] = []
    let polling = Atomic<Bool>(false)
    let pollUntil = Atomic<Int64>(0)
    let lastPoll = Atomic<Int64>(0)

    // Free Gs (gFreeLock) and stacks.
    @exclusivity(unchecked) var gFree: ContiguousArray<G> = []
    let gFreeLimit = 4096
    let stackPool: StackPool
    let goidGen = Atomic<Int64>(0)

    // Free sudogs beyond the per-P caches (sudogLock).
    let sudogLock = FutexLock()
    @exclusivity(unchecked) var sudogFree: ContiguousArray<Sudog> = []

    // Counters for Gs made or readied where there is no P.
    let createdNoP = Atomic<Int>(0)
    let readiesNoP = Atomic<Int>(0)
    let longRuns = Atomic<Int>(0)
    let handoffs = Atomic<Int>(0)

    let startTime = gmp_nanotime()
    let schedTraceMs: Int

    // Rarely touched: kept last, after the fields the hot paths use.
    /// How many spares were ever made (published in `allp` from `maxProcs`).
    let nsparesMade = Atomic<Int>(0)
    /// The runtime's own threads (Ms, sysmon, the SIGQUIT watcher) by kernel
    /// id, under `ownThreadsLock`: the deadlock check asks about every other.
    let ownThreadsLock = FutexLock()
    @exclusivity(unchecked) var ownThreads: [Int32] = []
    /// Microseconds sysmon waits between its first look at a G and its claim
    /// (0 in production): tests widen that window, where a G can wake and
    /// park again in another kind of wait (`GMP.trimClaimDelayForTesting`).
    let trimClaimDelay = Atomic<Int>(0)

    private init() {
        allp = .allocate(capacity: Scheduler.maxProcs + Scheduler.maxSpares)
        for i in 0..<(Scheduler.maxProcs + Scheduler.maxSpares) { (allp + i).initialize(to: Atomic(0)) }
        let env = { (name: String) -> String? in getenv(name).map { String(cString: $0) } }
        var size = 256 * 1024
        if let s = env("GMP_STACK_SIZE") {
            guard let v = parseSize(s) else {
                gmp_fatal("fatal error: GMP_STACK_SIZE=\(s) is not a size (bytes, or with k/m suffix)")
            }
            size = v
        }
        stackPool = StackPool(stackSize: size)
        var n = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        if let s = env("GMPPROCS") {
            guard let v = Int(s), v >= 1, v <= Scheduler.maxProcs else {
                gmp_fatal("fatal error: GMPPROCS=\(s) must be an integer in 1...\(Scheduler.maxProcs)")
            }
            n = v
        }
        // At most a day between lines: the interval in ns must not overflow.
        schedTraceMs = min(env("GMP_SCHEDTRACE").flatMap { Int($0) } ?? 0, 86_400_000)
        deadlockMode = DeadlockMode(environment: env("GMP_DEADLOCK"))
        Chaos.configure(env("GMP_CHAOS"))
        var trim: Int64 = 1_000_000_000
        if let s = env("GMP_TRIM_AFTER") {
            guard let v = Scheduler.parseTrimAfter(s) else {
                gmp_fatal("fatal error: GMP_TRIM_AFTER=\(s) is not 'off' or a time (milliseconds, or with ms or s)")
            }
            trim = v
        }
        trimAfter = Atomic(trim)
        pollerRef.store(UInt(bitPattern: Unmanaged.passRetained(PollerBox(FutexPoller())).toOpaque()),
                        ordering: .releasing)
        gmp_install_overflow_handler()
        TaskLocals.findSlot()
        startQuitWatcher()
        lock.lock()
        for i in 0..<n {
            let p = makeP(i)
            pidleput(p)
        }
        procs.store(n, ordering: .releasing)
        lock.unlock()
        Sysmon.start(self)
    }

    // MARK: Ps

    private func makeP(_ i: Int) -> P {
        if let p = allPIfCreated(i) { return p }
        let p = P.allocate(capacity: 1)
        p.initialize(to: PState(id: i))
        allp[i].store(UInt(bitPattern: p), ordering: .releasing)
        return p
    }

    /// Publishes spare number `k` (Spares.swift).
    func publishSpare(_ p: P, _ k: Int) {
        allp[Scheduler.maxProcs + k].store(UInt(bitPattern: p), ordering: .releasing)
    }

    /// The P with index `i` (< procs, or any index that was ever created).
    @inline(__always) func allP(_ i: Int) -> P {
        P(bitPattern: allp[i].load(ordering: .acquiring))!
    }

    /// The P with index `i` if it was ever created.
    func allPIfCreated(_ i: Int) -> P? {
        P(bitPattern: allp[i].load(ordering: .acquiring))
    }

    /// Lock held. Puts `p` on the idle list.
    func pidleput(_ p: P) {
        precondition(p.pointee.runq.isEmpty, "pidleput: P has runnable Gs")
        p.pointee.status.store(PStatus.idle.rawValue, ordering: .releasing)
        p.sched.pointee.link = pidle
        pidle = p
        npidle.add(1, ordering: .sequentiallyConsistent)
    }

    /// Lock held. Takes an idle P, or nil.
    func pidleget() -> P? {
        guard let p = pidle else { return nil }
        pidle = p.sched.pointee.link
        p.sched.pointee.link = nil
        npidle.subtract(1, ordering: .sequentiallyConsistent)
        return p
    }

    @inline(__always) func acquirep(_ m: M, _ p: P) {
        m.pointee.p = p
        p.pointee.status.store(PStatus.running.rawValue, ordering: .releasing)
    }

    @inline(__always) func releasep(_ m: M) -> P {
        let p = m.pointee.p!
        m.pointee.p = nil
        return p
    }

    // MARK: Ms

    /// Lock held.
    private func mput(_ m: M) {
        m.pointee.link = midle
        midle = m
        nmidle += 1
    }

    /// Lock held.
    private func mget() -> M? {
        guard let m = midle else { return nil }
        midle = m.pointee.link
        m.pointee.link = nil
        nmidle -= 1
        return m
    }

    /// Starts an M (an idle one, or a new thread) to run `p` (or an idle P if
    /// nil). If `spinning`, the caller has already incremented nmspinning for it.
    func startm(_ p: P?, spinning: Bool) {
        lock.lock()
        var pp = p
        if pp == nil {
            pp = pidleget()
            if pp == nil {
                lock.unlock()
                if spinning { nmspinning.subtract(1, ordering: .sequentiallyConsistent) }
                return
            }
        }
        if let nm = mget() {
            lock.unlock()
            nm.pointee.spinning = spinning
            nm.pointee.nextp = pp
            nm.pointee.park.wakeup()
            return
        }
        let m = M.allocate(capacity: 1)
        m.initialize(to: MState(id: allm.count))
        allm.append(m)
        lock.unlock()
        m.pointee.spinning = spinning
        m.pointee.nextp = pp
        newThread(m)
    }

    private func newThread(_ m: M) {
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        pthread_attr_setstacksize(&attr, 1 << 20)
        var tid = pthread_t()
        let r = pthread_create(&tid, &attr, { arg in
            Scheduler.shared.mstart(arg!.assumingMemoryBound(to: MState.self))
        }, UnsafeMutableRawPointer(m))
        pthread_attr_destroy(&attr)
        if r != 0 { gmp_fatal("fatal error: pthread_create failed (\(r)): cannot start an M") }
    }

    /// Thread entry of every M.
    private func mstart(_ m: M) -> Never {
        registerOwnThread()
        gmp_thread_init(m.pointee.ctx)
        gmp_set_m(UnsafeMutableRawPointer(m))
        acquirep(m, m.pointee.nextp!)
        m.pointee.nextp = nil
        schedule(m)
    }

    /// Parks this M until `startm` hands it a P.
    func stopm(_ m: M) {
        precondition(m.pointee.p == nil, "stopm holding a P")
        lock.lock()
        mput(m)
        lock.unlock()
        m.pointee.park.sleep()
        m.pointee.park.clear()
        acquirep(m, m.pointee.nextp!)
        m.pointee.nextp = nil
    }

    /// Wakes an M to run Gs if there is an idle P and nobody spins (rule 1).
    @inline(__always) func wakeP() {
        if npidle.load(ordering: .sequentiallyConsistent) == 0 { return }
        if nmspinning.load(ordering: .sequentiallyConsistent) != 0 { return }
        if !nmspinning.compareExchange(expected: 0, desired: 1, ordering: .sequentiallyConsistent).exchanged { return }
        startm(nil, spinning: true)
    }

    @inline(__always) private func resetSpinning(_ m: M) {
        m.pointee.spinning = false
        nmspinning.subtract(1, ordering: .sequentiallyConsistent)
        wakeP()
    }

    /// Hands `p` (which nobody runs) to an M if there is a reason to, else
    /// makes it idle. Used by sysmon's retake.
    func handoffp(_ p: P) {
        if !p.pointee.runq.isEmpty || runqSize.load(ordering: .acquiring) != 0 {
            startm(p, spinning: false)
            return
        }
        if nmspinning.load(ordering: .sequentiallyConsistent) + npidle.load(ordering: .sequentiallyConsistent) == 0,
           nmspinning.compareExchange(expected: 0, desired: 1, ordering: .sequentiallyConsistent).exchanged {
            startm(p, spinning: true)
            return
        }
        lock.lock()
        if stopRequested.load(ordering: .acquiring) {
            p.pointee.status.store(PStatus.stopped.rawValue, ordering: .releasing)
            stopWait -= 1
            if stopWait == 0 { stopNote.wakeup() }
            lock.unlock()
            return
        }
        if runqSize.load(ordering: .acquiring) != 0 {
            lock.unlock()
            startm(p, spinning: false)
            return
        }
        pidleput(p)
        lock.unlock()
        let w = p.pointee.timer0When.load(ordering: .acquiring)
        if w != 0 { wakeNetPoller(w) }
    }

    // MARK: run queues

    /// Puts `g` on `p`'s local queue (in `runnext` if `next`), spilling half
    /// the ring to the global queue when it is full. Caller owns `p`.
    @inline(__always) func runqput(_ p: P, _ g: G, next: Bool) {
        var item = g.bits
        if next && !gmp_chaos_coin(2) { // chaos: half the time, the tail (Chaos.swift)
            item = p.pointee.runq.swapRunNext(item)
            if item == 0 { return }
        }
        while !p.pointee.runq.pushTail(item) {
            let n = p.pointee.runq.takeHalf()
            if n > 0 {
                var batch = GList()
                for i in 0..<n { batch.push(G.from(bits: p.pointee.runq.scratch[i])) }
                batch.push(G.from(bits: item))
                lock.lock()
                globrunqputbatch(batch)
                lock.unlock()
                return
            }
        }
    }

    /// Lock held.
    @inline(__always) func globrunqput(_ g: G) {
        runq.push(g)
        runqSize.add(1, ordering: .releasing)
    }

    /// Lock held.
    func globrunqputbatch(_ list: GList) {
        runqSize.add(list.count, ordering: .releasing)
        runq.append(list)
    }

    /// Lock held. Takes a batch from the global queue for `p`: returns the
    /// first, puts the rest on `p`'s local queue.
    func globrunqget(_ p: P, max: Int) -> G? {
        let size = runqSize.load(ordering: .relaxed)
        if size == 0 { return nil }
        var n = min(size, size / procs.load(ordering: .relaxed) + 1)
        if max > 0 && n > max { n = max }
        n = min(n, Int(RunQueue.capacity) / 2)
        runqSize.subtract(n, ordering: .relaxed)
        let g = runq.pop()!
        for _ in 1..<n {
            runqput(p, runq.pop()!, next: false)
        }
        return g
    }

    // MARK: ready

    /// Makes a parked G runnable: onto the current P's `runnext` when called
    /// on an M that holds a P, else onto the global queue; then `wakeP`.
    func ready(_ g: G) {
        g.s.pointee.status = .runnable
        if let m = currentM(), let p = m.pointee.p, !gmp_chaos_coin(4) { // chaos: a quarter go global
            bump(p.pointee.readies)
            runqput(p, g, next: true)
        } else {
            readiesNoP.add(1, ordering: .relaxed)
            lock.lock()
            globrunqput(g)
            lock.unlock()
        }
        wakeP()
    }

    /// Queues a batch of Gs made ready by a poller and starts Ms for idle Ps
    /// to run them (Go's `injectglist`).
    ///
    /// From an M holding `p`: as many Gs as there are idle Ps go to the global
    /// queue, an M started for each; the rest go to the tail of `p`'s own
    /// queue. So a P that polls runs the Gs it found before the Gs that
    /// those make ready: a batch of socket readers is served in one go (their
    /// messages reach the G they feed before its consumers run), instead of
    /// one reader per pass through the global queue. From a thread with no
    /// P (sysmon, a poller thread): all to the global queue.
    func injectglist(_ list: GList, onto p: P? = nil) {
        if list.isEmpty { return }
        var list = list
        Chaos.shuffle(&list)
        var cur = list.head
        while let g = cur {
            g.s.pointee.status = .runnable
            cur = g.s.pointee.schedlink
        }
        var global = GList()
        if let p {
            let idle = npidle.load(ordering: .sequentiallyConsistent)
            while global.count < idle, let g = list.pop() { global.push(g) }
            bump(p.pointee.readies, list.count)
            while let g = list.pop() { runqput(p, g, next: false) }
        } else {
            global = list
        }
        if global.isEmpty { return }
        var c = global.count
        readiesNoP.add(c, ordering: .relaxed)
        lock.lock()
        globrunqputbatch(global)
        lock.unlock()
        while c > 0 && npidle.load(ordering: .sequentiallyConsistent) > 0 {
            startm(nil, spinning: false)
            c -= 1
        }
    }

    // MARK: poller

    var poller: any Poller {
        let raw = pollerRef.load(ordering: .acquiring)
        return Unmanaged<PollerBox>.fromOpaque(UnsafeRawPointer(bitPattern: raw)!).takeUnretainedValue().poller
    }

    func install(_ p: any Poller) {
        let old = pollerRef.exchange(UInt(bitPattern: Unmanaged.passRetained(PollerBox(p)).toOpaque()),
                                     ordering: .acquiringAndReleasing)
        // Wake whoever blocks in the old poller. The old one stays retained
        // for the process's life, on a list (so that LeakSanitizer sees it is
        // not lost): an M may still be inside it.
        lock.lock()
        retiredPollers.append(old)
        lock.unlock()
        Unmanaged<PollerBox>.fromOpaque(UnsafeRawPointer(bitPattern: old)!).takeUnretainedValue().poller.wake()
    }

    /// A timer at `when` was added: make sure somebody will wake for it.
    func wakeNetPoller(_ when: Int64) {
        if polling.load(ordering: .sequentiallyConsistent) {
            let pu = pollUntil.load(ordering: .acquiring)
            if pu == 0 || pu > when { poller.wake() }
        } else {
            wakeP()
        }
    }

    // MARK: the scheduler loop

    func schedule(_ m: M) -> Never {
        while true {
            let (g, inherit) = findRunnable(m)
            if m.pointee.spinning { resetSpinning(m) }
            execute(m, g, inheritTime: inherit)
        }
    }

    /// Runs `g` on this M until it switches back, then carries out what it asked for.
    func execute(_ m: M, _ g: G, inheritTime: Bool) {
        var inherit = inheritTime
        while true {
            let p = m.pointee.p!
            if !inherit { bump(p.pointee.schedTick) }
            bump(p.pointee.switchTick)
            g.s.pointee.status = .running
            // (A later park that does not say why must not look like this one.)
            g.s.pointee.waitReason = .unknown
            g.s.pointee.stackPinned = false
            m.pointee.curg = g
            if !g.s.pointee.hasStack { giveStack(p, g) }
            if gmp_trim_state(g.ctx) != GMP_TRIM_NONE { untrim(g) }
            gmp_gogo(m.pointee.ctx, g.ctx)
            m.pointee.curg = nil
            // Back on g0. m.p may have changed if the G made a blocking call.
            let action = m.pointee.action
            m.pointee.action = .none
            if g.s.pointee.runsJob && action != .resize { jobSwitchedAway(g) }
            switch action {
            case .none:
                gmp_fatal("fatal error: G switched to g0 with no action")
            case .parkUnlock:
                parked(g)
                bump(m.pointee.p!.pointee.parks)
                let l = m.pointee.actionLock!
                m.pointee.actionLock = nil
                l.unlock()
            case .parkUnlockAll:
                parked(g)
                bump(m.pointee.p!.pointee.parks)
                let ls = m.pointee.actionLocks
                m.pointee.actionLocks = []
                for l in ls { l.unlock() }
            case .sleep:
                parked(g)
                bump(m.pointee.p!.pointee.parks)
                addTimer(g.s.pointee.sleepTimer!, when: m.pointee.actionWhen)
            case .yield:
                g.s.pointee.status = .runnable
                runqput(m.pointee.p!, g, next: false)
            case .exit:
                gdestroy(m.pointee.p!, g)
            case .exitSyscall:
                // No P for the G that came back from a blocking call. Look for
                // an idle P again under the same lock as the global-queue put
                // (as Go's exitsyscall0): a P that went idle after the G's
                // first look would otherwise leave the G stranded there.
                lock.lock()
                if !stopRequested.load(ordering: .acquiring), let pp = pidleget() {
                    lock.unlock()
                    acquirep(m, pp)
                    inherit = false
                    continue
                }
                g.s.pointee.status = .runnable
                globrunqput(g)
                lock.unlock()
                stopm(m)
            case .resize:
                resize(to: Int(m.pointee.actionWhen), m: m)
                // The caller goes on at once, on whatever P this M now holds.
                inherit = true
                continue
            }
            return
        }
    }

    /// The G switched to g0 to park: it is `.waiting` from now on. A release
    /// fence first, for the stack trimmer (Trim.swift), which reads the G's
    /// saved stack pointer, wait reason and pinned flag after it has seen
    /// this store.
    @inline(__always) private func parked(_ g: G) {
        g.s.pointee.waitSince = coarseNow.load(ordering: .relaxed) // (before: sysmon pairs it with `.waiting`)
        atomicMemoryFence(ordering: .releasing)
        g.s.pointee.status = .waiting
    }

    /// Finds a runnable G for `m` (which holds a P), blocking if there is none.
    func findRunnable(_ m: M) -> (G, Bool) {
        top: while true {
            if stopRequested.load(ordering: .acquiring) || sparesUnwanted(m) {
                if m.pointee.p!.isSpare {
                    // Not counted in a stop, and not wanted once no G holds
                    // its P past its slice: give it back, wait to be woken.
                    if m.pointee.spinning {
                        m.pointee.spinning = false
                        nmspinning.subtract(1, ordering: .sequentiallyConsistent)
                    }
                    retireSpare(m)
                    stopm(m)
                } else {
                    gcstopm(m)
                }
                continue top
            }
            let p = m.pointee.p!
            runTimers(p)

            if p.pointee.sliceExpired.load(ordering: .relaxed) {
                p.pointee.sliceExpired.store(false, ordering: .relaxed)
                if let overflow = p.pointee.runq.demoteRunNext() {
                    lock.lock(); globrunqput(G.from(bits: overflow)); lock.unlock()
                }
            }
            // Fairness: every 61st tick, look at the global queue first.
            if p.pointee.schedTick.load(ordering: .relaxed) % 61 == 0 && runqSize.load(ordering: .relaxed) > 0 {
                lock.lock()
                let g = globrunqget(p, max: 1)
                lock.unlock()
                if let g { return (g, false) }
            }
            if let (item, inherit) = p.pointee.runq.get() { return (G.from(bits: item), inherit) }
            if runqSize.load(ordering: .acquiring) > 0 {
                lock.lock()
                let g = globrunqget(p, max: 0)
                lock.unlock()
                if let g { return (g, false) }
            }
            // Poll without blocking when someone waits on the network.
            let pl = poller
            if pl.hasWaiters && !polling.load(ordering: .relaxed) {
                var list = pl.poll(delayNanoseconds: 0)
                lastPoll.store(gmp_nanotime(), ordering: .relaxed)
                if let g = list.pop() {
                    injectglist(list, onto: p)
                    g.runnableFromPoll()
                    return (g, false)
                }
            }
            // Steal.
            let nprocs = procs.load(ordering: .relaxed)
            if m.pointee.spinning
                || 2 * nmspinning.load(ordering: .relaxed) < nprocs - npidle.load(ordering: .relaxed) {
                if !m.pointee.spinning {
                    m.pointee.spinning = true
                    nmspinning.add(1, ordering: .sequentiallyConsistent)
                }
                let (g, newWork) = stealWork(p, now: gmp_nanotime(), nprocs: nprocs)
                if let g { return (g, false) }
                if newWork { continue top }
            }

            // Nothing to do: give the P back.
            lock.lock()
            if stopRequested.load(ordering: .acquiring) {
                lock.unlock()
                continue top
            }
            if runqSize.load(ordering: .relaxed) > 0 {
                let g = globrunqget(p, max: 0)
                lock.unlock()
                if let g { return (g, false) }
                continue top
            }
            if !p.pointee.runq.isEmpty { // a timer callback may have queued work
                lock.unlock()
                continue top
            }
            if p.isSpare {
                lock.unlock()
                retireSpare(m) // nothing left to compensate for here
            } else {
                _ = releasep(m)
                pidleput(p)
                lock.unlock()
            }

            let wasSpinning = m.pointee.spinning
            if m.pointee.spinning {
                // Rule 3: decrement, barrier (the seq-cst RMW), re-check everything.
                m.pointee.spinning = false
                nmspinning.subtract(1, ordering: .sequentiallyConsistent)
                var retry = runqSize.load(ordering: .sequentiallyConsistent) > 0
                let nvictims = nprocs + nsparesMade.load(ordering: .acquiring)
                for i in 0..<nvictims where !retry && !anyP(i, nprocs: nprocs).pointee.runq.isEmpty { retry = true }
                if retry {
                    lock.lock()
                    let pp = pidleget()
                    lock.unlock()
                    if let pp {
                        acquirep(m, pp)
                        m.pointee.spinning = true
                        nmspinning.add(1, ordering: .sequentiallyConsistent)
                        continue top
                    }
                }
            }
            // Block in the poller (one M at a time) until the earliest timer.
            let next = earliestTimer()
            if pl.hasWaiters || next != 0,
               polling.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged {
                var delay: Int64 = -1
                if next != 0 {
                    delay = max(0, next - gmp_nanotime())
                    pollUntil.store(next, ordering: .releasing)
                }
                if stopRequested.load(ordering: .acquiring) { delay = 0 }
                var list = delay == 0 && !pl.hasWaiters ? GList() : pl.poll(delayNanoseconds: delay)
                pollUntil.store(0, ordering: .releasing)
                lastPoll.store(gmp_nanotime(), ordering: .relaxed)
                polling.store(false, ordering: .sequentiallyConsistent)
                lock.lock()
                let pp = stopRequested.load(ordering: .acquiring) ? nil : pidleget()
                lock.unlock()
                if let pp {
                    acquirep(m, pp)
                    if let g = list.pop() {
                        injectglist(list, onto: pp)
                        g.runnableFromPoll()
                        return (g, false)
                    }
                    if wasSpinning {
                        m.pointee.spinning = true
                        nmspinning.add(1, ordering: .sequentiallyConsistent)
                    }
                    continue top
                }
                injectglist(list)
            } else if next != 0 {
                // Someone else polls: make sure it wakes in time for our timer.
                let pu = pollUntil.load(ordering: .acquiring)
                if polling.load(ordering: .acquiring) && (pu == 0 || pu > next) { pl.wake() }
            }
            stopm(m)
        }
    }

    /// Tries to steal a G (or runs other Ps' due timers). Returns the G, or
    /// whether timers made new work appear on our P.
    private func stealWork(_ p: P, now: Int64, nprocs: Int) -> (G?, Bool) {
        // The real Ps and every spare ever made (a spare not lent is
        // stopped, with nothing on it): work on a spare is anyone's to take.
        let nvictims = nprocs + nsparesMade.load(ordering: .acquiring)
        if nvictims <= 1 { return (nil, false) }
        let step = coprimeStep(nvictims)
        for round in 0..<4 {
            let last = round == 3
            var idx = Int(gmp_fastrand()) % nvictims
            for _ in 0..<nvictims {
                if stopRequested.load(ordering: .relaxed) { return (nil, true) }
                let victim = anyP(idx, nprocs: nprocs)
                idx = (idx + step) % nvictims
                if victim == p { continue }
                if last && victim.pointee.timer0When.load(ordering: .relaxed) != 0 {
                    if runTimers(victim, now: now) > 0, let (item, _) = p.pointee.runq.get() {
                        return (G.from(bits: item), false)
                    }
                }
                if victim.pointee.pstatus == .idle || (victim.isSpare && victim.pointee.pstatus != .running) { continue }
                if let item = victim.pointee.runq.steal(into: p.pointee.runq, stealRunNext: last, ownerRunning: {
                    victim.pointee.pstatus == .running
                }) {
                    bump(p.pointee.steals)
                    return (G.from(bits: item), false)
                }
            }
        }
        return (nil, !p.pointee.runq.isEmpty)
    }

    /// The `i`-th of the real Ps (`0..<nprocs`) followed by every spare ever
    /// made: what thieves, the re-check before sleeping and the timer scan
    /// look at.
    @inline(__always) func anyP(_ i: Int, nprocs: Int) -> P {
        i < nprocs ? allP(i) : allP(Scheduler.maxProcs + i - nprocs)
    }

    private func coprimeStep(_ n: Int) -> Int {
        // Small primes not dividing n give a full-cycle enumeration.
        for s in [7, 5, 3, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47] where n % s != 0 { return s % n == 0 ? 1 : s }
        return 1
    }

    // MARK: G lifecycle

    /// Makes a G for `fn` and queues it: on the current P's `runnext` (as Go's
    /// `newproc`), or globally from a plain thread (`fromRun`: `GMP.run`'s own G).
    func newproc(_ fn: consuming @escaping () -> Void, fromRun: Bool = false, file: StaticString = "",
                 line: UInt = 0) {
        if let m = currentM(), let p = m.pointee.p {
            let g = gfget(p)
            g.s.pointee.fn = consume fn
            g.setCreator(file, line)
            g.s.pointee.id = nextGoid(p)
            g.s.pointee.status = .runnable
            bump(p.pointee.created)
            runqput(p, g, next: true)
            wakeP()
        } else {
            let g = gFreeLock.withLock { gFree.popLast() } ?? gmake()
            g.s.pointee.fn = fn
            g.setCreator(file, line)
            g.s.pointee.id = goidGen.add(1, ordering: .relaxed).newValue
            g.s.pointee.status = .runnable
            createdNoP.add(1, ordering: .relaxed)
            lock.lock()
            globrunqput(g)
            lock.unlock()
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            wakeP()
        }
    }

    private func nextGoid(_ p: P) -> Int64 {
        if p.own.pointee.goidNext == p.own.pointee.goidEnd {
            let end = goidGen.add(16, ordering: .relaxed).newValue
            p.own.pointee.goidNext = end - 16
            p.own.pointee.goidEnd = end
        }
        p.own.pointee.goidNext += 1
        return p.own.pointee.goidNext
    }

    @inline(__always) private func gfget(_ p: P) -> G {
        if let g = p.own.pointee.gFree.popLast() { return g }
        return gfgetSlow(p)
    }

    private func gfgetSlow(_ p: P) -> G {
        gFreeLock.lock()
        var n = 0
        while n < 32, let g = gFree.popLast() {
            p.own.pointee.gFree.append(g)
            n += 1
        }
        gFreeLock.unlock()
        return p.own.pointee.gFree.popLast() ?? gmake()
    }

    /// Gives a finished G's stack to `p`'s cache and the G to `p`'s free list.
    private func gdestroy(_ p: P, _ g: G) {
        g.s.pointee.status = .dead
        bump(p.pointee.exited)
        if g.s.pointee.hasStack {
            g.s.pointee.hasStack = false
            gmp_release_ctx(g.ctx)
            if p.own.pointee.stackCache.count >= 32 {
                stackPool.put(p.own.pointee.stackCache[16...])
                p.own.pointee.stackCache.removeSubrange(16...)
            }
            p.own.pointee.stackCache.append(g.s.pointee.stack)
        }
        g.s.pointee.param = nil
        p.own.pointee.gFree.append(g)
        if p.own.pointee.gFree.count >= 64 {
            gFreeLock.lock()
            while p.own.pointee.gFree.count > 32 {
                let g2 = p.own.pointee.gFree.removeLast()
                if gFree.count < gFreeLimit {
                    gFree.append(g2)
                } else {
                    gfree(g2)
                }
            }
            gFreeLock.unlock()
        }
    }

    private func giveStack(_ p: P, _ g: G) {
        if p.own.pointee.stackCache.isEmpty { stackPool.get(16, into: &p.own.pointee.stackCache) }
        let s = p.own.pointee.stackCache.removeLast()
        g.s.pointee.hasStack = true
        let c = g.ctx
        c.pointee.stack_lo = s.lo
        c.pointee.stack_hi = s.hi
        c.pointee.guard_lo = s.guardLo
        c.pointee.guard_hi = s.guardHi
        c.pointee.id = g.s.pointee.id
        gmp_prepare_stack(c, gEntry, nil)
    }

    // MARK: blocking calls

    /// The current G enters a blocking call: its P is left for sysmon to retake.
    /// A spare P is given back at once instead (sysmon retakes real Ps only:
    /// the spare would stay lent for the call's length): the Gs queued on it
    /// go to the global queue, and the G comes back through the slow path.
    @inline(__always) func entersyscall(_ m: M) {
        let p = m.pointee.p!
        if p.isSpare {
            retireSpare(m)
            m.pointee.oldp = p // its status is never .syscall: exitsyscall takes the slow path
            m.pointee.curg?.s.pointee.status = .syscall
            return
        }
        bump(p.pointee.syscallTick)
        m.pointee.oldp = p
        m.pointee.p = nil
        m.pointee.curg?.s.pointee.status = .syscall
        p.pointee.status.store(PStatus.syscall.rawValue, ordering: .sequentiallyConsistent)
    }

    /// The current G's blocking call returned: get a P back or queue the G.
    @inline(__always) func exitsyscall(_ m: M, _ g: G) {
        let oldp = m.pointee.oldp!
        m.pointee.oldp = nil
        if oldp.pointee.status.compareExchange(expected: PStatus.syscall.rawValue, desired: PStatus.running.rawValue,
                                               ordering: .sequentiallyConsistent).exchanged {
            m.pointee.p = oldp
            g.s.pointee.status = .running
            return
        }
        exitsyscallSlow(m, g)
    }

    private func exitsyscallSlow(_ m: M, _ g: G) {
        var got = acquireIdleP(m)
        if !got && g.s.pointee.runsJob {
            // A task's job must go on on this thread: wait here for a P
            // rather than queue the G for another M. Rare (the P was handed
            // on during the call and none is idle), so a backing-off look,
            // not a wait list every P release would have to check.
            var delay: UInt32 = 20
            while !got {
                gmp_usleep(delay)
                delay = min(delay * 2, 1_000)
                got = acquireIdleP(m)
            }
        }
        if got {
            g.s.pointee.status = .running
            return
        }
        m.pointee.action = .exitSyscall
        gmp_mcall(g.ctx, m.pointee.ctx)
        g.s.pointee.status = .running
    }

    /// Gives `m` an idle P, unless there is none or the world is being
    /// stopped. Whether it did.
    private func acquireIdleP(_ m: M) -> Bool {
        lock.lock()
        let pp = stopRequested.load(ordering: .acquiring) ? nil : pidleget()
        lock.unlock()
        guard let pp else { return false }
        acquirep(m, pp)
        return true
    }

    // MARK: stop the world, GMPPROCS

    /// Stops this M's P for a stop-the-world and parks the M.
    private func gcstopm(_ m: M) {
        if m.pointee.spinning {
            m.pointee.spinning = false
            nmspinning.subtract(1, ordering: .sequentiallyConsistent)
        }
        let p = releasep(m)
        lock.lock()
        p.pointee.status.store(PStatus.stopped.rawValue, ordering: .releasing)
        stopWait -= 1
        if stopWait == 0 { stopNote.wakeup() }
        lock.unlock()
        stopm(m)
    }

    /// Stops every P (waiting for running Gs to park: scheduling is
    /// cooperative), sets GMPPROCS to `n` and restarts. `m` is the calling M
    /// (on g0, holding its P) or nil on a plain thread. The caller holds
    /// `resizeMutex`.
    func resize(to n: Int, m: M?) {
        let old = procs.load(ordering: .acquiring)
        lock.lock()
        stopRequested.store(true, ordering: .sequentiallyConsistent)
        stopNote.clear()
        var wait = old
        if let own = m?.pointee.p {
            own.pointee.status.store(PStatus.stopped.rawValue, ordering: .releasing)
            wait -= 1
        }
        while let p = pidleget() {
            p.pointee.status.store(PStatus.stopped.rawValue, ordering: .releasing)
            wait -= 1
        }
        stopWait = wait
        lock.unlock()
        while true {
            lock.lock()
            for i in 0..<old {
                if allP(i).pointee.status.compareExchange(
                    expected: PStatus.syscall.rawValue, desired: PStatus.stopped.rawValue,
                    ordering: .sequentiallyConsistent).exchanged {
                    stopWait -= 1
                }
            }
            let w = stopWait
            lock.unlock()
            if w == 0 { break }
            _ = stopNote.sleep(timeoutNanoseconds: 100_000)
            stopNote.clear()
        }
        // The world is stopped.
        var ownP = m?.pointee.p
        var moved = GList()
        if n < old {
            let heir = allP(0)
            for i in n..<old {
                let p = allP(i)
                for item in p.pointee.runq.drain() { moved.push(G.from(bits: item)) }
                p.pointee.timerLock.lock()
                let entries = p.timers.pointee.takeAll()
                p.pointee.timer0When.store(0, ordering: .releasing)
                p.pointee.timerLock.unlock()
                if !entries.isEmpty {
                    heir.pointee.timerLock.lock()
                    for e in entries { heir.timers.pointee.pushOwned(e) }
                    heir.pointee.timer0When.store(heir.timers.pointee.first?.when ?? 0, ordering: .releasing)
                    heir.pointee.timerLock.unlock()
                }
                stackPool.put(p.own.pointee.stackCache)
                p.own.pointee.stackCache.removeAll()
                gFreeLock.lock()
                gFree.append(contentsOf: p.own.pointee.gFree)
                gFreeLock.unlock()
                p.own.pointee.gFree.removeAll()
                p.pointee.status.store(PStatus.dead.rawValue, ordering: .releasing)
            }
            if let own = ownP, own.pointee.id >= n {
                m!.pointee.p = nil
                ownP = allP(0)
                acquirep(m!, ownP!)
            }
        } else {
            for i in old..<n { _ = makeP(i) }
        }
        procs.store(n, ordering: .sequentiallyConsistent)
        if let own = ownP { own.pointee.status.store(PStatus.running.rawValue, ordering: .releasing) }
        // Restart the world.
        lock.lock()
        globrunqputbatch(moved)
        var runnable: [P] = []
        for i in (0..<n).reversed() {
            let p = allP(i)
            if p == ownP { continue }
            if p.pointee.runq.isEmpty { pidleput(p) } else { runnable.append(p) }
        }
        stopRequested.store(false, ordering: .sequentiallyConsistent)
        lock.unlock()
        for p in runnable { startm(p, spinning: false) }
        wakeP()
    }
}

/// The C entry of every G: runs its function, then ends it.
private let gEntry: @convention(c) (UnsafeMutableRawPointer?) -> Void = { _ in
    gmp_g_started()
    do {
        let g = currentM()!.pointee.curg!
        let fn = g.s.pointee.fn.take()!
        fn()
    }
    // The G may have moved to another M while it ran: read the M again.
    let m = currentM()!
    m.pointee.action = .exit
    gmp_mcall_exit(m.pointee.curg!.ctx, m.pointee.ctx)
    gmp_fatal("fatal error: a finished G was resumed")
}

/// The scheduler's poller hook (Go's netpoll interface). `NetPoller` installs
/// an epoll-based one; the default only sleeps until the next timer.
package protocol Poller: AnyObject, Sendable {
    /// Waits up to `delayNanoseconds` (< 0: until `wake`, 0: do not block) and
    /// returns the Gs made ready by I/O.
    /// A wake-up must be consumed only by a blocking poll (`delayNanoseconds != 0`):
    /// a non-blocking poll on another M would otherwise eat the wake meant for the
    /// M blocked in `poll`.
    func poll(delayNanoseconds: Int64) -> GList
    /// Interrupts a blocked `poll` (from any thread).
    func wake()
    /// Whether any G waits on I/O (if not, the scheduler does not poll without a timer).
    var hasWaiters: Bool { get }
}

/// Holds the installed poller (published through an atomic word).
final class PollerBox: Sendable {
    let poller: any Poller
    init(_ p: any Poller) { poller = p }
}

/// The default poller: a futex sleep with the next timer as time-out.
final class FutexPoller: Poller, @unchecked Sendable {
    // @unchecked: the only state is a Note (atomic word).
    private let note = Note()
    func poll(delayNanoseconds: Int64) -> GList {
        // Only a blocking poll consumes a wake-up (see EpollPoller.poll).
        if delayNanoseconds != 0 {
            _ = note.sleep(timeoutNanoseconds: delayNanoseconds)
            note.clear()
        }
        return GList()
    }
    func wake() { note.wakeup() }
    var hasWaiters: Bool { false }
}
