import Channels
import Dispatch
import Foundation
import GMP
import Synchronization
@_exported import GMPTestSupport

/// An atomic counter that closures can share.
final class Counter: Sendable {
    let n = Atomic<Int>(0)
    func add(_ d: Int = 1) { n.add(d, ordering: .relaxed) }
    var value: Int { n.load(ordering: .relaxed) }
}

/// Proc counts every scenario runs with: one P, and several.
let procCounts = [1, 2, 4]
