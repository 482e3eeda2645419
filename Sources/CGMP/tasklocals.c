// Task-local values that follow their G (the protocol is in
// Sources/GMP/TaskLocals.swift).
//
// Outside a task, Swift keeps `TaskLocal.withValue` bindings in a
// per-thread pointer of its concurrency runtime (libswift_Concurrency's
// FallbackTaskLocalStorage: a thread_local pointer to a malloc'd list head),
// which no API reads or writes. So it is found once, by behaviour: in a
// thread with no binding, every word of the concurrency runtime's
// thread-local block is copied; a value is bound; the one word that went
// from zero to a pointer whose list head's key is the probe's key is the
// slot; it must be zero again once the binding ends. Each M then knows the
// address of its own thread's slot, and the switch moves the pointer in
// and out of the G (gmp_gogo).
#define _GNU_SOURCE
#include "CGMP.h"

#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

// Any function of the concurrency runtime: the module whose thread-local
// block holds the slot (the executable itself when the runtime is linked
// statically).
extern void swift_task_localValuePush(void);

typedef struct {
    uintptr_t fn;
    void *block;
    size_t size;
    bool found;
} module_search;

static int find_module(struct dl_phdr_info *info, size_t len, void *arg) {
    (void)len;
    module_search *s = arg;
    bool holds = false;
    const ElfW(Phdr) *tls = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && s->fn >= lo && s->fn < lo + ph->p_memsz) holds = true;
        if (ph->p_type == PT_TLS) tls = ph;
    }
    if (!holds) return 0;
    s->found = true;
    if (tls != NULL && info->dlpi_tls_data != NULL) {
        s->block = info->dlpi_tls_data;
        s->size = tls->p_memsz;
    }
    return 1;
}

// The calling thread's thread-local block of the concurrency runtime.
static void *tls_block(size_t *size) {
    module_search s = {(uintptr_t)&swift_task_localValuePush, NULL, 0, false};
    dl_iterate_phdr(find_module, &s);
    *size = s.size;
    return s.block;
}

// The slot's offset in the block, once found (-1: not found).
static long slot_offset = -1;

// The probe's state (one probe, on one thread, before any M starts).
enum { max_words = 4096 };
static uintptr_t *probe_before;
static size_t probe_words;
static long probe_candidate = -1;

bool gmp_tasklocal_probe_begin(void) {
    size_t size = 0;
    uintptr_t *block = tls_block(&size);
    if (block == NULL || size < sizeof(uintptr_t)) return false;
    probe_words = size / sizeof(uintptr_t);
    if (probe_words > max_words) probe_words = max_words;
    probe_before = malloc(probe_words * sizeof(uintptr_t));
    if (probe_before == NULL) return false;
    memcpy(probe_before, block, probe_words * sizeof(uintptr_t));
    return true;
}

// Copies n bytes at addr, or fails (without a fault) where addr is not
// readable: a word that changed may be anything but a pointer.
static bool safe_read(uintptr_t addr, void *out, size_t n) {
    struct iovec local = {out, n}, remote = {(void *)addr, n};
    return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)n;
}

void gmp_tasklocal_probe_inside(const void *key) {
    size_t size = 0;
    uintptr_t *block = tls_block(&size);
    if (block == NULL || probe_before == NULL) return;
    int matches = 0;
    for (size_t i = 0; i < probe_words; i++) {
        if (probe_before[i] != 0 || block[i] == 0 || (block[i] & 7) != 0) continue;
        // The storage's first word is the list head; an item is
        // { next, key, value type, value... }.
        uintptr_t head = 0, item[2] = {0, 0};
        if (!safe_read(block[i], &head, sizeof head)) continue;
        head &= ~(uintptr_t)3; // (the low bits of a link tag its kind)
        if (head == 0 || (head & 7) != 0 || !safe_read(head, item, sizeof item) || item[1] != (uintptr_t)key) continue;
        probe_candidate = (long)i;
        matches++;
    }
    if (matches != 1) probe_candidate = -1;
}

bool gmp_tasklocal_probe_end(void) {
    size_t size = 0;
    uintptr_t *block = tls_block(&size);
    if (block != NULL && probe_candidate >= 0 && block[probe_candidate] == 0)
        slot_offset = probe_candidate * (long)sizeof(uintptr_t);
    free(probe_before);
    probe_before = NULL;
    return slot_offset >= 0;
}

void **gmp_tasklocal_slot(void) {
    if (slot_offset < 0) return NULL;
    size_t size = 0;
    char *block = tls_block(&size);
    if (block == NULL || (size_t)slot_offset + sizeof(void *) > size) return NULL;
    return (void **)(block + slot_offset);
}
