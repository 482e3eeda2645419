import GMP

// Cancellation across the line between Gs and Swift tasks.
//
//  - G to task: `GMP.await(context:_:)` runs the async closure as a task
//    (GMP.await) and cancels that task when the context is cancelled; the
//    task sees it as Swift cancellation (`Task.isCancelled`, a
//    `CancellationError` from whatever it awaits).
//  - Task to G: `withGoroutine(context:_:)`, called from async code, runs a
//    closure in a new G with a child context, suspends the task (not its
//    thread) until the G returns, and cancels the child context when the
//    task is cancelled; the G sees it as `ctx.done` closing and `ctx.err`.
//    The task waits for the G either way: a G cannot be stopped from
//    outside, only asked, so the call returns when the G does.

extension GMP {
    /// `GMP.await(_:)` with a context: when `context` is cancelled (or its
    /// deadline passes) while the task runs, the task is cancelled. The G
    /// still waits for the task to finish: an async function answers
    /// cancellation by throwing `CancellationError` (or returning early),
    /// and that is what this returns or rethrows. A context already done
    /// starts the task cancelled.
    public static func `await`<T: Sendable>(context: Context,
                                             _ body: @escaping @Sendable () async throws -> T) throws -> T {
        var stop: (@Sendable () -> Bool)?
        defer { _ = stop?() }
        return try GMP.awaitTask(body) { task in stop = context.onDone { task.cancel() } }
    }
}

/// From async code: runs `body` in a new G and suspends the task until it
/// returns, then returns its value or rethrows its error. `body` gets a
/// child of `context` that is cancelled when the task is cancelled (and when
/// `body` returns): the G's side of Swift's cancellation.
///
/// ```swift
/// let lines = try await withGoroutine { ctx in try countLines(conn, ctx) }
/// ```
public func withGoroutine<T: Sendable>(context: Context = .background,
                                       _ body: @escaping @Sendable (Context) throws -> T) async throws -> T {
    let (ctx, cancel) = Context.withCancel(context)
    defer { cancel() }
    let r: Result<T, any Error> = await withTaskCancellationHandler {
        await withUnsafeContinuation { (k: UnsafeContinuation<Result<T, any Error>, Never>) in
            go {
                let r: Result<T, any Error>
                do { r = .success(try body(ctx)) } catch { r = .failure(error) }
                k.resume(returning: r)
            }
        }
    } onCancel: {
        cancel()
    }
    return try r.get()
}
