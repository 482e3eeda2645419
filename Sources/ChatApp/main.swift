// ChatApp: gorilla/websocket's chat example on our runtime.
//
//   swift run -c release ChatApp [--config chat.json] [--addr HOST:PORT] [--max-message N]
//                                [--allow-origin URL]... [--any-origin] [--handshake-timeout-ms N]
//                                [--write-wait-ms N] [--ping-period-ms N] [--pong-wait-ms N] [--stats]
//                                [--metrics] [--rate N[/s]] [--burst N] [--max-conns N] [--max-conns-per-ip N]
//                                [--data-dir DIR | --memory] [--fsync always|interval|never] [--history N]
//                                [--retain N] [--max-rooms N] [--joins-per-minute N] [--redis URL]
//                                [--drain-timeout SECONDS] [--auth-secret FILE]
//
// --stats serves GET /stats: {"clients", "goroutines", "fds", "rss_bytes"} as JSON,
// GET /debug/goroutines: the goroutine dump (GMP.dump(), as on SIGQUIT), and
// GET /debug/drop?name=NAME: the server drops that client (close 1001), to try reconnection.
// --metrics serves GET /metrics in Prometheus' text format (0.0.4).
// --handshake-timeout-ms: each request head (and body) must arrive within this
// time from the connection's start or the previous response (10 s). --write-wait-ms: every write to a peer
// must finish within this time, or the connection is closed (10 s).
// --ping-period-ms, --pong-wait-ms: the server pings every ping period, and drops a
// client that sends no pong within the pong wait (54 s, 60 s); the period must be
// shorter than the wait; given the wait alone, the period is 9/10 of it (gorilla's).
//
// --rate, --burst: each connection may send N messages a second, B at once (200, 200; rate 0: no
// limit); a message over that is refused with an error line, and a client that keeps on is closed
// with 1008. --max-conns, --max-conns-per-ip: connections open at once, in all and from one IP
// address (10000, 256; 0: no limit); one more is answered 503 and closed.
//
// --data-dir: where each room's history is logged (./chat-data); --memory keeps it in memory only.
// --fsync: when the log is flushed to the disk (interval: within 100 ms). --history: messages a
// client gets on joining a room (50). --retain: messages kept per room on disk (10000). --max-rooms:
// rooms loaded at once besides the lobby (1000). --joins-per-minute: /join and /leave per client (30).
// --redis redis://[user:password@]host:port/db: several nodes, one chat (history in Redis, not --data-dir).
// --auth-secret FILE: clients must prove their names: each WebSocket presents a token signed with the
// file's bytes (an HS256 JSON Web Token, `/ws?token=…`: `sub` its name, `exp`, optional `rooms`), or gets
// 401; /nick is refused. The page takes the token from its URL's fragment (#token=…).
//
// SIGTERM or SIGINT drains the server (ChatServer.drain): it stops accepting, sends every WebSocket
// client what is queued for it and close 1012 (service restart: reconnect, to another node or to this
// one restarted, and catch up with `since`), and exits once the last client has gone, or after
// --drain-timeout (10 s; 0: at once), cutting off the rest. A second signal during the drain cuts it
// short. Either way the rooms' history is synced, and with --redis this node's presence removed.
//
// Exit status: 0 after SIGINT/SIGTERM, 1 if the data directory cannot be used, the server cannot
// listen or the listening socket fails (the message says why), 2 for bad arguments or config.
//
// Settings come from the config file, then the environment (CHAT_ADDR,
// GMPPROCS), then the flags: later ones win. Open http://127.0.0.1:8080/.
import Channels
import Chat
import Foundation
import GMP
import Glibc
import NetPoller
import Redis

func fail(_ message: String) -> Never {
    log("ChatApp: \(message)")
    exit(2)
}

/// The value of a flag in milliseconds, as nanoseconds (positive).
func milliseconds(_ flag: String, _ value: String?) -> Int64 {
    guard let v = value.flatMap({ Int64($0) }), v > 0, v <= Int64.max / 1_000_000 else {
        fail("\(flag) needs a positive number of milliseconds")
    }
    return v * 1_000_000
}

/// The value of a flag as a count, 0 or more (0 meaning no limit where the flag says so).
func count(_ flag: String, _ value: String?, minimum: Int = 0) -> Int {
    guard let v = value.flatMap({ Int($0) }), v >= minimum else {
        fail("\(flag) needs a whole number, \(minimum) or more")
    }
    return v
}

func parseAddr(_ s: String) -> (String, Int) {
    guard let a = splitAddr(s) else { fail("bad address '\(s)' (want HOST:PORT)") }
    return a
}

