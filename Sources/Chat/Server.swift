// The chat server's HTTP side and its per-client pumps.
//
// A peer controls nothing without a bound. Reads: each request head (and
// any body, which is read and thrown away, never taken for the next request)
// must arrive within the handshake time-out from the connection's start or
// the previous response; after the upgrade, a pong must come within pongWait.
// Bodies are read before any response, error responses too, so that closing
// the connection afterwards never resets it under the response. Writes: every write to
// a peer has a deadline of writeWait (responses, the 101, error responses,
// and through `WebSocketConn.writeTimeout` every frame, including the pongs
// and close frames the read pump sends), so a peer that pipelines requests
// and never reads, or stops reading its messages, is cut off instead of
// holding a G and an fd for ever. Accepting: errors of one connection or a
// passing shortage (fds, memory) are retried by `Listener.accept` with a
// back-off and logged; only an error of the listening socket itself ends
// `serve`.
//
// Draining (`drain`, ChatApp's SIGTERM and SIGINT), so that a node can go
// away without losing a message: the listener is closed, and the drain waits
// for `serve` to return (its accept G holds the socket open until it wakes),
// so new connections are refused from then on and a load balancer sends
// them to another node; a WebSocket upgrade on a connection already open gets
// 503; with Redis, the node's names are released (ClusterNames.releaseAll:
// a client that reconnects elsewhere at once finds its name free, and a
// private message to it meanwhile is answered "nobody is called NAME", not
// lost); then `draining` is closed. Each write pump sees it, writes what was
// queued for its client at that moment, then a close frame with 1012
// (service restart), and waits for its kick: the read pump ends when the
// client answers the close (or goes), and a stop kicks every member. What
// the room delivers meanwhile is dropped; the client reconnects (the page at
// once, on 1012) and catches up with `since`. The rooms serve on throughout:
// a message a client sent before it read the close is stored, and comes back
// to it through `since`. WebSocket connections are counted from the upgrade
// request to their end (`sockets`, under one lock with the draining flag, so
// no upgrade slips in after the drain has counted); `drained` is closed when
// the count falls to 0 while draining. The drain ends then, after
// `drainTimeout`, or at `stop()`, whichever is first, and stops the server:
// the rooms end and sync, and the clients still there are cut off (their
// write pumps get their kick).
import Channels
import Foundation
import GMP
import Glibc
import NetPoller
import Redis
import Synchronization
import WebSocket

/// Settings of the chat server (gorilla's constants as defaults).
public struct ChatConfig: Sendable {
    /// The address to listen on ("0.0.0.0" for every interface).
    public var host = "127.0.0.1"
    /// The port to listen on (0: any free one; `ChatServer.port` tells which).
    public var port = 8080
    /// Largest message a client may send, in bytes (at most
    /// `maxMessageLimit`); larger ones close it with 1009.
    public var maxMessage = 512
    /// The largest `maxMessage` there may be: 1 MiB (the history's records
    /// hold messages up to that and their names).
    public static let maxMessageLimit = 1 << 20
    /// How often the write pump pings (must be shorter than `pongWait`).
    public var pingPeriod: Int64 = 54_000_000_000
    /// A client must answer (pong) within this time, or it is dropped.
    public var pongWait: Int64 = 60_000_000_000
    /// Every write to a peer must finish within this time, or it is closed.
    public var writeWait: Int64 = 10_000_000_000
    /// A connection must send each request (head and body) within this time
    /// from its start or from the previous response.
    public var handshakeTimeout: Int64 = 10_000_000_000
    /// Which `Origin`s may open a WebSocket.
    public var origins = OriginPolicy.sameHost
    /// Serve `GET /stats` (clients, live Gs, open fds, RSS as JSON),
    /// `GET /debug/goroutines` (`GMP.dump()`) and `GET /debug/drop?name=NAME`
    /// (drop that client, as a slow one: to try reconnection); off by default.
    public var stats = false
    /// Serve `GET /metrics` (Prometheus' text format 0.0.4: Metrics.swift).
    public var metrics = false
    /// Messages a second each connection may send (0: no limit); over it a
    /// message is refused with an error line, and a client that keeps on is
    /// closed with 1008 (Limits.swift).
    public var rate = 200.0
    /// Messages a connection may send at once, above `rate`.
    public var burst = 200
    /// Connections open at once (0: no limit); one more gets 503.
    public var maxConns = 10_000
    /// Connections open at once from one IP address (0: no limit); one more
    /// gets 503. Behind a reverse proxy, where every client has its address, 0.
    public var maxConnsPerIP = 256
    /// Where the rooms' history is kept (History.swift), one directory per
    /// room; nil: in memory only (the newest max(history, 128) per room, lost
    /// at exit). ChatApp's default is "./chat-data".
    public var dataDir: String?
    /// When the history is flushed to the disk.
    public var fsync = FsyncPolicy.interval
    /// Messages a client gets when it joins a room (without `since`).
    public var history = 50
    /// Messages kept on disk per room, at least (older segments are removed).
    public var retain = 10_000
    /// Rooms loaded at once, besides the lobby; a join that would load one
    /// more is refused.
    public var maxRooms = 1_000
    /// Rooms a client may join in a minute (`/join`, `/leave`), `joinsPerMinute` at once.
    public var joinsPerMinute = 30
    /// Several nodes, one chat: each room's messages are numbered, kept (a
    /// stream, `retain` long) and broadcast through this Redis (Cluster.swift),
    /// and `dataDir` is not used. nil: this node alone.
    public var redis: RedisURL?
    /// How long `ChatServer.drain()` waits for the WebSocket clients to
    /// close after it has asked them to reconnect (1012), in nanoseconds, 0
    /// or more (0: not at all); then the server stops and cuts off the rest.
    public var drainTimeout: Int64 = 10_000_000_000
    /// The secret that signs clients' tokens (`--auth-secret FILE`,
    /// `loadAuthSecret`). Set, a WebSocket must present a token (`token=`
    /// in its URL: an HS256 JSON Web Token whose `sub` is the client's name,
    /// Token.swift) or it gets 401; `/nick` is refused, and a token's
    /// `rooms` are the only rooms besides the lobby it may join. Nil (the
    /// default): anyone connects, and takes any free name.
    public var authSecret: [UInt8]?

