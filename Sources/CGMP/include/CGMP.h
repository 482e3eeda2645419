// CGMP: the few things Swift cannot do itself.
//
//  - switching stacks (gmp_gogo: g0 -> G, gmp_mcall: G -> g0), in assembly,
//    with ThreadSanitizer and AddressSanitizer fiber annotations and the Swift runtime's exclusivity
//    state carried by the G;
//  - building the first frame of a new stack;
//  - futex wait/wake (SYS_futex is not in Swift's Glibc module and syscall() is
//    variadic);
//  - the monotonic clock, thread-local "current M" and the stack-overflow
//    SIGSEGV handler that names the G.
#ifndef CGMP_H
#define CGMP_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The stack canary: the lowest word of an unguarded stack (one past the
/// guard budget, so without a guard page) holds this until the stack is
/// overflowed; it is checked at every switch away from the G. Zero, the value
/// a fresh or scavenged page already holds, so it is never written.
#define GMP_STACK_CANARY 0ULL

/// Per-G switch state. Lives in raw (malloc'd) memory, never in a Swift class
/// property, so that no Swift dynamic access is open across a switch.
typedef struct gmp_gctx {
    void *sp;                 // saved stack pointer while the G is switched out
    void *fiber;              // TSan: the G's fiber; ASan: its saved fake stack; else NULL
    uintptr_t stack_lo;       // lowest usable address (the canary lives here)
    uintptr_t stack_hi;       // highest address (exclusive)
    uintptr_t guard_lo;       // PROT_NONE guard page range, [lo, hi); 0 if none
    uintptr_t guard_hi;
    int64_t id;               // goroutine id, for messages
    uint32_t trim;            // GMP_TRIM_*: atomic, sysmon and the M about to run the G (Trim.swift)
    uint32_t trim_len;        // bytes of the stack's top saved in trim_buf while GMP_TRIM_DONE
    void *trim_buf;
    void *tasklocals;         // the G's task-local bindings while it is switched out (tasklocals.c)
    _Alignas(16) char excl[32]; // Swift exclusivity state (swift_task_*ThreadLocalContext)
} gmp_gctx;

/// Trim states of a G's stack (the protocol is in Sources/GMP/Trim.swift).
#define GMP_TRIM_NONE 0u  // the stack is whole
#define GMP_TRIM_BUSY 1u  // sysmon is saving the top aside and giving the pages back
#define GMP_TRIM_DONE 2u  // the pages are gone; the top is in trim_buf

/// For the M about to run `g`: its trim state (acquire). Anything but
/// GMP_TRIM_NONE sends it to gmp_trim_restore first.
static inline uint32_t gmp_trim_state(gmp_gctx *g) {
    return __atomic_load_n(&g->trim, __ATOMIC_ACQUIRE);
}

/// sysmon: claims a parked G's stack (NONE -> BUSY), then checks, with loads
/// made after the claim, that the G is still parked (`*status == parked`),
/// for a reason other than `untrimmable`, and with its stack not pinned
/// (`*pinned == 0`): the G may have woken and parked again in another kind
/// of wait since sysmon's first look. If not, gives the claim back and
/// returns false.
bool gmp_trim_claim(gmp_gctx *g, const uint8_t *status, uint8_t parked, const uint8_t *reason, uint8_t untrimmable,
                    const uint8_t *pinned);

/// sysmon, for a claimed G: copies the live top of its stack, [sp, hi), to
/// a new malloc'd buffer and records it. Returns the bytes saved, or 0 (then
/// cancel) if that is more than `max` or memory ran out.
size_t gmp_trim_save(gmp_gctx *g, size_t max);

/// sysmon, once the claimed G's stack pages are given back: BUSY -> DONE.
void gmp_trim_publish(gmp_gctx *g);

/// sysmon, for a claimed G it will not trim after all: BUSY -> NONE.
void gmp_trim_cancel(gmp_gctx *g);

/// For the M about to run `g` when gmp_trim_state was not NONE: waits while
/// sysmon (or the goroutine dump) is busy with it, claims a saved top
/// (DONE -> BUSY), copies it back into place (the pages fault back in),
/// frees it and ends at NONE. Returns the bytes restored.
size_t gmp_trim_restore(gmp_gctx *g);

/// Per-M switch state: where g0 (the thread's own stack) was left.
typedef struct gmp_mctx {
    void *g0sp;
    void *g0fiber;  // TSan: g0's fiber; ASan: g0's saved fake stack; else NULL
    void *g0_lo;    // ASan only: the thread's own stack, [g0_lo, g0_lo + g0_size)
    size_t g0_size;
    void **tasklocal_slot; // this thread's task-local bindings (tasklocals.c), or NULL if unknown
    void *g0_tasklocals;   // g0's own, while a G runs
} gmp_mctx;

/// Runs `g` on the current thread (which must be on its g0) until the G
/// switches back with gmp_mcall. Carries the exclusivity state in and out.
void gmp_gogo(gmp_mctx *m, gmp_gctx *g);