var config = ChatConfig()
config.dataDir = "chat-data"
var procs: Int?
// 1. The config file (named by a flag, but read first: flags override it).
let argv = Array(CommandLine.arguments.dropFirst())
if let i = argv.firstIndex(of: "--config") {
    guard i + 1 < argv.count else { fail("--config needs a file") }
    do { procs = try loadConfig(path: argv[i + 1], into: &config) } catch { fail(error.description) }
}
// 2. The environment.
if let env = ProcessInfo.processInfo.environment["CHAT_ADDR"] { (config.host, config.port) = parseAddr(env) }
if ProcessInfo.processInfo.environment["GMPPROCS"] != nil { procs = nil } // the runtime read it already
// 3. The flags.
var allowed: [String] = []
var pingPeriodSet = false, pongWaitSet = false
var args = argv[...]
while let a = args.popFirst() {
    switch a {
    case "--config":
        _ = args.popFirst()
    case "--addr":
        guard let v = args.popFirst() else { fail("--addr needs HOST:PORT") }
        (config.host, config.port) = parseAddr(v)
    case "--max-message":
        guard let v = args.popFirst().flatMap({ Int($0) }), v > 0, v <= ChatConfig.maxMessageLimit else {
            fail("--max-message needs a positive number, at most \(ChatConfig.maxMessageLimit)")
        }
        config.maxMessage = v
    case "--allow-origin":
        guard let v = args.popFirst() else { fail("--allow-origin needs a URL") }
        allowed.append(v.lowercased())
    case "--handshake-timeout-ms":
        config.handshakeTimeout = milliseconds(a, args.popFirst())
    case "--write-wait-ms":
        config.writeWait = milliseconds(a, args.popFirst())
    case "--ping-period-ms":
        config.pingPeriod = milliseconds(a, args.popFirst())
        pingPeriodSet = true
    case "--pong-wait-ms":
        config.pongWait = milliseconds(a, args.popFirst())
        pongWaitSet = true
    case "--any-origin":
        config.origins = .any
    case "--stats":
        config.stats = true
    case "--metrics":
        config.metrics = true
    case "--rate":
        let v = args.popFirst().map { $0.hasSuffix("/s") ? String($0.dropLast(2)) : $0 }
        guard let r = v.flatMap({ Double($0) }), r >= 0, r.isFinite else {
            fail("--rate needs a number of messages a second (N or N/s), 0 for no limit")
        }
        config.rate = r
    case "--burst":
        config.burst = count(a, args.popFirst(), minimum: 1)
    case "--max-conns":
        config.maxConns = count(a, args.popFirst())
    case "--max-conns-per-ip":
        config.maxConnsPerIP = count(a, args.popFirst())
    case "--data-dir":
        guard let v = args.popFirst(), !v.isEmpty else { fail("--data-dir needs a directory") }
        config.dataDir = v
    case "--memory":
        config.dataDir = nil
    case "--fsync":
        guard let v = args.popFirst().flatMap({ FsyncPolicy(rawValue: $0) }) else {
            fail("--fsync needs always, interval or never")
        }
        config.fsync = v
    case "--history":
        config.history = count(a, args.popFirst())
    case "--retain":
        config.retain = count(a, args.popFirst(), minimum: 1)
    case "--max-rooms":
        config.maxRooms = count(a, args.popFirst())
    case "--joins-per-minute":
        config.joinsPerMinute = count(a, args.popFirst(), minimum: 1)
    case "--redis":
        guard let v = args.popFirst() else { fail("--redis needs a URL, redis://host:port") }
        do { config.redis = try RedisURL(v) } catch { fail(error.description) }
    case "--drain-timeout":
        guard let v = args.popFirst().flatMap({ Double($0) }).flatMap(ChatConfig.drainTimeout(seconds:)) else {
            fail("--drain-timeout needs a number of seconds, 0 to \(ChatConfig.maxDrainSeconds) (a fraction is fine: 0.5)")
        }
        config.drainTimeout = v
    case "--auth-secret":
        guard let v = args.popFirst() else { fail("--auth-secret needs the path of a file holding the tokens' secret") }
        do { config.authSecret = try loadAuthSecret(path: v) } catch { fail(error.description) }
    case "--help", "-h":
        print("""
            usage: ChatApp [--config chat.json] [--addr HOST:PORT] [--max-message N] [--allow-origin URL]... [--any-origin]
                           [--handshake-timeout-ms N] [--write-wait-ms N] [--ping-period-ms N] [--pong-wait-ms N] [--stats]
                           [--metrics] [--rate N[/s]] [--burst N] [--max-conns N] [--max-conns-per-ip N]
                           [--data-dir DIR | --memory] [--fsync always|interval|never] [--history N] [--retain N]
                           [--max-rooms N] [--joins-per-minute N] [--redis URL] [--drain-timeout SECONDS]
                           [--auth-secret FILE]
              --handshake-timeout-ms N  each request (head and body) must arrive within N ms of connecting or of the last response (10000)
              --write-wait-ms N         every write to a peer must finish within N ms, or it is closed (10000)
              --ping-period-ms N        ping each client every N ms (54000; less than the pong wait)
              --pong-wait-ms N          drop a client that sends no pong for N ms (60000; alone, the ping
                                        period becomes 9/10 of it)
              --stats                   serve GET /stats (clients, goroutines, fds, rss_bytes as JSON),
                                        GET /debug/goroutines (the goroutine dump) and
                                        GET /debug/drop?name=NAME (drop that client, to try reconnection)
              --metrics                 serve GET /metrics (Prometheus text format 0.0.4: connections, messages, bytes,
                                        slow drops, and the runtime's goroutines, threads, Ps, steals, stacks)
              --rate N, --burst B       each connection sends at most N messages a second, B at once (200, 200;
                                        --rate 0: no limit); more are refused with an error line, and a client
                                        that keeps on is closed with 1008
              --max-conns N             connections open at once (10000; 0: no limit); one more gets 503
              --max-conns-per-ip N      connections open at once from one IP address (256; 0: no limit; set 0
                                        behind a reverse proxy, where every client has the proxy's address)
              --data-dir DIR            where each room's history is logged (./chat-data); checked and repaired at start
              --memory                  keep history in memory only (the newest 128, or --history, per room)
              --fsync MODE              always (before a message is acknowledged), interval (within 100 ms; the
                                        default) or never
              --history N               messages a client gets when it joins a room (50)
              --retain N                messages kept per room on disk, at least (10000)
              --max-rooms N             rooms loaded at once besides the lobby (1000)
              --joins-per-minute N      /join and /leave per client in a minute (30)
              --redis URL               several nodes, one chat: rooms numbered, kept and broadcast through Redis
                                        (redis://[user:password@]host:port/db); --data-dir is then not used
              --drain-timeout SECONDS   on SIGTERM or SIGINT, wait at most this long (10) for the clients to go
                                        after asking them to reconnect (close 1012); a second signal stops at once
              --auth-secret FILE        clients must present a token signed with FILE's bytes (HS256 JWT in
                                        /ws?token=: sub = the name, exp, optional rooms), or get 401; no /nick
            """)
        exit(0)
    default:
        fail("unknown argument '\(a)' (try --help)")
    }
}
if !allowed.isEmpty { config.origins = .allow(allowed) }
if pongWaitSet && !pingPeriodSet { config.pingPeriod = config.pongWait / 10 * 9 } // gorilla's (pongWait * 9) / 10
if config.pingPeriod >= config.pongWait {
    fail("the ping period (\(config.pingPeriod / 1_000_000) ms) must be shorter than the pong wait "
         + "(\(config.pongWait / 1_000_000) ms): a client needs a ping to answer before its wait runs out")
}

