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
/// With `signalOn`, sends the process SIGUSR1 once its standard error holds
/// that text.
private func runScenario(_ name: String, environment: [String: String] = [:], signalOn: String? = nil,
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
    let pid = p.processIdentifier
    let errText = Task.detached { () -> String in
        var text = Data()
        var signalled = signalOn == nil
        while true {
            let chunk = err.fileHandleForReading.availableData // (blocks this thread until data or the end)
            if chunk.isEmpty { break }
            text.append(chunk)
            if !signalled, let marker = signalOn, String(decoding: text, as: UTF8.self).contains(marker) {
                signalled = true
                kill(pid, SIGUSR1)
            }
        }
        return String(decoding: text, as: UTF8.self)
    }
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

    @Test("A thread waiting on an epoll instance whose watched pipe's old number now names an eventfd is not taken for quiet: no report while the pipe may still be written")
    func staleEpollFd() async throws {
        let p = Process()
        p.executableURL = scenariosURL()
        p.arguments = ["stale-epoll-fd"]
        p.environment = ProcessInfo.processInfo.environment.merging(["SWIFT_BACKTRACE": "enable=no"]) { $1 }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let reader = out.fileHandleForReading
        var text = ""
        while !text.contains("\n") {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        let fd = Int(text.split(separator: "\n").first ?? "") ?? -1
        #expect(fd >= 0, "the scenario's pipe: \(text)")
        // Written from outside, past the check's second of grace.
        try await Task.sleep(for: .seconds(2))
        if let h = FileHandle(forWritingAtPath: "/proc/\(p.processIdentifier)/fd/\(fd)") {
            h.write(Data("x".utf8))
            try? h.close()
        }
        let rest = String(decoding: reader.readDataToEndOfFile(), as: UTF8.self)
        let stderrText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "status \(p.terminationStatus); stderr: \(stderrText)")
        #expect(rest == "42\n")
        #expect(!stderrText.contains("deadlock"), "stderr: \(stderrText)")
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

    @Test("GMP_DEADLOCK=report reports a deadlock and goes on (here a signal from outside, sent once the report is out, wakes the thread that ends it)",
          .disabled(if: GMP.isThreadSanitized, "ThreadSanitizer's own thread sleeps with a time-out: the check cannot tell"))
    func deadlockReport() async throws {
        let r = try await runScenario("report", environment: ["GMP_DEADLOCK": "report"], signalOn: "goroutine dump:")
        #expect(r.status == 0, "status \(String(describing: r.status)); stderr: \(r.stderr)")
        #expect(r.stderr.contains("all goroutines are asleep - deadlock!"), "stderr: \(r.stderr)")
        #expect(r.stdout == "went on\n")
    }
}