/// From a running G: switch back to its M's g0. Returns when some M runs the
/// G again with gmp_gogo. Checks the stack canary first.
void gmp_mcall(gmp_gctx *g, gmp_mctx *m);

/// gmp_mcall for the last time: the G has finished (and never resumes).
void gmp_mcall_exit(gmp_gctx *g, gmp_mctx *m);

/// The first thing a new G does on its own stack (ASan: ends the switch).
void gmp_g_started(void);

/// Prepares g's stack (stack_lo/stack_hi set) so that the first gmp_gogo calls
/// entry(arg) on it. entry must never return.
void gmp_prepare_stack(gmp_gctx *g, void (*entry)(void *), void *arg);

/// Applies madvise `advice` to `n` ranges, the i-th starting at addrs[i],
/// lens[i] bytes long (or `len` for all when lens is NULL), in one system
/// call per 64 ranges where the kernel allows it (process_madvise on this
/// process, which takes any advice since Linux 6.13; since 6.16 one call's
/// MADV_DONTNEED ranges share one TLB flush, so one round of IPIs), else
/// one madvise per range. Returns 0, or -1 if some range could not be
/// advised; stores the number of system calls made in *calls if not NULL.
int gmp_madvise_ranges(const uintptr_t *addrs, const size_t *lens, int n, size_t len, int advice, int *calls);

/// Called when the G that owns `g` is finished with it (TSan fiber release).
void gmp_release_ctx(gmp_gctx *g);

/// The return addresses on a switched-out G's stack, innermost first, found
/// by walking its saved frame pointers (in the saved copy, if the stack is
/// trimmed); at most `max`. Safe to call while the G runs (the walk stays
/// inside its stack; the result is then garbage, not a crash). Returns how
/// many were stored.
int gmp_ctx_frames(gmp_gctx *g, uintptr_t *pcs, int max);
/// The calling code's return addresses, innermost first (the caller of this
/// function first), following saved frame pointers within [lo, hi): the
/// running G's stack. Never reads outside it.
int gmp_here_frames(uintptr_t lo, uintptr_t hi, uintptr_t *pcs, int max);

/// Copies n bytes that other threads may be writing meanwhile, without
/// telling the sanitizers (racy by design: for the goroutine dump).
void gmp_peek(void *dst, const void *src, size_t n);

/// Called once at the start of every M thread: alternate signal stack for
/// the overflow handler, TSan fiber of g0.
void gmp_thread_init(gmp_mctx *m);

/// Installs the SIGSEGV/SIGBUS handler that reports a G stack overflow.
void gmp_install_overflow_handler(void);

/// Prints `msg` and aborts: used for overflow found by the canary check.
_Noreturn void gmp_fatal(const char *msg);

/// Whether this build is instrumented by ThreadSanitizer.
bool gmp_tsan_enabled(void);
/// A release/acquire edge on `addr` for ThreadSanitizer (no-ops in other
/// builds): for hand-overs it cannot see, such as resuming a Swift task
/// through the concurrency runtime and Dispatch, which are not instrumented.
void gmp_tsan_release(void *addr);
void gmp_tsan_acquire(void *addr);

/// Whether this build is instrumented by AddressSanitizer.
bool gmp_asan_enabled(void);

/// Under AddressSanitizer, has LeakSanitizer scan [p, p + n) for pointers
/// (stack slabs: what only a parked G references is not leaked); else nothing.
void gmp_lsan_root(const void *p, size_t n);

// MARK: futex

/// Waits while *addr == val, at most timeout_ns (< 0: no limit).
/// Returns 0 when woken (or spuriously), -1 on timeout or value mismatch.
int gmp_futex_wait(uint32_t *addr, uint32_t val, int64_t timeout_ns);
/// Wakes up to n waiters on addr.
int gmp_futex_wake(uint32_t *addr, int n);

// MARK: time, thread-local current M

static inline int64_t gmp_nanotime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

// Thread-local state is read through out-of-line functions on purpose: a G
// may resume on another thread, and the compiler would otherwise reuse a
// thread-local address computed before a switch (it assumes a function stays
// on one thread).

/// The M running on this thread (NULL on a plain thread).
void *gmp_get_m(void);
void gmp_set_m(void *m);

/// Cheap per-thread random numbers (wyrand) for steal order and select.
uint32_t gmp_fastrand(void);

static inline void gmp_cpu_relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// MARK: epoll, eventfd, sockets (not in Swift's Glibc module)

/// An epoll event, unpacked (the kernel's struct is packed on x86_64).
typedef struct gmp_poll_event {
    uint32_t events;
    uint64_t data;
} gmp_poll_event;

enum {
    GMP_EPOLLIN = 0x001,
    GMP_EPOLLOUT = 0x004,
    GMP_EPOLLERR = 0x008,
    GMP_EPOLLHUP = 0x010,
    GMP_EPOLLRDHUP = 0x2000,
    GMP_EPOLLET = (int)(1u << 31),
};

