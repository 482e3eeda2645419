@testable import Chat
import Channels
import Foundation
import GMP
import GMPTestSupport
import Glibc
import NetPoller
import Synchronization
import Testing
import WebSocket

/// Inside a G: every message of `room` from the start, as a client that
/// connects with `since=0` sees it before the "joined" line, as
/// (seq, text); nil if the server cannot be reached or the connection ends.
func fullHistory(port: Int, room: String = "lobby") -> [(UInt64, String)]? {
    guard let c = EnvelopeClient(port: port, query: "room=\(room)&since=0") else { return nil }
    defer { c.close() }
    guard let lines = c.until({ $0.type == "joined" }) else { return nil }
    return lines.filter { $0.type == "message" }.map { ($0.seq ?? 0, $0.text) }
}

@Suite(.serialized) struct RecoveryTests {
    @Test("kill -9 while ten clients send: after a restart every acknowledged message is in the history, in order, once, and nothing else is")
    func killNine() async throws {
        let dir = temporaryDirectory("chat-kill9")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (app, port) = try startChatApp(extraArguments: ["--data-dir", dir, "--rate", "0"])
        let acked = await runG(procs: 2, timeout: 60) { () -> [(UInt64, String)]? in
            let clients = (0..<10).compactMap { _ in EnvelopeClient(port: port) }
            guard clients.count == 10 else { return nil }
            let results = Chan<[(UInt64, String)]>(capacity: 10)
            let total = Atomic<Int>(0)
            for (i, c) in clients.enumerated() {
                let answered = Atomic<Int>(0)
                go { // sends until the server dies, at most 20 ahead of its answers (or its readers fall behind)
                    for k in 0..<100_000 {
                        guard (try? c.ws.send(text: "c\(i)-\(k)")) != nil else { return }
                        guard waitFor(seconds: 10, every: 100_000, { answered.load(ordering: .relaxed) >= k - 20 }) else { return }
                    }
                }
                go { // acks pair with this client's messages in order; a refusal takes its message too
                    var k = 0
                    var mine: [(UInt64, String)] = []
                    while let l = c.next() {
                        if l.type == "ack", let s = l.seq {
                            mine.append((s, "c\(i)-\(k)"))
                            k += 1
                            total.add(1, ordering: .relaxed)
                        } else if l.type == "error" {
                            k += 1
                        } else {
                            continue
                        }
                        answered.store(k, ordering: .relaxed)
                    }
                    results.send(mine)
                }
            }
            guard waitFor(seconds: 30, every: 1_000_000, { total.load(ordering: .relaxed) >= 2_000 }) else { return nil }
            kill(app.processIdentifier, SIGKILL)
            var all: [(UInt64, String)] = []
            for _ in 0..<10 { all += results.receive().value ?? [] }
            for c in clients { c.close() }
            return all
        }
        app.waitUntilExit()
        #expect(app.terminationReason == .uncaughtSignal)
        let acks = try #require(acked ?? nil)
        #expect(acks.count >= 2_000)
        let (again, port2) = try startChatApp(extraArguments: ["--data-dir", dir])
        defer { again.terminate(); again.waitUntilExit() }
        let history = try #require(await runG(procs: 2) { fullHistory(port: port2) } ?? nil)
        // In order from 1, no gap, no duplicate, nothing but what clients sent.
        #expect(history.enumerated().allSatisfy { UInt64($0.offset + 1) == $0.element.0 }, "not numbered 1, 2, 3, …")
        #expect(Set(history.map(\.1)).count == history.count, "a message twice")
        #expect(history.allSatisfy { $0.1.range(of: #"^c[0-9]-[0-9]+$"#, options: .regularExpression) != nil }, "garbage")
        // Every acknowledged message, under the number its ack gave.
        let bySeq = Dictionary(history.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        let missing = acks.filter { bySeq[$0.0] != $0.1 }
        #expect(missing.isEmpty, "acknowledged but not in the history as acked: \(missing.prefix(5))")
        // Per sender, its messages in the order it sent them.
        for i in 0..<10 {
            let ks = history.compactMap { $0.1.hasPrefix("c\(i)-") ? Int($0.1.dropFirst("c\(i)-".count)) : nil }
            #expect(ks == ks.sorted(), "client \(i)'s messages out of order")
        }
    }

    // With --fsync always a batch is on disk for the length of its fsync
    // before the hub has it: a joiner reading the log then gets messages
    // the hub delivers after it registers, and must skip them (skipThrough).
    @Test("The seam: readers that join with since=0 (the log, then the tail, then live) and one that reconnects again and again while a writer floods see every message once, in order",
          arguments: ["interval", "always"])
    func seam(fsync: String) async throws {
        let dir = temporaryDirectory("chat-seam")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (app, port) = try startChatApp(extraArguments: ["--data-dir", dir, "--rate", "0", "--history", "0", "--fsync", fsync])
        defer { app.terminate(); app.waitUntilExit() }
        let n = 3_000
        let r = await runG(procs: 2, timeout: 90) { () -> [String]? in
            let acks = Atomic<Int>(0)
            let results = Chan<String>(capacity: 4)
            // A reader from the start: it reconnects with since = the last it
            // saw whenever its connection ends (dropped as slow, say), and
            // on purpose `drops` times mid-flood.
            @Sendable func reader(_ who: String, drops: Int) {
                var seqs: [UInt64] = []
                var round = 0
                reading: while round < 100 {
                    guard let c = EnvelopeClient(port: port, query: "since=\(seqs.last ?? 0)") else { break }
                    defer { c.close() }
                    var got = 0
                    while let l = c.next() {
                        guard l.type == "message", let s = l.seq else { continue }
                        seqs.append(s)
                        got += 1
                        if l.text == "end" { break reading }
                        if round < drops && got == 200 + 37 * round { break } // drop the connection mid-flood
                    }
                    round += 1
                }
                results.send(check(seqs, from: 1, who))
            }
            go {
                guard let w = EnvelopeClient(port: port) else { return }
                defer { w.close() }
                // Windows of 50, each waited for: the writer's own buffer never fills.
                for k in stride(from: 0, to: n, by: 50) {
                    for j in k..<(k + 50) { w.say("w\(j)") }
                    var answered = 0
                    while answered < 50, let l = w.next() {
                        if l.type == "ack" || l.type == "error" { answered += 1 }
                        if l.type == "ack" { acks.add(1, ordering: .relaxed) }
                    }
                }
                w.say("end")
            }
            // Three readers joining from the start at different points of the flood.
            for start in [300, 1_200, 2_400] {
                go {
                    _ = waitFor(seconds: 30, every: 100_000) { acks.load(ordering: .relaxed) >= start }
                    reader("reader from \(start)", drops: 0)
                }
            }
            go { reader("reconnecting reader", drops: 8) }
            var out: [String] = []
            for _ in 0..<4 { out.append(results.receive().value ?? "") }
            return out.sorted()
        }
        #expect(r == ["ok", "ok", "ok", "ok"])
    }

    @Test("A full disk (ulimit -f) at run time: messages are refused with an error line, none is acknowledged or delivered, and the server serves on; after a restart the history is exactly the acknowledged ones (a failed write left nothing behind)")
    func fullDisk() async throws {
        let dir = temporaryDirectory("chat-full")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // dash's ulimit -f counts 512-byte blocks: a log file of 2 KiB at most.
        let (app, port) = try startChatApp(extraArguments: ["--data-dir", dir, "--rate", "0"], wrapper: "ulimit -f 4")
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> (acked: Int, refused: String?, delivered: Int, alive: Bool, texts: [String])? in
            guard let a = EnvelopeClient(port: port), let b = EnvelopeClient(port: port),
                  a.next()?.type == "joined", b.next()?.type == "joined" else { return nil }
            defer { a.close(); b.close() }
            var acked = 0
            var refused: String?
            var texts: [String] = []
            let body = String(repeating: "x", count: 100)
            for k in 0..<60 {
                a.say("\(k) \(body)")
                guard let l = a.until({ $0.type == "ack" || $0.type == "error" })?.last else { return nil }
                if l.type == "ack" {
                    acked += 1
                    texts.append("\(k) \(body)")
                } else {
                    refused = refused ?? l.text
                }
            }
            // A burst refused whole: one answer each, and the sender is not dropped as slow.
            for k in 0..<300 { a.say("{\"id\":\"r\(k)\",\"text\":\"\(k) \(body)\"}") }
            var refusals = 0
            while refusals < 300, let l = a.next() {
                if l.type == "error" && l.object["outcome"] as? String == "refused" { refusals += 1 } else if l.type == "ack" { break }
            }
            guard refusals == 300 else { return nil }
            // b saw exactly the acknowledged ones.
            b.say("/who")
            guard let lines = b.until({ $0.type == "who" }) else { return nil }
            let delivered = lines.filter { $0.type == "message" }.count
            return (acked, refused, delivered, httpGet(port, "/").hasPrefix("HTTP/1.1 200"), texts)
        }
        let res = try #require(r ?? nil)
        app.terminate()
        app.waitUntilExit()
        let (again, port2) = try startChatApp(extraArguments: ["--data-dir", dir])
        defer { again.terminate(); again.waitUntilExit() }
        let history = await runG(procs: 2) { fullHistory(port: port2) } ?? nil
        #expect(history?.map(\.1) == res.texts, "the history after a restart: \(history?.count ?? -1) messages, \(res.texts.count) acked")
        #expect(res.acked > 0 && res.acked < 60, "acked \(res.acked) of 60")
        #expect(res.refused?.hasPrefix("your message was not stored (cannot write to ") == true, "\(res.refused ?? "nothing refused")")
        #expect(res.refused?.contains("File too large") == true)
        #expect(res.delivered == res.acked)
        #expect(res.alive)
    }

