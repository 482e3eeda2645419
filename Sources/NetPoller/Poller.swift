import CGMP
import GMP
import Glibc
import Synchronization

// The network poller (Go's runtime/netpoll.go and netpoll_epoll.go)
//
// One epoll instance per process. Every socket is registered once,
// edge-triggered, for in/out/rdhup, with its fd and a sequence number packed
// into the event's user data; an eventfd, also registered, interrupts a
// blocked epoll_wait (`wake`).
//
// A socket operation that gets EAGAIN parks its G on the socket's PollDesc
// (one read waiter, one write waiter). The scheduler calls `poll` — without
// blocking while it looks for work, blocking (time-out: the next timer) when
// it has none, and sysmon every 10 ms if nobody did — and the Gs whose
// sockets became ready come back as a list the scheduler runs. No thread
// hands events over by locks: readiness readies the waiting G directly.
//
// Stale events: an fd may be closed and its number reused while an event for
// the old socket is in flight. Each PollDesc (one per fd number, never freed)
// bumps its sequence number on close, and events whose sequence does not
// match are dropped.

// epoll event bits (from CGMP's anonymous enum, which imports as Int).
let evIn = UInt32(truncatingIfNeeded: GMP_EPOLLIN)
let evOut = UInt32(truncatingIfNeeded: GMP_EPOLLOUT)
let evErr = UInt32(truncatingIfNeeded: GMP_EPOLLERR)
let evHup = UInt32(truncatingIfNeeded: GMP_EPOLLHUP)
let evRdHup = UInt32(truncatingIfNeeded: GMP_EPOLLRDHUP)
let evEdge = UInt32(truncatingIfNeeded: GMP_EPOLLET)

/// The epoll poller the scheduler blocks in (installed on first socket use).
final class EpollPoller: Poller, @unchecked Sendable {
    // @unchecked: the descriptors are immutable; the rest is atomic.
    static let shared: EpollPoller = {
        let p = EpollPoller()
        GMP.install(poller: p)
        return p
    }()

    let epfd: Int32
    let eventfd: Int32
    private let wakePending = Atomic<Bool>(false)
    /// Gs and threads parked on a socket.
    let waiters = Atomic<Int>(0)
    static let wakeMarker = UInt64.max

    private init() {
        let ep = gmp_epoll_create()
        let ev = gmp_eventfd()
        guard ep >= 0, ev >= 0 else {
            gmp_fatal("fatal error: cannot create the epoll instance or its eventfd (errno \(-Swift.min(ep, ev)))")
        }
        epfd = ep
        eventfd = ev
        _ = gmp_epoll_ctl(ep, 1, ev, evIn, EpollPoller.wakeMarker)
    }

    var hasWaiters: Bool { waiters.load(ordering: .relaxed) > 0 }

    func wake() {
        if wakePending.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged {
            var one: UInt64 = 1
            _ = write(eventfd, &one, 8)
        }
    }

    func poll(delayNanoseconds: Int64) -> GList {
        var timeout: Int32 = -1
        if delayNanoseconds == 0 {
            timeout = 0
        } else if delayNanoseconds > 0 {
            let ms = delayNanoseconds / 1_000_000 + (delayNanoseconds % 1_000_000 != 0 ? 1 : 0) // rounded up, no overflow
            timeout = Int32(Swift.min(ms, 1_000_000_000))
        }
        var list = GList()
        withUnsafeTemporaryAllocation(of: gmp_poll_event.self, capacity: 128) { events in
            let n = gmp_epoll_wait(epfd, events.baseAddress, 128, timeout)
            guard n > 0 else { return }
            for i in 0..<Int(n) {
                let e = events[i]
                if e.data == EpollPoller.wakeMarker {
                    // Only a blocking poll consumes a wake-up (as Go's netpoll):
                    // were a non-blocking poll on another M to eat it, the M
                    // blocked in epoll_wait would sleep on past a new, earlier
                    // timer. The eventfd is level-triggered: left unread, it
                    // stays ready for the blocking poller.
                    if timeout != 0 {
                        var buf: UInt64 = 0
                        _ = read(eventfd, &buf, 8)
                        wakePending.store(false, ordering: .releasing)
                    }
                    continue
                }
                let fd = Int32(truncatingIfNeeded: e.data & 0xffff_ffff)
                let seq = UInt32(truncatingIfNeeded: e.data >> 32)
                PollDesc.table.lookup(fd)?.ready(events: e.events, seq: seq, into: &list)
            }
        }
        return list
    }
}
