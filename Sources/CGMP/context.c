// Stack switching glue around the assembly in switch_<arch>.S.
//
// Each switch is done from one C function compiled without sanitizer
// instrumentation: the __tsan_switch_to_fiber call and the assembly switch
// must not be separated by an instrumented frame, or TSan's shadow stack is
// pushed on one fiber and popped on the other.
//
// AddressSanitizer is told of every switch too: __sanitizer_start_switch_fiber
// (with the stack being switched to) just before, and
// __sanitizer_finish_switch_fiber on the other side just after; a new G
// finishes its first switch in gmp_g_started. Without that, ASan takes the
// G's stack for the thread's and reports false stack overflows (and its
// no-return handling unpoisons the wrong range). The `fiber` fields, TSan's
// fibers under TSan, hold the ASan fake stack of the side switched away
// from under ASan (the two sanitizers never run together).
#define _GNU_SOURCE // pthread_getattr_np
#include "CGMP.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <stdatomic.h>
#include <linux/futex.h>
#include <sched.h>
#include <errno.h>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GMP_TSAN 1
#endif
#endif

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GMP_ASAN 1
#endif
#endif

#ifdef GMP_ASAN
#include <pthread.h>
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
void __lsan_register_root_region(const void *p, size_t size);
#endif

#ifdef GMP_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#endif
#define GMP_SWITCH_FN __attribute__((no_sanitize("thread", "address")))

// Swift runtime (libswiftCore): move the open dynamic-exclusivity accesses
// of a task between the thread and the task's saved state.
extern void swift_task_enterThreadLocalContext(char *state);
extern void swift_task_exitThreadLocalContext(char *state);

// Assembly (switch_x86_64.S / switch_aarch64.S).
extern void gmp_ctx_switch(void **save_sp, void *new_sp);
extern void gmp_ctx_trampoline(void);

#define GMP_TLS __thread __attribute__((tls_model("initial-exec")))
static GMP_TLS void *gmp_current_m;
static GMP_TLS uint64_t gmp_rand_state;

__attribute__((noinline)) void *gmp_get_m(void) { return gmp_current_m; }
__attribute__((noinline)) void gmp_set_m(void *m) { gmp_current_m = m; }

uint64_t gmp_chaos_seed;
static _Atomic uint64_t chaos_threads;

static _Atomic bool chaos_configured;

void gmp_chaos_set(uint64_t seed) {
    gmp_chaos_seed = seed;
    atomic_store(&chaos_configured, true);
}

bool gmp_chaos_configured(void) { return atomic_load(&chaos_configured); }

