import Digests

// Lua scripts: Redis keeps loaded scripts in a cache keyed by the SHA-1 of
// their source (lower-case hex), and EVALSHA runs one by that name, so a
// script's source goes over the wire once per cache rather than once per
// call. The cache is not data: a restart, a failover or `SCRIPT FLUSH`
// empties it, and EVALSHA then answers `NOSCRIPT`.
//
// `RedisScript` is a script's source and its SHA-1 (Digests' SHA1, computed
// once, when the value is made), and the commands that run it, as arrays,
// for callers that pipeline or queue them in a transaction themselves:
// `evalSHA(keys:args:)`, `load` (SCRIPT LOAD) and `eval(keys:args:)` (the
// source each time: never NOSCRIPT). `run(on:keys:args:)` is the usual
// one-call way: EVALSHA and, on NOSCRIPT, SCRIPT LOAD and EVALSHA again in
// one write (the script did not run the first time, so running it after
// the load runs it once).
//
// A caller for whom the order of its scripts' effects matters (several
// EVALSHAs in flight, one refused with NOSCRIPT and sent again would run
// after those behind it) should not use `run` but send `load` before them
// in the same transaction (MULTI … EXEC): nothing runs between its commands,
// so the script is there for each of them.

/// A Lua script for `EVALSHA`, named by the SHA-1 of its source (see the top of the file).
public struct RedisScript: Sendable, Hashable {
    /// The Lua source, as given.
    public let source: String
    /// The SHA-1 of `source`'s UTF-8 bytes in lower-case hex: the name
    /// `SCRIPT LOAD` answers and `EVALSHA` takes.
    public let sha1: String

    /// A script from its Lua source (its SHA-1 is computed here, once).
    public init(_ source: String) {
        self.source = source
        sha1 = hex(SHA1.hash(source.utf8))
    }

    /// `SCRIPT LOAD <source>`: puts the script in the server's cache (it answers `sha1`).
    public var load: [String] { ["SCRIPT", "LOAD", source] }

    /// `EVALSHA <sha1> <number of keys> <keys…> <args…>`: runs the script
    /// if the server has it, else the error reply `NOSCRIPT …`.
    public func evalSHA(keys: [String] = [], args: [String] = []) -> [String] {
        ["EVALSHA", sha1, String(keys.count)] + keys + args
    }

    /// `EVAL <source> <number of keys> <keys…> <args…>`: sends the source
    /// every time (and caches it), so it never meets `NOSCRIPT`.
    public func eval(keys: [String] = [], args: [String] = []) -> [String] {
        ["EVAL", source, String(keys.count)] + keys + args
    }

    /// Whether `error` is Redis saying it does not have the script.
    public static func isNoScript(_ error: RedisError) -> Bool {
        if case .server(let m) = error { return m.hasPrefix("NOSCRIPT") }
        return false
    }

    /// Runs the script on `connection`: EVALSHA, and if the server does not
    /// have it (`NOSCRIPT`), SCRIPT LOAD and EVALSHA again, in one write.
    /// - Returns: the script's reply.
    /// - Throws: `.server` for an error reply (the script's own error, or
    ///   the load's); `.timeout`, `.connectionLost`, `.closed`.
    @discardableResult
    public func run(on connection: RedisConnection, keys: [String] = [], args: [String] = []) throws(RedisError) -> RESPValue {
        try run(evalSHA(keys: keys, args: args), call: connection.call, pipeline: connection.pipeline)
    }

    /// Runs the script through `client` as `run(on:keys:args:)` does on a
    /// connection (the retry may go on a new connection, if the first broke).
    /// - Throws: as `RedisClient.call(_:)` does.
    @discardableResult
    public func run(on client: RedisClient, keys: [String] = [], args: [String] = []) throws(RedisError) -> RESPValue {
        try run(evalSHA(keys: keys, args: args), call: client.call, pipeline: client.pipeline)
    }

    /// `command` (an EVALSHA) by `call`; on NOSCRIPT, SCRIPT LOAD and it again by `pipeline`.
    private func run(_ command: [String], call: ([String]) throws(RedisError) -> RESPValue,
                     pipeline: ([[String]]) -> [RedisReply]) throws(RedisError) -> RESPValue {
        do throws(RedisError) {
            return try call(command)
        } catch {
            guard Self.isNoScript(error) else { throw error }
            return try Self.loaded(pipeline([load, command]))
        }
    }

    /// The EVALSHA's reply of a SCRIPT LOAD, EVALSHA pair; the load's
    /// failure if it failed (the EVALSHA then failed too, or ran a script
    /// loaded meanwhile by someone else: its reply is still the answer).
    private static func loaded(_ replies: [RedisReply]) throws(RedisError) -> RESPValue {
        switch replies[1] {
        case .success(let v): return v
        case .failure(let e):
            if case .failure(let loadError) = replies[0], isNoScript(e) { throw loadError }
            throw e
        }
    }
}
