import CGMP
import Glibc
import Synchronization

// Idle stack trimming: a G parked for a while gives its stack pages back.
//
// A parked G's stack holds a few hundred bytes to a few KiB of live frames
// at its top, [sp, hi), but its pages stay resident: a 4 KiB page at least,
// more if it once ran deeper. sysmon (every quarter of `trimAfter`, at most
// every 5 ms, looking at up to `trimScan` Gs each time) looks
// for Gs parked longer than `trimAfter` (1 s; GMP_TRIM_AFTER, or
// `GMP.stackTrimAfter`), copies each one's live top to the heap (exactly
// `hi - sp` bytes), and gives all of its stack pages back with
// MADV_DONTNEED. The address range stays the G's, so its frames come back
// at the same addresses (Swift frames point into themselves and cannot
// move). Neighbouring stacks, and the guard pages between them, go in one
// range, and 64 ranges in one process_madvise call that (Linux 6.16+) does
// one TLB flush for all of them, as the stack pool's scavenger does
// (StackPool.releasePages): trimming 100,000 Gs is a few hundred calls and
// rounds of IPIs, not 100,000.
//
// The M about to run a G checks its trim word before switching to it (one
// load in `execute`); a trimmed G gets its top copied back first, so it
// never runs on half-restored memory. The one page the copy touches faults
// back in then.
//
// Protocol. The trim word (gmp_gctx.trim): NONE -> BUSY (sysmon's claim,
// a sequentially consistent CAS) -> DONE (release, once the copy is saved
// and the pages are given back) -> BUSY (the M about to run the G claims
// the copy, a CAS) -> NONE (release, once it has restored it); or BUSY ->
// NONE (release) when sysmon backs off. The goroutine dump
// (gmp_ctx_frames) holds a DONE word at BUSY too, while it walks the copy,
// and puts DONE back: whoever holds BUSY owns the copy, so the dump never
// reads a copy being freed and never stores DONE onto a G that runs.
//  1. sysmon's first look (racy peeks: status, wait reason, pinned, since)
//     only picks candidates. It claims, then loads the G's status
//     (sequentially consistent, after the claim) and, only then, its wait
//     reason and pinned flag: a G seen in a long sleep may have woken and
//     parked again since, in a wait that pins its stack (a send of a big
//     value) or one the runtime cannot describe (`GMP.park`). It trims
//     only a G that is still `.waiting`, for a trimmable reason, unpinned.
//     The M that parks a G stores the G's stack pointer, reason and flag,
//     then a release fence, then `.waiting`; sysmon's status load is
//     followed by an acquire fence: a `.waiting` seen comes with that
//     park's reason, flag and stack pointer (on AArch64 too).
//  2. Whoever readies a G sets `.runnable` before it publishes the G (run
//     queue release/exchange, or the global queue's lock), and an M takes a
//     G from there with a locked instruction (CAS, lock) before it loads
//     the trim word; a G the M takes straight from a poll gets a full fence
//     after `.runnable` instead (`runnableFromPoll`).
//  So either sysmon's status load sees the G no longer waiting (it backs
// off), or the M's trim load sees BUSY or DONE (it waits for DONE, then
// restores): each side stores, then a full barrier, then loads. A G that
// stays `.waiting` cannot run, so it cannot end and be freed while sysmon
// holds its claim outside `allgLock`. A G readied while BUSY waits on its M
// for the rest of the batch (at most `trimBatch` copies and their madvise
// calls).
//
// Only Gs whose stack nobody else touches while they wait are trimmed. A
// channel operation completes in the waker, which copies the value into (or
// out of) the waiter's slot before it readies it (Go's direct hand-off);
// had the slot been in the waiter's frame, that would write into pages
// given back, or read zeros from them. So a waiter whose value fits puts it
// in its sudog (`Sudog.slot`, 32 bytes), and one whose value does not (or a
// select with a send case) pins its stack for the wait (`pinsStack`), and
// is not trimmed. Go has the same problem when it moves a stack, and locks
// the G's channels to adjust the sudogs' pointers (`syncadjustsudogs`).
// A G parked by a direct `GMP.park` (wait reason unknown) is not trimmed
// either: the runtime cannot know what its caller handed out.
//
// What a trimmed G costs: its G state and switch context, its closure, its
// waits (sudog), and its saved top, which is one malloc of the bytes in use.
// Overflow detection is unchanged: the guard page is not touched (its
// guard region or PROT_NONE survives MADV_DONTNEED, also when a coalesced
// range spans it: checked on Linux 6.18), and an unguarded
// stack's canary is the zero its lowest word reads as after the trim.