if let procs { GMP.setProcs(procs) }
// Past a file size limit (ulimit -f), a write fails with EFBIG and the
// history reports it; the signal would kill the server instead.
signal(SIGXFSZ, SIG_IGN)

let code: Int32 = GMP.run { [config] () -> Int32 in
    // SIGINT/SIGTERM: drain (close 1012 to every client, wait for them to go,
    // at most the drain time-out), then stop; a second one stops at once.
    // Caught before the socket listens: a client that can connect can also
    // stop the server gracefully.
    let signals = Chan<Int32>(capacity: 1)
    Signals.notify(signals, SIGINT, SIGTERM)
    let server: ChatServer
    do {
        server = try ChatServer(config: config)
    } catch {
        log("ChatApp: \(error)")
        flushLog()
        return 1
    }
    let drained = Chan<Void>()
    go {
        guard case .value(let sig) = signals.receive() else { return }
        log("signal \(sig): draining")
        go {
            guard case .value(let again) = signals.receive() else { return }
            log("signal \(again) while draining: stopping now")
            server.stop()
        }
        server.drain()
        drained.close()
    }
    log("chat server on http://\(config.host):\(server.port)/ (GMPPROCS=\(GMP.procs))")
    let failure = server.serve() // nil once the drain (or a stop) has closed the listener
    if let failure {
        log("ChatApp: the listening socket failed: \(failure); closing every client")
        server.stop()
    } else {
        _ = drained.receive()
    }
    // Let the rooms sync their history, and the write pumps flush their close frames.
    if !server.waitUntilStopped(nanoseconds: 5_000_000_000) { log("ChatApp: the history did not sync within 5 s") }
    GMP.sleep(for: .milliseconds(200))
    log(failure == nil ? "chat server stopped" : "chat server stopped after an error")
    flushLog()
    return failure == nil ? 0 : 1
}
exit(code)
