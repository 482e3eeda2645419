import CGMP
import Glibc

// Task-local values follow their G.
//
// Code in a G is synchronous Swift, and wrapping it in a task-local binding
// is ordinary Swift: `$requestID.withValue(id) { handle(request) }`, with a
// logger that reads `requestID` deep inside. Outside a task, Swift keeps
// such bindings in per-thread storage (a pointer to a list of bindings, in
// its concurrency runtime). A G that parks inside `withValue` would leave
// its binding on the M's thread, for the next G to read there, and resume
// on another M under that thread's bindings: 12,439 of 12,800 reads saw
// another G's value in a test of 64 Gs that sleep inside `withValue`.
//
// So the pointer follows the G, as the exclusivity state does: `gmp_gogo`
// puts the G's bindings in the thread's slot before it switches to the G,
// and takes them out again (restoring g0's) when the G switches back. Two
// loads and two stores per switch. No API names the slot, so the runtime
// finds it once, at start, by behaviour (CGMP's tasklocals.c): on a fresh
// thread, it binds a value of its own and looks for the one word of the
// concurrency runtime's thread-local block that then points to a list
// whose head carries that binding's key. If the probe fails (a toolchain
// that keeps the bindings elsewhere), the runtime says so on standard error
// at start (once) rather than let bindings leak between Gs silently.
//
// A G starts with no bindings: `go` inside `withValue` does not copy them
// into the new G (a `Task` copies them; Go has no such thing).

enum TaskLocals {
    /// The probe's own task-local value (see above).
    @TaskLocal static var probe: Int = 0

    /// Finds the slot (on a thread of its own: the caller may be running a
    /// task, whose bindings live in the task, not in the slot). Before any M
    /// starts.
    static func findSlot() {
        var tid = pthread_t()
        let r = pthread_create(&tid, nil, { _ in
            let key = UnsafeRawPointer(Unmanaged.passUnretained(TaskLocals.$probe).toOpaque())
            var found = false
            if gmp_tasklocal_probe_begin() {
                TaskLocals.$probe.withValue(1) { gmp_tasklocal_probe_inside(key) }
                found = gmp_tasklocal_probe_end()
            }
            return UnsafeMutableRawPointer(bitPattern: found ? 1 : 0)
        }, nil)
        var result: UnsafeMutableRawPointer?
        if r == 0 { pthread_join(tid, &result) }
        if result == nil {
            let text = "warning: GMP cannot find where this Swift runtime keeps task-local values outside a task: "
                + "a TaskLocal bound with withValue inside a goroutine that parks may be seen by other goroutines\n"
            _ = text.withCString { write(2, $0, strlen($0)) }
        }
    }
}
