// Helpers shared by the test targets (a library target, not a test target).
import Dispatch
import Foundation
import GMP
import Synchronization

/// Holds a result across threads; the semaphore in `runG` orders the accesses.
public final class Slot<T>: @unchecked Sendable {
    // @unchecked: written before `sem.signal()`, read after `sem.wait()`.
    public var value: T?
    public init() {}
}

/// Runs `body` as a G via `GMP.run` on a helper thread, with `procs` Ps if
/// given, and waits for it at most `timeout` seconds. Returns nil on
/// time-out, so a hang fails the test instead of hanging the run. The
/// default bound is far above what any test needs here, even under
/// ThreadSanitizer on a loaded machine; tests that need more say so.
public func runG<T>(procs: Int? = nil, timeout: Double = 30, _ body: @escaping @Sendable () -> T) -> T? {
    if let procs { setProcs(procs) }
    let sem = DispatchSemaphore(value: 0)
    let slot = Slot<T>()
    let thread = Thread {
        slot.value = GMP.run { body() }
        sem.signal()
    }
    thread.stackSize = 1 << 20
    thread.start()
    if sem.wait(timeout: .now() + timeout) == .timedOut { return nil }
    return slot.value
}

/// Runs `body` on a new plain thread (no G, no Swift task) and waits for it
/// at most `timeout` seconds; nil on time-out. For tests of what plain
/// threads do: a test function runs as a Swift task, where a blocking
/// channel operation traps instead of waiting (Sudog.blockedTaskMessage).
public func onThread<T>(timeout: Double = 30, _ body: @escaping @Sendable () -> T) -> T? {
    let sem = DispatchSemaphore(value: 0)
    let slot = Slot<T>()
    let thread = Thread {
        slot.value = body()
        sem.signal()
    }
    thread.stackSize = 1 << 20
    thread.start()
    if sem.wait(timeout: .now() + timeout) == .timedOut { return nil }
    return slot.value
}

/// A flag that one party, the first to ask, takes.
private final class Once: Sendable {
    let taken = Atomic<Bool>(false)
    func take() -> Bool { !taken.exchange(true, ordering: .acquiringAndReleasing) }
}

/// From async code: runs `body` in a task and waits for it at most
/// `seconds`. Returns its value (or rethrows its error), or nil on time-out,
/// when the task is cancelled and left to end: a hang fails the test instead
/// of hanging the run.
public func bounded<T: Sendable>(seconds: Double = 30, _ body: @escaping @Sendable () async throws -> T) async throws -> T? {
    let once = Once()
    return try await withUnsafeThrowingContinuation { (k: UnsafeContinuation<T?, any Error>) in
        let claim = { @Sendable in once.take() }
        let task = Task {
            do {
                let v = try await body()
                if claim() { k.resume(returning: v) }
            } catch {
                if claim() { k.resume(throwing: error) }
            }
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) {
            if claim() {
                task.cancel()
                k.resume(returning: nil)
            }
        }
    }
}

/// `GMP.setProcs(n)`, bounded: a resize waits for every running G to park,
/// so a G that an earlier, failed test left running for ever would hang the
/// rest of the run here. After `seconds` it ends the process with a message
/// instead, so the run fails fast and says why.
public func setProcs(_ n: Int, within seconds: Double = 60) {
    let done = DispatchSemaphore(value: 0)
    let t = Thread {
        GMP.setProcs(n)
        done.signal()
    }
    t.start()
    if done.wait(timeout: .now() + seconds) == .timedOut {
        let msg = "GMP.setProcs(\(n)) did not finish in \(Int(seconds)) s: a G (of an earlier test that failed?) "
            + "runs without parking; ending the test process\n"
        FileHandle.standardError.write(Data(msg.utf8))
        exit(1)
    }
}