    /// The defaults.
    public init() {}
}

/// Writes one line to standard error (the server's log). From a G the line
/// goes through a queue to one writer G, which writes inside `GMP.blocking`:
/// a stderr that blocks (a full pipe nobody reads) holds that G's thread,
/// never a worker thread with its P. At most 4,096 lines wait; more are
/// dropped and counted, and the count is logged once there is room again.
/// Off a G (before the scheduler runs, after it) the line is written at once.
public func log(_ s: String) { ServerLog.shared.write(s + "\n") }

/// Waits until the lines logged so far are written, at most `nanoseconds`
/// (call it from a G before the process exits). Whether they were.
@discardableResult
public func flushLog(nanoseconds: Int64 = 1_000_000_000) -> Bool {
    let deadline = GMP.now + nanoseconds
    while !ServerLog.shared.isIdle {
        if GMP.now >= deadline { return false }
        GMP.sleep(nanoseconds: 1_000_000)
    }
    return true
}

/// The queue and writer G behind `log`.
final class ServerLog: Sendable {
    static let shared = ServerLog()
    private let lines = Chan<String>(capacity: 4096)
    private let dropped = Atomic<Int>(0)
    /// Lines queued or being written.
    private let pending = Atomic<Int>(0)
    private let started = Atomic<Bool>(false)

    var isIdle: Bool { pending.load(ordering: .acquiring) == 0 }

    func write(_ line: String) {
        guard GMP.inGoroutine else {
            Self.writeOut(line)
            return
        }
        if !started.exchange(true, ordering: .acquiringAndReleasing) { go { self.run() } }
        pending.add(1, ordering: .relaxed)
        if !lines.trySend(line) {
            pending.subtract(1, ordering: .releasing)
            dropped.add(1, ordering: .relaxed)
        }
    }

    private func run() {
        while case .value(let line) = lines.receive() {
            let lost = dropped.exchange(0, ordering: .relaxed)
            GMP.blocking {
                if lost > 0 { Self.writeOut("(\(lost) lines of the log were dropped: standard error was not taking them)\n") }
                Self.writeOut(line)
            }
            pending.subtract(1, ordering: .releasing)
        }
    }

    private static func writeOut(_ line: String) {
        line.withCString { p in
            var at = 0, n = strlen(p)
            while n > 0 {
                let w = Glibc.write(2, p + at, n)
                if w < 0 && errno == EINTR { continue }
                if w <= 0 { return }
                at += w
                n -= w
            }
        }
    }
}

/// Why a server cannot start.
public enum ChatStartError: Error, CustomStringConvertible {
    /// The data directory cannot be created, written or read back.
    case store(StoreError)
    /// The address cannot be listened on.
    case listen(host: String, port: Int, NetError)
    /// A setting is out of range (the text names it).
    case config(String)

    /// What went wrong, for the log.
    public var description: String {
        switch self {
        case .store(let e): "\(e)"
        case .listen(let host, let port, let e): "cannot listen on \(host):\(port): \(e)"
        case .config(let what): what
        }
    }
}

/// The chat server: HTTP on `/` (the page), `/ws` (the socket), and
/// optionally `/stats`, `/metrics`, `/debug/goroutines` and `/debug/drop`.
public final class ChatServer: @unchecked Sendable {
    // @unchecked: immutable after init, apart from the listener's own state
    // and the atomics.
    let config: ChatConfig
    let metrics = ChatMetrics()
    /// Closed to shut down: rooms send close 1001 to their members.
    let quit = Chan<Void>()
    let directory: Directory
    /// With auth on (`ChatConfig.authSecret`): checks the clients' tokens.
    private let verifier: TokenVerifier?
    let listener: Listener
    let limits: ConnectionLimits
    /// WebSocket clients connected now.
    let clientsOpen = Atomic<Int>(0)
    private let stopped = Atomic<Bool>(false)
    /// Closed by `drain()`: each write pump sends what is queued, then close 1012.
    let draining = Chan<Void>()
    /// Set as `serve` starts; `served` is closed as it returns: its accept G
    /// has let go of the listening socket, so the socket is closed in the
    /// kernel too (a G parked in `accept` holds it open until it wakes).
    private let serving = Atomic<Bool>(false)
    private let served = Chan<Void>()
    /// Closed once the server drains and no WebSocket connection is left.
    private let drained = Chan<Void>()
    /// WebSocket connections from their upgrade request to their end, and
    /// whether the server drains: under one lock, so that an upgrade is
    /// either counted before the drain looks or refused (`enterSocket`).
    private struct Sockets {
        var open = 0
        var draining = false
    }
    private let sockets = Synchronization.Mutex(Sockets())

