// Programs for the deadlock check's tests (Tests/ChannelsTests/DeadlockRuleTests.swift),
// one per scenario, named by the first argument. Each runs in a process of
// its own that has no thread but its own, the runtime's and what the
// scenario starts: an exit test's child process runs Swift Testing's tasks
// on Dispatch, whose thread pool keeps a timer armed every second, and the
// check rightly cannot tell what such a timer will do.
import CGMP
import Channels
import Dispatch
import Foundation
import GMP
import Glibc

/// A semaphore that a signal handler may post (sem_post is async-signal-safe).
nonisolated(unsafe) var wake = sem_t()
// (nonisolated(unsafe): initialized before any thread or handler uses it;
// afterwards touched only through sem_wait and sem_post, which synchronize.)

let scenario = CommandLine.arguments.dropFirst().first ?? ""
switch scenario {
case "waitgroup": // every G asleep on a WaitGroup
    GMP.run {
        let never = WaitGroup(1)
        go { never.wait() }
        never.wait()
    }
case "receive": // a receive nobody can answer
    GMP.run { _ = Chan<Int>().receive() }
case "select": // a select with a time-out is not stuck; one with none, is
    GMP.run {
        let a = Chan<Int>(), b = Chan<Int>()
        select { s in
            if s.timeout(after: .milliseconds(1_500)) {}
            if s.receive(a) != nil {}
        }
        select { s in
            if s.receive(a) != nil {}
            if s.send(b, 1) {}
        }
    }
case "stuck-thread": // another thread, which used the runtime before, now waits for good
    let c = Chan<Int>(capacity: 1)
    sem_init(&wake, 0, 0)
    let sent = DispatchSemaphore(value: 0)
    Thread {
        go {}
        c.send(1)
        sent.signal()
        sem_wait(&wake) // nobody posts
    }.start()
    sent.wait()
    GMP.run {
        _ = c.receive()
        _ = c.receive()
    }
case "report": // GMP_DEADLOCK=report: reported, and the program goes on once a signal from outside wakes its thread
    sem_init(&wake, 0, 0)
    signal(SIGUSR1) { _ in sem_post(&wake) } // the test sends it when it has read the report
    var usr1 = sigset_t() // (a process started from a Dispatch thread inherits its blocked signals)
    sigemptyset(&usr1)
    sigaddset(&usr1, SIGUSR1)
    pthread_sigmask(SIG_UNBLOCK, &usr1, nil)
    let wg = WaitGroup(1)
    Thread {
        sem_wait(&wake)
        wg.done()
    }.start()
    GMP.run { wg.wait() }
    print("went on")
case "stale-epoll-fd": // a thread waits on an epoll whose pipe's old number now names an eventfd
    var fds: [Int32] = [0, 0]
    pipe(&fds)
    let ep = gmp_epoll_create()
    _ = gmp_epoll_ctl(ep, 1, fds[0], UInt32(GMP_EPOLLIN), 0)
    let kept = dup(fds[0]) // the pipe stays watched through this
    close(fds[0])
    let efd = gmp_eventfd() // and takes the number the epoll instance lists
    precondition(efd == fds[0] && kept >= 0, "fd numbers")
    FileHandle.standardOutput.write(Data("\(fds[1])\n".utf8)) // the test writes to the pipe through /proc/<pid>/fd, 2 s later
    let c = Chan<Int>(capacity: 1)
    Thread {
        var ev = gmp_poll_event(events: 0, data: 0)
        while gmp_epoll_wait(ep, &ev, 1, -1) != 1 {}
        c.send(42)
    }.start()
    let v = GMP.run { () -> Int in c.receive().value ?? -1 }
    print(v)
    exit(v == 42 ? 0 : 1)
case "task-sleep", "thread-sleep", "dispatch-after": // a sender the runtime does not own, 2 s later
    let c = Chan<Int>()
    switch scenario {
    case "task-sleep":
        Task.detached { try await Task.sleep(for: .seconds(2)); try await c.send(42) }
    case "thread-sleep":
        Thread { Thread.sleep(forTimeInterval: 2); c.send(42) }.start()
    default:
        DispatchQueue.global().asyncAfter(deadline: .now() + 2) { c.send(42) }
    }
    let v = GMP.run { () -> Int in if case .value(let x) = c.receive() { return x }; return -1 }
    print(v)
    exit(v == 42 ? 0 : 1)
default:
    FileHandle.standardError.write(Data("unknown scenario '\(scenario)'\n".utf8))
    exit(64)
}