// A thread's first random state: from the clock, or under chaos from the
// seed and the order in which threads first draw (so a seed replays the same
// choices wherever the threads' interleaving repeats, as on one P).
static uint64_t rand_seed(void) {
    if (gmp_chaos_seed == 0) return (uint64_t)gmp_nanotime() | 1;
    uint64_t z = gmp_chaos_seed + 0x9e3779b97f4a7c15ULL * (atomic_fetch_add(&chaos_threads, 1) + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return (z ^ (z >> 31)) | 1;
}

__attribute__((noinline)) uint32_t gmp_fastrand(void) {
    if (gmp_rand_state == 0) gmp_rand_state = rand_seed();
    gmp_rand_state += 0xa0761d6478bd642fULL;
    __uint128_t r = (__uint128_t)gmp_rand_state * (gmp_rand_state ^ 0xe7037ed1a0b428dbULL);
    return (uint32_t)((uint64_t)(r >> 64) ^ (uint64_t)r);
}
// The G running on this thread, for the overflow handler (async-signal-safe read).
static GMP_TLS gmp_gctx *current_gctx;

void gmp_tsan_release(void *addr) {
#ifdef GMP_TSAN
    __tsan_release(addr);
#else
    (void)addr;
#endif
}

void gmp_tsan_acquire(void *addr) {
#ifdef GMP_TSAN
    __tsan_acquire(addr);
#else
    (void)addr;
#endif
}

bool gmp_tsan_enabled(void) {
#ifdef GMP_TSAN
    return true;
#else
    return false;
#endif
}

void gmp_lsan_root(const void *p, size_t n) {
#ifdef GMP_ASAN
    __lsan_register_root_region(p, n);
#else
    (void)p;
    (void)n;
#endif
}

bool gmp_asan_enabled(void) {
#ifdef GMP_ASAN
    return true;
#else
    return false;
#endif
}

GMP_SWITCH_FN void gmp_gogo(gmp_mctx *m, gmp_gctx *g) {
    current_gctx = g;
    swift_task_enterThreadLocalContext(g->excl);
    void **tl = m->tasklocal_slot; // the G's task-local bindings in, g0's aside
    if (tl != NULL) {
        m->g0_tasklocals = *tl;
        *tl = g->tasklocals;
    }
#ifdef GMP_TSAN
    __tsan_switch_to_fiber(g->fiber, 0);
#endif
#ifdef GMP_ASAN
    __sanitizer_start_switch_fiber(&m->g0fiber, (const void *)g->stack_lo, g->stack_hi - g->stack_lo);
#endif
    gmp_ctx_switch(&m->g0sp, g->sp);
    // Back on g0: the G called gmp_mcall (and so is off its stack).
#ifdef GMP_ASAN
    __sanitizer_finish_switch_fiber(m->g0fiber, NULL, NULL);
#endif
    swift_task_exitThreadLocalContext(g->excl);
    if (tl != NULL) {
        g->tasklocals = *tl;
        *tl = m->g0_tasklocals;
    }
    current_gctx = NULL;
}

static _Noreturn void overflow_fatal(gmp_gctx *g) {
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     "fatal error: goroutine %lld overflowed its stack (stack size %zu KiB; "
                     "set GMP_STACK_SIZE to raise it)\n",
                     (long long)g->id, (size_t)((g->stack_hi - g->stack_lo) / 1024));
    if (n > 0) (void)!write(2, buf, (size_t)n);
    signal(SIGABRT, SIG_DFL);
    abort();
}

// `last`: the G is finished, and ASan may drop its fake stack.
GMP_SWITCH_FN __attribute__((always_inline)) static inline void mcall(gmp_gctx *g, gmp_mctx *m, bool last) {
    if (g->guard_hi == 0 && *(volatile uint64_t *)g->stack_lo != GMP_STACK_CANARY) overflow_fatal(g);
#ifdef GMP_TSAN
    __tsan_switch_to_fiber(m->g0fiber, 0);
#endif
#ifdef GMP_ASAN
    __sanitizer_start_switch_fiber(last ? NULL : &g->fiber, m->g0_lo, m->g0_size);
#else
    (void)last;
#endif
    gmp_ctx_switch(&g->sp, m->g0sp);
#ifdef GMP_ASAN
    // Resumed, perhaps on another M.
    __sanitizer_finish_switch_fiber(g->fiber, NULL, NULL);
#endif
}

GMP_SWITCH_FN void gmp_mcall(gmp_gctx *g, gmp_mctx *m) { mcall(g, m, false); }

GMP_SWITCH_FN void gmp_mcall_exit(gmp_gctx *g, gmp_mctx *m) { mcall(g, m, true); }

GMP_SWITCH_FN void gmp_g_started(void) {
#ifdef GMP_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
}

