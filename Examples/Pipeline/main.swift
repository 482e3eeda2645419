// Pipeline: stages connected by channels, stopped part-way by a Context.
//
//   numbers (1, 2, 3, ... forever) -> square -> label -> the main G
//
// Every stage is a G that owns its output channel and closes it when it
// returns. A stage never blocks on a send without also watching `ctx.done`
// (`out.send(v, unless: ctx.done)` is a `select` over both), so once the
// consumer has had enough and cancels, every stage returns, even one stuck
// sending to a consumer that stopped reading (Go's "pipelines and
// cancellation" pattern).
import Channels
import Contexts
import GMP
import Glibc   // exit()

/// A stage: applies `transform` to each value of `input`, in a G of its own.
func stage<A: Sendable, B: Sendable>(_ ctx: Context, _ wg: WaitGroup, _ input: Chan<A>,
                                     _ transform: @escaping @Sendable (A) -> B) -> Chan<B> {
    let out = Chan<B>()
    wg.add(1)
    go {
        defer { out.close(); wg.done() }
        // Ends when `input` is closed: the stage before closes it when it
        // returns, cancelled or not.
        for v in input {
            if !out.send(transform(v), unless: ctx.done) { return }   // cancelled
        }
    }
    return out
}

/// The main G: builds the pipeline, reads five values, cancels, waits for the stages.
func runPipeline() -> (lines: [String], err: ContextError?) {
    // A context with a deadline as a safety net (it ends by itself in 5 s):
    // we cancel it well before that, part-way through the stream.
    let (ctx, cancel) = Context.withDeadline(.background, at: .now + .seconds(5))
    let wg = WaitGroup()

    let numbers = Chan<Int>()
    wg.add(1)
    go {                                   // the source: counts until cancelled
        defer { numbers.close(); wg.done() }
        var n = 1
        while numbers.send(n, unless: ctx.done) { n += 1 }
    }
    let squares = stage(ctx, wg, numbers) { $0 * $0 }
    let labels = stage(ctx, wg, squares) { "got \($0)" }

    // Take five values, then cancel: the stages are still running.
    var lines: [String] = []
    for _ in 1...5 {
        guard case .value(let line) = labels.receive() else { break }
        print(line)
        lines.append(line)
    }
    cancel()
    wg.wait()                              // every stage has returned
    return (lines, ctx.err)
}

let (lines, stopped) = GMP.run(runPipeline)
print("all stages stopped: \(stopped.map { "\($0)" } ?? "not cancelled")")
guard lines == ["got 1", "got 4", "got 9", "got 16", "got 25"], stopped == .canceled else { exit(1) }
