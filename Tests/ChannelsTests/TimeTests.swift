@testable import Channels
import Foundation
import GMP
import Synchronization
import Testing

// Go's src/time/tick_test.go and sleep_test.go, for Ticker, ChannelTimer and
// after (Time.swift), and the send-unless-quit call (SendUnless.swift).
//
// Timing: every wait is bounded (a receive with a time-out), and what is
// asserted about time is what cannot vary with load: a tick's value is the
// instant it was due, so the values of a ticker are exact multiples of its
// period apart, never earlier than asked, and whatever a slow machine does,
// a stale value never comes after stop or reset. Where a test needs the
// reader to keep up (ticks not dropped), it retries with longer periods, as
// Go's TestTicker does. "Nothing arrives" is checked over a few periods.

/// Receives from `c` within `bound`; nil on time-out (or closed).
private func receive<T>(_ c: Chan<T>, within bound: Duration) -> T? {
    var got: T?
    select { s in
        if let r = s.receive(c), case .value(let v) = r { got = v }
        if s.timeout(after: bound) {}
    }
    return got
}

/// Keeps `x` from being optimized away.
@inline(never) private func blackHole(_ x: Int) {}

/// Nanoseconds from `a` to `b`.
private func ns(_ a: GMP.Instant, _ b: GMP.Instant) -> Int64 { b.nanoseconds - a.nanoseconds }

/// A bound far above any wait here, even under sanitizers on a loaded machine.
private let long = Duration.seconds(10)

@Suite struct TimeTests {
    // MARK: - Ticker

    @Test("TestTicker: a ticker's ticks are due at start + k·period, never early, and a prompt reader gets each one",
          arguments: procCounts)
    func ticks(procs: Int) async {
        let errors = await runG(procs: procs) { () -> [String] in
            var errors: [String] = []
            let n = 8
            // Go retries with longer periods when the machine is too slow to keep up.
            for periodMs in [20, 50, 100, 200] as [Int64] {
                let period = Duration.milliseconds(periodMs), p = periodMs * 1_000_000
                let start = GMP.Instant.now
                let t = Ticker(every: period)
                var values: [GMP.Instant] = []
                for _ in 0..<n {
                    guard let v = receive(t.channel, within: long) else {
                        t.stop()
                        return errors + ["no tick within 10 s (period \(period))"]
                    }
                    if v > .now { errors.append("a tick's value \(v) is later than its receipt") }
                    values.append(v)
                }
                t.stop()
                if ns(start, values[0]) < p { errors.append("first tick \(ns(start, values[0])) ns after start, before its period \(p)") }
                var dropped = 0
                for (a, b) in zip(values, values.dropFirst()) {
                    let d = ns(a, b)
                    if d <= 0 || d % p != 0 { errors.append("ticks \(d) ns apart: not a positive multiple of \(p)") }
                    dropped += Int(d / p) - 1
                }
                if GMP.Instant.now - start < period * n { errors.append("\(n) ticks came in less than \(n) periods") }
                if !errors.isEmpty || dropped == 0 { return errors } // (dropped: the reader was slow; try longer)
            }
            return errors + ["the reader missed ticks at every period up to 200 ms"]
        }
        #expect(errors == [])
    }

    @Test("TestTickerStop (Go 1.23): after stop nothing more arrives, not even a tick already sent", arguments: procCounts)
    func tickerStop(procs: Int) async {
        let errors = await runG(procs: procs) { () -> [String] in
            let t = Ticker(every: .milliseconds(5))
            guard receive(t.channel, within: long) != nil, receive(t.channel, within: long) != nil else { return ["no ticks"] }
            // A tick sent and not received yet is dropped by stop.
            guard waitFor({ t.channel.count == 1 }) else { return ["no tick buffered within 10 s"] }
            t.stop()
            var errors: [String] = []
            if t.channel.tryReceive() != .empty { errors.append("a tick sent before stop was received after it") }
            if receive(t.channel, within: .milliseconds(50)) != nil { errors.append("a tick after stop") }
            t.stop() // again: nothing
            if receive(t.channel, within: .milliseconds(20)) != nil { errors.append("a tick after a second stop") }
            return errors
        }
        #expect(errors == [])
    }