extension G {
    /// The G's status and since when it waits, read while other threads may
    /// be changing them (no stack walk, no second look: sysmon's first pass
    /// over every G, which claims before it relies on anything).
    func parkedSince() -> (GStatus?, WaitReason, pinned: Bool, Int64) {
        var status: UInt8 = 0
        var reason: UInt8 = 0
        var pinned: UInt8 = 1
        var since: Int64 = 0
        gmp_peek(&status, UnsafeRawPointer(s) + G.statusOffset, 1)
        gmp_peek(&reason, UnsafeRawPointer(s) + G.reasonOffset, 1)
        gmp_peek(&pinned, UnsafeRawPointer(s) + G.pinnedOffset, 1)
        gmp_peek(&since, UnsafeRawPointer(s) + G.sinceOffset, 8)
        return (GStatus(rawValue: status), WaitReason(rawValue: reason) ?? .unknown, pinned != 0, since)
    }
}

extension G {
    /// For a G the M took straight from a poll, to run it: `.runnable`, then
    /// a full fence before `execute` loads the G's trim word. Every other way
    /// to a G passes a locked instruction between the store of `.runnable`
    /// and that load (the run queue's CAS, the global queue's lock); without
    /// one, x86 may let the load pass the store, and sysmon, whose claim is
    /// a store then a load too, could see the G still waiting while this M
    /// sees no claim (the store-buffer pattern).
    @inline(__always) func runnableFromPoll() {
        s.pointee.status = .runnable
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }
}

extension WaitReason {
    /// Whether a G waiting for this may be trimmed: every wait the runtime
    /// describes, unless the G's stack is pinned (`GState.stackPinned`).
    /// `unknown` is a park the runtime did not describe (`GMP.park` called
    /// directly, with who knows what pointers into the stack handed out),
    /// so it is left alone.
    var trimmable: Bool { self != .unknown }
}

extension Scheduler {
    /// Claims at most this many Gs at a time; a G readied meanwhile waits
    /// for the batch.
    static let trimBatch = 256

    /// G states looked at per pass (sysmon's time is bounded; a pass every
    /// quarter of `trimAfter` gets round 100,000 Gs in well under a second).
    static let trimScan = 32_768

    /// Stacks deeper than this are left whole (copying them aside would
    /// save little).
    static let trimMaxSaved = 64 * 1024
    /// Where a G's stack bounds start in its switch state: `stack_lo`,
    /// `stack_hi`, `guard_lo`, `guard_hi`, in `Stack`'s order.
    static let ctxStackOffset = MemoryLayout<gmp_gctx>.offset(of: \.stack_lo)!

    /// sysmon: trims the stacks of Gs parked longer than `trimAfter` (see the
    /// comment at the top of this file).
    func trimIdleStacks(now: Int64) {
        let after = trimAfter.load(ordering: .relaxed)
        guard after > 0 else { return }
        var claimed: [G] = []
        claimed.reserveCapacity(Scheduler.trimBatch)
        // At most `trimScan` G states a pass, from where the last one
        // stopped: the registry also holds every pooled G ever made.
        var i = trimCursor
        var scanned = 0
        var delayed = 0
        defer { trimCursor = i }
        while true {
            allgLock.lock()
            let limit = min(allgs.count, Scheduler.trimScan)
            while scanned < limit && claimed.count < Scheduler.trimBatch {
                if i >= allgs.count { i = 0 }
                let g = allgs[i]
                i += 1
                scanned += 1
                // A first look without claiming: parked long enough, with a
                // stack that is whole (racy reads, hence peeks).
                let (status, reason, pinned, since) = g.parkedSince()
                guard status == .waiting, reason.trimmable, !pinned, since != 0, now - since >= after,
                      gmp_trim_state(g.ctxUnread) == GMP_TRIM_NONE else { continue }
                let delay = trimClaimDelay.load(ordering: .relaxed)
                if delay > 0 && delayed < 8 { // (a test's hook: see `trimClaimDelay`)
                    delayed += 1
                    gmp_usleep(UInt32(delay))
                }
                let base = UnsafeRawPointer(g.s)
                if gmp_trim_claim(g.ctxUnread, (base + G.statusOffset).assumingMemoryBound(to: UInt8.self),
                                  GStatus.waiting.rawValue,
                                  (base + G.reasonOffset).assumingMemoryBound(to: UInt8.self),
                                  WaitReason.unknown.rawValue,
                                  (base + G.pinnedOffset).assumingMemoryBound(to: UInt8.self)) {
                    claimed.append(g)
                }
            }
            let more = scanned < limit
            allgLock.unlock()
            if claimed.isEmpty { return }
            trim(claimed)
            claimed.removeAll(keepingCapacity: true)
            if !more { return }
        }
    }

