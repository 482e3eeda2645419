import GMP
import Synchronization

// Metrics: `GET /metrics` in Prometheus' text exposition format, version
// 0.0.4 (served with `--metrics`).
//
// The server's counters are atomics, bumped where things happen: an upgrade
// (connections), the read pump (messages in), the write pump (messages and
// bytes out), the hub (clients dropped as slow). The page is rendered on
// each request from them, the hub's client count, and the runtime's own
// figures (`GMP.stats`). Every family gets its `# HELP` and `# TYPE` lines
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

    enum Counter { case connections, messagesIn, messagesOut, bytesOut, slowDrops }

    func bump(_ counter: Counter, by n: Int = 1) {
        switch counter {
        case .connections: connections.add(n, ordering: .relaxed)
        case .messagesIn: messagesIn.add(n, ordering: .relaxed)
        case .messagesOut: messagesOut.add(n, ordering: .relaxed)
        case .bytesOut: bytesOut.add(n, ordering: .relaxed)
        case .slowDrops: slowDrops.add(n, ordering: .relaxed)
        }
    }

    /// The page: the server's families, then the runtime's.
    func render(clientsOpen: Int) -> String {
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
