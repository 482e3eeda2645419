import Channels
import GMP

// Contexts: Go's `context` package (cancellation and deadlines) for Gs,
// plain threads and Swift tasks.
//
// A context is a node in a tree. `background` is the root: never cancelled,
// no deadline. `withCancel`, `withDeadline` and `withTimeout` make a child,
// which is cancelled when its cancel function is called, when its deadline
// passes, or when its parent is cancelled, whichever comes first; cancelling
// a context cancels its descendants, never its ancestors. A child's deadline
// is never later than its parent's.
//
// `done` is a channel that is closed when the context is cancelled: a G
// waits for it with `receive()` or as a case of `select` beside other
// channel operations, a task with `try await ctx.done.receive()`. `err`
// then says why (`.canceled`, `.deadlineExceeded`) and never changes again.
//
// Cancellation (`cancel(_:)`): under the node's lock, the first cancel
// records `err` and takes the node's children and callbacks; then, with no
// lock held, it closes `done`, stops the deadline timer, cancels the
// children with the same error, runs the callbacks, and takes the node out
// of its parent. A node registers with its parent under the parent's lock,
// and cancels itself at once if the parent was cancelled first. No two
// nodes' locks are ever held together.
//
// Callbacks (`onDone`, internal) run inline on the cancelling thread (it may
// be a timer's callback on the scheduler: they must be short and must not
// block); `afterFunc` (public) runs its function in a new G.
//
// A child is held by its parent until it is cancelled: call the cancel
// function when done with a context, as in Go, or it lives as long as the
// parent does.

/// Why a context was cancelled (Go's `context.Canceled` and
/// `context.DeadlineExceeded`).
public enum ContextError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Its cancel function (or an ancestor's) was called.
    case canceled
    /// Its deadline (or an ancestor's) passed.
    case deadlineExceeded

    public var description: String {
        switch self {
        case .canceled: return "context canceled"
        case .deadlineExceeded: return "context deadline exceeded"
        }
    }
}

/// A cancellation signal with an optional deadline, handed down to the Gs
/// (and tasks) that do work on someone's behalf: Go's `context.Context`.
///
/// ```swift
/// let (ctx, cancel) = Context.withTimeout(.background, .seconds(2))
/// defer { cancel() }
/// select { s in
///     if let r = s.receive(results) { use(r) }
///     if s.receive(ctx.done) != nil { print(ctx.err!) }   // .deadlineExceeded after 2 s
/// }
/// ```
public final class Context: @unchecked Sendable {
    // @unchecked: `state` is guarded by `lock` (a FutexLock, which
    // ThreadSanitizer understands; it does not see Synchronization.Mutex);
    // every other field is immutable.
    /// The root context: never cancelled, no deadline.
    public static let background = Context(parent: nil, deadline: nil, cancellable: false)

    /// Closed when the context is cancelled (never, for `background`). No
    /// value is ever sent on it: a receive returns `.closed` once it is done.
    public let done = Chan<Never>()

    /// The deadline, if the context or an ancestor has one.
    public let deadline: GMP.Instant?

    private let parent: Context?
    private let cancellable: Bool
    private let lock = FutexLock(compact: ())
    private var state = State()

    private struct State {
        var err: ContextError?
        var children: [ObjectIdentifier: Context] = [:]
        var callbacks: [Int: @Sendable () -> Void] = [:]
        var nextCallback = 0
        var timer: Timer?
    }

    private init(parent: Context?, deadline: GMP.Instant?, cancellable: Bool) {
        self.parent = parent
        self.deadline = deadline
        self.cancellable = cancellable
    }

    deinit { lock.free() } // nobody can reach the context any more

    /// Runs `body` on the state under the lock.
    private func withState<R>(_ body: (inout State) -> R) -> R {
        lock.withLock { body(&state) }
    }

    /// How many children are registered (for tests: a cancelled child leaves).
    var childCount: Int { withState { $0.children.count } }
    /// How many `onDone` callbacks are registered (for tests: a stopped one leaves).
    var callbackCount: Int { withState { $0.callbacks.count } }

    /// Why the context was cancelled, or nil while it is not.
    public var err: ContextError? { withState { $0.err } }

