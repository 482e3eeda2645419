import Channels
import GMP
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
    // `send` is a channel.
    let ws: WebSocketConn
    let send = Chan<Prepared>(capacity: 256)
    let peer: String

    init(ws: WebSocketConn, peer: String) {
        self.ws = ws
        self.peer = peer
    }
}

/// The hub G's channels.
final class Hub: Sendable {
    let register = Chan<Client>()
    let unregister = Chan<Client>()
    let broadcast = Chan<[UInt8]>()
    /// Closed to shut down: the hub sends close 1001 to every client.
    let quit = Chan<Void>()
    /// The number of clients, after every change (for tests and logs).
    let count = Chan<Int>(capacity: 1024)

    /// The hub's loop; run it in its own G.
    func run() {
        var clients: [ObjectIdentifier: Client] = [:]
        var running = true
        while running {
            select { s in
                if let r = s.receive(register), case .value(let c) = r {
                    clients[ObjectIdentifier(c)] = c
                    _ = count.trySend(clients.count)
                }
                if let r = s.receive(unregister), case .value(let c) = r {
                    if clients.removeValue(forKey: ObjectIdentifier(c)) != nil {
                        c.send.close()
                        _ = count.trySend(clients.count)
                    }
                }
                if let r = s.receive(broadcast), case .value(let payload) = r {
                    let m = Prepared(payload)
                    for (id, c) in clients where !c.send.trySend(m) {
                        // Buffer full: drop this client, not the message for the others.
                        c.send.close()
                        clients.removeValue(forKey: id)
                        log("dropped slow client \(c.peer)")
                        _ = count.trySend(clients.count)
                    }
                }
                if s.receive(quit) != nil {
                    running = false
                }
            }
        }
        for c in clients.values { c.send.close() } // write pumps send close 1001 and stop
    }
}
