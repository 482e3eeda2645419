@testable import Chat
import Foundation
import GMP
import GMPTestSupport
import NetPoller
import Testing
import WebSocket

/// A Prometheus text page read back: each family's declared type, and each
/// sample's value by its name with labels ("name{a=\"b\"}"). Records an issue
/// for any line the format does not allow here. A histogram's samples are
/// its name with _bucket (cumulative, by `le`, the last "+Inf"), _sum and _count.
private func parsePage(_ page: String) -> (types: [String: String], samples: [String: Double]) {
    var types: [String: String] = [:], helps: Set<String> = [], samples: [String: Double] = [:]
    for line in page.split(separator: "\n", omittingEmptySubsequences: false) where !line.isEmpty {
        let parts = line.split(separator: " ", maxSplits: 3)
        if line.hasPrefix("# HELP ") {
            helps.insert(String(parts[2]))
        } else if line.hasPrefix("# TYPE ") {
            #expect(helps.contains(String(parts[2])), "TYPE before HELP: \(line)")
            types[String(parts[2])] = String(parts[3])
        } else {
            let key = String(parts[0])
            var name = String(key.prefix { $0 != "{" })
            for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
                let base = String(name.dropLast(suffix.count))
                if types[base] == "histogram" { name = base }
            }
            #expect(types[name] != nil, "a sample before its TYPE line: \(line)")
            #expect(types[name] != "counter" || name.hasSuffix("_total"), "a counter not ending in _total: \(name)")
            guard parts.count == 2, let v = Double(parts[1]) else {
                Issue.record("not 'name value': \(line)")
                continue
            }
            samples[key] = v
        }
    }
    return (types, samples)
}

