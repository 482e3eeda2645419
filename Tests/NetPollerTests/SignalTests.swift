import Channels
import Foundation
import GMP
import GMPTestSupport
import NetPoller
import Testing

/// Go's os/signal semantics: every channel registered for a signal gets it,
/// a full channel misses it without holding up the others, `stop` is final.
@Suite(.serialized)
struct SignalTests {
    @Test("notify relays raised signals to every channel registered for them; a full one misses; stop ends it")
    func relay() {
        let r = runG(procs: 2) { () -> [String] in
            var failures: [String] = []
            func check(_ ok: Bool, _ what: String) { if !ok { failures.append(what) } }
            let a = Chan<Int32>(capacity: 8), b = Chan<Int32>(capacity: 1)
            Signals.notify(a, SIGUSR1, SIGUSR2)
            Signals.notify(b, SIGUSR1)
            Signals.notify(b, SIGUSR1) // a second registration is not a second delivery

            kill(getpid(), SIGUSR1)
            check(a.receive() == .value(SIGUSR1), "a gets SIGUSR1")
            check(b.receive() == .value(SIGUSR1), "b gets SIGUSR1")
            kill(getpid(), SIGUSR2)
            check(a.receive() == .value(SIGUSR2), "a gets SIGUSR2")
            // The relay handles signals in the order they were caught, and
            // sends to every channel before it reads on: once `a` has them
            // all, b has had its chance. Here: no second copy, no SIGUSR2.
            check(b.tryReceive() == .empty, "b got one SIGUSR1 and no SIGUSR2")

            // b is full: it misses SIGUSR1, and a still gets it.
            check(b.trySend(0), "fill b")
            kill(getpid(), SIGUSR1)
            kill(getpid(), SIGUSR2)
            // Two signals raised back to back may be handled in either order.
            func two() -> Set<Int32> { Set([a.receive().value ?? 0, a.receive().value ?? 0]) }
            check(two() == [SIGUSR1, SIGUSR2], "a gets SIGUSR1 past the full b, and SIGUSR2")
            check(b.tryReceive() == .value(0) && b.tryReceive() == .empty, "b missed it")

            // After stop, b gets nothing more; a (still registered) does.
            Signals.stop(b)
            kill(getpid(), SIGUSR1)
            kill(getpid(), SIGUSR2)
            check(two() == [SIGUSR1, SIGUSR2], "a after stop(b)")
            check(b.tryReceive() == .empty, "b after stop(b)")
            // Last channel gone: the default actions (terminate) are back, so
            // no signal is raised after this.
            Signals.stop(a)
            return failures
        }
        #expect(r == [])
    }

    @Test("A signal that cannot be caught is a clear error")
    func uncatchable() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            Signals.notify(Chan<Int32>(capacity: 1), SIGKILL)
        }
        let text = String(decoding: r?.standardErrorContent ?? [], as: UTF8.self)
        #expect(text.contains("Signals.notify: signal 9 cannot be caught"))
    }

    @Test("A caught signal's default action is back after stop (a child that stops then raises dies of it)")
    func defaultRestored() async {
        await #expect(processExitsWith: .signal(SIGUSR1)) {
            let c = Chan<Int32>(capacity: 1)
            Signals.notify(c, SIGUSR1)
            kill(getpid(), SIGUSR1)
            guard GMP.run({ c.receive() }) == .value(SIGUSR1) else { exit(3) }
            Signals.stop(c)
            kill(getpid(), SIGUSR1)
            exit(0) // not reached: SIGUSR1 terminates
        }
    }
}