    /// Opens the data directory (checking every room's log, cutting torn
    /// tails) and listens on `config.host`:`config.port` (call `serve` to accept).
    public init(config: ChatConfig) throws(ChatStartError) {
        for (name, value) in [("pingPeriod", config.pingPeriod), ("pongWait", config.pongWait),
                              ("writeWait", config.writeWait), ("handshakeTimeout", config.handshakeTimeout)] where value <= 0 {
            throw .config("\(name) must be positive, not \(value) ns")
        }
        if config.drainTimeout < 0 { throw .config("drainTimeout must be 0 or more, not \(config.drainTimeout) ns") }
        if let secret = config.authSecret, secret.count < 32 {
            throw .config("authSecret must hold at least 32 bytes, not \(secret.count)")
        }
        self.config = config
        verifier = config.authSecret.map { TokenVerifier(secret: $0) }
        // (Behind a reverse proxy, --max-conns-per-ip 0, every client has its
        // address: loads are not counted per address there.)
        let store = StoreSettings(dataDir: config.redis == nil ? config.dataDir : nil, retain: config.retain,
                                  maxRooms: config.maxRooms, loadsPerMinute: config.maxConnsPerIP == 0 ? 0 : config.joinsPerMinute)
        let onDisk: Set<String>
        do { onDisk = try Directory.openStore(store, policy: config.fsync) } catch { throw .store(error) }
        let settings = RoomSettings(history: config.history, policy: config.fsync, metrics: metrics, quit: quit)
        let cluster = config.redis.map { [quit] url in ClusterNode(url: url, retain: config.retain, quit: quit) }
        directory = Directory(store: store, settings: settings, onDisk: onDisk, cluster: cluster)
        limits = ConnectionLimits(maxTotal: config.maxConns, maxPerAddress: config.maxConnsPerIP)
        do { listener = try Listener(host: config.host, port: config.port) } catch {
            throw .listen(host: config.host, port: config.port, error)
        }
    }

    /// The port it listens on (the one the system picked, for port 0).
    public var port: Int { listener.port }

    /// Serves until `stop()`, then returns nil; run it in a G. An accept
    /// error that concerns one connection or a passing shortage (fds, memory)
    /// is retried by `Listener.accept` itself (with a back-off, as Go's
    /// http.Server) and logged here; any error it throws is one of the
    /// listening socket itself: serving stops and the error is returned.
    public func serve() -> NetError? {
        serving.store(true, ordering: .sequentiallyConsistent)
        defer { served.close() }
        let directory = self.directory
        go { directory.run() }
        listener.onAcceptRetry = { error, backoff in
            log("accept: \(error); retrying" + (backoff > .zero ? " in \(GMP.nanoseconds(backoff) / 1_000_000) ms" : ""))
        }
        while true {
            let c: Conn
            do {
                c = try listener.accept()
            } catch .closed {
                return nil
            } catch {
                return error
            }
            go {
                let address = ConnectionLimits.address(of: c.remoteAddress)
                guard self.limits.admit(address) else {
                    self.refuseOverLimit(c)
                    return
                }
                self.handle(c)
                self.limits.release(address)
            }
        }
    }

    /// Stops accepting and asks every client to go away (close 1001). Only
    /// the first call does anything.
    public func stop() {
        if stopped.exchange(true, ordering: .acquiringAndReleasing) { return }
        listener.close()
        quit.close()
    }

    /// Drains the server, as before a restart (see the top of the file):
    /// stops accepting (`serve` returns nil), refuses WebSocket upgrades on
    /// connections already open (503), and has every WebSocket client sent
    /// what is queued for it, then close 1012 (service restart); the rooms
    /// serve on. Returns once every WebSocket client has gone, after
    /// `config.drainTimeout`, or when `stop()` is called, whichever is first,
    /// having called `stop()`: the rooms end, and the clients still
    /// connected are cut off. Whether every client had gone. Run it in a G;
    /// a second call waits as the first (each for its own time-out).
    @discardableResult
    public func drain() -> Bool {
        let (first, none) = sockets.withLock { s -> (Bool, Bool) in
            if s.draining { return (false, false) }
            s.draining = true
            return (true, s.open == 0)
        }
        if first {
            listener.close()
            // Refused from here on: once the accept G has woken and let go (it
            // does at once), the kernel no longer queues connections for it.
            if serving.load(ordering: .sequentiallyConsistent) { _ = served.receive() }
            // With Redis, names are let go before the clients are told: one
            // that reconnects to another node at once finds its name free,
            // and a private message to it meanwhile gets "nobody is called"
            // instead of going down with the connection.
            directory.cluster?.names.releaseAll()
            draining.close()
            log("draining: every client is asked to reconnect (1012); waiting at most "
                + "\(config.drainTimeout / 1_000_000) ms for them to go")
        }
        if none { drained.close() } // (closed once: later upgrades are refused, so `open` cannot rise again)
        select { s in
            if s.receive(drained) != nil {}
            if s.receive(quit) != nil {}
            if s.timeout(after: .nanoseconds(config.drainTimeout)) {}
        }
        var all = false
        if case .closed = drained.tryReceive() { all = true }
        if first {
            let left = sockets.withLock { $0.open }
            log(all ? "drained: every client has gone" : "drain ended with \(left) WebSocket connections open: closing them")
        }
        stop()
        return all
    }

