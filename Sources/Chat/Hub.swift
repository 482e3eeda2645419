import Channels
import GMP
import Synchronization
import WebSocket

// The chat hub of gorilla/websocket's chat example: one G owns the set of
// clients and selects over register, unregister and broadcast. Every
// broadcast is encoded into a frame once and the same bytes go to every
// client's write pump (a prepared message); a client whose send buffer (256)
// is full is dropped without slowing the others.
//
// A client's `send` channel is closed by the hub only, in one place (`drop`),
// when it leaves the set; the hub sends only to members. So a dropped client
// whose read pump still hands in messages (it has not noticed yet) is
// ignored: replying to it would send on a closed channel, which traps and
// would take the whole server down. Pumps talk to the hub through `join`,
// `leave` and `post`, which give up once the hub has stopped (`quit`), so no
// G waits for ever on a hub that is gone.

/// A message as the write pumps get it: its payload, and its frame encoded once.
final class Prepared: Sendable {
    let payload: [UInt8]
    let frame: [UInt8]

    init(_ payload: [UInt8]) {
        self.payload = payload
        self.frame = Frame(opcode: .text, payload: payload).encode()
    }
}

/// One connected client: its socket and its send buffer.
final class Client: @unchecked Sendable {
    // @unchecked: `ws` is read by one G, the read pump (its contract), and
    // written by the write pump and the read pump (frames are serialized);
    // `send` is a channel; `name` is read and written by the hub G only.
    let ws: WebSocketConn
    let send = Chan<Prepared>(capacity: 256)
    let peer: String
    /// Set by `/nick`; owned by the hub G.
    var name: String?

    init(ws: WebSocketConn, peer: String) {
        self.ws = ws
        self.peer = peer
    }
}

/// The hub G's channels.
final class Hub: Sendable {
    let register = Chan<Client>()
    let unregister = Chan<Client>()
    /// Messages from clients: broadcast, or a command if they start with "/".
    let broadcast = Chan<(Client, String)>()
    /// Closed to shut down: the hub sends close 1001 to every client.
    let quit = Chan<Void>()
    /// The number of registered clients (written by the hub G, read by `/stats`).
    let clientCount = Atomic<Int>(0)
    /// The server's counters (`/metrics`).
    let metrics = ChatMetrics()

    /// Registers `c`; false if the hub has stopped (then nobody will close
    /// `c.send`, and the caller should close the connection).
    func join(_ c: Client) -> Bool {
        var joined = false
        select { s in
            if s.send(register, c) { joined = true }
            if s.receive(quit) != nil { joined = false }
        }
        return joined
    }

    /// Unregisters `c` (nothing if the hub dropped it already or has stopped).
    func leave(_ c: Client) {
        select { s in
            if s.send(unregister, c) {}
            if s.receive(quit) != nil {}
        }
    }

    /// Hands a message from `c` to the hub (dropped if the hub has stopped).
    func post(_ c: Client, _ text: String) {
        select { s in
            if s.send(broadcast, (c, text)) {}
            if s.receive(quit) != nil {}
        }
    }

    /// The hub's loop; run it in its own G.
    func run() {
        var clients: [ObjectIdentifier: Client] = [:]
        var running = true
        while running {
            select { s in
                if let r = s.receive(register), case .value(let c) = r {
                    clients[ObjectIdentifier(c)] = c
                    self.clientCount.store(clients.count, ordering: .relaxed)
                }
                if let r = s.receive(unregister), case .value(let c) = r {
                    self.drop(c, &clients)
                }
                if let r = s.receive(broadcast), case .value(let (from, text)) = r {
                    self.handle(text, from: from, &clients)
                }
                if s.receive(quit) != nil {
                    running = false
                }
            }
        }
        for c in clients.values { c.send.close() } // write pumps send close 1001 and stop
    }

    /// Removes `c` and closes its send channel, if it is still a client: the
    /// only place a send channel is closed, so each is closed once and no
    /// message is sent to it afterwards (the hub sends to members only).
    private func drop(_ c: Client, _ clients: inout [ObjectIdentifier: Client]) {
        guard clients.removeValue(forKey: ObjectIdentifier(c)) != nil else { return }
        c.send.close()
        clientCount.store(clients.count, ordering: .relaxed)
    }

    /// Queues `m` for the client `c`; a client whose buffer is full is dropped
    /// (it does not read fast enough), not waited for.
    private func deliver(_ m: Prepared, to c: Client, _ clients: inout [ObjectIdentifier: Client]) {
        guard clients[ObjectIdentifier(c)] != nil else { return }
        if !c.send.trySend(m) {
            metrics.bump(.slowDrops)
            drop(c, &clients)
            log("dropped slow client \(c.peer)")
        }
    }

    /// A message from `from`: a broadcast, or a command if it starts with "/".
    /// Ignored if `from` is no longer a client (dropped as slow while its
    /// read pump was handing this in).
    private func handle(_ text: String, from: Client, _ clients: inout [ObjectIdentifier: Client]) {
        guard clients[ObjectIdentifier(from)] != nil else { return }
        if let cmd = ChatCommand(parsing: text) {
            command(cmd, from: from, &clients)
            return
        }
        let line = from.name.map { "\($0): \(text)" } ?? text
        let m = Prepared(Array(line.utf8))
        for c in clients.values { deliver(m, to: c, &clients) } // iterates a copy: drops are safe
    }

    /// Runs a chat command from `from`, a client (hub G only). Replies go to
    /// the sender alone (or, for /msg, to the addressee alone); a reply that
    /// finds a full buffer drops that client, as a broadcast would.
    private func command(_ cmd: ChatCommand, from: Client, _ clients: inout [ObjectIdentifier: Client]) {
        func reply(_ c: Client, _ line: String) { deliver(Prepared(Array(line.utf8)), to: c, &clients) }
        switch cmd {
        case .nick(let name):
            if clients.values.contains(where: { $0 !== from && $0.name == name }) {
                reply(from, "error: the name \(name) is taken")
                return
            }
            from.name = name
            reply(from, "you are now \(name)")
        case .who:
            let names = clients.values.compactMap(\.name).sorted()
            let anonymous = clients.values.filter { $0.name == nil }.count
            reply(from, "online: " + (names + (anonymous > 0 ? ["\(anonymous) without a name"] : [])).joined(separator: ", "))
        case .msg(let name, let text):
            guard let to = clients.values.first(where: { $0.name == name }) else {
                reply(from, "error: nobody is called \(name)")
                return
            }
            reply(to, "(private) \(from.name ?? "someone"): \(text)")
        case .help:
            reply(from, "commands: /nick NAME, /who, /msg NAME TEXT, /help")
        case .usage(let line):
            reply(from, line)
        case .unknown(let word):
            reply(from, "error: unknown command \(word) (try /help)")
        }
    }
}
