@testable import Channels
@testable import Contexts
import Foundation
import GMP
import GMPTestSupport
@testable import NetPoller
import Synchronization
import Testing

private struct Boom: Error, Equatable {}

/// Whether `ctx` is done now, without waiting.
private func isDone(_ ctx: Context) -> Bool {
    if case .closed = ctx.done.tryReceive() { return true }
    return false
}

/// Contexts: cancellation and deadlines for Gs, threads and tasks.
@Suite(.serialized) struct ContextTests {
    @Test("withCancel: cancel closes done and sets .canceled once; children follow, the parent does not")
    func cancelTree() {
        let (root, cancelRoot) = Context.withCancel(.background)
        let (child, cancelChild) = Context.withCancel(root)
        let (grandchild, _) = Context.withCancel(child)
        let (sibling, cancelSibling) = Context.withCancel(root)
        #expect(root.err == nil && child.err == nil && !isDone(grandchild))
        #expect(root.childCount == 2)
        cancelSibling()
        #expect(sibling.err == .canceled && isDone(sibling))
        #expect(root.err == nil && !isDone(root))
        #expect(root.childCount == 1) // a cancelled child leaves its parent
        cancelRoot()
        cancelRoot() // again: nothing
        #expect(root.err == .canceled)
        #expect(child.err == .canceled && isDone(child))
        #expect(grandchild.err == .canceled && isDone(grandchild))
        cancelChild() // after the fact: nothing changes
        #expect(child.err == .canceled)
        // A child of a cancelled context is born cancelled.
        let (late, _) = Context.withCancel(root)
        #expect(late.err == .canceled && isDone(late))
        // background is never done.
        #expect(Context.background.err == nil && !isDone(.background) && Context.background.deadline == nil)
    }

    @Test("withTimeout: done fires as a select case after the time, with .deadlineExceeded; a channel case wins before it")
    func timeoutInSelect() async {
        let r = await runG { () -> (String, ContextError?, String, ContextError?) in
            let never = Chan<Int>(), ready = Chan<Int>(capacity: 1)
            ready.send(1)
            let (ctx, cancel) = Context.withTimeout(.background, .milliseconds(50))
            defer { cancel() }
            var first = ""
            select { s in
                if s.receive(ready) != nil { first = "value" }
                if s.receive(ctx.done) != nil { first = "done" }
            }
            let errBefore = ctx.err
            var second = ""
            select { s in
                if s.receive(never) != nil { second = "value" }
                if s.receive(ctx.done) != nil { second = "done" }
                if s.timeout(after: .seconds(20)) { second = "no deadline" }
            }
            return (first, errBefore, second, ctx.err)
        }
        #expect(r?.0 == "value")
        #expect(r?.1 == nil)
        #expect(r?.2 == "done")
        #expect(r?.3 == .deadlineExceeded)
    }

    @Test("Deadlines: a child's is never later than its parent's; a past one ends the context at once; cancel stops the clock")
    func deadlines() {
        let now = GMP.Instant.now
        let (parent, cancelParent) = Context.withDeadline(.background, at: now + .seconds(60))
        let (later, _) = Context.withDeadline(parent, at: now + .seconds(120))
        let (sooner, cancelSooner) = Context.withDeadline(parent, at: now + .seconds(30))
        #expect(parent.deadline == now + .seconds(60))
        #expect(later.deadline == parent.deadline)
        #expect(sooner.deadline == now + .seconds(30))
        let (past, _) = Context.withDeadline(parent, at: now - .nanoseconds(1))
        #expect(past.err == .deadlineExceeded && isDone(past))
        cancelSooner()
        #expect(sooner.err == .canceled) // cancelled first: the deadline never counts
        cancelParent()
        #expect(later.err == .canceled)
    }

    @Test("A parent's deadline ends its children with .deadlineExceeded; a G waiting on a child's done wakes")
    func parentDeadline() async {
        let r = await runG { () -> (Received<Never>, ContextError?) in
            let (parent, cancel) = Context.withTimeout(.background, .milliseconds(30))
            defer { cancel() }
            let (child, _) = Context.withCancel(parent)
            return (child.done.receive(), child.err)
        }
        #expect(r.map { if case .closed = $0.0 { true } else { false } } == true)
        #expect(r?.1 == .deadlineExceeded)
    }

