// The threads of the process, as /proc shows them: what the deadlock check
// (Sources/GMP/Deadlock.swift) needs to prove that no thread the runtime
// does not own can ever act again.
//
// A thread is *quiet* when it is blocked in a wait that only another thread
// of this process can end, with no time-out:
//  - a private futex wait (FUTEX_WAIT, FUTEX_WAIT_BITSET, FUTEX_LOCK_PI,
//    FUTEX_LOCK_PI2) with no time-out: pthread mutexes and condition
//    variables, semaphores, Dispatch's idle workers, a thread waiting on a
//    channel or in GMP.run;
//  - rt_sigsuspend and pause: waiting for a signal handler to run
//    (dispatchMain parks the main thread there);
//  - an epoll wait with no time-out on an epoll instance that watches only
//    eventfds and timerfds that are not armed (Dispatch's manager thread
//    with no timer pending). Each watched fd is checked by number and by
//    inode, so a watched pipe whose number now names an eventfd is caught;
//    an eventfd counts only while the process has no io_uring instance
//    (whose completions can write one) and no child process (which may
//    hold it).
// Anything else (a sleep, a timed wait, a read of a pipe or a socket, poll,
// an armed timer, a thread that runs) may act on its own: "cannot tell".
// So does anything that could send the process a signal of its own making:
// an armed interval timer (alarm, setitimer), a POSIX timer, a child
// process. A signal from another process is outside the rule, as in Go.
// Limits: an epoll fd closed and reused by another epoll instance, or a
// watched anonymous file (eventfd, timerfd) whose number now names another
// one, cannot be told apart (they share one inode).
//
// A sample records, per thread, its system call line (number, arguments)
// and its context-switch count. Two samples, one after the other, that
// agree on every thread and find each quiet show an instant at which every
// thread sat in a quiet wait (none ran between its two readings, or its
// switch count would have moved), and from such an instant only the threads
// the caller owns could wake one.
#define _GNU_SOURCE
#include "CGMP.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <linux/futex.h>

#ifndef FUTEX_LOCK_PI2
#define FUTEX_LOCK_PI2 13
#endif

// Reads a small /proc file into buf (NUL-terminated); the bytes read, or -1.
static int read_small(const char *path, char *buf, size_t len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = 0;
    while (n + 1 < len) {
        ssize_t r = read(fd, buf + n, len - 1 - n);
        if (r < 0) { close(fd); return -1; }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    return (int)n;
}

// The /proc/self/fd link of `fd` into buf; false if unreadable.
static bool fd_link(int fd, char *buf, size_t len) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, buf, len - 1);
    if (n <= 0) return false;
    buf[n] = 0;
    return true;
}

// Whether any thread of the process has a child process (or /proc cannot
// say).
static bool has_children(void) {
    DIR *d = opendir("/proc/self/task");
    if (d == NULL) return true;
    struct dirent *e;
    bool found = false;
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[96], buf[64];
        snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
        found = read_small(path, buf, sizeof buf) != 0; // unreadable (-1), or some child
    }
    closedir(d);
    return found;
}

// Whether something besides a thread of the process could write an
// eventfd: an io_uring instance (its completions can signal one). A child,
// which may hold one, is ruled out before any thread is looked at
// (own_signal_sources).
static bool eventfd_writers(void) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) return true;
    struct dirent *e;
    bool found = false;
    while (!found && (e = readdir(d)) != NULL) {
        char link[128];
        if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && fd_link(atoi(e->d_name), link, sizeof link))
            found = strcmp(link, "anon_inode:[io_uring]") == 0;
    }
    closedir(d);
    return found;
}

// What `fd` is, from its /proc/self/fd link, if its inode is `ino` (the
// one the epoll instance watches): 1 an eventfd, 2 a timerfd that is not
// armed, 0 anything else (or another file now under that number).
static int silent_fd(int fd, unsigned long ino) {
    char path[64], link[128];
    if (!fd_link(fd, link, sizeof link)) return 0;
    struct stat st;
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (stat(path, &st) != 0 || (unsigned long)st.st_ino != ino) return 0;
    if (strcmp(link, "anon_inode:[eventfd]") == 0) return 1;
    if (strcmp(link, "anon_inode:[timerfd]") != 0) return 0;
    char info[1024];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    if (read_small(path, info, sizeof info) <= 0) return 0;
    const char *v = strstr(info, "it_value:");
    long long sec = -1, nsec = -1;
    if (v == NULL || sscanf(v, "it_value: (%lld, %lld)", &sec, &nsec) != 2) return 0;
    return sec == 0 && nsec == 0 ? 2 : 0;
}

// Whether `epfd` is an epoll instance every fd of which is silent.
static bool silent_epoll(int epfd) {
    char link[128];
    if (!fd_link(epfd, link, sizeof link) || strcmp(link, "anon_inode:[eventpoll]") != 0) return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
    char info[8192];
    int n = read_small(path, info, sizeof info);
    if (n <= 0 || n >= (int)sizeof info - 1) return false; // unreadable, or too many to look at
    bool eventfds = false;
    for (const char *p = strstr(info, "tfd:"); p != NULL; p = strstr(p + 4, "tfd:")) {
        int fd = -1;
        unsigned long ino = 0;
        const char *i = strstr(p, "ino:");
        if (sscanf(p, "tfd: %d", &fd) != 1 || i == NULL || sscanf(i, "ino:%lx", &ino) != 1) return false;
        int kind = silent_fd(fd, ino);
        if (kind == 0) return false;
        if (kind == 1) eventfds = true;
    }
    return !eventfds || !eventfd_writers();
}

