import CGMP
import Channels
import GMP
import Glibc
import Synchronization

/// Signals delivered to channels (Go's `os/signal`), through the poller.
///
/// ```swift
/// let stop = Chan<Int32>(capacity: 1)
/// Signals.notify(stop, SIGINT, SIGTERM)
/// go { if case .value(let sig) = stop.receive() { shutDown(sig) } }
/// ```
///
/// The first `notify` for a signal installs a handler that writes the
/// signal's number to a pipe, the one thing a handler can safely do. A relay
/// G reads the pipe through the poller, parked like any socket reader, and
/// hands each signal to every channel registered for it with `trySend`: it
/// never blocks, so a full channel misses the signal, as in Go. Give the
/// channel a buffer.
///
/// A caught signal no longer has its default action (SIGINT no longer ends
/// the process) until `stop` removes its last channel. The kernel hands a
/// signal sent to the process to a thread that does not block it: `notify`
/// unblocks it on the calling thread, and Ms inherit the mask of the thread
/// that started them (a libdispatch worker blocks most signals).
///
/// No libdispatch and no extra thread: the pipe's two fds and one G are all
/// it costs, made on the first call.
public enum Signals {
    /// Relays `signals` to `channel` from now on (adding to any it gets
    /// already). Callable from a G or a plain thread.
    /// - Precondition: each signal can be caught (1...64, not SIGKILL or
    ///   SIGSTOP); the message names the one that cannot.
    public static func notify(_ channel: Chan<Int32>, _ signals: Int32...) {
        relay.state.withLock { s in
            for sig in signals {
                precondition((1...64).contains(sig) && sig != SIGKILL && sig != SIGSTOP,
                             "Signals.notify: signal \(sig) cannot be caught")
                var list = s.channels[sig] ?? []
                if list.isEmpty {
                    let r = gmp_signal_catch(sig, 1)
                    precondition(r == 0, "Signals.notify: sigaction(\(sig)) failed: errno \(-r)")
                }
                if !list.contains(where: { $0 === channel }) { list.append(channel) }
                s.channels[sig] = list
            }
        }
    }

    /// Stops relaying any signal to `channel`; once this returns it receives
    /// no more. A signal left with no channel gets its default action back.
    public static func stop(_ channel: Chan<Int32>) {
        relay.state.withLock { s in
            for (sig, list) in s.channels {
                let rest = list.filter { $0 !== channel }
                if rest.count == list.count { continue }
                if rest.isEmpty {
                    _ = gmp_signal_catch(sig, 0)
                    s.channels[sig] = nil
                } else {
                    s.channels[sig] = rest
                }
            }
        }
    }

    /// The pipe, its reader G and the registrations, made on first use.
    private static let relay = Relay()

    private final class Relay: Sendable {
        struct State {
            var channels: [Int32: [Chan<Int32>]] = [:]
        }
        /// Registrations. The relay sends while holding it, so `stop` is
        /// final. A thread lock, not GMP's: held only for a few `trySend`s,
        /// which never park.
        let state = Synchronization.Mutex(State())
        /// The pipe's read end, polled like a socket.
        let reader: Conn

        init() {
            var fds: [Int32] = [-1, -1]
            let r = gmp_signal_pipe(&fds)
            precondition(r == 0, "Signals: cannot make the signal pipe: errno \(-r)")
            do {
                reader = try Conn(fd: fds[0])
            } catch {
                fatalError("Signals: cannot poll the signal pipe: \(error)")
            }
            go { [self] in
                var buf = [UInt8](repeating: 0, count: 64)
                while true {
                    let n: Int
                    do {
                        n = try buf.withUnsafeMutableBytes { b throws(NetError) in try self.reader.read(into: b) }
                    } catch {
                        return // not expected: the pipe is never closed
                    }
                    self.state.withLock { s in
                        for b in buf[..<n] {
                            let sig = Int32(b)
                            for c in s.channels[sig] ?? [] { _ = c.trySend(sig) }
                        }
                    }
                }
            }
        }
    }
}