int gmp_madvise_ranges(const uintptr_t *addrs, const size_t *lens, int n, size_t len, int advice, int *calls_out) {
    // The pidfd to name this process by: PIDFD_SELF (Linux 6.15+) needs no
    // fd; older kernels get a pidfd of our own, opened once. -2: not tried
    // yet; -3: process_madvise cannot do it here (any advice, any kernel).
    static _Atomic int self = -2;
    enum { PIDFD_SELF_ = -10000 };
    struct iovec iov[64];
    int calls = 0, ok = 1;
    for (int i = 0; i < n; i += 64) {
        int k = n - i < 64 ? n - i : 64;
        size_t total = 0;
        for (int j = 0; j < k; j++) {
            iov[j].iov_base = (void *)addrs[i + j];
            iov[j].iov_len = lens ? lens[i + j] : len;
            total += iov[j].iov_len;
        }
#ifdef SYS_process_madvise
        int fd = atomic_load_explicit(&self, memory_order_relaxed);
        if (fd != -3) {
            long r = syscall(SYS_process_madvise, fd == -2 ? PIDFD_SELF_ : fd, iov, k, advice, 0);
            calls++;
            if (r < 0 && fd == -2 && (errno == EBADF || errno == ESRCH)) {
                int own = (int)syscall(SYS_pidfd_open, getpid(), 0);
                if (own >= 0) {
                    r = syscall(SYS_process_madvise, own, iov, k, advice, 0);
                    calls++;
                    int expected = -2;
                    if (r < 0 || !atomic_compare_exchange_strong(&self, &expected, own)) close(own);
                }
            }
            if (fd == -2) {
                int expected = -2;
                atomic_compare_exchange_strong(&self, &expected, r < 0 ? -3 : PIDFD_SELF_);
            }
            if (r == (long)total) continue;
        }
#endif
        // One by one: the kernel cannot batch, or stopped partway (every
        // advice used here is idempotent, so the whole chunk again).
        for (int j = 0; j < k; j++) {
            calls++;
            if (madvise(iov[j].iov_base, iov[j].iov_len, advice) != 0) ok = 0;
        }
    }
    if (calls_out) *calls_out = calls;
    return ok ? 0 : -1;
}

void gmp_prepare_stack(gmp_gctx *g, void (*entry)(void *), void *arg) {
    // Guarded stacks need no canary; unguarded ones are checked at every
    // switch. The canary is zero, the value the lowest word of a fresh
    // stack page already holds, so it is never written: a G that stays off
    // its lowest page never makes the kernel give that page memory (reading
    // it maps the shared zero page). Any stack whose canary is not zero has
    // been overflowed, and ended the process at its next switch.
    uintptr_t top = g->stack_hi & ~(uintptr_t)15;
#if defined(__x86_64__)
    // Frame popped by gmp_ctx_switch: [mxcsr, x87cw, pad][r15 r14 r13 r12 rbx rbp][ret]
    // After `ret` rsp = top-16 (16-byte aligned, as before a call).
    uint64_t *sp = (uint64_t *)(top - 88);
    uint32_t *fp = (uint32_t *)sp;
    fp[0] = 0x1F80;            // MXCSR default
    fp[1] = 0x037F;            // x87 control word default (low 16 bits used)
    sp[1] = 0;
    sp[2] = 0;                 // r15
    sp[3] = 0;                 // r14
    sp[4] = (uint64_t)entry;   // r13
    sp[5] = (uint64_t)arg;     // r12
    sp[6] = 0;                 // rbx
    sp[7] = 0;                 // rbp
    sp[8] = (uint64_t)gmp_ctx_trampoline; // return address
    sp[9] = 0;                 // (top-16) end of frame chain
    sp[10] = 0;
    g->sp = sp;
#elif defined(__aarch64__)
    // Frame popped by gmp_ctx_switch: x19..x30 (12 words), d8..d15 (8), fpcr, pad.
    uint64_t *sp = (uint64_t *)(top - 176);
    memset(sp, 0, 176);
    sp[0] = (uint64_t)arg;     // x19
    sp[1] = (uint64_t)entry;   // x20
    sp[11] = (uint64_t)gmp_ctx_trampoline; // x30 (lr)
    g->sp = sp;
#else
#error "unsupported architecture"
#endif
#ifdef GMP_TSAN
    if (g->fiber == NULL) g->fiber = __tsan_create_fiber(0);
#endif
#ifdef GMP_ASAN
    // A reused stack may hold the poisoned redzones of its last G's frames
    // that never returned (gEntry's): the new G starts clean.
    g->fiber = NULL;
    __asan_unpoison_memory_region((const void *)g->stack_lo, g->stack_hi - g->stack_lo);
#endif
}