    /// Counts a WebSocket connection in, from its upgrade request: false
    /// (not counted) once the server drains.
    private func enterSocket() -> Bool {
        sockets.withLock { s in
            guard !s.draining else { return false }
            s.open += 1
            return true
        }
    }

    /// Counts a WebSocket connection out, at its end: the last one while
    /// draining ends the drain.
    private func leaveSocket() {
        let last = sockets.withLock { s in
            s.open -= 1
            return s.draining && s.open == 0
        }
        if last { drained.close() }
    }

    /// After `stop()`: waits until every room has ended and its history is
    /// synced (unless the policy is `never`), at most `nanoseconds`. Whether
    /// it got there.
    public func waitUntilStopped(nanoseconds: Int64) -> Bool {
        var done = false
        select { s in
            if s.receive(directory.finished) != nil { done = true }
            if s.timeout(after: .nanoseconds(nanoseconds)) {}
        }
        return done
    }

    /// A connection over a limit: 503 at once, without reading its request
    /// (its G is done within two seconds), then a short lingering close.
    private func refuseOverLimit(_ conn: Conn) {
        log("refused \(conn.remoteAddress): too many connections")
        let resp = HTTPResponse(error: HTTPError(status: .serviceUnavailable, detail: "too many connections"))
        conn.setWriteDeadline(.after(.seconds(1)))
        _ = try? conn.write(resp.encode())
        conn.lingeringShutdown()
        conn.close()
    }

    /// Serves one connection's requests.
    private func handle(_ conn: Conn) {
        var buf: [UInt8] = []
        while true {
            conn.setReadDeadline(.after(.nanoseconds(config.handshakeTimeout))) // each request in time
            let parsed: (HTTPRequest, Int)?
            do {
                parsed = try HTTPRequest.parse(buf[...])
            } catch {
                _ = write(conn, HTTPResponse(error: error).encode())
                conn.close()
                return
            }
            guard let (req, used) = parsed else {
                guard let more = try? conn.read(max: 4096) else { conn.close(); return }
                buf += more
                continue
            }
            buf.removeFirst(used)
            switch req.path {
            case "/ws":
                guard req.method == "GET" else { refuse(req, .methodNotAllowed, conn, &buf); return }
                guard enterSocket() else { // draining: another node (or this one, restarted) takes it
                    let e = HTTPError(status: .serviceUnavailable, detail: "the server is restarting; connect again")
                    _ = answer(req, HTTPResponse(error: e), conn, &buf, keepOpen: false)
                    return
                }
                defer { leaveSocket() }
                let options: SocketOptions
                switch SocketOptions.parse(req.query) {
                case .success(let o): options = o
                case .failure(let e):
                    _ = answer(req, HTTPResponse(error: e), conn, &buf, keepOpen: false)
                    return
                }
                let identity: TokenClaims?
                switch authenticate(options) {
                case .success(let claims): identity = claims
                case .failure(let e):
                    var refusal = HTTPResponse(error: e)
                    if e.status == .unauthorized { refusal.headers.append((name: "WWW-Authenticate", value: "Bearer")) }
                    _ = answer(req, refusal, conn, &buf, keepOpen: false)
                    return
                }
                let resp: HTTPResponse
                do {
                    resp = try acceptWebSocket(req, origins: config.origins) // refuses a body too
                } catch {
                    _ = answer(req, rejectWebSocket(error), conn, &buf, keepOpen: false)
                    return
                }
                upgrade(conn, req, resp, options, identity, &buf)
                return
            case "/":
                guard req.method == "GET" else { refuse(req, .methodNotAllowed, conn, &buf); return }
                let page = HTTPResponse(status: .ok, headers: [("Content-Type", "text/html; charset=utf-8")],
                                        body: Array(homePage.utf8))
                guard answer(req, page, conn, &buf) else { return }
            case "/stats" where config.stats:
                guard req.method == "GET" else { refuse(req, .methodNotAllowed, conn, &buf); return }
                let body = Array(statsJSON().utf8)
                let resp = HTTPResponse(status: .ok, headers: [("Content-Type", "application/json")], body: body)
                guard answer(req, resp, conn, &buf) else { return }
            case "/metrics" where config.metrics:
                guard req.method == "GET" else { refuse(req, .methodNotAllowed, conn, &buf); return }
                let page = metrics.render(clientsOpen: clientsOpen.load(ordering: .relaxed), rooms: directory.loaded(),
                                          redisUp: directory.cluster.map { $0.up.load(ordering: .relaxed) })
                let resp = HTTPResponse(status: .ok, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                                        body: Array(page.utf8))
                guard answer(req, resp, conn, &buf) else { return }
            case "/debug/drop" where config.stats:
                // The server drops the client called `name` (as one too slow):
                // what a blinking connection looks like, to try clients' reconnection.
                guard req.method == "GET" else { refuse(req, .methodNotAllowed, conn, &buf); return }
                guard let name = req.query?.first(where: { $0.name == "name" })?.value else {
                    _ = answer(req, HTTPResponse(error: HTTPError(status: .badRequest, detail: "name= is wanted")), conn, &buf,
                               keepOpen: false)
                    return
                }
                let dropped = directory.drop(name)
                let resp = HTTPResponse(status: dropped ? .ok : .notFound, headers: [("Content-Type", "text/plain; charset=utf-8")],
                                        body: Array((dropped ? "dropped \(name)\n" : "nobody is called \(name)\n").utf8))
                guard answer(req, resp, conn, &buf) else { return }
            case "/debug/goroutines" where config.stats:
                guard req.method == "GET" else { refuse(req, .methodNotAllowed, conn, &buf); return }
                let resp = HTTPResponse(status: .ok, headers: [("Content-Type", "text/plain; charset=utf-8")],
                                        body: Array(GMP.dump().utf8))
                guard answer(req, resp, conn, &buf) else { return }
            default:
                refuse(req, .notFound, conn, &buf)
                return
            }
        }
    }