    @Test("TestTickerResetLtZeroDuration's sibling: reset changes the period, drops a sent tick, and restarts a stopped ticker",
          arguments: procCounts)
    func tickerReset(procs: Int) async {
        let errors = await runG(procs: procs) { () -> [String] in
            var errors: [String] = []
            let t = Ticker(every: .seconds(3600))
            defer { t.stop() }
            // An hour's ticker reset to 20 ms ticks every 20 ms from the reset.
            var before = GMP.Instant.now
            t.reset(.milliseconds(20))
            guard let v1 = receive(t.channel, within: long), let v2 = receive(t.channel, within: long) else {
                return ["no ticks after reset to 20 ms"]
            }
            if ns(before, v1) < 20_000_000 { errors.append("first tick \(ns(before, v1)) ns after reset(20 ms)") }
            if ns(v1, v2) <= 0 || ns(v1, v2) % 20_000_000 != 0 { errors.append("ticks \(ns(v1, v2)) ns apart after reset(20 ms)") }
            // Back to an hour: the tick already sent is dropped, none comes.
            guard waitFor({ t.channel.count == 1 }) else { return errors + ["no tick buffered within 10 s"] }
            t.reset(.seconds(3600))
            if t.channel.tryReceive() != .empty { errors.append("a tick sent before reset was received after it") }
            if receive(t.channel, within: .milliseconds(60)) != nil { errors.append("a 20 ms tick after reset to an hour") }
            // A stopped ticker starts again on reset.
            t.stop()
            before = .now
            t.reset(.milliseconds(10))
            guard let v3 = receive(t.channel, within: long) else { return errors + ["no tick after reset of a stopped ticker"] }
            if ns(before, v3) < 10_000_000 { errors.append("tick \(ns(before, v3)) ns after reset(10 ms) of a stopped ticker") }
            return errors
        }
        #expect(errors == [])
    }

    @Test("A slow reader misses ticks: the channel holds the first, the rest are dropped, not queued", arguments: procCounts)
    func slowReader(procs: Int) async {
        let errors = await runG(procs: procs) { () -> [String] in
            let p: Int64 = 10_000_000
            let start = GMP.Instant.now
            let t = Ticker(every: .nanoseconds(p))
            defer { t.stop() }
            GMP.sleep(for: .milliseconds(500)) // the reader is busy for 50 periods
            var errors: [String] = []
            if t.channel.count != 1 { errors.append("\(t.channel.count) ticks waiting after 50 periods") }
            guard let v1 = receive(t.channel, within: long), let v2 = receive(t.channel, within: long) else {
                return errors + ["no ticks"]
            }
            // The one kept is the first (due at start + p): the later ones found the channel full.
            if ns(start, v1) >= p + 100_000_000 { errors.append("the tick kept was due \(ns(start, v1)) ns after start, not the first") }
            // The next is a new tick, not the second of a backlog (a queue, or a
            // timer that catches up, would send v1 + p next).
            if ns(v1, v2) < 2 * p || ns(v1, v2) % p != 0 { errors.append("after a slow stretch the next tick was \(ns(v1, v2)) ns after the kept one") }
            return errors
        }
        #expect(errors == [])
    }

    @Test("A select over a ticker and another channel gets both", arguments: procCounts)
    func selectTickerAndData(procs: Int) async {
        let r = await runG(procs: procs) { () -> (ticks: Int, got: [Int], timedOut: Bool) in
            let t = Ticker(every: .milliseconds(10))
            defer { t.stop() }
            let data = Chan<Int>()
            go {
                for i in 0..<5 {
                    data.send(i)
                    GMP.sleep(for: .milliseconds(15))
                }
                data.close()
            }
            var open: Chan<Int>? = data
            var ticks = 0, got: [Int] = [], timedOut = false
            while (open != nil || ticks < 3) && !timedOut {
                select { s in
                    if s.receive(t.channel) != nil { ticks += 1 }
                    if let r = s.receive(open) {
                        if case .value(let v) = r { got.append(v) } else { open = nil }
                    }
                    if s.timeout(after: long) { timedOut = true }
                }
            }
            return (ticks, got, timedOut)
        }
        #expect(r?.timedOut == false)
        #expect(r?.got == [0, 1, 2, 3, 4])
        #expect((r?.ticks ?? 0) >= 3)
    }

    @Test("Many tickers and timers in many Gs on several Ps: stop and reset never leak a stale value")
    func stress() async {
        let errors = await runG(procs: 4, timeout: 120) { () -> [String] in
            let gs = 48
            let results = Chan<String?>(capacity: gs)
            for _ in 0..<gs { go { results.send(Self.stressRounds(20)) } }
            var all: [String] = []
            for _ in 0..<gs {
                guard case .some(let e) = receive(results, within: .seconds(100)) else { return all + ["a G did not finish"] }
                if let e { all.append(e) }
            }
            return all
        }
        #expect(errors == [])
    }

