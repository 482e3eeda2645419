// epoll, eventfd and socket calls for NetPoller: thin wrappers returning
// -errno, since Swift's Glibc module has no sys/epoll.h or sys/eventfd.h.
#define _GNU_SOURCE
#include "CGMP.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/ioctl.h>
#include <stddef.h>
#include <stdio.h>

int gmp_epoll_create(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int gmp_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = data;
    int cop = op == 1 ? EPOLL_CTL_ADD : op == 2 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    return epoll_ctl(epfd, cop, fd, &ev) < 0 ? -errno : 0;
}

int gmp_epoll_wait(int epfd, gmp_poll_event *events, int n, int timeout_ms) {
    struct epoll_event evs[128];
    if (n > 128) n = 128;
    int r = epoll_wait(epfd, evs, n, timeout_ms);
    if (r < 0) return -errno;
    for (int i = 0; i < r; i++) {
        events[i].events = evs[i].events;
        events[i].data = evs[i].data.u64;
    }
    return r;
}

int gmp_eventfd(void) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int gmp_socket(int family) {
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}

int gmp_accept(int fd) {
    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return c < 0 ? -errno : c;
}

int gmp_connect(int fd, const void *addr, uint32_t len) {
    return connect(fd, (const struct sockaddr *)addr, len) < 0 ? -errno : 0;
}

int gmp_socket_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
    return err;
}

int gmp_set_int_option(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof value) < 0 ? -errno : 0;
}

int gmp_bind_listen(int fd, const void *addr, uint32_t len, int backlog) {
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)addr, len) < 0) return -errno;
    if (listen(fd, backlog) < 0) return -errno;
    return 0;
}

int gmp_local_port(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

uint32_t gmp_make_addr(const char *ip, uint16_t port, void *out, int *family) {
    struct sockaddr_in *a4 = out;
    memset(out, 0, sizeof(struct sockaddr_in6));
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *family = AF_INET;
        return sizeof *a4;
    }
    struct sockaddr_in6 *a6 = out;
    if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *family = AF_INET6;
        return sizeof *a6;
    }
    return 0;
}

uint32_t gmp_make_unix_addr(const char *path, void *out) {
    struct sockaddr_un *a = out;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof a->sun_path) return 0;
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    memcpy(a->sun_path, path, n);
    return (uint32_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

int gmp_peer_name(int fd, char *buf, int len) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) return -errno;
    char ip[INET6_ADDRSTRLEN] = "";
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        snprintf(buf, (size_t)len, "%s:%d", ip, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        snprintf(buf, (size_t)len, "[%s]:%d", ip, ntohs(a->sin6_port));
    } else {
        snprintf(buf, (size_t)len, "unix");
    }
    return 0;
}

int gmp_readable(int fd) {
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_PEEK);
    if (r < 0) return -errno;
    if (r == 0) return 0;
    int n = 0;
    if (ioctl(fd, FIONREAD, &n) < 0 || n < 1) n = 1;
    return n;
}

// MARK: signals

// The write end of the signal pipe; set once, before any handler is installed.
static volatile int gmp_signal_wfd = -1;
// The write end of the SIGQUIT dump thread's pipe; likewise.
static volatile int gmp_quit_wfd = -1;

// Writes the signal's number to `fd`: write(2) is async-signal-safe, and the
// write end is non-blocking (a full pipe drops the signal rather than hang).
static void write_signal(int fd, int sig) {
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t r = write(fd, &b, 1);
    (void)r;
    errno = saved;
}

static void gmp_signal_handler(int sig) { write_signal(gmp_signal_wfd, sig); }

// Only wakes the dump thread (a second SIGQUIT while it works is dropped).
static void gmp_quit_handler(int sig) { write_signal(gmp_quit_wfd, sig); }

int gmp_install_quit_handler(void) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) return -errno;
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    gmp_quit_wfd = fds[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = gmp_quit_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGQUIT, &sa, NULL) < 0) return -errno;
    return fds[0];
}

int gmp_signal_pipe(int fds[2]) {
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return -errno;
    gmp_signal_wfd = fds[1];
    return 0;
}

int gmp_signal_catch(int sig, int on) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on ? gmp_signal_handler : SIG_DFL;
    sa.sa_flags = on ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL) < 0) return -errno;
    if (on) {
        // A mask inherited from the parent must not hide it from us.
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    }
    return 0;
}
