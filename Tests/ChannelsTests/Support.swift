import Channels
import Dispatch
import Foundation
import GMP
import Synchronization

/// Holds a result across threads; the semaphore in `runG` orders the accesses.
final class Slot<T>: @unchecked Sendable {
    // @unchecked: written before `sem.signal()`, read after `sem.wait()`.
    var value: T?
}

/// Runs `body` as a G with `procs` Ps, waiting at most `timeout` seconds.
/// Returns nil on time-out, so a hang fails the test instead of hanging it.
func runG<T>(procs: Int = 2, timeout: Double = 60, _ body: @escaping @Sendable () -> T) -> T? {
    GMP.setProcs(procs)
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

/// An atomic counter that closures can share.
final class Counter: Sendable {
    let n = Atomic<Int>(0)
    func add(_ d: Int = 1) { n.add(d, ordering: .relaxed) }
    var value: Int { n.load(ordering: .relaxed) }
}

/// Proc counts every scenario runs with: one P, and several.
let procCounts = [1, 2, 4]
