import Channels
import Foundation
import GMP
import Glibc
import Redis

// The directory G: which rooms are loaded, who is in each, and the names
// taken by `/nick`. Read pumps ask it by request, each with a reply channel
// of one slot, so it never waits on a client; rooms never ask it anything.
// It does wait on storage: loading a room reads its log (the disk, or with
// Redis the stream's tail: at most the client's time-out, 5 s, when Redis
// does not answer, and nothing within the back-off after a failed dial),
// and unloading one waits for its last sync.
//
// It counts a room's members itself, from the joins it grants and the
// leaves it is told of. A room whose count falls to 0 is ended (`closing`)
// and unloaded at once if it has no history; one with history stays loaded,
// idle, for `idleUnload` (a client that blinks, or one that joins and leaves
// in a loop, costs no reload and no sync), and a sweep every 10 s unloads
// the idle ones after that. Unloading waits until the room's log G has
// synced and closed its files (`finished`; the hub answers what the log G
// still commits first), so a room loaded again never has two writers. With
// history in memory (`--memory`) an idle room's tail is all its history: it
// stays, but idle rooms past `maxRooms` are dropped, the longest idle first.
// Rooms with members are bounded by `maxRooms` (the lobby does not count);
// idle rooms with a log (disk or Redis) by `maxIdleRooms`: one more unloads
// the longest idle first, so rooms that clients open and leave in a loop
// cannot pile up their Gs and files. An address may load `loadsPerMinute`
// rooms that were not loaded a minute (a join through `/ws?room=` on a fresh
// connection counts as much as a `/join`). Rooms on disk cost a directory
// each, and a read of their logs at start; `/rooms` lists them with 0 members.
//
// Names: on one node (no Redis) the directory G keeps them (`names`) and
// delivers `/msg`. With Redis a name is one across the cluster, claimed in
// Redis, and the directory G has no part in it: `nick`, `forget`, `msg` and
// `drop` below call the node's `ClusterNames` in the caller's G (the read
// pump, which may block on Redis for its own command), so one client's claim
// never holds up other clients' joins behind Redis (ClusterNames.swift).
//
// On start (`openStore`) the data directory is created if need be, proved
// writable, and every room's log in it is read back once: a torn or corrupt
// tail is cut off there, and reported in the server's log.

/// Where and how rooms keep their history.
struct StoreSettings: Sendable {
    /// The data directory (nil: history in memory only).
    var dataDir: String?
    /// Messages kept per room on disk at least.
    var retain = 10_000
    /// Rooms with members at once, besides the lobby.
    var maxRooms = 1_000
    /// Idle rooms (no members) kept loaded with their log, on disk or in
    /// Redis: loading one more unloads the longest idle first.
    var maxIdleRooms = 100
    /// Rooms that were not loaded one address may have loaded in a minute,
    /// this many at once (0: no limit, as behind a reverse proxy).
    var loadsPerMinute = 30
}

final class Directory: @unchecked Sendable {
    // @unchecked: the `let`s are channels and settings; the state below is
    // owned by the directory's G (`run`).
    enum Request: Sendable {
        case join(String, from: String?, Chan<Result<Room, RoomRefusal>>)
        case leave(Room)
        case rooms(Chan<[(name: String, members: Int)]>)
        case nick(Client, String, Chan<String?>)
        case forget(Client)
        case msg(from: Client, to: String, text: String)
        case drop(String, Chan<Bool>)
        case loaded(Chan<[(name: String, members: Int)]>)
    }

    /// A loaded room: members counted by the directory, and since when it has none.
    private struct Loaded {
        let room: Room
        var count: Int
        var idleSince: Int64 = 0
    }

    /// How long a room with history and no members stays loaded.
    static let idleUnload: Int64 = 30_000_000_000

    private let requests = Chan<Request>()
    private let store: StoreSettings
    /// The data directory (nil: history in memory, or in Redis).
    var dataDir: String? { store.dataDir }
    private let settings: RoomSettings
    /// Closed when the directory has ended and every room has synced.
    let finished = Chan<Void>()
    private var rooms: [String: Loaded] = [:]
    private var onDisk: Set<String>
    /// `onDisk`, sorted (for `/rooms`), rebuilt when it changes.
    private var onDiskSorted: [String]?
    /// The names taken by `/nick` (without Redis: see the top of the file).
    private var names: [String: Client] = [:]
    /// Per address: its room loads (a token bucket) and when it last loaded one.
    private var loadsBy: [String: (limiter: MessageRateLimiter, last: Int64)] = [:]

