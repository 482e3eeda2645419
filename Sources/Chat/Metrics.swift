import GMP
import Synchronization

// Metrics: `GET /metrics` in Prometheus' text exposition format, version
// 0.0.4 (served with `--metrics`).
//
// The server's counters are atomics, bumped where things happen: an upgrade
// (connections), the read pump (messages in), the write pump (messages and
// bytes out), whoever finds a send buffer full (clients dropped as slow),
// the log G or the hub (history appends, failures). Two histograms: the
// time from a message's receipt (its read pump) to its last write to a local
// client (the write pump, or the hub, that lets go of it last: `Prepared`),
// and the time each fsync of the history takes. (With Redis the first
// counts only this node's own messages whose ack came before the message:
// the receipt time does not travel between nodes.) The page is rendered on
// each request from them, the open clients, the rooms' member counts (the
// fullest 20 by name; the rest summed under no label), with Redis whether
// this node is connected (`chat_redis_up`), and the runtime's own figures
// (`GMP.stats`). Every family gets its `# HELP` and `# TYPE` lines
// before its samples; counters end in `_total`; help text and label values
// are escaped as the format says (backslash, newline, and in label values
// the double quote).

/// The chat server's counters (all monotonic).
final class ChatMetrics: Sendable {
    let connections = Atomic<Int>(0)
    let messagesIn = Atomic<Int>(0)
    let messagesOut = Atomic<Int>(0)
    let bytesOut = Atomic<Int>(0)
    let slowDrops = Atomic<Int>(0)
    let historyAppends = Atomic<Int>(0)
    let historyErrors = Atomic<Int>(0)
    /// Rooms loaded now (a gauge, set by the directory).
    let roomsLoaded = Atomic<Int>(0)
    let deliverySeconds = Histogram(bounds: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25, 0.5, 1, 2.5, 5])
    let fsyncSeconds = Histogram(bounds: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25, 0.5, 1])

    /// Rooms labelled one by one in `chat_room_members` (the fullest).
    static let labelledRooms = 20

    enum Counter { case connections, messagesIn, messagesOut, bytesOut, slowDrops, historyAppends, historyErrors }

    func bump(_ counter: Counter, by n: Int = 1) {
        switch counter {
        case .connections: connections.add(n, ordering: .relaxed)
        case .messagesIn: messagesIn.add(n, ordering: .relaxed)
        case .messagesOut: messagesOut.add(n, ordering: .relaxed)
        case .bytesOut: bytesOut.add(n, ordering: .relaxed)
        case .slowDrops: slowDrops.add(n, ordering: .relaxed)
        case .historyAppends: historyAppends.add(n, ordering: .relaxed)
        case .historyErrors: historyErrors.add(n, ordering: .relaxed)
        }
    }

    /// The page: the server's families, then the runtime's. `rooms`: every
    /// loaded room and its members, the fullest first.
    /// `redisUp`: with Redis, whether this node's subscription is up.
    func render(clientsOpen: Int, rooms: [(name: String, members: Int)] = [], redisUp: Bool? = nil) -> String {
        var p = PrometheusText()
        p.family("chat_connections_open", .gauge, "WebSocket clients connected now.", clientsOpen)
        p.family("chat_connections_total", .counter, "WebSocket connections accepted (upgraded).",
                 connections.load(ordering: .relaxed))
        p.family("chat_messages_in_total", .counter, "Messages received from clients and handed to the hub.",
                 messagesIn.load(ordering: .relaxed))
        p.family("chat_messages_out_total", .counter, "Messages written to clients (one per client it reaches).",
                 messagesOut.load(ordering: .relaxed))
        p.family("chat_bytes_written_total", .counter, "WebSocket frame bytes written to clients by the write pumps.",
                 bytesOut.load(ordering: .relaxed))
        p.family("chat_clients_dropped_slow_total", .counter,
                 "Clients dropped because their send buffer (256 messages) was full.",
                 slowDrops.load(ordering: .relaxed))
        p.family("chat_rooms_loaded", .gauge, "Rooms loaded (with members, or with history kept in memory only).",
                 roomsLoaded.load(ordering: .relaxed))
        let top = rooms.prefix(Self.labelledRooms).sorted { $0.name < $1.name }
        let rest = rooms.dropFirst(Self.labelledRooms).reduce(0) { $0 + $1.members }
        p.family("chat_room_members", .gauge,
                 "Members per room: the \(Self.labelledRooms) fullest rooms by name, the rest summed without a label.",
                 samples: top.map { (["room": $0.name], $0.members) } + (rooms.count > Self.labelledRooms ? [([:], rest)] : []))
        p.histogram("chat_delivery_seconds", "Time from a message's receipt to its last write to a client of this server.",
                    deliverySeconds)
        p.family("chat_history_appends_total", .counter, "Messages appended to the rooms' history.",
                 historyAppends.load(ordering: .relaxed))
        p.family("chat_history_errors_total", .counter, "Messages refused because the history could not be written.",
                 historyErrors.load(ordering: .relaxed))
        p.histogram("chat_history_fsync_seconds", "Time each fsync of a room's history took.", fsyncSeconds)
        if let redisUp {
            p.family("chat_redis_up", .gauge, "1 while this node's Redis subscription is up; 0: degraded, messages refused.",
                     redisUp ? 1 : 0)
        }
        let s = GMP.stats
        p.family("gmp_goroutines", .gauge, "Goroutines by state.",
                 samples: [(["state": "live"], s.live), (["state": "runnable"], s.runnable),
                           (["state": "parked"], s.parked)])
        p.family("gmp_threads", .gauge, "Threads (Ms) by state.",
                 samples: [(["state": "all"], s.threads), (["state": "idle"], s.idleThreads),
                           (["state": "spinning"], s.spinningThreads)])
        p.family("gmp_procs", .gauge, "Logical processors (Ps), and how many are idle.",
                 samples: [(["state": "all"], s.procs), (["state": "idle"], s.idleProcs)])
        p.family("gmp_goroutines_created_total", .counter, "Goroutines started.", s.created)
        p.family("gmp_steals_total", .counter, "Goroutines stolen from another P's run queue.", s.steals)
        p.family("gmp_long_runs_total", .counter, "Times sysmon saw a goroutine run past its time slice.", s.longRuns)
        p.family("gmp_handoffs_total", .counter, "Ps handed to another thread around a blocking call.", s.handoffs)
        p.family("gmp_stacks_mapped_bytes", .gauge, "Memory mapped for goroutine stacks.", s.stacksMapped)
        p.family("gmp_stacks_trimmed_bytes_total", .counter, "Stack memory given back by trimming idle stacks.",
                 s.trimmedBytes)
        return p.text
    }
}