    /// Answers a request: first reads past its body (at most the parser's
    /// maxBodyBytes, within the read deadline) and throws it away, so that a
    /// body is never parsed as the next request, and a close after the
    /// response does not reset the connection under it (unread bytes make
    /// the kernel send a reset); then writes `resp`. Returns whether to read
    /// the next request (`keepOpen` and keep-alive); otherwise the
    /// connection is closed.
    private func answer(_ req: HTTPRequest, _ resp: HTTPResponse, _ conn: Conn, _ buf: inout [UInt8],
                        keepOpen: Bool = true) -> Bool {
        var left = req.contentLength
        let buffered = min(left, buf.count)
        buf.removeFirst(buffered)
        left -= buffered
        while left > 0 {
            guard let part = try? conn.read(max: min(left, 65536)) else { conn.close(); return false }
            left -= part.count
        }
        if !write(conn, resp.encode()) || !keepOpen || !req.keepAlive {
            conn.close()
            return false
        }
        return true
    }

    /// Answers `req` with an error status and closes the connection.
    private func refuse(_ req: HTTPRequest, _ status: HTTPStatus, _ conn: Conn, _ buf: inout [UInt8]) {
        _ = answer(req, HTTPResponse(error: HTTPError(status: status, detail: "")), conn, &buf, keepOpen: false)
    }

    /// With auth on: who the token in `options` says the client is, or the
    /// answer that refuses it (401: no token, or one that does not verify;
    /// 403: a room its token does not allow). Without auth: nil.
    private func authenticate(_ options: SocketOptions) -> Result<TokenClaims?, HTTPError> {
        guard let verifier else { return .success(nil) }
        func refuse(_ status: HTTPStatus, _ detail: String) -> Result<TokenClaims?, HTTPError> {
            .failure(HTTPError(status: status, detail: detail))
        }
        guard let token = options.token else { return refuse(.unauthorized, "a token is required (token= in the URL)") }
        let claims: TokenClaims
        do { claims = try verifier.verify(token, now: Date()) } catch {
            return refuse(.unauthorized, "the token is refused: \(error)")
        }
        guard options.room == ChatCommand.lobby || claims.mayJoin(options.room) else {
            return refuse(.forbidden, "the token does not let you join \(options.room)")
        }
        return .success(claims)
    }

    /// Writes `bytes` to a peer that has not upgraded yet, within writeWait:
    /// one that does not read (pipelining requests, say) fails the write
    /// instead of holding this G and the connection for ever.
    private func write(_ conn: Conn, _ bytes: [UInt8]) -> Bool {
        conn.setWriteDeadline(.after(.nanoseconds(config.writeWait)))
        return (try? conn.write(bytes)) != nil
    }

