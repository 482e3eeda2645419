import Foundation
import Redis

/// Reads a JSON config file into `config`: `parseConfig` on the file's bytes.
/// Returns the GMPPROCS setting if present.
/// - Throws: a message naming the file and what is wrong.
public func loadConfig(path: String, into config: inout ChatConfig) throws(ConfigError) -> Int? {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ConfigError("\(path): cannot read the file")
    }
    return try parseConfig(data, name: path, into: &config)
}

/// Parses a JSON config into `config`. Keys: "addr" ("HOST:PORT"),
/// "maxMessage" (bytes), "allowedOrigins" (list of URLs), "anyOrigin"
/// (bool), "gmpprocs" (int), "stats" (bool: serve `GET /stats`), "metrics"
/// (bool: serve `GET /metrics`), and the
/// limits: "rate" (messages a second per connection, 0 for none), "burst"
/// (messages at once), "maxConns" and "maxConnsPerIP" (0 for none); rooms
/// and history: "dataDir" (a directory, or null for memory only), "fsync"
/// ("always", "interval", "never"), "history", "retain", "maxRooms",
/// "joinsPerMinute"; "redis" (a redis:// URL: several nodes); "drainTimeout"
/// (seconds, 0 to `ChatConfig.maxDrainSeconds`, a fraction allowed);
/// "authSecret" (a file holding the tokens' secret: `loadAuthSecret`). A key
/// seen sets its setting; the others keep theirs. Returns the GMPPROCS
/// setting if present.
/// - Throws: a message naming the file (`name`) and the offending key.
public func parseConfig(_ data: Data, name path: String, into config: inout ChatConfig) throws(ConfigError) -> Int? {
    let any: Any
    do { any = try JSONSerialization.jsonObject(with: data) } catch {
        throw ConfigError("\(path): not valid JSON (\(error.localizedDescription))")
    }
    guard let obj = any as? [String: Any] else { throw ConfigError("\(path): the top level must be an object") }
    var procs: Int?
    for (key, value) in obj.sorted(by: { $0.key < $1.key }) {
        /// The value as an integer of at least `minimum`; `what` says what is wanted.
        func integer(atLeast minimum: Int, _ what: String) throws(ConfigError) -> Int {
            guard let n = jsonInt(value), n >= minimum else { throw ConfigError("\(path): key '\(key)' must be \(what)") }
            return n
        }
        switch key {
        case "addr":
            guard let s = value as? String, let (h, p) = splitAddr(s) else {
                throw ConfigError("\(path): key 'addr' must be a string \"HOST:PORT\"")
            }
            (config.host, config.port) = (h, p)
        case "maxMessage":
            guard let n = jsonInt(value), n > 0, n <= ChatConfig.maxMessageLimit else {
                throw ConfigError("\(path): key 'maxMessage' must be a positive integer, at most \(ChatConfig.maxMessageLimit)")
            }
            config.maxMessage = n
        case "allowedOrigins":
            guard let list = value as? [String] else {
                throw ConfigError("\(path): key 'allowedOrigins' must be a list of strings")
            }
            config.origins = .allow(list.map { $0.lowercased() })
        case "anyOrigin":
            guard let b = jsonBool(value) else { throw ConfigError("\(path): key 'anyOrigin' must be true or false") }
            if b { config.origins = .any }
        case "stats":
            guard let b = jsonBool(value) else { throw ConfigError("\(path): key 'stats' must be true or false") }
            config.stats = b
        case "metrics":
            guard let b = jsonBool(value) else { throw ConfigError("\(path): key 'metrics' must be true or false") }
            config.metrics = b
        case "rate":
            guard let n = jsonNumber(value), n >= 0, n.isFinite else {
                throw ConfigError("\(path): key 'rate' must be a number of messages a second, 0 or more")
            }
            config.rate = n
        case "burst":
            config.burst = try integer(atLeast: 1, "a positive integer")
        case "maxConns", "maxConnsPerIP":
            let n = try integer(atLeast: 0, "an integer, 0 (no limit) or more")
            if key == "maxConns" { config.maxConns = n } else { config.maxConnsPerIP = n }
        case "dataDir":
            if value is NSNull {
                config.dataDir = nil
            } else {
                guard let s = value as? String, !s.isEmpty else {
                    throw ConfigError("\(path): key 'dataDir' must be a directory, or null to keep history in memory")
                }
                config.dataDir = s
            }
        case "fsync":
            guard let s = value as? String, let f = FsyncPolicy(rawValue: s) else {
                throw ConfigError("\(path): key 'fsync' must be \"always\", \"interval\" or \"never\"")
            }
            config.fsync = f
        case "history", "maxRooms":
            let n = try integer(atLeast: 0, "an integer, 0 or more")
            if key == "history" { config.history = n } else { config.maxRooms = n }
        case "retain", "joinsPerMinute":
            let n = try integer(atLeast: 1, "a positive integer")
            if key == "retain" { config.retain = n } else { config.joinsPerMinute = n }
        case "redis":
            guard let text = value as? String else { throw ConfigError("\(path): key 'redis' must be a redis:// URL") }
            do { config.redis = try RedisURL(text) } catch { throw ConfigError("\(path): key 'redis': \(error)") }
        case "drainTimeout":
            guard let n = jsonNumber(value).flatMap(ChatConfig.drainTimeout(seconds:)) else {
                throw ConfigError("\(path): key 'drainTimeout' must be a number of seconds, 0 to \(ChatConfig.maxDrainSeconds)")
            }
            config.drainTimeout = n
        case "authSecret":
            guard let file = value as? String else { throw ConfigError("\(path): key 'authSecret' must be the path of a file") }
            config.authSecret = try loadAuthSecret(path: file)
        case "gmpprocs":
            guard let n = jsonInt(value), (1...1024).contains(n) else {
                throw ConfigError("\(path): key 'gmpprocs' must be an integer in 1...1024")
            }
            procs = n
        default:
            throw ConfigError("\(path): unknown key '\(key)' (known: addr, maxMessage, allowedOrigins, anyOrigin, gmpprocs, stats, metrics, "
                              + "rate, burst, maxConns, maxConnsPerIP, dataDir, fsync, history, retain, maxRooms, joinsPerMinute, redis, "
                              + "drainTimeout, authSecret)")
        }
    }
    return procs
}

