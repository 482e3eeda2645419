import Dispatch
import Foundation
@testable import GMP
import Synchronization

/// Result holder for `runG`.
final class Slot<T>: @unchecked Sendable {
    // @unchecked: written by the runner thread before `sem.signal()`, read
    // after `sem.wait` returns (the semaphore orders the two).
    var value: T?
}

/// Runs `body` as a G via `GMP.run` on a helper thread and waits for it at
/// most `timeout` seconds. Returns nil on time-out (the test then fails
/// instead of hanging).
func runG<T>(timeout: Double = 120, _ body: @escaping @Sendable () -> T) -> T? {
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
func rssBytes() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let parts = s.split(separator: " ")
    return (Int(parts[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// A fixed array of atomic counters.
final class Counters: @unchecked Sendable {
    // @unchecked: elements are atomics.
    let p: UnsafeMutablePointer<Atomic<Int>>
    let count: Int
    init(_ n: Int) {
        count = n
        p = .allocate(capacity: n)
        for i in 0..<n { (p + i).initialize(to: Atomic(0)) }
    }
    deinit { p.deallocate() }
    func add(_ i: Int) { p[i].add(1, ordering: .relaxed) }
    subscript(i: Int) -> Int { p[i].load(ordering: .relaxed) }
}

/// A log guarded by a G-aware mutex.
final class Log<T>: @unchecked Sendable {
    // @unchecked: `items` is guarded by `mu`.
    let mu = Mutex()
    var items: [T] = []
    func append(_ x: T) { mu.withLock { items.append(x) } }
    var snapshot: [T] { mu.withLock { items } }
}