    /// `{"clients":…,"goroutines":…,"fds":…,"rss_bytes":…}`: what a load test
    /// checks to see that connections leave nothing behind.
    func statsJSON() -> String {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count).map { $0 - 1 } ?? -1
        let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? ""
        let pages = statm.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return "{\"clients\":\(clientsOpen.load(ordering: .relaxed)),\"goroutines\":\(GMP.stats.live),"
            + "\"fds\":\(fds),\"rss_bytes\":\(pages * Int(sysconf(Int32(_SC_PAGESIZE))))}"
    }

    /// Messages a catch-up reads from the log at a time (and holds while
    /// the socket takes them).
    static let catchUpPage = 256

    /// A WebSocket request that passed the handshake checks: joins the
    /// room, writes the 101, catches up from the log if `since` asks for
    /// more than the room's tail (Room.swift: the seam), then runs the client.
    private func upgrade(_ conn: Conn, _ req: HTTPRequest, _ resp: HTTPResponse, _ options: SocketOptions,
                         _ identity: TokenClaims?, _ buf: inout [UInt8]) {
        conn.setReadDeadline(nil)
        let ws = WebSocketConn(conn: conn, isServer: true, readLimit: config.maxMessage, leftover: buf)
        ws.writeTimeout = .nanoseconds(config.writeWait)
        let client = Client(ws: ws, peer: conn.remoteAddress, format: options.format, identity: identity)
        // A token's name is registered before the client joins a room (with
        // Redis a claim can take a round trip or a time-out, and nothing may
        // pile up in the client's buffer meanwhile), and let go again if it
        // never gets to run (runClient lets it go at its end).
        var running = false
        var refusedName: String?
        if let name = identity?.name, let line = directory.nick(client, name) {
            // Another connection has the name (the same user twice, most
            // likely): this one posts as the name all the same (its token
            // proves it), but private messages go to the other.
            client.name = name
            refusedName = "error: private messages to \(name) will not reach this connection (\(line.dropFirst("error: ".count)))"
        }
        defer { if !running && identity != nil { directory.forget(client) } }
        let room: Room
        switch directory.join(options.room, from: ConnectionLimits.address(of: conn.remoteAddress)) {
        case nil:
            conn.close() // stopping
            return
        case .failure(let refusal)?:
            let detail = String(refusal.description.dropFirst("error: ".count))
            _ = write(conn, HTTPResponse(error: HTTPError(status: .serviceUnavailable, detail: detail)).encode())
            conn.close()
            return
        case .success(let r)?:
            room = r
        }
        func giveUp() {
            room.leave(client)
            directory.leave(room)
            conn.close()
        }
        // Registered before the 101 goes out (unless the log must be read):
        // once a client has its handshake answer, it receives every later
        // message.
        var answer = room.join(client, since: options.since)
        guard answer != nil, write(conn, resp.encode()) else { giveUp(); return }
        if answer == .readLog {
            guard var since = options.since else { giveUp(); return } // (cannot be)
            while answer == .readLog {
                // The log after `since`, a page at a time as the socket takes
                // it: a client that does not read holds one page, not the log.
                var readAny = false
                var cursor: LogCursor?
                while true {
                    let entries: [Entry]
                    do throws(StoreError) {
                        entries = try room.readLog(after: since, limit: Self.catchUpPage, dataDir: directory.dataDir, cursor: &cursor)
                    } catch {
                        // Not a gap: the messages may well be there. The client
                        // comes back later with the same `since`.
                        log("catch-up of \(client.peer) in \(room.name): \(error)")
                        try? ws.close(code: CloseCode.tryAgainLater.rawValue, reason: "the history cannot be read now; try again later")
                        ws.linger()
                        giveUp()
                        return
                    }
                    do {
                        if let first = entries.first, first.seq > since + 1 {
                            try ws.sendEncoded(Prepared.gap(room: room.name, from: since + 1, to: first.seq - 1).frame(client.format)!)
                        }
                        var chunk = entries[...]
                        while !chunk.isEmpty {
                            try ws.sendEncoded(Prepared.messages(chunk.prefix(64), room: room.name).frame(client.format)!)
                            chunk = chunk.dropFirst(64)
                        }
                    } catch {
                        giveUp()
                        return
                    }
                    guard let newest = entries.last?.seq else { break }
                    since = newest
                    readAny = true
                    if entries.count < Self.catchUpPage { break }
                }
                // An empty read (retention took it all meanwhile): the hub
                // reports the gap and serves its tail instead.
                answer = room.join(client, since: since, mayReadLog: readAny)
                if answer == nil { giveUp(); return }
            }
        }
        if let refusedName { client.offer(.error(refusedName), metrics) }
        running = true
        metrics.bump(.connections)
        clientsOpen.add(1, ordering: .relaxed)
        runClient(client, room)
        clientsOpen.subtract(1, ordering: .relaxed)
    }

    private func runClient(_ client: Client, _ joined: Room) {
        let ws = client.ws
        let peer = client.peer
        let cfg = config
        log("connect \(peer)")
        let metrics = self.metrics
        go { [draining] in writePump(client, cfg, metrics, draining: draining) }
        // Read pump (this G): messages to the room until the client goes.
        ws.conn.setReadDeadline(.after(.nanoseconds(cfg.pongWait)))
        let conn = ws.conn // not `ws`: the closure is stored in ws, and would keep it alive
        ws.onPong = { _ in conn.setReadDeadline(.after(.nanoseconds(cfg.pongWait))) }
        var limiter = MessageRateLimiter(rate: cfg.rate, burst: cfg.burst, now: GMP.now)
        var joins = MessageRateLimiter(rate: Double(cfg.joinsPerMinute) / 60, burst: cfg.joinsPerMinute, now: GMP.now)
        var room = joined
        var inRoom = true
        reading: while true {
            let message: Message
            do {
                message = try ws.receive()
            } catch {
                log("disconnect \(peer): \(error)")
                break
            }
            switch limiter.take(now: GMP.now) {
            case .pass:
                guard case .text(let text) = message else { continue }
                let receivedAt = GMP.now
                metrics.bump(.messagesIn)
                guard let sent = ClientMessage(parsing: text, format: client.format) else {
                    client.offer(.refusal("error: a message's id must be 1 to 64 printable ASCII characters", id: nil), metrics)
                    continue
                }
                let line = cleanMessage(sent.text)
                if let cmd = ChatCommand(parsing: line) {
                    guard let next = command(cmd, client, room, &joins) else { // stopping, out of every room
                        inRoom = false
                        break reading
                    }
                    room = next
                } else {
                    room.post(client, line, id: sent.id, receivedAt: receivedAt)
                }
            case .refuse(let first):
                // Straight back from this G (writes are serialized by the
                // connection): the room never sees a flood. A JSON client
                // gets an answer for every message (naming it by its id); a
                // text client one line a run (gorilla's protocol has no answers).
                if first || client.format == .json {
                    let line = "error: too many messages: at most \(formatRate(cfg.rate)) a second (\(cfg.burst) at once)"
                    let id = client.format == .json ? message.textValue.flatMap { ClientMessage(parsing: $0, format: .json)?.id } : nil
                    try? ws.sendEncoded(Prepared.refusal(line, id: id).frame(client.format)!)
                }
            case .close:
                log("disconnect \(peer): message rate limit")
                try? ws.close(code: CloseCode.policyViolation.rawValue, reason: "message rate limit")
                break reading
            }
        }
        // A close frame went out (an answer, a failure, 1008): let it reach
        // the peer before the write pump closes the socket.
        if ws.closeFrameSent { ws.linger() }
        if inRoom {
            room.leave(client)
            directory.leave(room)
        }
        directory.forget(client)
        client.kick() // the write pump says goodbye (1001) if it can, and closes
    }

    /// Runs a command from `client`, now in `room`; the room it is in after
    /// (nil: the server is stopping and it is in none). Replies go to the client's buffer.
    private func command(_ cmd: ChatCommand, _ client: Client, _ room: Room, _ joins: inout MessageRateLimiter) -> Room? {
        func reply(_ m: Prepared) { client.offer(m, metrics) }
        switch cmd {
        case .who:
            guard var all = room.presence() else { break } // (the room has ended: the server is stopping)
            if let node = directory.cluster { all = node.presence(of: room.name).reduce(all, +) } // every node's members
            reply(.who(room: room.name, names: all.names, anonymous: all.anonymous))
        case .join(let name) where name == room.name:
            reply(.error("error: you are in \(room.name) already"))
        case .leave where room.name == ChatCommand.lobby:
            reply(.error("error: you are in \(room.name) already"))
        case .join(let name):
            return move(client, from: room, to: name, &joins)
        case .leave:
            return move(client, from: room, to: ChatCommand.lobby, &joins)
        case .rooms:
            if let node = directory.cluster { // counts from every node
                reply(.rooms(node.roomsAcrossNodes(here: directory.loaded())))
            } else {
                reply(.rooms(directory.list()))
            }
        case .nick where client.identity != nil:
            reply(.error("error: your name is the one your token gives (\(client.identity!.name)); /nick is off"))
        case .nick(let name):
            reply(directory.nick(client, name).map { Prepared.error($0) } ?? .info("you are now \(name)"))
        case .msg(let to, let text):
            directory.msg(from: client, to: to, text: text)
        case .help:
            reply(.info(ChatCommand.helpLine))
        case .usage(let line):
            reply(.error(line))
        case .unknown(let word):
            reply(.error("error: unknown command \(word) (try /help)"))
        }
        return room
    }

    /// `/join` and `/leave`: into the room `name` (its history comes with
    /// the "joined" line), out of `room`, within the joins a minute.
    private func move(_ client: Client, from room: Room, to name: String, _ joins: inout MessageRateLimiter) -> Room? {
        if let id = client.identity, name != ChatCommand.lobby, !id.mayJoin(name) {
            client.offer(.error("error: your token does not let you join \(name)"), metrics)
            return room
        }
        guard case .pass = joins.take(now: GMP.now) else {
            client.offer(.error("error: too many joins: at most \(config.joinsPerMinute) a minute"), metrics)
            return room
        }
        switch directory.join(name, from: ConnectionLimits.address(of: client.peer)) {
        case nil:
            return room // stopping: the read pump ends when the connection does
        case .failure(let refusal)?:
            client.offer(.error(refusal.description), metrics)
            return room
        case .success(let next)?:
            room.leave(client)
            directory.leave(room)
            guard next.join(client, since: nil) != nil else {
                directory.leave(next)
                return nil
            }
            return next
        }
    }
}