void gmp_release_ctx(gmp_gctx *g) {
#ifdef GMP_TSAN
    if (g->fiber) { __tsan_destroy_fiber(g->fiber); g->fiber = NULL; }
#else
    (void)g;
#endif
}

// MARK: stacks of switched-out Gs

// Reads another G's stack while that G may be resumed and running: every
// word read may be stale or torn into garbage. So the walk never follows a
// pointer out of [stack_lo, stack_hi) (stacks are never unmapped, so that
// range is always readable), frame pointers must rise strictly and stay
// aligned, and a garbage frame only ends the walk early or yields a bogus
// address, which symbolizes as unknown. The stack of a trimmed G
// (Trim.swift) is read from its saved copy, which the walk holds by taking
// the trim word from DONE to BUSY for the while (an M about to run the G
// waits, as it does for sysmon). The sanitizers are told to look away: the
// reads race by design, and ASan's redzones on other stacks are not ours
// to check.
typedef struct {
    uintptr_t hi;
    const char *copy;   // the saved top of a trimmed stack, or NULL
    uintptr_t copy_lo;  // the address the copy starts at
} stack_view;

__attribute__((no_sanitize("thread", "address")))
static uintptr_t stack_word(const stack_view *v, uintptr_t addr) {
    if (v->copy == NULL) return *(const volatile uintptr_t *)addr;
    if (addr < v->copy_lo) return 0; // given back: zeros, as the pages read
    return *(const volatile uintptr_t *)(v->copy + (addr - v->copy_lo));
}

// A switched-out G's saved stack pointer, and its stack's top in *hi; 0 if
// the pair read is no stack pointer of that stack (no stack, or garbage).
__attribute__((no_sanitize("thread", "address"), noinline))
static uintptr_t saved_sp(const gmp_gctx *g, uintptr_t *hi) {
    const volatile gmp_gctx *vg = g;
    uintptr_t lo = vg->stack_lo, sp = (uintptr_t)vg->sp;
    *hi = vg->stack_hi;
    if (lo == 0 || sp < lo || sp >= *hi || (sp & 7) != 0) return 0;
    return sp;
}

