import Channels
import GMP
import Synchronization
import WebSocket

// The chat hub of gorilla/websocket's chat example: one G owns the set of
// clients and selects over register, unregister and broadcast. Every
// broadcast is encoded into a frame once and the same bytes go to every
// client's write pump (a prepared message); a client whose send buffer (256)
// is full is dropped without slowing the others.

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
    // @unchecked: `ws` is used by one reader and one writer G (its contract);
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
                    if clients.removeValue(forKey: ObjectIdentifier(c)) != nil {
                        c.send.close()
                        self.clientCount.store(clients.count, ordering: .relaxed)
                    }
                }
                if let r = s.receive(broadcast), case .value(let (from, text)) = r {
                    if text.hasPrefix("/") {
                        command(text, from: from, clients: clients)
                    } else {
                        let line = from.name.map { "\($0): \(text)" } ?? text
                        let m = Prepared(Array(line.utf8))
                        for (id, c) in clients where !c.send.trySend(m) {
                            // Buffer full: drop this client, not the message for the others.
                            c.send.close()
                            clients.removeValue(forKey: id)
                            log("dropped slow client \(c.peer)")
                            self.clientCount.store(clients.count, ordering: .relaxed)
                        }
                    }
                }
                if s.receive(quit) != nil {
                    running = false
                }
            }
        }
        for c in clients.values { c.send.close() } // write pumps send close 1001 and stop
    }

    /// Runs a chat command from `from` (hub G only). Replies go to the sender
    /// alone (or, for /msg, to the addressee alone).
    private func command(_ text: String, from: Client, clients: [ObjectIdentifier: Client]) {
        let parts = text.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true).map(String.init)
        func reply(_ c: Client, _ line: String) { _ = c.send.trySend(Prepared(Array(line.utf8))) }
        switch parts[0] {
        case "/nick":
            guard parts.count == 2, parts[1].count <= 32, !parts[1].contains(":") else {
                reply(from, "error: usage: /nick NAME (one word, at most 32 characters)")
                return
            }
            if clients.values.contains(where: { $0 !== from && $0.name == parts[1] }) {
                reply(from, "error: the name \(parts[1]) is taken")
                return
            }
            from.name = parts[1]
            reply(from, "you are now \(parts[1])")
        case "/who":
            let names = clients.values.compactMap(\.name).sorted()
            let anonymous = clients.values.filter { $0.name == nil }.count
            reply(from, "online: " + (names + (anonymous > 0 ? ["\(anonymous) without a name"] : [])).joined(separator: ", "))
        case "/msg":
            guard parts.count == 3 else {
                reply(from, "error: usage: /msg NAME TEXT")
                return
            }
            guard let to = clients.values.first(where: { $0.name == parts[1] }) else {
                reply(from, "error: nobody is called \(parts[1])")
                return
            }
            reply(to, "(private) \(from.name ?? "someone"): \(parts[2])")
        case "/help":
            reply(from, "commands: /nick NAME, /who, /msg NAME TEXT, /help")
        default:
            reply(from, "error: unknown command \(parts[0]) (try /help)")
        }
    }
}