/// What `/ws?room=R&since=SEQ&format=F` asks for.
struct SocketOptions: Equatable {
    var room = ChatCommand.lobby
    /// The newest message the client has of `room` (nil: it gets the last `history`).
    var since: UInt64?
    var format = ChatFormat.json
    /// The client's token (with auth on: ChatConfig.authSecret).
    var token: String?

    /// The options of a query, or the 400 to answer; unknown fields are ignored.
    static func parse(_ query: [(name: String, value: String)]?) -> Result<SocketOptions, HTTPError> {
        func bad(_ detail: String) -> Result<SocketOptions, HTTPError> {
            .failure(HTTPError(status: .badRequest, detail: detail))
        }
        guard let query else { return bad("the query is not well formed") }
        var o = SocketOptions()
        for (name, value) in query {
            switch name {
            case "room":
                guard ChatCommand.isRoomName(value) else { return bad("room: \(ChatCommand.roomNameRule)") }
                o.room = value
            case "since":
                guard let n = UInt64(value) else { return bad("since: a message number (0 or more) is wanted") }
                o.since = n
            case "token":
                o.token = value
            case "format":
                guard let f = ChatFormat(rawValue: value) else { return bad("format: json or text") }
                o.format = f
            default:
                continue
            }
        }
        return .success(o)
    }
}

/// A rate as a user reads it: "20", "0.5".
func formatRate(_ r: Double) -> String {
    r == r.rounded() && abs(r) < 1e15 ? String(Int64(r)) : String(r)
}

