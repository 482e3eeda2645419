// RateLimiter: serve requests at most one per period, with a Ticker
// (Go's "rate limiting" example), then allow short bursts with a bucket of
// tokens: a buffered channel that a ticker refills.
import Channels
import GMP
import Glibc   // exit()

let period = Duration.milliseconds(100)
let requestCount = 5
let burst = 3

/// Which tick of `period` (counted from `start`) the present moment falls in.
func tick(since start: GMP.Instant) -> Int { Int((.now - start) / period) }

/// Steady: each request waits for the next tick, so at most one per period.
func steady() -> [Int] {
    let start = GMP.Instant.now
    let ticker = Ticker(every: period)        // a tick on `ticker.channel` every period
    defer { ticker.stop() }
    var served: [Int] = []
    for request in 1...requestCount {
        _ = ticker.channel.receive()          // parks this G until the tick
        print("steady: request \(request) served at tick \(tick(since: start))")
        served.append(tick(since: start))
    }
    return served
}

/// Bursty: up to `burst` requests at once, then one per period as the
/// ticker puts tokens back in the bucket.
func bursty() -> [Int] {
    let start = GMP.Instant.now
    let bucket = Chan<GMP.Instant>(capacity: burst)   // the tokens
    for _ in 0..<burst { bucket.send(.now) }          // start full: a burst may go at once
    let refill = Ticker(every: period), done = Chan<Void>()
    go {                                             // the refiller: a token per tick
        while true {
            var stop = false
            select { s in
                if let r = s.receive(refill.channel), case .value(let t) = r {
                    _ = bucket.trySend(t)            // a full bucket keeps no more than `burst`
                }
                if s.receive(done) != nil { stop = true }
            }
            if stop { return }
        }
    }
    defer { refill.stop(); done.close() }
    var served: [Int] = []
    for request in 1...requestCount {
        _ = bucket.receive()                      // take a token, waiting for one if none is left
        print("bursty: request \(request) served at tick \(tick(since: start))")
        served.append(tick(since: start))
    }
    return served
}

let steadyTicks = GMP.run(steady)   // each runs as a G
let burstyTicks = GMP.run(bursty)
// The limiter's promise: never earlier than its tick (later only on a busy machine).
let steadyOK = zip(steadyTicks, [1, 2, 3, 4, 5]).allSatisfy { $0 >= $1 }
let burstyOK = zip(burstyTicks, [0, 0, 0, 1, 2]).allSatisfy { $0 >= $1 }
guard steadyOK, burstyOK else { print("FAIL: served too early"); exit(1) }
