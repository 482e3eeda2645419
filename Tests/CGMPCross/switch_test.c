// Cross-architecture check of CGMP's context switch, independent of Swift:
// built for aarch64 and run under qemu-user by .ci/run (and natively too).
// Two "goroutines" ping-pong with g0 many times, with floating-point state
// and callee-saved registers live across switches; then a switched-out one's
// stack is walked (gmp_ctx_frames, for the goroutine dump), trimmed and
// restored (Trim.swift's steps, done by hand). Each G's task-local slot
// value (TaskLocals.swift) is in the thread's slot while it runs, and g0's
// is back once it switches out.
#include "CGMP.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

// Stand-ins for the Swift runtime's exclusivity hooks (no Swift here).
static int enters, exits;
void swift_task_enterThreadLocalContext(char *state) { (void)state; enters++; }
void swift_task_exitThreadLocalContext(char *state) { (void)state; exits++; }
// The task-local slot's probe needs Swift's runtime: the test sets m's slot by hand.
void **gmp_tasklocal_slot(void) { return NULL; }
static void *slot; // stands for the thread's task-local slot
static int wrongSlot;

static gmp_mctx m;
static gmp_gctx g[2];
static volatile long counter[2];

static void body(void *arg) {
    long id = (long)arg;
    double acc = 1.0;
    for (long i = 0; i < 100000; i++) {
        acc = acc * 1.0000001 + (double)id;
        counter[id]++;
        if (slot != (void *)(100 + id)) wrongSlot++;
        gmp_mcall(&g[id], &m);
    }
    if (acc < 1.0) abort();
    counter[id] = -counter[id]; // done marker
    for (;;) gmp_mcall(&g[id], &m);
}

int main(void) {
    size_t size = 64 * 1024;
    for (long i = 0; i < 2; i++) {
        char *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) return 2;
        g[i].stack_lo = (uintptr_t)base;
        g[i].stack_hi = (uintptr_t)base + size;
        g[i].id = i + 1;
        g[i].tasklocals = (void *)(100 + i);
        gmp_prepare_stack(&g[i], body, (void *)i);
    }
    m.tasklocal_slot = &slot;
    slot = (void *)7; // g0's
    double live = 3.25; // must survive the switches
    long rounds = 0;
    while (counter[0] >= 0 || counter[1] >= 0) {
        for (int i = 0; i < 2; i++) if (counter[i] >= 0) gmp_gogo(&m, &g[i]);
        if (slot != (void *)7) wrongSlot++;
        live *= 1.0;
        rounds++;
    }
    // A switched-out G's stack walks back into `body` (through its saved
    // frame pointers; built with -fno-omit-frame-pointer) and stops inside
    // the stack, at the trampoline's zero frame pointer.
    uintptr_t pcs[16];
    int n = gmp_ctx_frames(&g[0], pcs, 16);
    int inBody = 0;
    for (int i = 0; i < n; i++)
        if (pcs[i] > (uintptr_t)body && pcs[i] < (uintptr_t)body + 4096) inBody = 1;
    if (n < 1 || n >= 16 || !inBody) {
        printf("FAIL: stack walk found %d frames, %s in body\n", n, inBody ? "one" : "none");
        return 1;
    }
    // Trim G 0's stack as sysmon does (claim, save the top, give the pages
    // back, publish), walk it from the copy, restore it and run it again.
    uint8_t parked = 3, reason = 1, pinned = 0;
    size_t saved = 0, restored = 0;
    pinned = 1; // a pinned stack is refused, and the claim given back
    if (gmp_trim_claim(&g[0], &parked, 3, &reason, 0, &pinned) || gmp_trim_state(&g[0]) != GMP_TRIM_NONE) {
        printf("FAIL: a pinned stack was claimed\n");
        return 1;
    }
    pinned = 0;
    if (gmp_trim_claim(&g[0], &parked, 3, &reason, 0, &pinned)) saved = gmp_trim_save(&g[0], 65536);
    if (saved == 0 || madvise((void *)g[0].stack_lo, g[0].stack_hi - g[0].stack_lo, MADV_DONTNEED) != 0) {
        printf("FAIL: trim claim/save\n");
        return 1;
    }
    gmp_trim_publish(&g[0]);
    int m2 = gmp_ctx_frames(&g[0], pcs, 16);
    if (m2 != n || gmp_trim_state(&g[0]) != GMP_TRIM_DONE) {
        printf("FAIL: walk of the trimmed stack found %d frames (%d before)\n", m2, n);
        return 1;
    }
    restored = gmp_trim_restore(&g[0]);
    long before = counter[0];
    gmp_gogo(&m, &g[0]); // resumes on the restored frames and switches back
    if (restored != saved || gmp_trim_state(&g[0]) != GMP_TRIM_NONE || counter[0] != before) {
        printf("FAIL: restore gave %zu of %zu bytes\n", restored, saved);
        return 1;
    }
    if (counter[0] != -100000 || counter[1] != -100000 || live != 3.25 || enters != exits || wrongSlot != 0) {
        printf("FAIL: counters %ld %ld live %f enters %d exits %d task-local slot wrong %d times\n", counter[0],
               counter[1], live, enters, exits, wrongSlot);
        return 1;
    }
    printf("context switch ok: %ld rounds, %d switches\n", rounds, enters + exits);
    return 0;
}
