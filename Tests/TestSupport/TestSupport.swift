// Helpers shared by the test targets (a library target, not a test target).
import Dispatch
import Foundation
import GMP
import Synchronization

/// Holds a result across threads; whoever hands it over (a semaphore, a
/// continuation) orders the accesses.
public final class Slot<T>: @unchecked Sendable {
    // @unchecked: written before the hand-over, read after it.
    public var value: T?
    public init() {}
}

// MARK: - The runtime is one per process: a lease on it

/// Who may run Gs, and with how many Ps, while tests run in parallel.
///
/// There is one scheduler per process, and `GMP.setProcs` is process-wide: a
/// test that set 1 P and checks its Gs stay on P 0 would fail if a test
/// beside it set 4, and a resize stops the world, waiting for every running
/// G to park. So every helper here that runs GMP work holds a lease while it
/// does: a *shared* one (any number of holders; one that names a P count
/// shares only with holders content with that count), or an *exclusive* one
/// (`alone`), for a test that reads process-wide counters (`GMP.stats`, RSS,
/// the goroutine dump) or changes the P count itself. The P count is changed
/// only between leases, never under a holder. Leases are granted in the order
/// asked (first come, first served), so a waiting request is never starved.
/// Waiting for a lease never blocks a cooperative-pool thread in the async
/// helpers. The synchronous ones (for exit-test bodies, which run alone in a
/// child process) block: they wait at most `blockingWait` for a lease and
/// then go on without one, as they did before there was a lease, since a
/// test blocking a pool thread on a lease could hold up the test that holds
/// it (an `alone` body needs a pool thread to go on).
final class GMPLease: Sendable {
    static let shared = GMPLease()

    /// How long a synchronous helper waits for a lease before it goes on
    /// without one.
    static let blockingWait: Double = 10

    /// Set while the current task runs `alone`: the helpers it calls take no
    /// lease of their own (it holds the exclusive one), and set the P count
    /// directly.
    @TaskLocal static var heldAlone = false

    private struct Waiter {
        let id: UInt64
        let exclusive: Bool
        let procs: Int?
        /// Hands the lease over; the argument says whether the P count must
        /// be changed (to `procs`) before the holder runs Gs.
        let grant: @Sendable (_ resize: Bool) -> Void
    }

    private struct State {
        var holders = 0
        var exclusive = false
        var resizing = false
        var queue: [Waiter] = []
        var nextID: UInt64 = 0
    }

    private let state = Synchronization.Mutex(State())

    /// Grants the lease to the waiters at the head of the queue that can have
    /// it now; called with the state locked, the grants run after unlocking.
    private static func pump(_ s: inout State) -> [() -> Void] {
        var grants: [() -> Void] = []
        while !s.resizing, let w = s.queue.first {
            let resize = w.procs.map { $0 != GMP.procs } ?? false
            if s.holders > 0 && (s.exclusive || w.exclusive || resize) { break }
            s.queue.removeFirst()
            s.holders += 1
            s.exclusive = w.exclusive
            s.resizing = resize
            grants.append { w.grant(resize) }
        }
        return grants
    }

    private func enqueue(exclusive: Bool, procs: Int?, grant: @escaping @Sendable (Bool) -> Void) -> UInt64 {
        let (id, grants) = state.withLock { s in
            s.nextID += 1
            s.queue.append(Waiter(id: s.nextID, exclusive: exclusive, procs: procs, grant: grant))
            return (s.nextID, Self.pump(&s))
        }
        for g in grants { g() }
        return id
    }

    /// Waits (suspended) for a lease, and sets the P count to `procs` if it
    /// must.
    func acquire(exclusive: Bool, procs: Int?) async {
        let resize = await withUnsafeContinuation { (k: UnsafeContinuation<Bool, Never>) in
            _ = enqueue(exclusive: exclusive, procs: procs) { k.resume(returning: $0) }
        }
        if resize, let procs {
            await resizeNow(procs)
            resized()
        }
    }

