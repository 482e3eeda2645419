import Foundation
import GMP
import Synchronization
import Testing

enum RequestContext {
    @TaskLocal static var id: Int = -1
}

/// Task-local values bound in a G follow the G (TaskLocals.swift).
@Suite struct TaskLocalTests {
    @Test("A TaskLocal bound with withValue in a G is the G's own across parks and Ms: 64 Gs sleeping inside their bindings each read only their own")
    func bindingFollowsItsG() async {
        let n = 64, reads = 200
        let r = await runG(procs: 2) { () -> (wrong: Int, outside: Int, inheritedByGo: Int) in
            let wrong = Atomic<Int>(0)
            let outside = Atomic<Int>(0)
            let inherited = Atomic<Int>(0)
            let done = WaitGroup(n)
            for i in 0..<n {
                go {
                    RequestContext.$id.withValue(i) {
                        for _ in 0..<reads {
                            GMP.sleep(nanoseconds: Int64(GMP.fastrand() % 50_000))
                            if RequestContext.id != i { wrong.add(1, ordering: .relaxed) }
                        }
                        // A G started here begins with no bindings (as a new thread would).
                        let child = WaitGroup(1)
                        go {
                            if RequestContext.id != -1 { inherited.add(1, ordering: .relaxed) }
                            child.done()
                        }
                        child.wait()
                        if RequestContext.id != i { wrong.add(1, ordering: .relaxed) }
                    }
                    GMP.yield()
                    if RequestContext.id != -1 { outside.add(1, ordering: .relaxed) } // unbound again
                    done.done()
                }
            }
            done.wait()
            return (wrong.load(ordering: .relaxed), outside.load(ordering: .relaxed), inherited.load(ordering: .relaxed))
        }
        #expect(r?.wrong == 0, "reads of another G's value (or none): \(String(describing: r?.wrong)) of \(n * (reads + 1))")
        #expect(r?.outside == 0, "a G saw a value once its binding had ended")
        #expect(r?.inheritedByGo == 0, "a G started inside a binding saw it")
    }

    @Test("A binding on the thread that calls GMP.run stays that thread's")
    func callerKeepsItsBinding() async {
        let r = await onThread { () -> (Int, Int?) in
            RequestContext.$id.withValue(7) {
                let inG = GMP.run { () -> Int in
                    GMP.sleep(nanoseconds: 100_000)
                    return RequestContext.id
                }
                return (RequestContext.id, inG)
            }
        }
        #expect(r?.0 == 7)
        #expect(r?.1 == -1, "the G does not see the caller's binding")
    }
}