    @Test("A fire that races a reset never delivers: after reset(1 h) the channel stays empty", arguments: [2, 4])
    func resetRacesFire(procs: Int) async {
        let stale = await runG(procs: procs, timeout: 120) { () -> Int in
            // Another M fires the timer (due at once) while this G resets it to
            // an hour, for a spread of delays between the two: the fire's
            // callback sometimes runs just after the reset. Any value received
            // then is one the reset should have kept out.
            let t = ChannelTimer()
            var stale = 0
            for i in 0..<20_000 {
                if t.channel.tryReceive() != .empty { stale += 1 }
                t.reset(.zero)
                var spin = 0
                for _ in 0..<(i % 64) * 16 { spin &+= 1 }
                blackHole(spin)
                t.reset(.seconds(3600))
            }
            if receive(t.channel, within: .milliseconds(5)) != nil { stale += 1 } // (a callback still under way)
            t.stop()
            return stale
        }
        #expect(stale == 0)
    }

    /// One G's part of `stress`: nil, or the first thing that went wrong.
    static func stressRounds(_ rounds: Int) -> String? {
        // A ticker, stopped and restarted between ticks.
        let t = Ticker(every: .milliseconds(1))
        defer { t.stop() }
        for r in 0..<rounds {
            guard receive(t.channel, within: long) != nil else { return "ticker: no tick" }
            if r % 3 == 0 {
                for _ in 0..<Int.random(in: 0...3) { GMP.yield() }
                t.stop()
                if t.channel.tryReceive() != .empty { return "ticker: a tick right after stop" }
                t.reset(.milliseconds(1))
            }
        }
        t.stop()
        if t.channel.tryReceive() != .empty { return "ticker: a tick right after the last stop" }
        for _ in 0..<rounds {
            // Stopping a timer whose value nobody took always stops a pending
            // fire (whether it fired or not), and leaves nothing to receive.
            let a = ChannelTimer(after: .microseconds(Int64.random(in: 0...300)))
            for _ in 0..<Int.random(in: 0...3) { GMP.yield() }
            if !a.stop() { return "timer: stop of an unreceived timer returned false" }
            if a.channel.tryReceive() != .empty { return "timer: a value right after stop" }
            // Reset as it may be firing: the value received is the new fire's.
            let b = ChannelTimer(after: .microseconds(Int64.random(in: 0...300)))
            for _ in 0..<Int.random(in: 0...3) { GMP.yield() }
            let before = GMP.Instant.now
            if !b.reset(.microseconds(Int64.random(in: 0...300))) { return "timer: reset of an unreceived timer returned false" }
            guard let v = receive(b.channel, within: long) else { return "timer: no fire after reset" }
            if v < before { return "timer: a value from before the reset" }
            // And after, once.
            guard receive(after(.microseconds(Int64.random(in: 1...300))), within: long) != nil else { return "after: no fire" }
        }
        return nil
    }

    @Test("A Ticker released without stop stops: nothing keeps it alive, its timer goes, its channel gets nothing more")
    func tickerReleased() async {
        // Alone: it counts GMP.stats.timers, which is process-wide.
        await alone {
            let r = await runG(procs: 2) { () -> (gone: Bool, before: Int, after: Int, late: Bool) in
                let before = settled { GMP.stats.timers }
                var t: Ticker? = Ticker(every: .milliseconds(5))
                weak let w = t
                let c = t!.channel
                // It ticks. (Waited for without a timer: a select's time-out
                // would leave a dead entry in the heap until it was due.)
                _ = waitFor { c.count == 1 }
                t = nil
                let gone = w == nil
                let after = settled { GMP.stats.timers }
                let late = receive(c, within: .milliseconds(50)) != nil
                return (gone, before, after, late)
            }
            #expect(r?.gone == true, "something kept the released Ticker alive")
            #expect(r.map { $0.after <= $0.before } == true, "timers \(r?.before ?? -1) before, \(r?.after ?? -1) after")
            #expect(r?.late == false, "a tick after the Ticker was released")
        }
    }

    // MARK: - after

    @Test("after: fires once, with the instant it was due, and only once", arguments: procCounts)
    func afterOnce(procs: Int) async {
        let errors = await runG(procs: procs) { () -> [String] in
            var errors: [String] = []
            let before = GMP.Instant.now
            let c = after(.milliseconds(20))
            guard let v = receive(c, within: long) else { return ["after(20 ms) did not fire"] }
            if ns(before, v) < 20_000_000 { errors.append("fired \(ns(before, v)) ns after, not 20 ms") }
            if v > .now { errors.append("its value is later than its receipt") }
            if receive(c, within: .milliseconds(50)) != nil { errors.append("after fired twice") }
            // As a select's time-out case.
            var timedOut = false
            let never = Chan<Int>(), timeout = after(.milliseconds(5))
            select { s in
                if s.receive(never) != nil {}
                if s.receive(timeout) != nil { timedOut = true }
            }
            if !timedOut { errors.append("after in a select did not fire") }
            return errors
        }
        #expect(errors == [])
    }

