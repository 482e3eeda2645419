// Benchmarks: `swift run -c release Benchmarks [--filter NAME] [--repeat N]
// [--procs N] [--no-peers] [--json] [--report docs/benchmarks.md]`.
//
// Every workload of the issues, measured for GMP (ours) and side by side with
// the peers: Swift concurrency (SwiftPeer.swift; also run with its tasks on
// GMP.executor, SWIFT_EXECUTOR=gmp, as a column of its own), Go (Benchmarks/peers/go,
// built with `go` when it is on PATH) and, for the runtime workloads, Tokio
// (Benchmarks/peers/tokio, built with `cargo` when it is on PATH). Each run
// is a fresh process; runs of the implementations alternate; each figure is
// the median over `--repeat` runs (default 3) with its spread. `--run NAME` runs one workload once and
// prints its JSON result (what the driver does in each child).
import Foundation
import GMP
import Glibc

let serverCPU = Metric(key: "server_cpu_ms", label: "server CPU ms")
/// What the chat workloads (chat, chathistory, chat2nodes) report.
let chatMetrics = [Metric(key: "deliveries_per_s", label: "deliveries/s", higherIsBetter: true),
                   Metric(key: "p50_ms", label: "p50 latency ms"), Metric(key: "p99_ms", label: "p99 latency ms"), serverCPU]