__attribute__((no_sanitize("thread", "address")))
int gmp_ctx_frames(gmp_gctx *g, uintptr_t *pcs, int max) {
    uintptr_t hi;
    uintptr_t sp = saved_sp(g, &hi);
    if (max <= 0 || sp == 0) return 0;
    uint32_t expected = GMP_TRIM_DONE;
    bool held = __atomic_compare_exchange_n(&g->trim, &expected, GMP_TRIM_BUSY, false,
                                            __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
    stack_view v = {hi, NULL, 0};
    if (held) {
        v.copy = g->trim_buf;
        v.copy_lo = hi - g->trim_len;
    }
    int n = 0;
#if defined(__x86_64__)
    // gmp_ctx_switch's frame: [mxcsr, x87cw, pad][r15 r14 r13 r12 rbx rbp][ret]
    const uintptr_t frame_bytes = 72, pc_at = 64, fp_at = 56;
#elif defined(__aarch64__)
    // gmp_ctx_switch's frame: x19..x28, then x29 (fp) at +80, x30 (lr) at +88
    const uintptr_t frame_bytes = 96, pc_at = 88, fp_at = 80;
#else
    const uintptr_t frame_bytes = 0, pc_at = 0, fp_at = 0;
#endif
    if (frame_bytes != 0 && sp + frame_bytes <= hi) {
        uintptr_t pc = stack_word(&v, sp + pc_at);
        uintptr_t fp = stack_word(&v, sp + fp_at);
        uintptr_t floor = sp;
        while (pc != 0 && n < max) {
            pcs[n++] = pc;
            if (fp <= floor || fp + 16 > hi || (fp & 7) != 0) break;
            pc = stack_word(&v, fp + 8);
            floor = fp;
            fp = stack_word(&v, fp);
        }
    }
    if (held) __atomic_store_n(&g->trim, GMP_TRIM_DONE, __ATOMIC_RELEASE);
    return n;
}

__attribute__((noinline, no_sanitize("thread", "address")))
int gmp_here_frames(uintptr_t lo, uintptr_t hi, uintptr_t *pcs, int max) {
    uintptr_t fp = (uintptr_t)__builtin_frame_address(0);
    int n = 0;
    // A frame record is [saved fp][return address] on x86_64 and AArch64.
    while (n < max && fp >= lo && fp + 16 <= hi && (fp & 7) == 0) {
        uintptr_t next = ((const uintptr_t *)fp)[0];
        uintptr_t pc = ((const uintptr_t *)fp)[1];
        if (pc == 0) break;
        pcs[n++] = pc;
        if (next <= fp) break; // the chain must climb the stack
        fp = next;
    }
    return n;
}

// Copies n bytes that other threads may be writing (the goroutine dump's
// view of G states it does not own, and the trimmer's copies of stack
// tops): word loads where aligned, which do not tear on the platforms we
// build for; the dump checks for a copy torn across fields by copying
// twice. Not instrumented, for the reason above, and never inlined into an
// instrumented caller; a memcpy call would be intercepted, and instrumented,
// all the same.
__attribute__((no_sanitize("thread", "address"), noinline))
void gmp_peek(void *dst, const void *src, size_t n) {
    size_t i = 0;
    if ((((uintptr_t)dst | (uintptr_t)src) & 7) == 0) {
        for (; i + 8 <= n; i += 8)
            *(uint64_t *)((char *)dst + i) = *(const volatile uint64_t *)((const char *)src + i);
    }
    for (; i < n; i++)
        ((char *)dst)[i] = ((const volatile char *)src)[i];
}

// MARK: idle stack trimming (the protocol is in Sources/GMP/Trim.swift)

// The reads of a parked G's status and stack race with nothing the trim
// protocol does not order (see Trim.swift), but TSan cannot see that
// order: the G's status is a plain Swift field and its last writes to its
// stack were made on another fiber. So those reads, and the copies, are
// done here uninstrumented (the copies with gmp_peek).
#define GMP_NO_SAN __attribute__((no_sanitize("thread", "address"), noinline))

// After the claim's CAS: a full fence, then plain loads (TSan instruments
// atomic loads even here), the first one made an acquire by the fence after
// it: the G's M stored the wait reason, the pinned flag and its stack
// pointer before the release fence that precedes its `.waiting` store.
GMP_NO_SAN static bool still_trimmable(const uint8_t *status, uint8_t parked, const uint8_t *reason,
                                       uint8_t untrimmable, const uint8_t *pinned) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint8_t st = *(const volatile uint8_t *)status;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return st == parked && *(const volatile uint8_t *)reason != untrimmable && *(const volatile uint8_t *)pinned == 0;
}