    // MARK: - ChannelTimer

    @Test("TestTimerStopStress's core: a timer stopped before it fires never fires; stop says so, once",
          arguments: procCounts)
    func timerStopBeforeFire(procs: Int) async {
        let errors = await runG(procs: procs) { () -> [String] in
            var errors: [String] = []
            let t = ChannelTimer(after: .milliseconds(30))
            if !t.stop() { errors.append("stop of a pending timer returned false") }
            if t.stop() { errors.append("a second stop returned true") }
            if receive(t.channel, within: .milliseconds(100)) != nil { errors.append("a stopped timer fired") }
            // A timer made stopped does nothing until reset.
            let s = ChannelTimer()
            if s.stop() { errors.append("stop of a timer made stopped returned true") }
            if receive(s.channel, within: .milliseconds(30)) != nil { errors.append("a timer made stopped fired") }
            if s.reset(.milliseconds(5)) { errors.append("reset of a stopped timer returned true") }
            if receive(s.channel, within: long) == nil { errors.append("a timer made stopped did not fire once reset") }
            return errors
        }
        #expect(errors == [])
    }

    @Test("Go 1.23: stop or reset after a fire whose value is unread drops it; after a read fire they return false",
          arguments: procCounts)
    func timerNoStaleValue(procs: Int) async {
        let errors = await runG(procs: procs) { () -> [String] in
            var errors: [String] = []
            // Fired, unread: stop drops the value, and counts it as pending.
            let a = ChannelTimer(after: .milliseconds(1))
            guard waitFor({ a.channel.count == 1 }) else { return ["a 1 ms timer did not fire within 10 s"] }
            if !a.stop() { errors.append("stop after an unread fire returned false") }
            if a.channel.tryReceive() != .empty { errors.append("the value of a fire before stop was received after it") }
            if a.stop() { errors.append("a second stop returned true") }
            // Fired, unread: reset drops the value, and the next one received is the new fire's.
            let b = ChannelTimer(after: .milliseconds(1))
            guard waitFor({ b.channel.count == 1 }) else { return errors + ["a 1 ms timer did not fire within 10 s"] }
            let before = GMP.Instant.now
            if !b.reset(.milliseconds(30)) { errors.append("reset after an unread fire returned false") }
            guard let v = receive(b.channel, within: long) else { return errors + ["no fire after reset"] }
            if ns(before, v) < 30_000_000 { errors.append("the value received after reset(30 ms) was due \(ns(before, v)) ns after it: stale") }
            // Fired and read: stop and reset return false; reset arms it again.
            if b.stop() { errors.append("stop after a read fire returned true") }
            if b.reset(.milliseconds(5)) { errors.append("reset after a read fire returned true") }
            if receive(b.channel, within: long) == nil { errors.append("no fire after reset of a fired timer") }
            return errors
        }
        #expect(errors == [])
    }

    @Test("ChannelTimer.reset moves a pending fire and returns true; zero or negative durations fire at once",
          arguments: procCounts)
    func timerReset(procs: Int) async {
        let errors = await runG(procs: procs) { () -> [String] in
            var errors: [String] = []
            let t = ChannelTimer(after: .seconds(3600))
            var before = GMP.Instant.now
            if !t.reset(.milliseconds(20)) { errors.append("reset of a pending timer returned false") }
            guard let v = receive(t.channel, within: long) else { return ["an hour's timer reset to 20 ms did not fire"] }
            if ns(before, v) < 20_000_000 { errors.append("fired \(ns(before, v)) ns after reset(20 ms)") }
            if receive(t.channel, within: .milliseconds(30)) != nil { errors.append("fired twice") }
            // Zero and negative: at once, with an instant not before the reset.
            for d in [Duration.zero, .seconds(-1)] {
                before = .now
                if t.reset(d) { errors.append("reset(\(d)) of a fired timer returned true") }
                guard let w = receive(t.channel, within: long) else { return errors + ["reset(\(d)) did not fire"] }
                if w < before { errors.append("reset(\(d)) sent an instant before the reset") }
            }
            before = .now
            let n = ChannelTimer(after: .seconds(-1))
            if let w = receive(n.channel, within: long) {
                if w < before { errors.append("ChannelTimer(after: -1 s) sent an instant in the past") }
            } else {
                errors.append("ChannelTimer(after: -1 s) did not fire")
            }
            return errors
        }
        #expect(errors == [])
    }