/// Write pump: queued lines (joined by newlines into frames of up to 64 KiB
/// when several wait, all written at once), pings every `pingPeriod`; once the client is kicked (dropped as
/// slow, gone, or the server stops), what is queued, then close 1001. Once
/// the server drains (`draining` closed), what is queued then, then close
/// 1012, and it waits for its kick (the client answered, went, or the server
/// stopped), dropping what comes meanwhile: the client catches up with
/// `since` where it reconnects. Each
/// write must finish within writeWait (`ws.writeTimeout`, set at the
/// upgrade), or the pump closes the connection. A write refused because the
/// read pump has sent a close frame (its answer, a protocol failure, 1008)
/// does not close the connection: the read pump lingers so that its frame
/// reaches the peer, and closing under it would reset the connection and
/// could destroy the frame; the pump waits for its kick (after the linger).
///
/// The pings come from one ticker per client (gorilla's), so a select that
/// waits does not make a timer.
func writePump(_ c: Client, _ cfg: ChatConfig, _ metrics: ChatMetrics, draining: Chan<Void>) {
    let ticker = Ticker(every: .nanoseconds(cfg.pingPeriod))
    defer {
        ticker.stop()
        c.ws.conn.close()
    }
    /// Writes `first` and what else is queued, at most `more` items (about
    /// 1 MiB at most), in one write: lines that
    /// are alone in their piece are joined into frames of up to a piece's
    /// size (a prepared frame is sent as it is when nothing joins it), and
    /// the pieces of a larger batch go as their own frames. How many items
    /// it took besides `first`; nil if the write failed.
    func flush(_ first: Prepared, more: Int = .max) -> Int? {
        // What is queued, up to about 1 MiB a write (the rest goes next).
        var queued = [first]
        var size = first.frame(c.format)!.count
        while size < 1 << 20, queued.count <= more, case .value(let m) = c.send.tryReceive() {
            queued.append(m)
            size += m.frame(c.format)!.count
        }
        var wire: [UInt8] = []
        var joined: [UInt8] = []
        var alone: Prepared? // the one item in `joined`, if only one: its frame is ready
        func endFrame() {
            if let alone { wire += alone.frame(c.format)! } else if !joined.isEmpty {
                wire += Frame(opcode: .text, payload: joined).encode() // a server's: unmasked
            }
            joined = []
            alone = nil
        }
        for m in queued {
            let pieces = m.payload(c.format)! // (offer queues only what has this format)
            if pieces.count > 1 || pieces[0].count >= Prepared.pieceLimit {
                endFrame()
                wire += m.frame(c.format)!
                continue
            }
            if !joined.isEmpty && joined.count + 1 + pieces[0].count > Prepared.pieceLimit { endFrame() }
            if joined.isEmpty {
                joined = pieces[0]
                alone = m
            } else {
                joined.append(UInt8(ascii: "\n"))
                joined += pieces[0]
                alone = nil
            }
        }
        endFrame()
        let ok = (try? c.ws.sendEncoded(wire)) != nil
        if ok {
            metrics.bump(.messagesOut, by: queued.reduce(0) { $0 + $1.lines })
            metrics.bump(.bytesOut, by: wire.count)
        }
        for m in queued { m.release(metrics) }
        return ok ? queued.count - 1 : nil
    }
    // The cases are built once: the pump waits on them for every message.
    let set = SelectSet()
    let queued = set.receive(c.send), pinged = set.receive(ticker.channel), kicked = set.receive(c.kicked)
    let drain = set.receive(draining)
    var open = true
    while open {
        switch set.wait() {
        case queued:
            if case .value(let first) = set.value(of: queued) { open = flush(first) != nil }
        case pinged:
            open = (try? c.ws.send(Frame(opcode: .ping, payload: []))) != nil
        case kicked:
            if case .value(let first) = c.send.tryReceive() { _ = flush(first) }
            try? c.ws.close(code: CloseCode.goingAway.rawValue)
            return
        case drain:
            // What is queued now (not what keeps coming: a busy room would
            // hold the close back), then 1012.
            var left = c.send.count, flushed = true
            while flushed, left > 0, case .value(let first) = c.send.tryReceive() {
                if let more = flush(first, more: left - 1) { left -= 1 + more } else { flushed = false }
            }
            if !flushed { // (as any failed write, below)
                open = false
                break
            }
            guard (try? c.ws.close(code: CloseCode.serviceRestart.rawValue)) != nil else { return }
            // Until the kick, what comes is dropped (not left to fill the
            // buffer: that would drop the client as slow).
            var waiting = true
            while waiting {
                select { s in
                    if let r = s.receive(c.send), case .value(let m) = r { m.release(metrics) }
                    if s.receive(c.kicked) != nil { waiting = false }
                }
            }
            return
        default:
            break
        }
    }
    // A failed write. If the read pump's close frame is what refused it,
    // the read pump is lingering: it kicks once done (runClient always ends
    // with a kick, within the linger's time-out).
    if c.ws.closeFrameSent { _ = c.kicked.receive() }
}

/// A chat message as the room gets it (gorilla: newlines become spaces, the
/// surrounding space is trimmed). Compared as Unicode scalars, not
/// Characters: "\r\n" is one Character, equal to neither "\r" nor "\n",
/// and would survive. Every scalar a page or a terminal may show as a line
/// break becomes a space (LF, VT, FF, CR, NEL, LINE and PARAGRAPH
/// SEPARATOR), so one message is one line and cannot forge another
/// client's "name: text" line.
public func cleanMessage(_ text: String) -> String {
    var out = String.UnicodeScalarView()
    for u in text.unicodeScalars {
        switch u.value {
        case 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029: out.append(" ")
        default: out.append(u)
        }
    }
    return String(out).trimmingWhitespace
}

extension String {
    var trimmingWhitespace: String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}

extension Message {
    /// A text message's text (nil for binary).
    fileprivate var textValue: String? {
        if case .text(let t) = self { return t }
        return nil
    }
}
