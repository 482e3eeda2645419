import Foundation
import Glibc
import NetPoller

// A redis-server of a test's own (Debian's; .ci/run installs it), for the
// Redis client's tests and ChatApp's several-node tests.

/// Debian's redis-server, if installed (.ci/run installs it).
public let redisServer: String? = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first {
    FileManager.default.isExecutableFile(atPath: $0)
}

/// Whether the Redis tests that need a server run: in CI (`CI` set) they
/// always do, so a missing server fails them there instead of skipping.
public let haveRedis = redisServer != nil || ProcessInfo.processInfo.environment["CI"] != nil

/// A redis-server of its own on `port` (a free one if nil), without
/// persistence, started and answering PING; `args` are more options.
///
/// Started with posix_spawn and reaped with waitpid, not with Foundation's
/// Process: Process watches for SIGCHLD with a signal handler (a Dispatch
/// source), and under ThreadSanitizer a SIGCHLD that lands on a thread
/// that is exiting fails TSan's own check ("thr->slot") and the test run.
public final class RedisServer: @unchecked Sendable {
    // @unchecked: `pid` is written once, in init; `reaped` by kill(), which
    // a test calls from one G at a time (and deinit, when nobody else can).
    public let port: Int
    private var pid: pid_t = 0
    private var reaped = false

    public init(port: Int? = nil, args: [String] = []) throws {
        guard let exe = redisServer else { throw NetError.badAddress("no redis-server (apt-get install redis-server)") }
        if let port {
            self.port = port
        } else {
            let probe = try Listener(port: 0)
            self.port = probe.port
            probe.close()
        }
        let argv = [exe, "--port", String(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--daemonize", "no", "--loglevel", "warning"] + args
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { for a in cArgs { free(a) } }
        let rc = posix_spawn(&pid, exe, &actions, nil, cArgs, environ)
        guard rc == 0 else { throw NetError.system(op: "posix_spawn", errno: rc) }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let c = try? Conn.dial("127.0.0.1", self.port) {
                c.close()
                return
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        kill()
        throw NetError.connectionRefused
    }

    /// redis://127.0.0.1:PORT
    public var urlString: String { "redis://127.0.0.1:\(port)" }

    /// kill -9, and wait for it.
    public func kill() {
        guard !reaped else { return }
        reaped = true
        Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    deinit { kill() }
}