// Whether something of the process's own making may signal it: an armed
// interval timer (alarm, setitimer), a POSIX timer, or a child process
// (SIGCHLD, or any signal it sends).
static bool own_signal_sources(void) {
    static const int which[] = {ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF};
    for (int i = 0; i < 3; i++) {
        struct itimerval t;
        if (getitimer(which[i], &t) != 0 || t.it_value.tv_sec != 0 || t.it_value.tv_usec != 0) return true;
    }
    char buf[64];
    if (read_small("/proc/self/timers", buf, sizeof buf) > 0) return true; // (absent without CONFIG_CHECKPOINT_RESTORE)
    return has_children();
}

// Whether a /proc/<tid>/syscall line is a quiet wait (see the top).
static bool quiet_syscall(const char *line) {
    long nr = -1;
    unsigned long a[6] = {0};
    if (sscanf(line, "%ld 0x%lx 0x%lx 0x%lx 0x%lx 0x%lx 0x%lx", &nr, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5]) != 7)
        return false; // "running", or a thread that exited
    switch (nr) {
    case SYS_futex: {
        int op = (int)a[1];
        int cmd = op & FUTEX_CMD_MASK;
        bool waits = cmd == FUTEX_WAIT || cmd == FUTEX_WAIT_BITSET || cmd == FUTEX_LOCK_PI || cmd == FUTEX_LOCK_PI2;
        return waits && (op & FUTEX_PRIVATE_FLAG) != 0 && a[3] == 0;
    }
    case SYS_rt_sigsuspend:
#ifdef SYS_pause
    case SYS_pause:
#endif
        return true;
#ifdef SYS_epoll_wait
    case SYS_epoll_wait:
#endif
    case SYS_epoll_pwait:
        return (int)a[3] == -1 && silent_epoll((int)a[0]);
#ifdef SYS_epoll_pwait2
    case SYS_epoll_pwait2:
        return a[3] == 0 && silent_epoll((int)a[0]);
#endif
    default:
        return false;
    }
}

// Voluntary plus involuntary context switches of a thread, or -1.
static long long switches(const char *dir) {
    char path[96], status[4096];
    snprintf(path, sizeof path, "%s/status", dir);
    if (read_small(path, status, sizeof status) <= 0) return -1;
    const char *v = strstr(status, "\nvoluntary_ctxt_switches:");
    const char *nv = strstr(status, "\nnonvoluntary_ctxt_switches:");
    long long a = -1, b = -1;
    if (v == NULL || nv == NULL || sscanf(v, "\nvoluntary_ctxt_switches: %lld", &a) != 1
        || sscanf(nv, "\nnonvoluntary_ctxt_switches: %lld", &b) != 1) return -1;
    return a + b;
}

static bool owned(int32_t tid, const int32_t *own, int nown) {
    for (int i = 0; i < nown; i++) if (own[i] == tid) return true;
    return false;
}

// One thread as /proc showed it.
typedef struct {
    int32_t tid;
    long long switches;   // voluntary + involuntary context switches
    char syscall[160];    // its /proc/<tid>/syscall line
} thread_sample;

// Samples every thread of the process but those in own[0..<nown] into
// out[0..<max]: how many, or -1 if one of them is not in a quiet wait, if
// there are more than max, or if /proc cannot be read.
static int sample_threads(const int32_t *own, int nown, thread_sample *out, int max) {
    DIR *d = opendir("/proc/self/task");
    if (d == NULL) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        int32_t tid = (int32_t)atoi(e->d_name);
        if (owned(tid, own, nown)) continue;
        if (n == max) { closedir(d); return -1; }
        char dir[64], path[96];
        snprintf(dir, sizeof dir, "/proc/self/task/%d", tid);
        snprintf(path, sizeof path, "%s/syscall", dir);
        thread_sample *s = &out[n];
        s->tid = tid;
        if (read_small(path, s->syscall, sizeof s->syscall) <= 0 || !quiet_syscall(s->syscall)
            || (s->switches = switches(dir)) < 0) {
            closedir(d);
            return -1;
        }
        n++;
    }
    closedir(d);
    return n;
}

enum { max_threads = 512 };

bool gmp_threads_quiet(const int32_t *own, int nown) {
    if (own_signal_sources()) return false;
    thread_sample *a = malloc(2 * max_threads * sizeof(thread_sample));
    if (a == NULL) return false;
    thread_sample *b = a + max_threads;
    int n = sample_threads(own, nown, a, max_threads);
    bool quiet = n >= 0 && sample_threads(own, nown, b, max_threads) == n;
    for (int i = 0; quiet && i < n; i++) {
        // The same threads (the directory lists them in the same order), none
        // of which ran in between: the same system call, the same switches.
        quiet = a[i].tid == b[i].tid && a[i].switches == b[i].switches && strcmp(a[i].syscall, b[i].syscall) == 0;
    }
    free(a);
    return quiet;
}

int32_t gmp_gettid(void) {
    return (int32_t)syscall(SYS_gettid);
}