    /// Saves the tops of claimed stacks, gives their pages back, and
    /// publishes them as trimmed.
    private func trim(_ claimed: [G]) {
        var stacks: [Stack] = []
        var trimmed: [G] = []
        var saved = 0
        for g in claimed {
            // Written when the G first ran, before it parked; the G cannot
            // run (or end) while claimed. Peeked: TSan cannot see that order.
            var st = Stack(lo: 0, hi: 0, guardLo: 0, guardHi: 0)
            gmp_peek(&st, UnsafeRawPointer(g.ctxUnread) + Scheduler.ctxStackOffset, MemoryLayout<Stack>.size)
            let n = gmp_trim_save(g.ctxUnread, Scheduler.trimMaxSaved)
            if n == 0 {
                gmp_trim_cancel(g.ctxUnread)
                continue
            }
            saved += n
            trimmed.append(g)
            stacks.append(st)
        }
        let calls = StackPool.releasePages(of: &stacks)
        for g in trimmed { gmp_trim_publish(g.ctxUnread) }
        trims.add(trimmed.count, ordering: .relaxed)
        trimmedBytes.add(saved, ordering: .relaxed)
        trimCalls.add(calls, ordering: .relaxed)
    }

    /// The M about to run `g`, whose trim word is not NONE: waits out a trim
    /// in progress and puts a trimmed G's top back.
    @inline(never)
    func untrim(_ g: G) {
        let n = gmp_trim_restore(g.ctx)
        if n > 0 {
            untrims.add(1, ordering: .relaxed)
            trimmedBytes.subtract(n, ordering: .relaxed)
        }
    }

    /// Parses GMP_TRIM_AFTER: `off` or `0` (never trim), or a time of at most
    /// a day: a number of milliseconds, or with `ms` or `s`. nil if it is
    /// none of these.
    static func parseTrimAfter(_ text: String) -> Int64? {
        let t = String(text.lowercased().filter { $0 != " " })
        if t == "off" { return 0 }
        var digits = Substring(t)
        var unit: Int64 = 1_000_000
        if t.hasSuffix("ms") {
            digits = t.dropLast(2)
        } else if t.hasSuffix("s") {
            digits = t.dropLast()
            unit = 1_000_000_000
        }
        guard let v = Int64(digits), v >= 0 else { return nil }
        let (ns, overflow) = v.multipliedReportingOverflow(by: unit)
        return overflow || ns > 86_400_000_000_000 ? nil : ns // at most a day
    }
}

extension GMP {
    /// For tests of the trimmer: microseconds sysmon waits between its first
    /// look at a parked G and its claim on the G's stack (0: none), for the
    /// first 8 claims of each pass.
    package static var trimClaimDelayForTesting: Int {
        get { Scheduler.shared.trimClaimDelay.load(ordering: .relaxed) }
        set { Scheduler.shared.trimClaimDelay.store(max(0, newValue), ordering: .relaxed) }
    }

    /// How long a G must stay parked before sysmon gives its stack pages back
    /// (keeping only the bytes its frames use, copied aside until it runs
    /// again); nil: never. Default 1 s, or `GMP_TRIM_AFTER` (`off`, or
    /// milliseconds, or with an `ms`/`s` suffix). Shorter saves memory
    /// sooner, at the cost of a copy and a page fault for each G that wakes
    /// after it. While a G is parked, no other thread may touch memory on its
    /// stack (as with Go's moving stacks): the runtime's own waits keep
    /// their values off it.
    ///
    /// Setting `.zero` or a negative duration traps: say nil for never (a
    /// zero would otherwise read as "trim at once" and a negative as
    /// nothing sensible). A duration below a nanosecond is one nanosecond.
    public static var stackTrimAfter: Duration? {
        get {
            let ns = Scheduler.shared.trimAfter.load(ordering: .relaxed)
            return ns > 0 ? .nanoseconds(ns) : nil
        }
        set {
            if let d = newValue, d <= .zero {
                gmp_fatal("fatal error: GMP.stackTrimAfter = \(d) must be positive; nil turns trimming off")
            }
            let ns = newValue.map { max(1, GMP.nanoseconds($0)) } ?? 0
            Scheduler.shared.trimAfter.store(ns, ordering: .relaxed)
        }
    }
}