let workloads: [Workload] = [
    Workload(name: "spawn", ours: benchSpawn, swift: swiftSpawn, go: .own, tokio: true, metrics: [.nsPerOp],
             about: "1,000,000 Gs (tasks) that each signal a WaitGroup (a task group); ns per G."),
    Workload(name: "yield", ours: benchYield, swift: swiftYield, go: .own, tokio: true, metrics: [.nsPerOp],
             about: "2 × procs Gs share 4,000,000 yields; ns per yield."),
    Workload(name: "spawntree", ours: benchSpawnTree, swift: swiftSpawnTree, go: .own, tokio: true, metrics: [.nsPerOp],
             about: "a binary tree of Gs of depth 20 (2,097,151), each starting its two children; ns per G."),
    Workload(name: "parked", ours: benchParked, swift: swiftParked, go: .own, tokio: true,
             metrics: [.nsPerOp, Metric(key: "rss_bytes_per_g", label: "RSS bytes per G")],
             about: "100,000 Gs started and left blocked; ns per G started, and resident memory per blocked G."),
    Workload(name: "idle", ours: benchIdle, swift: swiftIdle, go: .own, tokio: true,
             metrics: [Metric(key: "rss_bytes_per_g", label: "RSS bytes per G")],
             about: "100,000 Gs started and left blocked for 3 s (long enough for sysmon to trim their stacks: "
                 + "GMP.stackTrimAfter, 1 s); resident memory per blocked G after the 3 s."),
    Workload(name: "timers", ours: benchTimers, swift: swiftTimers, go: .own, tokio: true, metrics: [.nsPerOp],
             about: "100,000 Gs each sleeping 1 ms ten times; wall time per sleep."),
    Workload(name: "starvation", ours: benchStarvation, swift: nil, go: .own,
             metrics: [Metric(key: "worst_late_ms", label: "worst tick lateness ms, computing Gs"),
                       Metric(key: "worst_late_blocking_ms", label: "worst tick lateness ms, unannounced blocking calls")],
             about: "one G per P runs 0.5 s without parking (computing, then calling usleep(1 ms) outside "
                 + "GMP.blocking; Go: a raw nanosleep system call) beside a ticker G on a 10 ms schedule; the worst "
                 + "lateness of a tick."),
    Workload(name: "pingpong", ours: benchPingPong, swift: swiftPingPong, go: .own, tokio: true, metrics: [.nsPerOp],
             about: "two Gs, two unbuffered channels, 1,000,000 round trips; ns per round trip."),
    Workload(name: "buffered", ours: benchBuffered, swift: swiftBuffered, go: .own, tokio: true, metrics: [.nsPerOp],
             about: "one producer, one consumer, capacity 1024, 10,000,000 values; ns per value."),
    Workload(name: "fanin", ours: benchFanIn, swift: swiftFanIn, go: .own, tokio: true, metrics: [.nsPerOp],
             about: "8 producers, 1 consumer, capacity 128, 8,000,000 values; ns per value."),
    Workload(name: "select", ours: benchSelect, swift: nil, go: .own, tokio: true, metrics: [.nsPerOp],
             about: "one receiver selecting over 4 channels of capacity 16, each fed by a producer, in a loop over "
                 + "cases built once (SelectSet; Go: select in a for loop); ns per value."),
    Workload(name: "selectonce", ours: benchSelectOnce, swift: nil, go: .own, tokio: true, metrics: [.nsPerOp],
             about: "as select, with a one-off select { } per value (cases registered on every call; Go: the same "
                 + "select as above); ns per value."),
    Workload(name: "bridge", ours: benchBridge, swift: swiftBridge, go: nil,
             metrics: [Metric(key: "ns_per_op", label: "ns per round trip, task on Swift's executor (Swift: AsyncStreams)"),
                       Metric(key: "executor_ns", label: "ns per round trip, task on GMP.executor (Swift: continuations)"),
                       Metric(key: "await_ns", label: "ns per GMP.await (Swift: await Task { }.value)")],
             about: "a G and a Swift task pass a value back and forth over two unbuffered channels, 200,000 round "
                 + "trips, with the task on Swift's global executor, then on GMP.executor (Swift: two tasks over two "
                 + "AsyncStreams, then over two continuation-based channels); then 50,000 GMP.await calls from a G of "
                 + "a closure that returns at once (Swift: await Task { }.value from a task)."),
    Workload(name: "echo", ours: benchEcho, swift: nil, go: .own, metrics: [.nsPerOp],
             about: "100 client Gs × 10,000 round trips of 64 bytes over loopback TCP; ns per round trip."),
    Workload(name: "idleconns", ours: benchIdleConns, swift: nil, go: .own,
             metrics: [.nsPerOp, Metric(key: "rss_bytes_per_conn", label: "RSS bytes per conn")],
             about: "10,000 idle TCP connections, each held by a G parked in read (clients in another process); "
                 + "ns per connection set up, and the server's resident memory per connection after 3 s idle."),
    Workload(name: "chat", ours: benchChat, swift: nil, go: .chatServer,
             metrics: chatMetrics,
             about: "100 WebSocket clients (ours) each send 100 messages 10 ms apart; every client receives all 10,000. "
                 + "Server: ChatApp, or for Go the gorilla/websocket hub (peers/go/chat.go)."),
    Workload(name: "chathistory", ours: benchChatHistory, swift: nil, go: nil,
             metrics: chatMetrics,
             about: "chat with ChatApp logging every message to its history (--data-dir, --fsync interval: a write "
                 + "per batch, an fsync within 100 ms); compare with ours in chat, which keeps history in memory."),
    Workload(name: "chat2nodes", ours: benchChat2Nodes, swift: nil, go: nil,
             metrics: chatMetrics,
             about: "chat with the 100 clients spread over two ChatApp nodes joined through a redis-server of the run's "
                 + "own (--redis): each message is numbered and kept by Redis's append script and comes back to both "
                 + "nodes by pub/sub; compare with ours in chat (one node). Server CPU: both nodes, not Redis."),
    Workload(name: "chatidle", ours: benchChatIdle, swift: nil, go: .chatServer,
             metrics: [Metric(key: "rss_bytes_per_conn", label: "RSS bytes per conn")],
             about: "10,000 WebSocket clients (in another process) connected and then idle for 3 s; the server's "
                 + "resident memory per connection."),
    Workload(name: "chatfanout", ours: benchChatFanout, swift: nil, go: .chatServer,
             metrics: [Metric(key: "fanout_ms", label: "ms until the last of 10,000 has a broadcast")],
             about: "10,000 idle WebSocket clients (ours, in another process) and one more that sends a message; "
                 + "the time from its send until the last client has it, median of 5 broadcasts, every client "
                 + "getting every one. Server: ChatApp, or the gorilla/websocket hub."),
    Workload(name: "chatchurn", ours: benchChatChurn, swift: nil, go: .chatServer,
             metrics: [Metric(key: "conns_per_s", label: "connections/s", higherIsBetter: true),
                       Metric(key: "rss_growth_kb", label: "RSS growth KiB"), serverCPU],
             about: "10,000 cycles of connect, send one message, see it come back, close, 50 at a time; connections "
                 + "per second, then the server's fds, live Gs and RSS against where they started."),
]

@MainActor func usage() -> Never {
    print("""
    usage: Benchmarks [--filter NAME] [--repeat N] [--procs N] [--no-peers] [--json] [--report FILE.md]
           Benchmarks --run NAME [--impl ours|swift] [--chat-server GO_PEER_BINARY]
    workloads: \(workloads.map(\.name).joined(separator: ", "))
    """)
    exit(0)
}

func bad(_ msg: String) -> Never {
    note("Benchmarks: \(msg) (try --help)")
    exit(2)
}

