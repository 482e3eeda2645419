// WorkerPool: a fixed pool of goroutines (Gs) fed by a channel.
//
// A producer puts jobs on `jobs`; four workers take them off and put their
// answers on `results`; a `WaitGroup` tells us when every worker is done, so
// `results` can be closed and the main G's `for r in results` loop ends.
import Channels
import GMP
import Glibc   // exit()

struct Answer: Sendable {                  // what goes on a channel must be Sendable
    let job: Int
    let square: Int
}

let jobCount = 10
let workerCount = 4

/// The program's main G: starts the pool, feeds it, gathers what it returns.
func runPool() -> [Answer] {
    let jobs = Chan<Int>(capacity: 8)       // buffered: the producer runs a little ahead
    let results = Chan<Answer>(capacity: 8)
    let wg = WaitGroup(workerCount)

    for _ in 1...workerCount {
        go {
            defer { wg.done() }
            for job in jobs {               // receives until `jobs` is closed and drained
                GMP.sleep(for: .milliseconds(job % 3))   // "work": parks this G, not its thread
                results.send(Answer(job: job, square: job * job))
            }
        }
    }

    go {                                    // the producer
        for j in 1...jobCount { jobs.send(j) }
        jobs.close()                        // no more jobs: the workers' loops end
    }

    go {                                    // close `results` once every worker has returned
        wg.wait()
        results.close()
    }

    return Array(results)                   // a channel is a Sequence: gather until closed
}

// `GMP.run` runs a function (or a closure) as a G on the runtime's threads
// and waits for its value; the main thread blocks meanwhile.
let results = GMP.run(runPool)

// The workers finish in any order; sort to print deterministically.
let byJob = results.sorted { $0.job < $1.job }
for r in byJob { print("job \(r.job) -> \(r.square)") }

let total = results.reduce(0) { $0 + $1.square }
let expected = (1...jobCount).reduce(0) { $0 + $1 * $1 }
print("\(results.count) results, sum of squares \(total)")

guard results.count == jobCount, total == expected else {
    print("FAIL: expected \(jobCount) results summing to \(expected)")
    exit(1)
}
print("all \(jobCount) jobs done by \(workerCount) workers")
