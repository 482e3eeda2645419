// Helpers shared by the test targets (a library target, not a test target).
import Dispatch
import Foundation
import GMP
import Synchronization

/// Holds a result across threads; the semaphore in `runG` orders the accesses.
public final class Slot<T>: @unchecked Sendable {
    // @unchecked: written before `sem.signal()`, read after `sem.wait()`.
    public var value: T?
    public init() {}
}

/// Runs `body` as a G via `GMP.run` on a helper thread, with `procs` Ps if
/// given, and waits for it at most `timeout` seconds. Returns nil on
/// time-out, so a hang fails the test instead of hanging the run.
public func runG<T>(procs: Int? = nil, timeout: Double = 120, _ body: @escaping @Sendable () -> T) -> T? {
    if let procs { GMP.setProcs(procs) }
    let sem = DispatchSemaphore(value: 0)
    let slot = Slot<T>()
    let thread = Thread {
        slot.value = GMP.run { body() }
        sem.signal()
    }
    thread.stackSize = 1 << 20
    thread.start()
    if sem.wait(timeout: .now() + timeout) == .timedOut { return nil }
    return slot.value
}

/// Resident set size of this process in bytes.
public func rssBytes() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let parts = s.split(separator: " ")
    return (Int(parts[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// Inside a G: yields until `condition` holds, for at most `seconds`, and
/// returns whether it held. Tests wait on the state they need (a G parked on
/// a channel or a socket), never on a guessed number of yields.
public func waitFor(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = GMP.now + Int64(seconds * 1e9)
    while !condition() {
        if GMP.now >= deadline { return false }
        GMP.yield()
    }
    return true
}
