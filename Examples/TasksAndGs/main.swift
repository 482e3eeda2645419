// TasksAndGs: goroutines and Swift tasks in one program, each calling the other.
//
//  - A G calls async code with `GMP.await { ... }`: the closure runs as a
//    task and only the G waits (its thread goes on running other Gs).
//  - A task reads a channel the Gs write with `for await`: it suspends,
//    never blocking a thread of Swift's pool.
import Channels
import GMP
import Glibc   // exit()

/// Shared state the async way: an actor.
actor Scoreboard {
    private var points: [String: Int] = [:]
    func add(_ n: Int, to player: String) { points[player, default: 0] += n }
    var total: Int { points.values.reduce(0, +) }
}

/// An async function, standing in for any async API (a database driver, ...).
func lookUpName(_ id: Int) async -> String {
    try? await Task.sleep(for: .milliseconds(10 * (4 - id)))   // suspends the task, not a thread
                                                                // (the last id answers first)
    return "player-\(id)"
}

let board = Scoreboard()
let events = Chan<Int>(capacity: 4)    // Gs send, the task below receives

// A task consuming the channel. `executorPreference: GMP.executor` runs its
// jobs as Gs, beside the Gs that feed it. (Not a plain `Task { }` here: at top
// level it would belong to the main actor, whose thread is about to block in
// `GMP.run`, so it would never run. `Task.detached { }` would do.)
let consumer = Task(executorPreference: GMP.executor) { () -> Int in
    var sum = 0
    for await n in events { sum += n }  // ends once `events` is closed and drained
    return sum
}

/// The main G: three Gs call async code and feed the task; then it collects.
func runGs() -> (names: [String], streamed: Int, total: Int) {
    let names = Chan<String>(capacity: 3)
    let wg = WaitGroup(3)
    for id in 1...3 {
        go {
            defer { wg.done() }
            // Async code from a G: no `try` needed, the closure cannot throw.
            let name = GMP.await { await lookUpName(id) }
            GMP.await { await board.add(id * 10, to: name) }
            events.send(id * 10)        // a G sending to a task: an ordinary send
            names.send(name)
        }
    }
    wg.wait()
    events.close()                      // ends the consumer's `for await`
    names.close()
    // A task's result, from a G: await it like any other async value.
    let streamed = GMP.await { await consumer.value }
    let total = GMP.await { await board.total }
    return (Array(names).sorted(), streamed, total)
}

let (names, streamed, total) = GMP.run(runGs)
print("names: \(names.joined(separator: ", "))")
print("the task summed \(streamed) from the channel; the actor holds \(total)")
guard names == ["player-1", "player-2", "player-3"], streamed == 60, total == 60 else { print("FAIL"); exit(1) }