/// Resident set size of this process in bytes.
public func rssBytes() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let parts = s.split(separator: " ")
    return (Int(parts[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// Inside a G: yields until `condition` holds, for at most `seconds`, and
/// returns whether it held. Tests wait on the state they need (a G parked on
/// a channel or a socket), never on a guessed number of yields. With
/// `every`, it sleeps that many nanoseconds between looks instead of
/// yielding: for a condition that asks another process (a server's /stats).
public func waitFor(seconds: Double = 10, every interval: Int64? = nil, _ condition: () -> Bool) -> Bool {
    let deadline = GMP.now + Int64(seconds * 1e9)
    while !condition() {
        if GMP.now >= deadline { return false }
        if let interval { GMP.sleep(nanoseconds: interval) } else { GMP.yield() }
    }
    return true
}

/// Inside a G: the value of `count` (a `GMP.stats` counter) once it has
/// stopped changing, i.e. read the same over 20 ms, within `seconds`. A
/// baseline for "no G leaked" must not be taken while Gs of an earlier test
/// are still exiting (or parking): the count would drift under the test.
public func settled(within seconds: Double = 10, _ count: () -> Int) -> Int {
    let deadline = GMP.now + Int64(seconds * 1e9)
    var last = count()
    var since = GMP.now
    while GMP.now < deadline {
        GMP.sleep(nanoseconds: 1_000_000)
        let v = count()
        if v != last {
            last = v
            since = GMP.now
        } else if GMP.now - since >= 20_000_000 {
            break
        }
    }
    return last
}

/// What each open fd of process `pid` (default: this one) is, for failure
/// messages: "7->socket:[1234] tcp 127.0.0.1:8080 127.0.0.1:51234 ESTABLISHED".
public func fdList(pid: Int32? = nil) -> String {
    let dir = "/proc/\(pid.map(String.init) ?? "self")"
    let fm = FileManager.default
    // TCP sockets by inode, from /proc/PID/net/tcp{,6}.
    let states = ["01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
                  "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"]
    var tcp: [String: String] = [:]
    for table in ["tcp", "tcp6"] {
        guard let text = try? String(contentsOfFile: "\(dir)/net/\(table)", encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ")
            guard f.count > 9 else { continue }
            func addr(_ s: Substring) -> String {
                let parts = s.split(separator: ":")
                guard parts.count == 2, let port = Int(parts[1], radix: 16) else { return String(s) }
                if parts[0].count == 8, let ip = UInt32(parts[0], radix: 16) {
                    return "\(ip & 255).\(ip >> 8 & 255).\(ip >> 16 & 255).\(ip >> 24):\(port)"
                }
                return "[\(parts[0])]:\(port)"
            }
            tcp[String(f[9])] = "\(table) \(addr(f[1])) \(addr(f[2])) \(states[String(f[3])] ?? String(f[3]))"
        }
    }
    let names = (try? fm.contentsOfDirectory(atPath: "\(dir)/fd")) ?? []
    return names.sorted { (Int($0) ?? 0) < (Int($1) ?? 0) }.map { n in
        let target = (try? fm.destinationOfSymbolicLink(atPath: "\(dir)/fd/\(n)")) ?? "?"
        var d = "\(n)->\(target)"
        if target.hasPrefix("socket:["), let inode = target.dropFirst(8).split(separator: "]").first {
            if let t = tcp[String(inode)] {
                d += " " + t
            } else if let unix = try? String(contentsOfFile: "\(dir)/net/unix", encoding: .utf8),
                      unix.split(separator: "\n").contains(where: { $0.split(separator: " ").dropFirst(6).first == inode }) {
                d += " unix"
            } else {
                d += " (not in the TCP or Unix tables: closed, or never bound)"
            }
        }
        if let info = try? String(contentsOfFile: "\(dir)/fdinfo/\(n)", encoding: .utf8),
           let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags:") }) {
            d += " " + flags.replacingOccurrences(of: "\t", with: "")
        }
        return d
    }.joined(separator: "\n")
}
