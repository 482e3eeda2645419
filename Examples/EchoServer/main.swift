// EchoServer: a TCP echo server with read deadlines, and clients to try it.
//
// One G accepts; each connection gets a G that reads and writes back. A blocked
// read parks only its G (the net poller wakes it): idle clients cost parked Gs,
// not threads. A client that sends nothing for `idleLimit` is dropped.
import Channels
import GMP
import Glibc   // exit()
import NetPoller

let idleLimit = Duration.milliseconds(300)

/// The server's side of one connection: echo until the client leaves or idles.
func serve(_ conn: Conn, _ log: Chan<String>) {
    defer { conn.close() }
    while true {
        conn.setReadDeadline(.now + idleLimit)      // an instant, renewed before every read
        do { try conn.write(try conn.read(max: 4096)) } catch NetError.timeout {
            return log.send("server: dropped a client idle for \(idleLimit)")
        } catch { return }                          // .endOfStream: the client is done
    }
}

/// Reads until a newline: TCP is a byte stream, one read may return part of a line.
func readLine(_ conn: Conn) throws(NetError) -> String {
    var bytes: [UInt8] = []
    while bytes.last != UInt8(ascii: "\n") { bytes += try conn.read(max: 4096) }
    return String(decoding: bytes, as: UTF8.self)
}

/// The main G: starts the server, runs the clients, shuts down, returns the log.
func runEcho() -> [String] {
    let listener = try! Listener(host: "127.0.0.1", port: 0)   // port 0: any free port
    let log = Chan<String>(capacity: 16)
    let connections = WaitGroup(), accepting = WaitGroup(1)
    go {
        defer { accepting.done() }
        while let conn = try? listener.accept() {   // throws `.closed` once we close the listener
            connections.add(1)
            go { serve(conn, log); connections.done() }
        }
    }
    let clients = WaitGroup(3)
    for id in 1...3 {                               // three clients at once
        go {
            defer { clients.done() }
            do {
                let conn = try Conn.dial("127.0.0.1", listener.port, timeout: .seconds(2))
                defer { conn.close() }
                conn.setReadDeadline(.now + .seconds(2)) // never wait forever for an echo
                for n in 1...3 {
                    let line = "client \(id) line \(n)\n"
                    try conn.write(line)
                    if try readLine(conn) != line { log.send("client \(id): wrong echo"); return }
                }
                log.send("client \(id): 3 lines echoed")
            } catch { log.send("client \(id): \(error)") }
        }
    }
    clients.wait()
    // An idle client: says nothing, and sees the server hang up after `idleLimit`.
    let start = GMP.Instant.now
    let idle = try! Conn.dial("127.0.0.1", listener.port)
    idle.setReadDeadline(.now + .seconds(5))
    do { _ = try idle.read() } catch NetError.endOfStream where .now - start >= idleLimit {
        log.send("idle client: hung up on after the server's deadline")
    } catch { log.send("idle client: \(error)") }
    idle.close()
    listener.close()                                // ends the accept loop
    accepting.wait()
    connections.wait()
    log.close()
    return log.sorted()                             // Gs finish in any order: sort for stable output
}

let lines = GMP.run(runEcho)
for line in lines { print(line) }
let expected = ["client 1: 3 lines echoed", "client 2: 3 lines echoed", "client 3: 3 lines echoed",
                "idle client: hung up on after the server's deadline", "server: dropped a client idle for 0.3 seconds"]
guard lines == expected else { print("FAIL"); exit(1) }