    @Test("afterFunc runs its function in a G once the context is cancelled; a stopped one never runs")
    func afterFunc() async {
        let r = await runG { () -> (Bool, Bool, Bool, Bool)? in
            let (ctx, cancel) = Context.withCancel(.background)
            let ran = Chan<Bool>(capacity: 2)
            ctx.afterFunc { ran.send(GMP.inGoroutine) }
            let stop = ctx.afterFunc { ran.send(false) }
            let stopped = stop()
            cancel()
            let first = ran.receive().value ?? false
            // Registered after the cancel: runs at once.
            let stopLate = ctx.afterFunc { ran.send(true) }
            let second = ran.receive().value ?? false
            var extra = false
            select { s in
                if s.receive(ran) != nil { extra = true }
                if s.timeout(after: .milliseconds(50)) {}
            }
            return (stopped, first, second && !stopLate(), extra)
        }
        guard let (stopped, first, late, extra) = r ?? nil else {
            Issue.record("no result")
            return
        }
        #expect(stopped)
        #expect(first) // ran, in a G
        #expect(late)
        #expect(!extra) // the stopped function never ran
    }

    @Test("Async code awaits done: `try await ctx.done.receive()` returns .closed when the context is cancelled")
    func awaitDone() async throws {
        let (ctx, cancel) = Context.withCancel(.background)
        let waiter = Task { () -> Bool in
            if case .closed = try await ctx.done.receive() { return true }
            return false
        }
        let deadline = Date() + 10
        while ctx.done.waitingReceivers == 0 && Date() < deadline { await Task.yield() }
        guard ctx.done.waitingReceivers == 1 else {
            Issue.record("the task never waited on done")
            return
        }
        cancel()
        #expect(try await bounded { try await waiter.value } == true)
        #expect(ctx.err == .canceled)
    }

    @Test("GMP.await(context:): cancelling the context (or its deadline) cancels the task; the G gets its CancellationError")
    func awaitCancelledByContext() async {
        let r = await runG { () -> (String, String, String) in
            let started = Chan<Bool>(capacity: 1)
            func outcome(_ ctx: Context) -> String {
                do {
                    return try GMP.await(context: ctx) { () async throws -> String in
                        _ = started.trySend(true)
                        try await Task.sleep(for: .seconds(30))
                        return "slept"
                    }
                } catch is CancellationError {
                    return "cancelled"
                } catch {
                    return "\(error)"
                }
            }
            let (ctx, cancel) = Context.withCancel(.background)
            go {
                _ = started.receive() // the task runs (and goes to sleep, or sees the cancel at once)
                cancel()
            }
            let byCancel = outcome(ctx)
            _ = started.tryReceive()
            let (timed, cancelTimed) = Context.withTimeout(.background, .milliseconds(20))
            defer { cancelTimed() }
            let byDeadline = outcome(timed)
            // Already done: the task starts cancelled.
            let already = outcome(ctx)
            return (byCancel, byDeadline, already)
        }
        #expect(r?.0 == "cancelled")
        #expect(r?.1 == "cancelled")
        #expect(r?.2 == "cancelled")
    }

    @Test("GMP.await(context:) with a context that is never cancelled returns the value and rethrows errors")
    func awaitWithContextPlain() async {
        let r = await runG { () -> (Int?, Bool) in
            let (ctx, cancel) = Context.withCancel(.background)
            defer { cancel() }
            let v = try? GMP.await(context: ctx) { () async throws -> Int in 7 }
            var threw = false
            do { _ = try GMP.await(context: ctx) { () async throws -> Int in throw Boom() } } catch { threw = error is Boom }
            return (v, threw && ctx.err == nil && ctx.callbackCount == 0) // each call took its callback back
        }
        #expect(r?.0 == 7)
        #expect(r?.1 == true)
    }