    /// Waits (blocking) at most `seconds` for a lease, and sets the P count to
    /// `procs` if it must (bounded by `resizeWithin`). False if it was not
    /// granted in time.
    func acquireBlocking(exclusive: Bool, procs: Int?, within seconds: Double, resizeWithin: Double = 60) -> Bool {
        let sem = DispatchSemaphore(value: 0)
        let resize = Atomic<Bool>(false)
        let id = enqueue(exclusive: exclusive, procs: procs) {
            resize.store($0, ordering: .relaxed)
            sem.signal()
        }
        if sem.wait(timeout: .now() + seconds) == .timedOut {
            let (withdrawn, grants) = state.withLock { s -> (Bool, [() -> Void]) in
                guard let i = s.queue.firstIndex(where: { $0.id == id }) else { return (false, []) }
                s.queue.remove(at: i)
                return (true, Self.pump(&s))
            }
            for g in grants { g() }
            if withdrawn { return false }
            sem.wait() // granted meanwhile: it has signalled, or is about to
        }
        if resize.load(ordering: .relaxed), let procs {
            resizeBlocking(procs, within: resizeWithin)
            resized()
        }
        return true
    }

    private func resized() {
        let grants = state.withLock { s in
            s.resizing = false
            return Self.pump(&s)
        }
        for g in grants { g() }
    }

    func release() {
        let grants = state.withLock { s in
            s.holders -= 1
            if s.holders == 0 { s.exclusive = false }
            return Self.pump(&s)
        }
        for g in grants { g() }
    }
}

/// Runs `body` on a new thread (1 MiB of stack) and suspends until it ends or
/// `timeout` seconds pass, whichever is first; then calls `end` (exactly
/// once) and resumes with its value, or nil on time-out. The calling
/// cooperative-pool thread is free meanwhile.
private func awaitThread<T>(timeout: Double, end: @escaping @Sendable () -> Void,
                            _ body: @escaping @Sendable () -> T) async -> T? {
    let once = Once()
    let slot = await withUnsafeContinuation { (k: UnsafeContinuation<Slot<T>?, Never>) in
        let thread = Thread {
            let slot = Slot<T>()
            slot.value = body()
            if once.take() {
                end()
                k.resume(returning: slot)
            }
        }
        thread.stackSize = 1 << 20
        thread.start()
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout) {
            if once.take() {
                end()
                k.resume(returning: nil)
            }
        }
    }
    return slot?.value
}

/// For the synchronous helpers: unless the calling task runs `alone`, waits
/// (blocking) for a shared lease, or an exclusive one, with `procs` Ps (set
/// directly inside `alone`), at most `GMPLease.blockingWait`; past that it
/// goes on without one (setting `procs` regardless). Returns what to call
/// when done: the release of the lease it got, if any.
private func leaseBlocking(exclusive: Bool, procs: Int?, resizeWithin: Double = 60) -> @Sendable () -> Void {
    if !GMPLease.heldAlone && GMPLease.shared.acquireBlocking(exclusive: exclusive, procs: procs,
                                                               within: GMPLease.blockingWait, resizeWithin: resizeWithin) {
        return { GMPLease.shared.release() }
    }
    if let procs { resizeBlocking(procs, within: resizeWithin) }
    return {}
}

/// For the async helpers: unless the calling task runs `alone`, waits
/// (suspended) for a shared lease with `procs` Ps (set directly inside
/// `alone`). Returns what to call when done: the lease's release, if any.
private func leaseShared(procs: Int?) async -> @Sendable () -> Void {
    if GMPLease.heldAlone {
        if let procs { await resizeNow(procs) }
        return {}
    }
    await GMPLease.shared.acquire(exclusive: false, procs: procs)
    return { GMPLease.shared.release() }
}

/// Runs `body` on a new thread and blocks the calling thread until it ends,
/// at most `timeout` seconds; then calls `end` (exactly once) and returns its
/// value, or nil on time-out.
private func blockOnThread<T>(timeout: Double, end: @escaping @Sendable () -> Void,
                              _ body: @escaping @Sendable () -> T) -> T? {
    let once = Once()
    let sem = DispatchSemaphore(value: 0)
    let slot = Slot<T>()
    let thread = Thread {
        slot.value = body()
        if once.take() {
            end()
            sem.signal()
        }
    }
    thread.stackSize = 1 << 20
    thread.start()
    if sem.wait(timeout: .now() + timeout) == .timedOut {
        if once.take() {
            end()
            return nil
        }
        sem.wait() // it ended just now, and signals
    }
    return slot.value
}

