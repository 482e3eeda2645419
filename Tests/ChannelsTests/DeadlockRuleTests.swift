import Channels
import Foundation
import GMP
import Testing

/// The built DeadlockScenarios program (next to the test bundle, or a few levels up).
private func scenariosURL() -> URL {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 where !FileManager.default.fileExists(atPath: dir.appendingPathComponent("DeadlockScenarios").path) {
        dir = dir.deletingLastPathComponent()
    }
    return dir.appendingPathComponent("DeadlockScenarios")
}

/// Runs one scenario of DeadlockScenarios in a process of its own; its exit
/// status (nil if it had to be killed after `seconds`) and standard error.
private func runScenario(_ name: String, environment: [String: String] = [:],
                         seconds: Double = 30) async throws -> (status: Int32?, stderr: String, stdout: String) {
    let p = Process()
    p.executableURL = scenariosURL()
    p.arguments = [name]
    p.environment = ProcessInfo.processInfo.environment.merging(environment.merging(["SWIFT_BACKTRACE": "enable=no"]) { $1 }) { $1 }
    let err = Pipe(), out = Pipe()
    p.standardError = err
    p.standardOutput = out
    let ended = AsyncStream<Void>.makeStream()
    p.terminationHandler = { _ in ended.continuation.yield() }
    try p.run()
    // The pipes are read to their end on threads of their own (a full pipe would stall the program).
    let errText = Task.detached { String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }
    let outText = Task.detached { String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }
    let killer = Task { () -> Bool in
        // SIGKILL: a process started from a Dispatch thread inherits its blocked signals, SIGTERM among them.
        guard (try? await Task.sleep(for: .seconds(seconds))) != nil else { return false }
        kill(p.processIdentifier, SIGKILL)
        return true
    }
    for await _ in ended.stream { break }
    killer.cancel()
    let timedOut = await killer.value
    return (timedOut ? nil : p.terminationStatus, await errText.value, await outText.value)
}

/// The deadlock check reports only what it can prove (GMP's Deadlock.swift):
/// a G that waits for a thread or task the runtime does not own is never
/// reported while that thread can still act; a program whose every thread
/// is stuck is, whatever its threads did before. Each scenario runs in a
/// clean process (Tests/DeadlockScenarios): not as an exit test, whose
/// process runs Swift Testing on Dispatch, which keeps a timer armed.
@Suite struct DeadlockRuleTests {
    @Test("A G that waits 2 s for a Swift task, a Foundation Thread or DispatchQueue.asyncAfter to send is not a deadlock",
          arguments: ["task-sleep", "thread-sleep", "dispatch-after"])
    func waitForForeignSender(_ scenario: String) async throws {
        let r = try await runScenario(scenario)
        #expect(r.status == 0, "status \(String(describing: r.status)); stderr: \(r.stderr)")
        #expect(r.stdout == "42\n")
        #expect(!r.stderr.contains("deadlock"), "stderr: \(r.stderr)")
    }

    @Test("A deadlock is reported: every G asleep while GMP.run waits ends the process with Go's message, a dump and status 2",
          .disabled(if: GMP.isThreadSanitized, "ThreadSanitizer's own thread sleeps with a time-out: the check cannot tell"),
          arguments: ["waitgroup", "receive", "select", "stuck-thread"])
    func deadlockIsFatal(_ scenario: String) async throws {
        let r = try await runScenario(scenario)
        #expect(r.status == 2, "status \(String(describing: r.status)); stderr: \(r.stderr)")
        #expect(r.stderr.contains("fatal error: all goroutines are asleep - deadlock!"), "stderr: \(r.stderr)")
        if scenario == "waitgroup" {
            #expect(r.stderr.contains("2 goroutine(s) parked"), "stderr: \(r.stderr)")
            #expect(r.stderr.contains("goroutine dump: 2 goroutine(s)"), "stderr: \(r.stderr)")
            #expect(r.stderr.contains("goroutine 2 [WaitGroup") && r.stderr.contains("created by go at DeadlockScenarios/main.swift:"),
                    "stderr: \(r.stderr)")
        }
    }

    @Test("GMP_DEADLOCK=report reports a deadlock and goes on (here a signal wakes the thread that ends it)",
          .disabled(if: GMP.isThreadSanitized, "ThreadSanitizer's own thread sleeps with a time-out: the check cannot tell"))
    func deadlockReport() async throws {
        let r = try await runScenario("report", environment: ["GMP_DEADLOCK": "report"])
        #expect(r.status == 0, "status \(String(describing: r.status)); stderr: \(r.stderr)")
        #expect(r.stderr.contains("all goroutines are asleep - deadlock!"), "stderr: \(r.stderr)")
        #expect(r.stdout == "went on\n")
    }
}