    @Test("withGoroutine: the G's value and error come back to the task; cancelling the task cancels the G's context")
    func withGoroutineBridge() async throws {
        let v = try await bounded { try await withGoroutine { _ in GMP.inGoroutine ? 42 : -1 } }
        #expect(v == 42)
        await #expect(throws: Boom.self) { _ = try await bounded { try await withGoroutine { _ -> Int in throw Boom() } } }
        let started = Chan<Bool>(capacity: 1)
        let task = Task {
            try await withGoroutine { ctx -> ContextError? in
                started.send(true)
                _ = ctx.done.receive() // until the task is cancelled
                return ctx.err
            }
        }
        guard try await bounded({ try await started.receive() }) != nil else {
            Issue.record("the G never started")
            return
        }
        task.cancel()
        #expect(try await bounded { try await task.value } == .canceled)
        // A parent context given to it bounds the G too.
        let (parent, cancelParent) = Context.withTimeout(.background, .milliseconds(20))
        defer { cancelParent() }
        let e = try await bounded {
            try await withGoroutine(context: parent) { ctx -> ContextError? in
                _ = ctx.done.receive()
                return ctx.err
            }
        }
        #expect(e == .deadlineExceeded)
    }

    @Test("A socket read with a context: cancel wakes it with .canceled, a deadline with .timeout, and no deadline is left behind")
    func connRead() async throws {
        let listener = try Listener(port: 0)
        defer { listener.close() }
        let r = await runG { () -> (NetError?, NetError?, NetError?, [UInt8]?) in
            let accepted = Chan<Conn?>(capacity: 1)
            go { accepted.send(try? listener.accept()) }
            guard let client = try? Conn.dial("127.0.0.1", listener.port), let server = accepted.receive().value ?? nil
            else { return (nil, nil, nil, nil) }
            defer {
                client.close()
                server.close()
            }
            func readError(_ ctx: Context) -> NetError? {
                do {
                    _ = try server.read(max: 16, context: ctx)
                    return nil
                } catch { return error }
            }
            let (ctx, cancel) = Context.withCancel(.background)
            go {
                if waitFor({ server.pd.hasWaiter(.read) }) { cancel() } // a G is parked in the read
            }
            let byCancel = readError(ctx)
            cancel() // (if the read never parked, the test fails on byCancel, not here)
            let (timed, cancelTimed) = Context.withTimeout(.background, .milliseconds(20))
            defer { cancelTimed() }
            let byDeadline = readError(timed)
            let already = readError(ctx)
            // No deadline left on the socket: a plain read waits for data and gets it.
            go {
                guard waitFor({ server.pd.hasWaiter(.read) }) else { return }
                try? client.write([1, 2, 3])
            }
            return (byCancel, byDeadline, already, try? server.read(max: 16))
        }
        #expect(r?.0 == .canceled)
        #expect(r?.1 == .timeout)
        #expect(r?.2 == .canceled)
        #expect(r?.3 == [1, 2, 3])
    }

    @Test("Many Gs make, cancel and wait on contexts of one tree while its root is cancelled: every one ends done, none stays registered")
    func stress() async {
        let r = await runG(procs: 4) { () -> (Bool, Int)? in
            let (root, cancelRoot) = Context.withCancel(.background)
            let n = 2_000
            let wg = WaitGroup(n)
            let notDone = Atomic<Int>(0)
            let (mid, cancelMid) = Context.withCancel(root)
            for i in 0..<n {
                go {
                    let (c, cancel) = Context.withCancel(i % 2 == 0 ? root : mid)
                    let (d, _) = Context.withTimeout(c, .milliseconds(Int64(i % 7)))
                    if i % 3 == 0 { cancel() }
                    GMP.yield()
                    _ = d.done.receive() // ends by its deadline, its parent, or the root
                    if d.err == nil || !isDone(c) && i % 3 == 0 { notDone.add(1, ordering: .relaxed) }
                    wg.done()
                }
                if i == n / 2 { cancelMid() }
            }
            go { cancelRoot() }
            wg.wait()
            return (notDone.load(ordering: .relaxed) == 0, root.childCount + mid.childCount)
        }
        #expect(r??.0 == true)
        #expect(r??.1 == 0)
    }
}
