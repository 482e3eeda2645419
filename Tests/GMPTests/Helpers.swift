import Dispatch
import Foundation
@_exported import GMPTestSupport
@testable import GMP
import Synchronization

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