    /// A function that cancels a context (Go's `CancelFunc`). Calling it
    /// again, or after the context ended otherwise, does nothing.
    public typealias CancelFunc = @Sendable () -> Void

    /// A child of `parent` that is cancelled when the returned function is
    /// called or when `parent` is cancelled.
    public static func withCancel(_ parent: Context) -> (context: Context, cancel: CancelFunc) {
        let c = Context(parent: parent, deadline: parent.deadline, cancellable: true)
        c.attach()
        return (c, { [c] in c.cancel(.canceled) })
    }

    /// A child of `parent` that is also cancelled, with `.deadlineExceeded`,
    /// at `deadline`. If `parent`'s deadline is earlier, that one stands, as
    /// in Go. A deadline already past ends the context at once.
    public static func withDeadline(_ parent: Context, at deadline: GMP.Instant) -> (context: Context, cancel: CancelFunc) {
        if let d = parent.deadline, d <= deadline { return withCancel(parent) }
        let c = Context(parent: parent, deadline: deadline, cancellable: true)
        c.attach()
        if deadline.hasPassed {
            c.cancel(.deadlineExceeded)
        } else {
            // The timer holds the context (as Go's does) until it fires or the
            // cancel stops it and drops it from `state`; armed under the lock, so
            // a cancel cannot stop it before it is armed.
            let t = Timer { [c] in c.cancel(.deadlineExceeded) }
            c.withState {
                if $0.err != nil { return }
                $0.timer = t
                t.reset(at: deadline)
            }
        }
        return (c, { [c] in c.cancel(.canceled) })
    }

    /// `withDeadline(parent, at: now + timeout)`.
    public static func withTimeout(_ parent: Context, _ timeout: Duration) -> (context: Context, cancel: CancelFunc) {
        withDeadline(parent, at: .after(timeout))
    }

    /// Registers with the nearest cancellable ancestor (the parent itself:
    /// every context but `background` is cancellable).
    private func attach() {
        guard let parent, parent.cancellable else { return }
        let parentErr: ContextError? = parent.withState {
            if let e = $0.err { return e }
            $0.children[ObjectIdentifier(self)] = self
            return nil
        }
        if let parentErr { cancel(parentErr) }
    }

    /// Cancels the context and its descendants with `err`; the first cancel
    /// wins. See the top of the file for the order of events.
    func cancel(_ err: ContextError) {
        let taken: (children: [Context], callbacks: [@Sendable () -> Void], timer: Timer?)? = withState {
            if $0.err != nil { return nil }
            $0.err = err
            let t = (Array($0.children.values), $0.callbacks.sorted { $0.key < $1.key }.map(\.value), $0.timer)
            $0.children = [:]
            $0.callbacks = [:]
            $0.timer = nil
            return t
        }
        guard let taken else { return }
        done.close()
        taken.timer?.stop()
        for c in taken.children { c.cancel(err) }
        for f in taken.callbacks { f() }
        if let parent, parent.cancellable {
            _ = parent.withState { $0.children.removeValue(forKey: ObjectIdentifier(self)) }
        }
    }

    /// Runs `f` once the context is cancelled: inline on the cancelling
    /// thread (short, non-blocking work only), or at once if it already is.
    /// Returns a function that unregisters `f` and says whether it did so
    /// before `f` ran.
    func onDone(_ f: @escaping @Sendable () -> Void) -> @Sendable () -> Bool {
        guard cancellable else { return { false } } // background: never
        let id: Int? = withState {
            if $0.err != nil { return nil }
            let id = $0.nextCallback
            $0.nextCallback += 1
            $0.callbacks[id] = f
            return id
        }
        guard let id else {
            f()
            return { false }
        }
        return { [self] in withState { $0.callbacks.removeValue(forKey: id) != nil } }
    }

    /// Runs `f` in a new G once the context is cancelled (at once if it
    /// already is): Go's `context.AfterFunc`. Returns a function that stops
    /// that, and says whether it did so before `f` was started.
    @discardableResult
    public func afterFunc(_ f: @escaping @Sendable () -> Void) -> @Sendable () -> Bool {
        onDone { go(f) }
    }
}