@Suite struct MetricsTests {
    @Test("The text format: HELP escapes backslash and newline, label values also the double quote; labels sorted")
    func escaping() {
        var p = PrometheusText()
        p.family("x_total", .counter, "a \\ b\nc", 3)
        p.family("y", .gauge, "why", samples: [(["b": "q\"\\\nz", "a": "1"], 7)])
        #expect(p.text == """
            # HELP x_total a \\\\ b\\nc
            # TYPE x_total counter
            x_total 3
            # HELP y why
            # TYPE y gauge
            y{a="1",b="q\\"\\\\\\nz"} 7

            """)
    }

    @Test("--metrics serves GET /metrics: connections, messages in and out, bytes, the runtime's figures; 404 without it")
    func served() async throws {
        let (app, port) = try startChatApp(extraArguments: ["--metrics"])
        defer { app.terminate(); app.waitUntilExit() }
        let (plain, plainPort) = try startChatApp()
        defer { plain.terminate(); plain.waitUntilExit() }
        let r = await runG(procs: 2) { () -> (String, String)? in
            guard let a = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text"),
                  let b = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?format=text") else { return nil }
            defer {
                a.conn.close()
                b.conn.close()
            }
            for i in 0..<3 { try? a.send(text: "m\(i)") }
            // Each client has all three (one frame may carry several, joined by newlines).
            for ws in [a, b] {
                var lines = 0
                while lines < 3 {
                    guard case .text(let t)? = try? ws.receive() else { return nil }
                    lines += t.split(separator: "\n").count
                }
            }
            // A write pump counts a message once its write returns, which can be
            // just after the client has it: wait for the count, bounded.
            var page = ""
            _ = waitFor(seconds: 10, every: 5_000_000) {
                page = httpGet(port, "/metrics")
                return page.contains("\nchat_messages_out_total 6\n") && page.contains("\nchat_delivery_seconds_count 3\n")
            }
            return (page, String(httpGet(plainPort, "/metrics").prefix(12)))
        }
        let (reply, notServed) = try #require(r ?? nil)
        #expect(notServed == "HTTP/1.1 404")
        #expect(reply.hasPrefix("HTTP/1.1 200"))
        #expect(reply.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"))
        let body = String(reply[try #require(reply.range(of: "\r\n\r\n")).upperBound...])
        let (types, samples) = parsePage(body)
        #expect(types["chat_connections_total"] == "counter" && types["chat_connections_open"] == "gauge")
        #expect(samples["chat_connections_total"] == 2)
        #expect(samples["chat_connections_open"] == 2)
        #expect(samples["chat_messages_in_total"] == 3)
        #expect(samples["chat_messages_out_total"] == 6)
        // At least the three joined into one frame per client: "m0\nm1\nm2" and a 2-byte header.
        #expect((samples["chat_bytes_written_total"] ?? 0) >= 2 * (8 + 2))
        #expect(samples["chat_clients_dropped_slow_total"] == 0)
        #expect(samples["chat_room_members{room=\"lobby\"}"] == 2 && samples["chat_rooms_loaded"] == 1)
        #expect(samples["chat_history_appends_total"] == 3 && samples["chat_history_errors_total"] == 0)
        // Each message's receipt-to-last-write time, observed once it reached both clients.
        #expect(types["chat_delivery_seconds"] == "histogram")
        #expect(samples["chat_delivery_seconds_count"] == 3 && samples["chat_delivery_seconds_bucket{le=\"+Inf\"}"] == 3)
        #expect((samples["chat_delivery_seconds_sum"] ?? -1) > 0)
        let buckets = samples.filter { $0.key.hasPrefix("chat_delivery_seconds_bucket") }
            .sorted { (Double($0.key.split(separator: "\"")[1]) ?? .infinity) < (Double($1.key.split(separator: "\"")[1]) ?? .infinity) }
        #expect(buckets.count == 16 && zip(buckets, buckets.dropFirst()).allSatisfy { $0.value <= $1.value }, "cumulative: \(buckets)")
        #expect(samples["chat_history_fsync_seconds_count"] == 0) // history in memory: no fsync
        #expect((samples["gmp_goroutines{state=\"live\"}"] ?? 0) > 0)
        #expect((samples["gmp_procs{state=\"all\"}"] ?? 0) > 0)
    }

    @Test("With a data directory and --fsync always, /metrics counts the appends and times the fsyncs (one per batch)")
    func historyFigures() async throws {
        let dir = temporaryDirectory("chat-metrics")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (app, port) = try startChatApp(extraArguments: ["--metrics", "--data-dir", dir, "--fsync", "always"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> [String: Double]? in
            guard let a = EnvelopeClient(port: port) else { return nil }
            defer { a.close() }
            for i in 0..<3 {
                a.say("m\(i)")
                guard a.until({ $0.type == "ack" }) != nil else { return nil }
            }
            let reply = httpGet(port, "/metrics")
            guard let body = reply.range(of: "\r\n\r\n").map({ String(reply[$0.upperBound...]) }) else { return nil }
            return parsePage(body).samples
        }
        let samples = try #require(r ?? nil)
        #expect(samples["chat_history_appends_total"] == 3)
        let syncs = samples["chat_history_fsync_seconds_count"] ?? 0
        #expect(syncs >= 1 && syncs <= 3, "\(syncs) fsyncs")
        #expect((samples["chat_history_fsync_seconds_sum"] ?? 0) > 0)
    }

    @Test("The config file's 'metrics' key turns /metrics on; a value that is not a boolean is a clear error")
    func configKey() throws {
        var config = ChatConfig()
        _ = try parseConfig(Data(#"{"metrics": true}"#.utf8), name: "chat.json", into: &config)
        #expect(config.metrics)
        // A number is not a boolean, though Foundation's NSNumber casts to one (this key, and the older ones).
        for key in ["metrics", "stats", "anyOrigin"] {
            #expect(throws: ConfigError.self) {
                _ = try parseConfig(Data("{\"\(key)\": 1}".utf8), name: "chat.json", into: &config)
            }
        }
        do {
            _ = try parseConfig(Data(#"{"metrics": "yes"}"#.utf8), name: "chat.json", into: &config)
        } catch {
            #expect(error.description == "chat.json: key 'metrics' must be true or false")
        }
    }
}