/// A page in Prometheus' text format (0.0.4), built family by family.
struct PrometheusText {
    enum Kind: String { case counter, gauge }

    private(set) var text = ""

    /// One family with one unlabelled sample.
    mutating func family(_ name: String, _ kind: Kind, _ help: String, _ value: Int) {
        family(name, kind, help, samples: [([:], value)])
    }

    /// One family: its HELP and TYPE lines, then a sample per label set
    /// (labels in name order).
    mutating func family(_ name: String, _ kind: Kind, _ help: String, samples: [([String: String], Int)]) {
        text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
        for (labels, value) in samples {
            text += name
            if !labels.isEmpty {
                text += "{" + labels.sorted { $0.key < $1.key }
                    .map { "\($0.key)=\"\(Self.escapeLabel($0.value))\"" }.joined(separator: ",") + "}"
            }
            text += " \(value)\n"
        }
    }

    /// A histogram family: cumulative buckets by `le`, then `_sum` and `_count`.
    mutating func histogram(_ name: String, _ help: String, _ h: Histogram) {
        text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) histogram\n"
        let (buckets, count, sum) = h.snapshot()
        for (bound, n) in buckets { text += "\(name)_bucket{le=\"\(bound)\"} \(n)\n" }
        text += "\(name)_bucket{le=\"+Inf\"} \(count)\n\(name)_sum \(sum)\n\(name)_count \(count)\n"
    }

    /// HELP text: backslash and line feed escaped.
    static func escapeHelp(_ s: String) -> String {
        s.replacingAll([("\\", "\\\\"), ("\n", "\\n")])
    }

    /// A label value: backslash, double quote and line feed escaped.
    static func escapeLabel(_ s: String) -> String {
        s.replacingAll([("\\", "\\\\"), ("\"", "\\\""), ("\n", "\\n")])
    }
}

extension String {
    /// Replaces each scalar of `pairs` by its escape, in one pass.
    fileprivate func replacingAll(_ pairs: [(Unicode.Scalar, String)]) -> String {
        var out = ""
        for u in unicodeScalars {
            if let e = pairs.first(where: { $0.0 == u }) { out += e.1 } else { out.unicodeScalars.append(u) }
        }
        return out
    }
}

/// A histogram of durations: an atomic count per bucket (observations at
/// or below its bound, in seconds, and above the one before), their count
/// and their sum. Observing is a few relaxed atomic adds; a snapshot taken
/// while others observe may be off by those in flight, never torn.
final class Histogram: @unchecked Sendable {
    // @unchecked: `counts` is a fixed array of atomics, allocated in init and
    // freed in deinit; everything else is immutable or atomic.
    let bounds: [Double]
    private let boundsNanoseconds: [Int64]
    private let counts: UnsafeMutablePointer<Atomic<Int>>
    private let total = Atomic<Int>(0)
    private let sumNanoseconds = Atomic<Int>(0)

    init(bounds: [Double]) {
        self.bounds = bounds
        boundsNanoseconds = bounds.map { Int64($0 * 1e9) }
        counts = .allocate(capacity: bounds.count)
        for i in 0..<bounds.count { (counts + i).initialize(to: Atomic(0)) }
    }

    deinit {
        counts.deinitialize(count: bounds.count)
        counts.deallocate()
    }

    func observe(nanoseconds ns: Int64) {
        let ns = max(ns, 0)
        if let i = boundsNanoseconds.firstIndex(where: { ns <= $0 }) { counts[i].add(1, ordering: .relaxed) }
        total.add(1, ordering: .relaxed)
        sumNanoseconds.add(Int(ns), ordering: .relaxed)
    }

    /// Cumulative counts per bound (as the format writes them), the count, the sum in seconds.
    func snapshot() -> (buckets: [(String, Int)], count: Int, sum: Double) {
        var running = 0
        var buckets: [(String, Int)] = []
        for (i, b) in bounds.enumerated() {
            running += counts[i].load(ordering: .relaxed)
            buckets.append((b == b.rounded() ? String(Int(b)) : String(b), running))
        }
        let count = max(total.load(ordering: .relaxed), running)
        return (buckets, count, Double(sumNanoseconds.load(ordering: .relaxed)) / 1e9)
    }
}
