import Foundation
import GMP
import Synchronization
import Testing

/// On one P, 200 rounds of a G starting A then B and waiting for both: how
/// many rounds ran B before A (runnext: the last G started runs first).
private func runnextRounds() -> (bFirst: Int, rounds: Int) {
    let rounds = 200
    let bFirst = GMP.run { () -> Int in
        var bFirst = 0
        for _ in 0..<rounds {
            let order = Mutex<[String]>([])
            let wg = WaitGroup(2)
            go { order.withLock { $0.append("A") }; wg.done() }
            go { order.withLock { $0.append("B") }; wg.done() }
            wg.wait()
            if order.withLock({ $0 }) == ["B", "A"] { bFirst += 1 }
        }
        return bFirst
    }
    return (bFirst, rounds)
}

@Suite struct ChaosTests {
    @Test("Without GMP_CHAOS the choices are the scheduler's own: runnext every time")
    func orderWithoutChaos() async {
        await #expect(processExitsWith: .success) {
            unsetenv("GMP_CHAOS")
            setenv("GMPPROCS", "1", 1)
            let (bFirst, rounds) = runnextRounds()
            // (A few rounds may go otherwise if a loaded machine makes sysmon
            // lend a spare P that steals one of them.)
            exit(GMP.chaosSeed == nil && bFirst >= rounds - 5 ? 0 : 1)
        }
    }

    @Test("GMP_CHAOS=<seed> makes the free choices at random: runnext is skipped in some rounds, not all; the seed is reported")
    func orderWithChaos() async {
        let r = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            setenv("GMP_CHAOS", "99", 1)
            setenv("GMPPROCS", "1", 1)
            let (bFirst, rounds) = runnextRounds()
            let dump = GMP.dump()
            FileHandle.standardError.write(Data("bFirst=\(bFirst)/\(rounds)\n".utf8))
            // B runs first when it kept runnext: about half the rounds.
            exit(GMP.chaosSeed == 99 && bFirst > 20 && bFirst < rounds - 20 && dump.contains("(GMP_CHAOS=99)") ? 0 : 1)
        }
        let err = String(decoding: r?.standardErrorContent ?? [], as: UTF8.self)
        #expect(err.contains("bFirst="), "stderr: \(err)")
    }

    @Test("A GMP_CHAOS that is not a seed is a clear error")
    func badSeed() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            setenv("GMP_CHAOS", "lots", 1)
            _ = GMP.run { 1 }
        }
        let err = String(decoding: r?.standardErrorContent ?? [], as: UTF8.self)
        #expect(err.contains("GMP_CHAOS=lots must be a seed"), "stderr: \(err)")
    }
}