/// Runs `body` as a G via `GMP.run` on a helper thread, with `procs` Ps if
/// given, and waits for it at most `timeout` seconds. Returns nil on
/// time-out, so a hang fails the test instead of hanging the run. The
/// default bound is far above what any test needs here, even under
/// ThreadSanitizer on a loaded machine; tests that need more say so.
///
/// Blocks the calling thread: for exit-test bodies (a child process, where
/// nothing else runs). From async code the `async` overload is chosen, which
/// suspends instead. Holds a shared lease on the runtime (`GMPLease`) while
/// it runs, if it gets one in time.
public func runG<T>(procs: Int? = nil, timeout: Double = 30, _ body: @escaping @Sendable () -> T) -> T? {
    let end = leaseBlocking(exclusive: false, procs: procs)
    return blockOnThread(timeout: timeout, end: end) {
        GMP.run { body() }
    }
}

/// Runs `body` as a G via `GMP.run` on a thread of its own, with `procs` Ps
/// if given, and suspends until it finishes, at most `timeout` seconds (the
/// cooperative-pool thread that ran the test is free meanwhile, for tasks).
/// Returns nil on time-out, so a hang fails the test instead of hanging the
/// run (the G is left running). The default bound is far above what any test
/// needs here, even under ThreadSanitizer on a loaded machine; tests that
/// need more say so.
///
/// Holds a shared lease on the runtime while the G runs (see `GMPLease`):
/// the P count stays `procs` throughout, and it waits first, suspended, for
/// tests that need another count or the runtime `alone` to finish. The
/// time-out counts from when the G starts.
public func runG<T>(procs: Int? = nil, timeout: Double = 30, _ body: @escaping @Sendable () -> T) async -> T? {
    await awaitThread(timeout: timeout, end: await leaseShared(procs: procs)) {
        GMP.run { body() }
    }
}

/// Runs `body` on a new plain thread (no G, no Swift task) and waits for it
/// at most `timeout` seconds; nil on time-out. For tests of what plain
/// threads do: a test function runs as a Swift task, where a blocking
/// channel operation traps instead of waiting (Sudog.blockedTaskMessage).
///
/// Blocks the calling thread: for exit-test bodies. From async code the
/// `async` overload is chosen, which suspends instead. With `procs`, the P
/// count is `procs` while it runs. Holds a shared lease on the runtime
/// (`GMPLease`) while it runs, if it gets one in time.
public func onThread<T>(procs: Int? = nil, timeout: Double = 30, _ body: @escaping @Sendable () -> T) -> T? {
    blockOnThread(timeout: timeout, end: leaseBlocking(exclusive: false, procs: procs), body)
}

/// Runs `body` on a new plain thread (no G, no Swift task) and suspends
/// until it ends, at most `timeout` seconds; nil on time-out (the thread is
/// left running). For tests of what plain threads do: a test function runs as
/// a Swift task, where a blocking channel operation traps instead of waiting
/// (Sudog.blockedTaskMessage).
///
/// Holds a shared lease on the runtime while the thread runs (its body may
/// start Gs; see `GMPLease`), with `procs` Ps throughout if given.
public func onThread<T>(procs: Int? = nil, timeout: Double = 30, _ body: @escaping @Sendable () -> T) async -> T? {
    await awaitThread(timeout: timeout, end: await leaseShared(procs: procs), body)
}

/// Runs `body` with the runtime to this test alone: it waits (suspended) for
/// the tests running Gs to finish, sets `procs` Ps if given, and until `body`
/// returns no other test runs a G through these helpers or changes the P
/// count. The `runG`, `onThread` and `setProcs` calls inside `body` take no
/// lease of their own and set the P count directly.
///
/// For a test that reads process-wide state other tests change: `GMP.stats`
/// counters over a baseline, RSS, the goroutine dump, or the P count, which
/// it changes or checks itself. (Gs that tests start outside these helpers,
/// e.g. through `withGoroutine`, are not held off.)
public func alone<T>(procs: Int? = nil, _ body: () async throws -> T) async rethrows -> T {
    if GMPLease.heldAlone {
        if let procs { await resizeNow(procs) }
        return try await body()
    }
    await GMPLease.shared.acquire(exclusive: true, procs: procs)
    do {
        let r = try await GMPLease.$heldAlone.withValue(true) { try await body() }
        GMPLease.shared.release()
        return r
    } catch {
        GMPLease.shared.release()
        throw error
    }
}