    /// With Redis: this node's connections (history and broadcast go through Redis).
    let cluster: ClusterNode?

    init(store: StoreSettings, settings: RoomSettings, onDisk: Set<String>, cluster: ClusterNode? = nil) {
        self.store = store
        self.settings = settings
        self.onDisk = onDisk
        self.cluster = cluster
    }

    /// Prepares `settings.dataDir` (see the top of this file): the names of
    /// the rooms found there, with every log checked and cut back to its
    /// last whole record.
    /// - Throws: why the directory cannot be used.
    static func openStore(_ store: StoreSettings, policy: FsyncPolicy) throws(StoreError) -> Set<String> {
        guard let dir = store.dataDir else { return [] }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw StoreError("cannot create the data directory \(dir): \(error.localizedDescription)")
        }
        let probe = dir + "/.write-test"
        let fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw StoreError("cannot write in the data directory \(dir)", errno: errno) }
        let wrote = write(fd, "ok", 2), e = errno
        close(fd)
        unlink(probe)
        if wrote != 2 { throw StoreError("cannot write in the data directory \(dir)", errno: wrote < 0 ? e : ENOSPC) }
        var found: Set<String> = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where ChatCommand.isRoomName(name) {
            let (_, _, notes) = try RoomLog.open(dir: dir + "/" + name, policy: policy, retain: store.retain, tailLength: 0)
            for n in notes { log("history: \(n)") }
            found.insert(name)
        }
        return found
    }

    // MARK: - Asking it (read pumps)

    private func ask<T>(_ make: (Chan<T>) -> Request) -> T? {
        let reply = Chan<T>(capacity: 1)
        guard tell(make(reply)) else { return nil }
        return reply.receive().value
    }

    private func tell(_ r: Request) -> Bool {
        requests.send(r, unless: settings.quit)
    }

    /// The room `name`, loaded if need be, with the caller counted in; nil
    /// if the server is stopping. `from`: the caller's address (IP), whose
    /// loads of rooms that were not loaded are counted.
    func join(_ name: String, from: String?) -> Result<Room, RoomRefusal>? { ask { .join(name, from: from, $0) } }

    /// Uncounts the caller from `room` (after it left the room's hub).
    func leave(_ room: Room) { _ = tell(.leave(room)) }

    /// Rooms and their member counts, the fullest first (at most 100),
    /// rooms on disk included.
    func list() -> [(name: String, members: Int)] { ask { .rooms($0) } ?? [] }

    /// Every loaded room and its members, the fullest first (for `/metrics`).
    func loaded() -> [(name: String, members: Int)] { ask { .loaded($0) } ?? [] }

    /// Gives `client` the name `name`; the error line if it is taken (or,
    /// with Redis, cannot be claimed now: the client keeps its name). With
    /// Redis it blocks the caller for a round trip to Redis.
    func nick(_ client: Client, _ name: String) -> String? {
        if let names = cluster?.names { return names.claim(name, for: client, metrics: settings.metrics) }
        return ask { .nick(client, name, $0) } ?? nil
    }

    /// Frees `client`'s name (it has gone).
    func forget(_ client: Client) {
        if let names = cluster?.names { return names.forget(client) }
        _ = tell(.forget(client))
    }

    /// Makes the server drop the client called `name` (close 1001), as it
    /// drops a slow one: whether there was one (`/debug/drop`). With
    /// Redis, one on this node.
    func drop(_ name: String) -> Bool {
        if let names = cluster?.names { return names.holder(of: name)?.kick() != nil }
        return ask { .drop(name, $0) } ?? false
    }

    /// A private message from `from` to the client called `to` (with Redis,
    /// on any node: a round trip or two to Redis in the caller's G); an
    /// error line to `from` if there is none.
    func msg(from: Client, to: String, text: String) {
        if let names = cluster?.names {
            if let line = names.send(from: from, to: to, text: text) { from.offer(.error(line), settings.metrics) }
            return
        }
        _ = tell(.msg(from: from, to: to, text: text))
    }

    // MARK: - The directory's G

    /// The loop; run it in its own G. Ends when the server stops, once
    /// every room has ended and synced (then `finished` is closed).
    func run() {
        let sweeper = Ticker(every: .seconds(10))
        var running = true
        while running {
            select { s in
                if let r = s.receive(requests), case .value(let req) = r { handle(req) }
                if s.receive(sweeper.channel) != nil { sweep() }
                if s.receive(settings.quit) != nil { running = false }
            }
        }
        sweeper.stop()
        for entry in rooms.values { _ = entry.room.finished.receive() } // the hubs saw quit too
        finished.close()
    }

    /// Rooms with members, the lobby aside.
    private var activeRooms: Int { rooms.values.filter { $0.count > 0 && $0.room.name != ChatCommand.lobby }.count }

    /// Ends and unloads `name` (no members): waits until its log is synced and closed.
    private func unload(_ name: String) {
        guard let entry = rooms.removeValue(forKey: name) else { return }
        settings.metrics.roomsLoaded.store(rooms.count, ordering: .relaxed)
        cluster?.remove(entry.room)
        entry.room.closing.close()
        _ = entry.room.finished.receive() // synced and closed: it may be loaded again
        // (Read after the log G has ended: a post it took as the room emptied counts.)
        if entry.room.logged && entry.room.durable.load(ordering: .acquiring) > 0 && !onDisk.contains(name) {
            onDisk.insert(name)
            onDiskSorted = nil
        }
    }

    /// Unloads the rooms idle for `idleUnload`; with history in memory,
    /// only the idle rooms past `maxRooms`, the longest idle first. Forgets
    /// the addresses that loaded no room for a minute (their buckets are full).
    private func sweep() {
        let now = GMP.now
        loadsBy = loadsBy.filter { now - $0.value.last < 60_000_000_000 }
        let idle = rooms.filter { $0.value.count == 0 }.sorted { $0.value.idleSince < $1.value.idleSince }
        if store.dataDir != nil || cluster != nil {
            for (name, entry) in idle where now - entry.idleSince >= Self.idleUnload { unload(name) }
        } else {
            for (name, _) in idle.prefix(max(0, idle.count - store.maxRooms)) { unload(name) }
        }
    }

    /// With a log (disk or Redis): unloads the longest idle rooms until at
    /// most `keeping` are idle.
    private func unloadIdle(keeping: Int) {
        guard store.dataDir != nil || cluster != nil else { return }
        var idle = rooms.filter { $0.value.count == 0 }.sorted { $0.value.idleSince < $1.value.idleSince }[...]
        while idle.count > max(keeping, 0), let (name, _) = idle.popFirst() { unload(name) }
    }

    private func handle(_ req: Request) {
        let metrics = settings.metrics
        switch req {
        case .join(let name, let from, let reply):
            let needsPlace = name != ChatCommand.lobby && (rooms[name]?.count ?? 0) == 0
            if needsPlace && activeRooms >= store.maxRooms {
                reply.send(.failure(.tooManyRooms(store.maxRooms)))
                return
            }
            if let entry = rooms[name] {
                rooms[name]!.count = entry.count + 1
                reply.send(.success(entry.room))
                return
            }
            // A load: counted against the address, and an idle room makes
            // room for it if too many are loaded (each holds its Gs and a file).
            if let from, store.loadsPerMinute > 0, name != ChatCommand.lobby {
                let now = GMP.now
                var bucket = loadsBy[from]?.limiter
                    ?? MessageRateLimiter(rate: Double(store.loadsPerMinute) / 60, burst: store.loadsPerMinute, now: now)
                let verdict = bucket.take(now: now)
                loadsBy[from] = (bucket, now)
                guard verdict == .pass else {
                    reply.send(.failure(.tooManyLoads(store.loadsPerMinute)))
                    return
                }
            }
            unloadIdle(keeping: store.maxIdleRooms - 1)
            let room: Room
            if let node = cluster {
                // The tail first, then the subscription: what is published
                // in between, the room reads once Redis confirms it (Room.swift).
                let roomStore = node.store(name)
                do {
                    let c = try node.client.connection()
                    let tail = try roomStore.last(settings.tailLength, on: c)
                    room = Room(name: name, settings: settings, tail: tail, log: nil, cluster: (roomStore, node))
                } catch {
                    log("history of \(name): \(error)")
                    reply.send(.failure(.redis(error)))
                    return
                }
                node.add(room)
            } else if let dir = store.dataDir {
                do {
                    let (roomLog, tail, notes) = try RoomLog.open(dir: dir + "/" + name, policy: settings.policy,
                                                                  retain: store.retain, tailLength: settings.tailLength)
                    for n in notes { log("history: \(n)") }
                    room = Room(name: name, settings: settings, tail: tail, log: roomLog)
                } catch {
                    log("history of \(name): \(error)")
                    reply.send(.failure(.store(error)))
                    return
                }
            } else {
                room = Room(name: name, settings: settings, tail: [], log: nil)
            }
            room.start()
            rooms[name] = Loaded(room: room, count: 1)
            metrics.roomsLoaded.store(rooms.count, ordering: .relaxed)
            reply.send(.success(room))
        case .leave(let room):
            guard let entry = rooms[room.name], entry.room === room, entry.count > 0 else { return }
            rooms[room.name]!.count = entry.count - 1
            guard entry.count == 1 else { return }
            if room.newest.load(ordering: .relaxed) > 0 { // history: idle for a while (`sweep`)
                rooms[room.name]!.idleSince = GMP.now
                unloadIdle(keeping: store.maxIdleRooms)
            } else {
                unload(room.name)
            }
        case .rooms(let reply):
            // The loaded rooms by members, then the others on disk by name.
            var list = loadedList()
            if list.count < 100 {
                if onDiskSorted == nil { onDiskSorted = onDisk.sorted() }
                for name in onDiskSorted! where rooms[name] == nil {
                    list.append((name, 0))
                    if list.count == 100 { break }
                }
            }
            reply.send(Array(list.prefix(100)))
        case .loaded(let reply):
            reply.send(loadedList())
        case .nick(let client, let name, let reply):
            if let holder = names[name], holder !== client {
                reply.send("error: the name \(name) is taken")
                return
            }
            if let old = client.name, names[old] === client { names.removeValue(forKey: old) }
            names[name] = client
            client.name = name
            reply.send(nil)
        case .forget(let client):
            if let name = client.name, names[name] === client { names.removeValue(forKey: name) }
        case .msg(let from, let to, let text):
            guard let target = names[to] else {
                from.offer(.error("error: nobody is called \(to)"), metrics)
                return
            }
            target.offer(.privateMessage(from: from.name ?? "someone", text: text), metrics)
        case .drop(let name, let reply):
            // (Kicked, the client's read pump leaves as when it goes.)
            names[name]?.kick()
            reply.send(names[name] != nil)
        }
    }
}

extension Directory {
    /// The loaded rooms and their members, the fullest first, then by name.
    private func loadedList() -> [(name: String, members: Int)] {
        fullestFirst(rooms.map { (name: $0.key, members: $0.value.room.members.load(ordering: .relaxed)) })
    }
}

/// Rooms and their member counts as `/rooms` lists them: the fullest first, then by name.
func fullestFirst(_ rooms: [(name: String, members: Int)]) -> [(name: String, members: Int)] {
    rooms.sorted { $0.members != $1.members ? $0.members > $1.members : $0.name < $1.name }
}

/// Why a join was refused.
enum RoomRefusal: Error, CustomStringConvertible {
    case tooManyRooms(Int)
    case tooManyLoads(Int)
    case store(StoreError)
    case redis(RedisError)

    var description: String {
        switch self {
        case .tooManyRooms(let n): "error: too many rooms (at most \(n)); join one that exists (/rooms)"
        case .tooManyLoads(let n): "error: too many rooms opened from your address (at most \(n) a minute); try again later"
        case .store(let e): "error: the room's history cannot be opened (\(e))"
        case .redis(let e): "error: the room cannot be opened: \(e)"
        }
    }
}