bool gmp_trim_claim(gmp_gctx *g, const uint8_t *status, uint8_t parked, const uint8_t *reason, uint8_t untrimmable,
                    const uint8_t *pinned) {
    uint32_t expected = GMP_TRIM_NONE;
    if (!__atomic_compare_exchange_n(&g->trim, &expected, GMP_TRIM_BUSY, false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return false;
    if (still_trimmable(status, parked, reason, untrimmable, pinned)) return true;
    __atomic_store_n(&g->trim, GMP_TRIM_NONE, __ATOMIC_RELEASE);
    return false;
}

GMP_NO_SAN size_t gmp_trim_save(gmp_gctx *g, size_t max) {
    uintptr_t hi;
    uintptr_t sp = saved_sp(g, &hi);
    size_t n = hi - sp;
    if (sp == 0 || n > max) return 0;
    void *buf = malloc(n);
    if (buf == NULL) return 0;
    gmp_peek(buf, (const void *)sp, n);
    g->trim_buf = buf;
    g->trim_len = (uint32_t)n;
    return n;
}

void gmp_trim_publish(gmp_gctx *g) {
    __atomic_store_n(&g->trim, GMP_TRIM_DONE, __ATOMIC_RELEASE);
}

void gmp_trim_cancel(gmp_gctx *g) {
    free(g->trim_buf);
    g->trim_buf = NULL;
    g->trim_len = 0;
    __atomic_store_n(&g->trim, GMP_TRIM_NONE, __ATOMIC_RELEASE);
}

size_t gmp_trim_restore(gmp_gctx *g) {
    // Claim the copy (DONE -> BUSY) before touching it: the goroutine dump
    // holds a DONE word at BUSY while it reads the copy, and must not find
    // it freed under it, nor store DONE back onto a G that runs.
    for (;;) {
        uint32_t expected = GMP_TRIM_DONE;
        if (__atomic_compare_exchange_n(&g->trim, &expected, GMP_TRIM_BUSY, false,
                                        __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE)) break;
        if (expected == GMP_TRIM_NONE) return 0; // sysmon backed off
        sched_yield(); // BUSY: sysmon saving the top, or the dump reading it
    }
    size_t n = g->trim_len;
    gmp_peek((void *)(g->stack_hi - n), g->trim_buf, n);
    free(g->trim_buf);
    g->trim_buf = NULL;
    g->trim_len = 0;
    __atomic_store_n(&g->trim, GMP_TRIM_NONE, __ATOMIC_RELEASE);
    return n;
}

// MARK: overflow handler

static struct sigaction old_segv, old_bus;

static void overflow_handler(int sig, siginfo_t *info, void *uctx) {
    gmp_gctx *g = current_gctx;
    uintptr_t addr = (uintptr_t)info->si_addr;
    if (g != NULL) {
        // Inside the guard page, or just below an unguarded stack's base.
        bool guard = g->guard_hi != 0 && addr >= g->guard_lo && addr < g->guard_hi;
        bool below = addr < g->stack_lo && addr + 65536 >= g->stack_lo;
        if (guard || below) overflow_fatal(g);
    }
    // Not ours: restore the previous handler and return; the fault repeats there.
    sigaction(sig, sig == SIGSEGV ? &old_segv : &old_bus, NULL);
    (void)uctx;
}

void gmp_install_overflow_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = overflow_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
}

void gmp_thread_init(gmp_mctx *m) {
    size_t size = 64 * 1024;
    void *alt = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (alt != MAP_FAILED) {
        stack_t ss = { .ss_sp = alt, .ss_flags = 0, .ss_size = size };
        sigaltstack(&ss, NULL);
    }
    gmp_rand_state = gmp_chaos_seed ? rand_seed() : ((uint64_t)(uintptr_t)m ^ (uint64_t)gmp_nanotime());
#ifdef GMP_TSAN
    m->g0fiber = __tsan_get_current_fiber();
#else
    m->g0fiber = NULL;
#endif
    m->g0_lo = NULL;
    m->g0_size = 0;
    m->tasklocal_slot = gmp_tasklocal_slot();
    m->g0_tasklocals = NULL;
#ifdef GMP_ASAN
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *lo;
        size_t size;
        if (pthread_attr_getstack(&attr, &lo, &size) == 0) {
            m->g0_lo = lo;
            m->g0_size = size;
        }
        pthread_attr_destroy(&attr);
    }
#endif
}

_Noreturn void gmp_fatal(const char *msg) {
    (void)!write(2, msg, strlen(msg));
    (void)!write(2, "\n", 1);
    signal(SIGABRT, SIG_DFL);
    abort();
}

// MARK: futex

int gmp_futex_wait(uint32_t *addr, uint32_t val, int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        tsp = &ts;
    }
    long r = syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, tsp, NULL, 0);
    return r == 0 ? 0 : -1;
}

int gmp_futex_wake(uint32_t *addr, int n) {
    return (int)syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

void gmp_usleep(uint32_t us) {
    struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000 };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

void gmp_os_yield(void) { sched_yield(); }

bool gmp_is_main_thread(void) { return (pid_t)syscall(SYS_gettid) == getpid(); }