    @Test("A data directory that cannot be created is a clear error at start (exit 1); a torn log tail is cut and reported in the log at start, never served")
    func startErrors() async throws {
        let dir = temporaryDirectory("chat-start")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = FileManager.default.createFile(atPath: dir + "/file", contents: Data("x".utf8))
        let p = Process()
        p.executableURL = chatAppURL()
        p.arguments = ["--data-dir", dir + "/file/sub", "--addr", "127.0.0.1:0"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 1)
        #expect(text.contains("ChatApp: cannot create the data directory \(dir)/file/sub"), "\(text)")
        // A room whose log ends in half a record.
        let (log, _, _) = try RoomLog.open(dir: dir + "/lobby", policy: .never, retain: 100, tailLength: 0)
        try log.append([Entry(seq: 1, time: 0, from: "", text: "kept")])
        var half: [UInt8] = []
        Record.append(Entry(seq: 2, time: 0, from: "", text: "torn"), to: &half)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/lobby/" + RoomLog.segmentName(1)))
        h.seekToEndOfFile()
        h.write(Data(half.dropLast(3)))
        try h.close()
        let stderr = Pipe()
        let (app, port) = try startChatApp(extraArguments: ["--data-dir", dir], stderr: stderr)
        let history = await runG(procs: 2) { fullHistory(port: port) } ?? nil
        app.terminate()
        app.waitUntilExit()
        let logText = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(history?.map(\.1) == ["kept"])
        #expect(logText.contains("history: \(dir)/lobby/\(RoomLog.segmentName(1)): a short record"), "\(logText)")
        #expect(logText.contains("cut there"))
    }
}

/// "ok" if `seqs` is from, from + 1, … with no gap and no repeat; else what is wrong.
private func check(_ seqs: [UInt64], from: UInt64, _ who: String) -> String {
    for (i, s) in seqs.enumerated() where s != from + UInt64(i) {
        return "\(who): \(s) at \(i), where \(from + UInt64(i)) was due (\(seqs.count) messages)"
    }
    return seqs.isEmpty ? "\(who): nothing" : "ok"
}
