// Cross-architecture check of CGMP's context switch, independent of Swift:
// built for aarch64 and run under qemu-user by .ci/run (and natively too).
// Two "goroutines" ping-pong with g0 many times, with floating-point state
// and callee-saved registers live across switches; then a switched-out one's
// stack is walked (gmp_ctx_frames, for the goroutine dump).
#include "CGMP.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

// Stand-ins for the Swift runtime's exclusivity hooks (no Swift here).
static int enters, exits;
void swift_task_enterThreadLocalContext(char *state) { (void)state; enters++; }
void swift_task_exitThreadLocalContext(char *state) { (void)state; exits++; }

static gmp_mctx m;
static gmp_gctx g[2];
static volatile long counter[2];

static void body(void *arg) {
    long id = (long)arg;
    double acc = 1.0;
    for (long i = 0; i < 100000; i++) {
        acc = acc * 1.0000001 + (double)id;
        counter[id]++;
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
        gmp_prepare_stack(&g[i], body, (void *)i);
    }
    double live = 3.25; // must survive the switches
    long rounds = 0;
    while (counter[0] >= 0 || counter[1] >= 0) {
        for (int i = 0; i < 2; i++) if (counter[i] >= 0) gmp_gogo(&m, &g[i]);
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
    if (counter[0] != -100000 || counter[1] != -100000 || live != 3.25 || enters != exits) {
        printf("FAIL: counters %ld %ld live %f enters %d exits %d\n", counter[0], counter[1], live, enters, exits);
        return 1;
    }
    printf("context switch ok: %ld rounds, %d switches\n", rounds, enters + exits);
    return 0;
}