var opts = Options()
var runOne: String?
var impl = Impl.ours
var args = CommandLine.arguments.dropFirst()
@MainActor func intArg(_ flag: String, atLeast min: Int) -> Int {
    guard let v = args.popFirst().flatMap({ Int($0) }), v >= min else { bad("\(flag) needs a number ≥ \(min)") }
    return v
}
while let a = args.popFirst() {
    switch a {
    case "--chatidle-client":
        let (p, n) = (intArg(a, atLeast: 1), intArg(a, atLeast: 1))
        chatIdleClient(port: p, n: n)
    case "--chatfanout-client":
        let (p, n, r) = (intArg(a, atLeast: 1), intArg(a, atLeast: 1), intArg(a, atLeast: 1))
        chatFanoutClient(port: p, n: n, rounds: r)
    case "--idleconns-client":
        let (p, n) = (intArg(a, atLeast: 1), intArg(a, atLeast: 1))
        idleConnsClient(port: p, n: n)
    case "--run":
        guard let n = args.popFirst() else { bad("--run needs a workload name") }
        runOne = n
    case "--impl":
        // (The "Swift on GMP.executor" column is `--impl swift` with SWIFT_EXECUTOR=gmp.)
        guard let i = args.popFirst().flatMap(Impl.init(rawValue:)), i == .ours || i == .swift else {
            bad("--impl is ours or swift")
        }
        impl = i
    case "--chat-server":
        guard let p = args.popFirst() else { bad("--chat-server needs the Go peer binary") }
        goChatServer = p
    case "--json": opts.json = true
    case "--no-peers": opts.peers = false
    case "--filter":
        guard let f = args.popFirst() else { bad("--filter needs a name") }
        opts.filter = f
    case "--repeat": opts.repeats = intArg(a, atLeast: 1)
    case "--procs": opts.procs = intArg(a, atLeast: 1)
    case "--report":
        guard let f = args.popFirst() else { bad("--report needs a file name") }
        opts.report = f
    case "--help", "-h": usage()
    default: bad("unknown argument \(a)")
    }
}

if let name = runOne {
    // One run of one workload, in this process: the driver's child.
    guard let w = workloads.first(where: { $0.name == name }) else { bad("no workload \(name)") }
    guard let f = impl == .swift ? w.swift : w.ours else { bad("\(name) has no \(impl.title) version") }
    guard let r = f() else { exit(3) } // skipped; it said why
    print(resultJSON(r))
    exit(0)
}

// An exact name selects that workload; otherwise every name containing the filter.
let exact = workloads.filter { $0.name == opts.filter }
let selected = !exact.isEmpty ? exact : workloads.filter { opts.filter == nil || $0.name.contains(opts.filter!) }
if selected.isEmpty { bad("no workload matches \(opts.filter ?? "")") }

var notes: [String] = []
var goPeer: GoPeer?
var tokioPeer: TokioPeer?
if opts.peers {
    goPeer = GoPeer.build()
    if goPeer == nil { notes.append("Go peer not measured: no `go` on PATH, or Benchmarks/peers/go did not build.") }
    if selected.contains(where: \.tokio) {
        tokioPeer = TokioPeer.build()
        if tokioPeer == nil { notes.append("Tokio peer not measured: no `cargo` on PATH, or Benchmarks/peers/tokio did not build.") }
    }
} else {
    note("peers: skipped (--no-peers)")
    notes.append("Peers not measured (--no-peers).")
}
let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
if let n = opts.procs, n > cores {
    notes.append("--procs \(n) is more than the \(cores) cores: Swift's pool keeps its default width.")
}
note("cores=\(cores), procs=\(opts.procs.map(String.init) ?? "default"), \(opts.repeats) runs each")
let results = measure(selected, opts, goPeer: goPeer, tokioPeer: tokioPeer)
if let g = goPeer { try? FileManager.default.removeItem(atPath: g.binary) }
if let t = tokioPeer { try? FileManager.default.removeItem(atPath: t.binary) }
let table = rows(selected, results)
if opts.json {
    for line in jsonLines(selected, results) { print(line) }
} else {
    print("cores=\(cores), procs=\(opts.procs.map(String.init) ?? "default"), median of \(opts.repeats) runs ± half the spread; "
        + "vs = our cost over the peer's (below 1 we are better)")
    print(textTable(table))
}
if let path = opts.report {
    do {
        try writeReport(path: path, rows: table, info: .current(opts, goPeer: goPeer, tokioPeer: tokioPeer, notes: notes))
        note("report: \(path)")
    } catch {
        note("Benchmarks: cannot write the report \(path): \(error)")
        exit(1)
    }
}