int gmp_epoll_create(void);
/// op: 1 add, 2 del, 3 mod. Returns 0 or -errno.
int gmp_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// Waits up to timeout_ms (-1: forever) for up to n events. Returns the
/// count, or -errno (EINTR included).
int gmp_epoll_wait(int epfd, gmp_poll_event *events, int n, int timeout_ms);
/// A non-blocking, close-on-exec eventfd, or -errno.
int gmp_eventfd(void);
/// A non-blocking, close-on-exec stream socket of `family`, or -errno.
int gmp_socket(int family);
/// accept4 with SOCK_NONBLOCK|SOCK_CLOEXEC. Returns the fd or -errno.
int gmp_accept(int fd);
/// connect(); returns 0 or -errno (EINPROGRESS for a pending connect).
int gmp_connect(int fd, const void *addr, uint32_t len);
/// Pending error of a socket (SO_ERROR), as errno.
int gmp_socket_error(int fd);
int gmp_set_int_option(int fd, int level, int name, int value);

/// Makes the signal pipe (non-blocking, close-on-exec) into fds[0] (read) and
/// fds[1] (write), which the handler writes each caught signal's number to.
/// Returns 0 or -errno.
int gmp_signal_pipe(int fds[2]);
/// on != 0: sends `sig` to the signal pipe from now on (and unblocks it on
/// this thread); on == 0: restores its default action. Returns 0 or -errno.
int gmp_signal_catch(int sig, int on);
/// Installs the SIGQUIT handler (in place of Swift's backtracer): each
/// SIGQUIT writes a byte to a pipe. Returns the pipe's (blocking) read end,
/// for the goroutine dump thread to wait on, or -errno.
int gmp_install_quit_handler(void);
/// Binds and listens; returns 0 or -errno.
int gmp_bind_listen(int fd, const void *addr, uint32_t len, int backlog);
/// The local port of a bound socket (host order), or -errno.
int gmp_local_port(int fd);
/// Bytes ready to read on a socket: > 0 the count, 0 end of stream, or
/// -errno (-EAGAIN: nothing yet). Reads nothing.
int gmp_readable(int fd);

/// Writes the peer's "ip:port" (or "[ip]:port", or "unix") into buf;
/// returns 0 or -errno.
int gmp_peer_name(int fd, char *buf, int len);

/// Fills a sockaddr_un for `path`; returns its length, or 0 if too long.
uint32_t gmp_make_unix_addr(const char *path, void *out);

/// Fills a sockaddr for an IPv4 or IPv6 literal; returns its length, or 0.
uint32_t gmp_make_addr(const char *ip, uint16_t port, void *out, int *family);

void gmp_usleep(uint32_t us);
void gmp_os_yield(void);
/// Whether the calling thread is the process's main thread.
bool gmp_is_main_thread(void);

// MARK: task-local values (tasklocals.c; TaskLocals.swift)

/// The probe that finds where Swift keeps a thread's task-local bindings
/// outside a task: begin on a thread with none bound, inside a binding of
/// `key` (a TaskLocal's address), then end once it is unbound. End returns
/// whether the slot was found (it is then known for every thread).
bool gmp_tasklocal_probe_begin(void);
void gmp_tasklocal_probe_inside(const void *key);
bool gmp_tasklocal_probe_end(void);
/// The calling thread's task-local slot, or NULL if the probe did not find it.
void **gmp_tasklocal_slot(void);

// MARK: the process's threads (threads.c; for the deadlock check)

/// Whether every thread of the process but those in own[0..<nown] sits in
/// a quiet wait (blocked, with no time-out, where only another thread of the
/// process can wake it: see threads.c), as two looks at /proc/self/task in
/// a row show, with no such thread having run in between. False when it
/// cannot tell (a thread that is not quiet, /proc unreadable, over 512).
bool gmp_threads_quiet(const int32_t *own, int nown);

/// The calling thread's kernel id.
int32_t gmp_gettid(void);

// MARK: chaos scheduling (GMP_CHAOS; Chaos.swift)

/// The GMP_CHAOS seed, 0 when chaos is off. Set once by gmp_chaos_set before
/// any M starts, read-only afterwards.
extern uint64_t gmp_chaos_seed;

/// Sets the seed (0: chaos off) once the scheduler has read GMP_CHAOS.
/// Before any M starts.
void gmp_chaos_set(uint64_t seed);

/// The seed (0: chaos is off); for Swift, which may not read a C global.
static inline uint64_t gmp_chaos_get(void) { return gmp_chaos_seed; }

/// Whether gmp_chaos_set has run (the scheduler has started).
bool gmp_chaos_configured(void);

/// Under chaos, true once in `n` times (each thread draws from its own
/// stream, seeded from the chaos seed and the thread's start order); always
/// false otherwise, at the cost of one load.
static inline bool gmp_chaos_coin(uint32_t n) {
    return gmp_chaos_seed != 0 && gmp_fastrand() % n == 0;
}

#ifdef __cplusplus
}
#endif
#endif
