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
public final class RedisServer: @unchecked Sendable {
    // @unchecked: immutable after init; Process is safe to use from any thread.
    public let process = Process()
    public let port: Int

    public init(port: Int? = nil, args: [String] = []) throws {
        guard let exe = redisServer else { throw NetError.badAddress("no redis-server (apt-get install redis-server)") }
        if let port {
            self.port = port
        } else {
            let probe = try Listener(port: 0)
            self.port = probe.port
            probe.close()
        }
        process.executableURL = URL(fileURLWithPath: exe)
        process.arguments = ["--port", String(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--daemonize", "no", "--loglevel", "warning"] + args
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let c = try? Conn.dial("127.0.0.1", self.port) {
                c.close()
                return
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        process.terminate()
        throw NetError.connectionRefused
    }

    /// redis://127.0.0.1:PORT
    public var urlString: String { "redis://127.0.0.1:\(port)" }

    /// kill -9, and wait for it.
    public func kill() {
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit {
        if process.isRunning { kill() }
    }
}

