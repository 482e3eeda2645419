import Foundation
import GMP
import Testing

/// Recursion without end, with a frame big enough to get through a stack quickly.
@inline(never) func recurseForever(_ n: Int) -> Int {
    var pad = (n, n, n, n, n, n, n, n)
    withUnsafeMutableBytes(of: &pad) { $0[0] = UInt8(truncatingIfNeeded: n) }
    return recurseForever(n + 1) + pad.0
}

/// The text a child process wrote to standard error.
func stderrText(_ r: ExitTest.Result?) -> String {
    String(decoding: r?.standardErrorContent ?? [], as: UTF8.self)
}

/// Misuse and fatal conditions end the process with a clear message.
@Suite struct ExitTests {
    @Test("Stack overflow names the G and its stack size")
    func stackOverflow() async throws {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            setenv("GMP_STACK_SIZE", "64k", 1)
            _ = GMP.run { recurseForever(0) }
        }
        let err = stderrText(r)
        #expect(err.contains("goroutine"), "stderr: \(err)")
        #expect(err.contains("overflowed its stack"))
        #expect(err.contains("64 KiB"))
    }

    @Test("Overflow of an unguarded stack (past the mprotect guard budget) is caught too",
          .disabled(if: GMP.isThreadSanitized, "TSan maps a 512 KiB shadow stack per live G; 20,000 do not fit"))
    func unguardedOverflow() async throws {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            setenv("GMP_STACK_SIZE", "64k", 1)
            // Guard pages by mprotect, which has a budget (guard regions have
            // none), and 20,000 parked Gs: more than that budget on a default kernel.
            setenv("GMP_GUARD_PAGES", "mprotect", 1)
            GMP.run {
                let gate = WaitGroup(1)
                let started = WaitGroup(20_000)
                for _ in 0..<20_000 { go { started.done(); gate.wait() } }
                started.wait()
                _ = recurseForever(0)
            }
        }
        let err = stderrText(r)
        #expect(err.contains("overflowed its stack"), "stderr: \(err)")
    }

    @Test("A trimmed stack (its pages given back) still overflows into its guard and is reported")
    func trimmedOverflow() async throws {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            setenv("GMP_STACK_SIZE", "64k", 1)
            setenv("GMP_TRIM_AFTER", "1ms", 1)
            GMP.run {
                let gate = WaitGroup(1)
                let ended = WaitGroup(1)
                go { gate.wait(); _ = recurseForever(0); ended.done() }
                while GMP.stats.trimmedStacks < 1 { GMP.sleep(for: .milliseconds(1)) }
                gate.done()
                ended.wait()
            }
        }
        let err = stderrText(r)
        #expect(err.contains("overflowed its stack") && err.contains("64 KiB"), "stderr: \(err)")
    }

    @Test("Bad GMP_TRIM_AFTER is a clear error; a good one sets GMP.stackTrimAfter")
    func badTrimAfter() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            setenv("GMP_TRIM_AFTER", "soon", 1)
            _ = GMP.stackTrimAfter
        }
        #expect(stderrText(r).contains("GMP_TRIM_AFTER=soon is not 'off' or a time"))
        await #expect(processExitsWith: .success) {
            setenv("GMP_TRIM_AFTER", "250ms", 1)
            exit(GMP.stackTrimAfter == .milliseconds(250) ? 0 : 1)
        }
        await #expect(processExitsWith: .success) {
            setenv("GMP_TRIM_AFTER", "off", 1)
            exit(GMP.stackTrimAfter == nil ? 0 : 1)
        }
    }

    @Test("GMP.stackTrimAfter refuses .zero and negative durations, with a message that says nil means never")
    func zeroTrimAfterTraps() async {
        let zero = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            GMP.stackTrimAfter = .zero
        }
        let negative = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            GMP.stackTrimAfter = .milliseconds(-5)
        }
        for r in [zero, negative] {
            #expect(stderrText(r).contains("must be positive; nil turns trimming off"), "stderr: \(stderrText(r))")
        }
    }

    @Test("GMP.run inside a G traps with a message")
    func runInsideG() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = GMP.run { GMP.run { 1 } }
        }
        let err = stderrText(r)
        #expect(err.contains("GMP.run called from inside a goroutine"))
    }

    @Test("A negative WaitGroup counter traps")
    func negativeWaitGroup() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            WaitGroup().done()
        }
        let err = stderrText(r)
        #expect(err.contains("negative WaitGroup counter"))
    }

    @Test("Bad GMPPROCS is a clear error")
    func badProcs() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            setenv("GMPPROCS", "zero", 1)
            _ = GMP.procs
        }
        let err = stderrText(r)
        #expect(err.contains("GMPPROCS=zero"))
    }

    @Test("Bad GMP_STACK_SIZE is a clear error")
    func badStackSize() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            setenv("GMP_STACK_SIZE", "lots", 1)
            _ = GMP.procs
        }
        let err = stderrText(r)
        #expect(err.contains("GMP_STACK_SIZE=lots"))
    }

    @Test("SIGQUIT prints the goroutine dump and exits with status 2, as Go")
    func sigquitDumps() async {
        let r = await #expect(processExitsWith: .exitCode(2), observing: [\.standardErrorContent]) {
            GMP.run {
                let wg = WaitGroup(1)
                go { wg.wait() }
                go {
                    // Once the other two are parked, so that both show their stacks.
                    while GMP.stats.parked < 2 { GMP.yield() }
                    kill(getpid(), SIGQUIT)
                    GMP.sleep(for: .seconds(20)) // the watcher ends the process before
                }
                GMP.sleep(for: .seconds(20))
            }
        }
        let err = stderrText(r)
        #expect(err.contains("SIGQUIT: quit"), "stderr: \(err)")
        #expect(err.contains(" [WaitGroup") && err.contains("created by go at GMPTests/ExitTests.swift:"), "stderr: \(err)")
        #expect(err.contains(" [sleep") && err.contains("created by GMP.run"), "stderr: \(err)")
        #expect(err.contains("WaitGroup.wait()\n") && err.contains("GMP.sleep(for:)\n"), "stacks: \(err)")
    }

    @Test("Bad GMP_DEADLOCK is a clear error")
    func badDeadlockMode() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            setenv("GMP_DEADLOCK", "maybe", 1)
            _ = GMP.procs
        }
        #expect(stderrText(r).contains("GMP_DEADLOCK=maybe must be off, report or fatal"))
    }

    @Test("GMP_SCHEDTRACE prints one line per interval")
    func schedTrace() async {
        let r = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            setenv("GMP_SCHEDTRACE", "20", 1)
            GMP.run { GMP.sleep(for: .milliseconds(120)) }
            exit(0)
        }
        let out = String(decoding: r?.standardOutputContent ?? [], as: UTF8.self)
        let lines = out.split(separator: "\n").filter { $0.hasPrefix("SCHED ") }
        #expect(lines.count >= 3, "stdout: \(out)")
        #expect(lines.first?.contains("gmpprocs=") == true)
        #expect(lines.first?.contains("steals=") == true)
    }
}
