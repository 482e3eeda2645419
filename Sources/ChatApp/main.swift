// ChatApp: gorilla/websocket's chat example on our runtime.
//
//   swift run -c release ChatApp [--addr HOST:PORT] [--max-message N]
//                                [--allow-origin URL]... [--any-origin]
//
// Environment: CHAT_ADDR (flags win), GMPPROCS. Open http://127.0.0.1:8080/.
import Foundation
import GMP
import Glibc
import NetPoller

func fail(_ message: String) -> Never {
    log("ChatApp: \(message)")
    exit(2)
}

func parseAddr(_ s: String) -> (String, Int) {
    guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port) else {
        fail("bad address '\(s)' (want HOST:PORT)")
    }
    var host = String(s[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return (host.isEmpty ? "0.0.0.0" : host, port)
}

var config = ChatConfig()
if let env = ProcessInfo.processInfo.environment["CHAT_ADDR"] { (config.host, config.port) = parseAddr(env) }
var allowed: [String] = []
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--addr":
        guard let v = args.popFirst() else { fail("--addr needs HOST:PORT") }
        (config.host, config.port) = parseAddr(v)
    case "--max-message":
        guard let v = args.popFirst().flatMap({ Int($0) }), v > 0 else { fail("--max-message needs a positive number") }
        config.maxMessage = v
    case "--allow-origin":
        guard let v = args.popFirst() else { fail("--allow-origin needs a URL") }
        allowed.append(v.lowercased())
    case "--any-origin":
        config.origins = .any
    case "--help", "-h":
        print("usage: ChatApp [--addr HOST:PORT] [--max-message N] [--allow-origin URL]... [--any-origin]")
        exit(0)
    default:
        fail("unknown argument '\(a)' (try --help)")
    }
}
if !allowed.isEmpty { config.origins = .allow(allowed) }

// SIGINT/SIGTERM: stop accepting, close every client with 1001, exit 0.
signal(SIGINT, SIG_IGN)
signal(SIGTERM, SIG_IGN)
let signals = [SIGINT, SIGTERM].map { DispatchSource.makeSignalSource(signal: $0, queue: .global()) }

let code: Int32 = GMP.run { () -> Int32 in
    let server: ChatServer
    do {
        server = try ChatServer(config: config)
    } catch {
        log("ChatApp: cannot listen on \(config.host):\(config.port): \(error)")
        return 1
    }
    for s in signals {
        s.setEventHandler { server.stop() }
        s.resume()
    }
    log("chat server on http://\(config.host):\(server.port)/ (GMPPROCS=\(GMP.procs))")
    server.serve()
    // Let the write pumps flush their close frames.
    GMP.sleep(for: .milliseconds(200))
    log("chat server stopped")
    return 0
}
exit(code)
