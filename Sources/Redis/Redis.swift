// Redis: a client for Redis on our own poller and channels, no package.
//
//   RESP.swift        the protocol (RESP2 and RESP3): values, parser, commands
//   RESPReader.swift  values from a stream of reads, each parsed once
//   Connection.swift  one connection: commands pipelined, replies in order
//   Client.swift      a connection that comes back by itself (back-off)
//   Subscriber.swift  pub/sub events into a Chan, re-subscribing after a reconnect
//   Script.swift      Lua scripts by SHA-1: EVALSHA, loaded again on NOSCRIPT
//
// This file: where Redis is (`RedisURL`), and what can go wrong (`RedisError`).

/// Where Redis is and how to log in: `redis://[[user]:password@]host[:port][/db]`.
public struct RedisURL: Sendable, Equatable, CustomStringConvertible {
    /// The host (an IP address or localhost), 127.0.0.1 by default.
    public var host = "127.0.0.1"
    /// The port, 6379 by default.
    public var port = 6379
    /// For `AUTH user password` (Redis 6 ACLs); nil: `AUTH password`, the default user.
    public var user: String?
    /// nil: no `AUTH`.
    public var password: String?
    /// The database (`SELECT`), 0 by default.
    public var db = 0

    /// Redis on localhost's default port.
    public init() {}

    /// Parses a URL; percent escapes in the user and password are decoded.
    /// - Throws: `.badURL` saying what is wrong.
    public init(_ text: String) throws(RedisError) {
        guard text.hasPrefix("redis://") else { throw .badURL("\(text): it must start with redis://") }
        var rest = Substring(text.dropFirst("redis://".count))
        if let at = rest.lastIndex(of: "@") {
            let auth = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let parts = auth.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard let u = Self.unescape(parts[0]), let p = parts.count > 1 ? Self.unescape(parts[1]) : "" else {
                throw .badURL("\(text): a bad escape in the user or password")
            }
            if parts.count == 1 {
                password = u.isEmpty ? nil : u // redis://secret@host: a password alone
            } else {
                user = u.isEmpty ? nil : u
                password = p
            }
        }
        var hostPort = rest
        if let slash = rest.firstIndex(of: "/") {
            hostPort = rest[..<slash]
            let dbText = rest[rest.index(after: slash)...]
            if !dbText.isEmpty {
                guard let n = Int(dbText), n >= 0 else { throw .badURL("\(text): the database must be a number") }
                db = n
            }
        }
        if hostPort.hasPrefix("[") { // [v6]:port
            guard let close = hostPort.firstIndex(of: "]") else { throw .badURL("\(text): an unclosed [") }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":", let p = Int(after.dropFirst()), (1...65535).contains(p) else {
                    throw .badURL("\(text): a bad port")
                }
                port = p
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            guard let p = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(p) else {
                throw .badURL("\(text): a bad port")
            }
            port = p
            host = String(hostPort[..<colon])
        } else {
            host = String(hostPort)
        }
        if host.isEmpty { host = "127.0.0.1" }
    }

    private static func unescape(_ s: Substring) -> String? {
        var out: [UInt8] = []
        var it = s.utf8.makeIterator()
        while let b = it.next() {
            if b != UInt8(ascii: "%") { out.append(b); continue }
            guard let h = it.next(), let l = it.next(), let v = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16) else {
                return nil
            }
            out.append(v)
        }
        return String(validating: out, as: UTF8.self)
    }

    /// The URL without its password.
    public var description: String {
        let auth = password == nil ? "" : (user ?? "") + ":***@"
        return "redis://\(auth)\(host.contains(":") ? "[\(host)]" : host):\(port)/\(db)"
    }
}

/// What can go wrong talking to Redis.
public enum RedisError: Error, Equatable, CustomStringConvertible {
    /// Redis answered with an error (`-ERR unknown command`, `-WRONGTYPE …`).
    case server(String)
    /// The bytes from Redis are not RESP, or a reply is not of the shape the command has.
    case protocolError(String)
    /// The connection failed or was lost (a command in flight may or may not have run).
    case connectionLost(String)
    /// The command was never written: the connection was broken (or
    /// closed) before its turn, so it did not run.
    case notSent(String)
    /// No reply within the time-out (the connection is closed: the reply may still come).
    case timeout
    /// The client was closed.
    case closed
    /// A `redis://` URL that cannot be used.
    case badURL(String)

    /// What went wrong, for a log line.
    public var description: String {
        switch self {
        case .server(let m): "Redis: \(m)"
        case .protocolError(let m): "Redis protocol: \(m)"
        case .connectionLost(let m): "Redis connection lost: \(m)"
        case .notSent(let m): "Redis: not sent (\(m))"
        case .timeout: "Redis: no reply in time"
        case .closed: "Redis: the client is closed"
        case .badURL(let m): "Redis URL: \(m)"
        }
    }

    /// Whether a command that failed so may have run all the same: its
    /// bytes were (or may have been) written and no answer came (a
    /// time-out, a connection lost or closed meanwhile, a reply that was
    /// not RESP). False for an error reply (it ran and failed, or was
    /// refused), a command never sent, and a bad URL.
    public var mayHaveRun: Bool {
        switch self {
        case .timeout, .connectionLost, .closed, .protocolError: true
        case .server, .notSent, .badURL: false
        }
    }
}