/// A config that cannot be used, and why.
public struct ConfigError: Error, CustomStringConvertible {
    /// The message: the file's name, then what is wrong with it.
    public let description: String
    init(_ d: String) { description = d }
}

/// Reads the secret that signs clients' tokens from the file at `path`:
/// its bytes, less one "\n" at the end (a file written by `echo`; a "\r"
/// before it stays: it is a byte of the secret), at most 64 KiB. At
/// least 32 bytes (HS256's key is at least the hash's size, RFC 7518 3.2),
/// so a guessable word cannot sign tokens.
/// - Throws: a message naming the file: it cannot be read, or is too short.
public func loadAuthSecret(path: String) throws(ConfigError) -> [UInt8] {
    // (At most 64 KiB and one byte read: /dev/zero is refused, not read for ever.)
    guard let file = FileHandle(forReadingAtPath: path),
          let data = try? file.read(upToCount: 65_537) ?? Data() else {
        throw ConfigError("\(path): cannot read the auth secret")
    }
    try? file.close()
    var bytes = [UInt8](data)
    guard bytes.count <= 65_536 else { throw ConfigError("\(path): the auth secret must hold at most 64 KiB") }
    if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
    guard bytes.count >= 32 else {
        throw ConfigError("\(path): the auth secret must hold at least 32 bytes (it has \(bytes.count)); "
                          + "e.g. head -c 32 /dev/urandom | base64 > \(path)")
    }
    return bytes
}

extension ChatConfig {
    /// The longest `drainTimeout` there may be, in seconds: a day.
    public static let maxDrainSeconds = 86_400

    /// A drain time-out given in seconds (a fraction allowed, as
    /// `--drain-timeout` and the config file give it) as `drainTimeout`
    /// takes it, in nanoseconds; nil unless it is 0 to `maxDrainSeconds`.
    public static func drainTimeout(seconds: Double) -> Int64? {
        guard seconds >= 0, seconds <= Double(maxDrainSeconds) else { return nil } // (NaN fails both)
        return Int64((seconds * 1e9).rounded())
    }
}

/// "HOST:PORT" (or "[v6]:PORT", or ":PORT" for all interfaces).
public func splitAddr(_ s: String) -> (String, Int)? {
    guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port) else {
        return nil
    }
    var host = String(s[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return (host.isEmpty ? "0.0.0.0" : host, port)
}

/// A JSON number (not a boolean), nil for anything else. (`value is Bool`
/// cannot tell: JSONSerialization's 0 and 1 are NSNumbers that cast to Bool.)
func jsonNumber(_ value: Any) -> Double? {
    guard let n = value as? NSNumber, String(cString: n.objCType) != "c" else { return nil }
    return n.doubleValue
}

/// A JSON integer (a number without a fraction, in Int's range), nil for anything else.
func jsonInt(_ value: Any) -> Int? {
    guard let d = jsonNumber(value), d == d.rounded(), abs(d) < 9.0e18 else { return nil }
    return Int(d)
}

/// A JSON `true` or `false`, nil for anything else. (JSONSerialization hands
/// numbers over as NSNumbers, which also cast to `Bool`: `1 as? Bool` is
/// true. Its booleans are the NSNumbers of type "c".)
func jsonBool(_ value: Any) -> Bool? {
    guard let n = value as? NSNumber, String(cString: n.objCType) == "c" else { return nil }
    return n.boolValue
}