/// A flag that one party, the first to ask, takes.
final class Once: Sendable {
    let taken = Atomic<Bool>(false)
    func take() -> Bool { !taken.exchange(true, ordering: .acquiringAndReleasing) }
}

/// From async code: runs `body` in a task and waits for it at most
/// `seconds`. Returns its value (or rethrows its error), or nil on time-out,
/// when the task is cancelled and left to end: a hang fails the test instead
/// of hanging the run.
public func bounded<T: Sendable>(seconds: Double = 30, _ body: @escaping @Sendable () async throws -> T) async throws -> T? {
    let once = Once()
    return try await withUnsafeThrowingContinuation { (k: UnsafeContinuation<T?, any Error>) in
        let claim = { @Sendable in once.take() }
        let task = Task {
            do {
                let v = try await body()
                if claim() { k.resume(returning: v) }
            } catch {
                if claim() { k.resume(throwing: error) }
            }
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) {
            if claim() {
                task.cancel()
                k.resume(returning: nil)
            }
        }
    }
}

/// Ends the process because `GMP.setProcs(n)` took longer than `seconds`.
private func resizeHung(_ n: Int, _ seconds: Double) -> Never {
    let msg = "GMP.setProcs(\(n)) did not finish in \(Int(seconds)) s: a G (of an earlier test that failed?) "
        + "runs without parking; ending the test process\n"
    FileHandle.standardError.write(Data(msg.utf8))
    exit(1)
}

/// `GMP.setProcs(n)`, bounded: a resize waits for every running G to park,
/// so a G that an earlier, failed test left running for ever would hang the
/// rest of the run here. After `seconds` it ends the process with a message
/// instead, so the run fails fast and says why.
///
/// Blocks the calling thread: for exit-test bodies. From async code the
/// `async` overload is chosen, which suspends instead. Outside `alone` it
/// takes the runtime alone (`GMPLease`) for the change, if it gets it in
/// time, and lets go.
public func setProcs(_ n: Int, within seconds: Double = 60) {
    if GMPLease.heldAlone {
        resizeBlocking(n, within: seconds)
    } else {
        leaseBlocking(exclusive: true, procs: n, resizeWithin: seconds)()
    }
}

/// `GMP.setProcs(n)` on a thread of its own, blocking until it is done;
/// bounded as `setProcs`. The caller holds a lease that lets it change the
/// count.
private func resizeBlocking(_ n: Int, within seconds: Double = 60) {
    let done = DispatchSemaphore(value: 0)
    let t = Thread {
        GMP.setProcs(n)
        done.signal()
    }
    t.start()
    if done.wait(timeout: .now() + seconds) == .timedOut { resizeHung(n, seconds) }
}

/// `GMP.setProcs(n)` on a thread of its own, suspending until it is done;
/// bounded as the blocking `setProcs`. The caller holds a lease that lets
/// it change the count.
func resizeNow(_ n: Int, within seconds: Double = 60) async {
    guard n != GMP.procs else { return }
    let done: Bool? = await awaitThread(timeout: seconds, end: {}) {
        GMP.setProcs(n)
        return true
    }
    if done == nil { resizeHung(n, seconds) }
}

/// `GMP.setProcs(n)`, bounded as the blocking `setProcs`, suspending instead
/// of blocking. Inside `alone` it sets the count at once; otherwise it waits
/// for the tests running Gs to finish, takes the runtime alone for the
/// change and lets go. The count then holds only until a test that asks for
/// another: a test that needs `n` Ps for its Gs passes `procs: n` to `runG`
/// or runs `alone(procs: n)`.
public func setProcs(_ n: Int, within seconds: Double = 60) async {
    if GMPLease.heldAlone {
        await resizeNow(n, within: seconds)
    } else {
        await GMPLease.shared.acquire(exclusive: true, procs: n)
        GMPLease.shared.release()
    }
}