    // MARK: - Traps

    /// What traps, as Go's NewTicker, Ticker.Reset (and, here, After) panic.
    enum Misuse: String, CaseIterable, Codable, Sendable {
        case tickerZero, tickerNegative, tickerResetZero, afterZero, afterNegative
    }

    @Test("A zero or negative ticker period, or after(d <= 0), traps with a message", arguments: Misuse.allCases)
    func traps(misuse: Misuse) async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) { [misuse] in
            switch misuse {
            case .tickerZero: _ = Ticker(every: .zero)
            case .tickerNegative: _ = Ticker(every: .seconds(-1))
            case .tickerResetZero: Ticker(every: .seconds(1)).reset(.zero)
            case .afterZero: _ = after(.zero)
            case .afterNegative: _ = after(.seconds(-1))
            }
        }
        let expected = switch misuse {
        case .tickerZero, .tickerNegative: "non-positive interval for NewTicker"
        case .tickerResetZero: "non-positive interval for Ticker.Reset"
        case .afterZero, .afterNegative: "non-positive duration for after"
        }
        #expect(stderrText(r).contains(expected), "\(stderrText(r))")
    }
}

/// `Chan.send(_:unless:_:)`: Go's send-or-quit select in one call.
@Suite struct SendUnlessTests {
    @Test("Sends when it can; returns false, sending nothing, when a quit channel is closed and the send cannot go",
          arguments: procCounts)
    func basics(procs: Int) async {
        let errors = await runG(procs: procs) { () -> [String] in
            var errors: [String] = []
            let quit = Chan<Void>(), other = Chan<Int>()
            let buffered = Chan<Int>(capacity: 1)
            if !buffered.send(1, unless: quit) { errors.append("a send with room returned false") }
            if buffered.tryReceive() != .value(1) { errors.append("the value was not sent") }
            quit.close()
            let unbuffered = Chan<Int>()
            if unbuffered.send(2, unless: quit) { errors.append("a send with no receiver and quit closed returned true") }
            // Several quit channels: any of them ends it.
            let open = Chan<Void>()
            if unbuffered.send(3, unless: open, quit) { errors.append("with the second quit closed it returned true") }
            if unbuffered.send(4, unless: quit, open, other) { errors.append("with the first quit closed it returned true") }
            // A value (not a close) on a quit channel also ends it, and is consumed.
            let signal = Chan<Int>(capacity: 1)
            signal.send(7)
            if unbuffered.send(5, unless: signal) { errors.append("with a value on quit it returned true") }
            if signal.count != 0 { errors.append("the quit channel's value was not taken") }
            if unbuffered.hasWaitingSender || unbuffered.count != 0 { errors.append("something was left on the channel") }
            return errors
        }
        #expect(errors == [])
    }

    @Test("A blocked send ends with true when a receiver comes, with false when quit is closed", arguments: procCounts)
    func blocked(procs: Int) async {
        let errors = await runG(procs: procs) { () -> [String] in
            var errors: [String] = []
            let c = Chan<Int>(), quit = Chan<Void>(), result = Chan<Bool>(capacity: 1)
            go { result.send(c.send(1, unless: quit)) }
            guard waitFor({ c.hasWaitingSender }) else { return ["the sender did not wait"] }
            if c.receive() != .value(1) { errors.append("the receiver did not get the value") }
            if receive(result, within: long) != true { errors.append("a send taken by a receiver did not return true") }
            go { result.send(c.send(2, unless: quit)) }
            guard waitFor({ c.hasWaitingSender }) else { return errors + ["the second sender did not wait"] }
            quit.close()
            if receive(result, within: long) != false { errors.append("a send ended by quit did not return false") }
            if c.tryReceive() != .empty || c.hasWaitingSender { errors.append("the value was sent after all") }
            return errors
        }
        #expect(errors == [])
    }

    @Test("When the send and a closed quit are both ready, either may win (select's fairness, no preference)")
    func fairness() async {
        let counts = await runG(procs: 2) { () -> (sent: Int, quit: Int) in
            let c = Chan<Int>(capacity: 1), quit = Chan<Void>()
            quit.close()
            var sent = 0, quitted = 0
            for i in 0..<2_000 {
                if c.send(i, unless: quit) {
                    sent += 1
                    _ = c.tryReceive()
                } else {
                    quitted += 1
                }
            }
            return (sent, quitted)
        }
        // Binomial(2000, 1/2): below 800 on either side once in ~10^19 runs.
        #expect((counts?.sent ?? 0) > 800 && (counts?.quit ?? 0) > 800, "\(String(describing: counts))")
    }
}
