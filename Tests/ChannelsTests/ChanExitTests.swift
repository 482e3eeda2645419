@testable import Channels
import Foundation
import GMP
import Testing

/// The text a child process wrote to standard error.
func stderrText(_ r: ExitTest.Result?) -> String {
    String(decoding: r?.standardErrorContent ?? [], as: UTF8.self)
}

/// The channel traps of Go, with Go's messages.
@Suite struct ChanExitTests {
    @Test("SelectSet.value(of:) for a case that did not fire traps with a message")
    func selectSetWrongCase() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let c = Chan<Int>(capacity: 1), d = Chan<Int>(capacity: 1)
            let set = SelectSet()
            _ = set.receive(c)
            let rd = set.receive(d)
            c.send(1)
            _ = set.wait()
            _ = set.value(of: rd)
        }
        #expect(stderrText(r).contains("is not the receive that fired last"))
    }

    @Test("send on a closed channel traps")
    func sendOnClosed() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let c = Chan<Int>(capacity: 1)
            c.close()
            c.send(1)
        }
        #expect(stderrText(r).contains("send on closed channel"))
    }

    /// Who blocks in a send when the channel is closed.
    enum BlockedSender: String, CaseIterable, Codable, Sendable { case g, select, thread }

    @Test("a sender blocked when the channel is closed is woken, and traps (a G, a select, a plain thread)",
          arguments: BlockedSender.allCases)
    func blockedSenderOnClose(who: BlockedSender) async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) { [who] in
            let c = Chan<Int>()
            GMP.run {
                switch who {
                case .g: go { c.send(1) }
                case .select: go { select { s in if s.send(c, 1) {} } }
                case .thread: Thread.detachNewThread { c.send(1) }
                }
                guard waitFor({ c.hasWaitingSender }) else { exit(3) }
                c.close()
                // A sender left parked by close would let the process exit 0 here.
                GMP.sleep(for: .seconds(5))
            }
        }
        #expect(stderrText(r).contains("send on closed channel"))
    }

    @Test("close of a closed channel traps")
    func closeTwice() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let c = Chan<Int>()
            c.close()
            c.close()
        }
        #expect(stderrText(r).contains("close of closed channel"))
    }

    @Test("close of a nil channel traps")
    func closeNil() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let c: Chan<Int>? = nil
            close(c)
        }
        #expect(stderrText(r).contains("close of nil channel"))
    }

    @Test("a select send case on a closed channel traps")
    func selectSendOnClosed() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let c = Chan<Int>()
            c.close()
            select { s in
                if s.send(c, 1) {}
                if s.otherwise() {}
            }
        }
        #expect(stderrText(r).contains("send on closed channel"))
    }

    @Test("a blocking receive or select that would wait inside a Swift task traps, pointing to the async form")
    func blockingInTask() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let c = Chan<Int>()
            let blocking: () -> Received<Int> = c.receive // the blocking form, by name
            await Task.detached { _ = blocking() }.value
        }
        #expect(stderrText(r).contains("use `try await chan.receive()`"))
        let s = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let c = Chan<Int>()
            await Task.detached { select { s in if s.receive(c) != nil {} } }.value
        }
        #expect(stderrText(s).contains("a select would block"))
    }

    @Test("send on a closed channel from async code traps; so does a task's send waiting when the channel is closed")
    func asyncSendOnClosed() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let c = Chan<Int>(capacity: 1)
            c.close()
            try await c.send(1)
        }
        #expect(stderrText(r).contains("send on closed channel"))
        let w = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let c = Chan<Int>()
            Task { try await c.send(1) }
            let deadline = Date() + 10
            while !c.hasWaitingSender && Date() < deadline { await Task.yield() }
            guard c.hasWaitingSender else { exit(3) }
            c.close()
            // A sender left waiting by close would let the process exit 0 here.
            try await Task.sleep(for: .seconds(5))
        }
        #expect(stderrText(w).contains("send on closed channel"))
    }

    @Test("a task waiting on a channel neither holds the process when GMP.run returns nor makes a slow task a deadlock")
    func taskWaitingAtExit() async {
        await #expect(processExitsWith: .success) {
            let v = GMP.run { () -> Int in
                let never = Chan<Int>(), a = Chan<Int>(), b = Chan<Int>()
                Task { _ = try await never.receive() } // left waiting for ever
                Task {
                    if case .value(let v) = try await a.receive() { try await b.send(v + 1) }
                }
                guard waitFor({ never.hasWaitingReceiver && a.waitingReceivers == 1 }) else { return -1 }
                // Only the task can answer the G, and only after 1.5 s: longer than the deadlock check's grace.
                DispatchQueue.global().asyncAfter(deadline: .now() + 1.5) { _ = a.trySend(41) }
                return b.receive().value ?? -2
            }
            if v != 42 { exit(4) }
        }
    }

    @Test("a blocking receive that would wait inside a task on GMP.executor traps too: its G must not switch away mid-job")
    func blockingOnExecutor() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let c = Chan<Int>()
            let blocking: () -> Received<Int> = c.receive // the blocking form, by name
            await Task(executorPreference: GMP.executor) { _ = blocking() }.value
        }
        #expect(stderrText(r).contains("a task on GMP.executor blocked its goroutine (chan receive)"))
        #expect(stderrText(r).contains("try await chan.receive()"))
    }
}