/// Resident set size of this process in bytes.
public func rssBytes() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let parts = s.split(separator: " ")
    return (Int(parts[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// Inside a G: yields until `condition` holds, for at most `seconds`, and
/// returns whether it held. Tests wait on the state they need (a G parked on
/// a channel or a socket), never on a guessed number of yields. With
/// `every`, it sleeps that many nanoseconds between looks instead of
/// yielding: for a condition that asks another process (a server's /stats).
public func waitFor(seconds: Double = 10, every interval: Int64? = nil, _ condition: () -> Bool) -> Bool {
    let deadline = GMP.now + Int64(seconds * 1e9)
    while !condition() {
        if GMP.now >= deadline { return false }
        if let interval { GMP.sleep(nanoseconds: interval) } else { GMP.yield() }
    }
    return true
}

/// Inside a G: the value of `count` (a `GMP.stats` counter) once it has
/// stopped changing, i.e. read the same over 20 ms, within `seconds`. A
/// baseline for "no G leaked" must not be taken while Gs of an earlier test
/// are still exiting (or parking): the count would drift under the test.
public func settled(within seconds: Double = 10, _ count: () -> Int) -> Int {
    let deadline = GMP.now + Int64(seconds * 1e9)
    var last = count()
    var since = GMP.now
    while GMP.now < deadline {
        GMP.sleep(nanoseconds: 1_000_000)
        let v = count()
        if v != last {
            last = v
            since = GMP.now
        } else if GMP.now - since >= 20_000_000 {
            break
        }
    }
    return last
}

/// What each open fd of process `pid` (default: this one) is, for failure
/// messages: "7->socket:[1234] tcp 127.0.0.1:8080 127.0.0.1:51234 ESTABLISHED".
public func fdList(pid: Int32? = nil) -> String {
    let dir = "/proc/\(pid.map(String.init) ?? "self")"
    let fm = FileManager.default
    // TCP sockets by inode, from /proc/PID/net/tcp{,6}.
    let states = ["01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
                  "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"]
    var tcp: [String: String] = [:]
    for table in ["tcp", "tcp6"] {
        guard let text = try? String(contentsOfFile: "\(dir)/net/\(table)", encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ")
            guard f.count > 9 else { continue }
            func addr(_ s: Substring) -> String {
                let parts = s.split(separator: ":")
                guard parts.count == 2, let port = Int(parts[1], radix: 16) else { return String(s) }
                if parts[0].count == 8, let ip = UInt32(parts[0], radix: 16) {
                    return "\(ip & 255).\(ip >> 8 & 255).\(ip >> 16 & 255).\(ip >> 24):\(port)"
                }
                return "[\(parts[0])]:\(port)"
            }
            tcp[String(f[9])] = "\(table) \(addr(f[1])) \(addr(f[2])) \(states[String(f[3])] ?? String(f[3]))"
        }
    }
    let names = (try? fm.contentsOfDirectory(atPath: "\(dir)/fd")) ?? []
    return names.sorted { (Int($0) ?? 0) < (Int($1) ?? 0) }.map { n in
        let target = (try? fm.destinationOfSymbolicLink(atPath: "\(dir)/fd/\(n)")) ?? "?"
        var d = "\(n)->\(target)"
        if target.hasPrefix("socket:["), let inode = target.dropFirst(8).split(separator: "]").first {
            if let t = tcp[String(inode)] {
                d += " " + t
            } else if let unix = try? String(contentsOfFile: "\(dir)/net/unix", encoding: .utf8),
                      unix.split(separator: "\n").contains(where: { $0.split(separator: " ").dropFirst(6).first == inode }) {
                d += " unix"
            } else {
                d += " (not in the TCP or Unix tables: closed, or never bound)"
            }
        }
        if let info = try? String(contentsOfFile: "\(dir)/fdinfo/\(n)", encoding: .utf8),
           let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags:") }) {
            d += " " + flags.replacingOccurrences(of: "\t", with: "")
        }
        return d
    }.joined(separator: "\n")
}
