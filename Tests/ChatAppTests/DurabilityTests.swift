// The history's promises end to end, against the built ChatApp: an ack
// means stored (after fsync under `always`), a refused message is not
// stored, catch-up has no gap it does not report and never serves past the
// committed mark. Faults come from a small LD_PRELOAD shim over fsync(2),
// built with the system's C compiler (`faultShim`): while the file named by
// SHIM_FSYNC_FAILS exists every fsync fails with EIO, and while the one
// named by SHIM_FSYNC_STALLS exists every fsync waits (at most 10 s).
@testable import Chat
import Channels
import Foundation
import GMP
import GMPTestSupport
import Glibc
import NetPoller
import Testing
import WebSocket

/// The fsync shim's C source (see the top of the file).
private let fsyncShimSource = """
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <errno.h>
    #include <stdlib.h>
    #include <unistd.h>
    static int flagged(const char *var) { const char *p = getenv(var); return p && access(p, F_OK) == 0; }
    int fsync(int fd) {
        static int (*real)(int);
        if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
        if (flagged("SHIM_FSYNC_FAILS")) { errno = EIO; return -1; }
        for (int i = 0; i < 1000 && flagged("SHIM_FSYNC_STALLS"); i++) usleep(10000);
        return real(fd);
    }
    """

/// Inside a G: sends `n` messages from `c` and waits for each answer; the acked count.
private func post(_ c: EnvelopeClient, _ n: Int, _ prefix: String) -> Int {
    var acked = 0
    for k in 0..<n {
        c.say("\(prefix)\(k)")
        guard let l = c.until({ $0.type == "ack" || $0.type == "error" })?.last else { return acked }
        if l.type == "ack" { acked += 1 }
    }
    return acked
}

/// Inside a G: the code of the close frame that ends `ws` (nil: it ended otherwise).
private func closeCode(_ ws: WebSocketConn) -> UInt16? {
    while true {
        do throws(WebSocketError) { _ = try ws.receive() } catch {
            if case .closed(let code, _) = error { return code }
            return nil
        }
    }
}

@Suite(.serialized) struct DurabilityTests {
    @Test("--fsync always: catch-up never serves a batch whose fsync has not returned; a failed fsync refuses its message (error line with its id, nobody gets it, never in the history) and the log goes on once fsync works",
          .enabled(if: cCompiler() != nil))
    func fsyncStallsAndFailures() async throws {
        let shim = try faultShim(named: "fsync_fault", source: fsyncShimSource)
        let dir = temporaryDirectory("durability")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stall = dir + "/stall", fail = dir + "/fail"
        let env = ["LD_PRELOAD": shim, "SHIM_FSYNC_STALLS": stall, "SHIM_FSYNC_FAILS": fail]
        let data = dir + "/data"
        let (app, port) = try startChatApp(extraArguments: ["--data-dir", data, "--fsync", "always"], environment: env)
        defer { app.terminate(); app.waitUntilExit() }
        struct Seen { var caughtUp: [UInt64]; var live: [UInt64]; var refusal: [String: Any]?; var bystander: [String]; var after: UInt64? }
        let r = await runG(procs: 2, timeout: 60) { () -> Seen? in
            guard let a = EnvelopeClient(port: port), let b = EnvelopeClient(port: port),
                  a.next()?.type == "joined", b.next()?.type == "joined" else { return nil }
            defer { a.close(); b.close() }
            // More than the hub's tail (128): a joiner with since=0 reads the log.
            guard post(a, 140, "m") == 140 else { return nil }
            // The next batch is written, and its fsync stalls.
            let segment = data + "/lobby/" + RoomLog.segmentName(1)
            func size() -> Int { ((try? FileManager.default.attributesOfItem(atPath: segment))?[.size] as? Int) ?? 0 }
            let before = size()
            _ = FileManager.default.createFile(atPath: stall, contents: nil)
            a.say("uncommitted")
            guard waitFor(seconds: 10, every: 1_000_000, { size() > before }) else { return nil }
            guard let c = EnvelopeClient(port: port, query: "since=0") else { return nil }
            defer { c.close() }
            guard let caughtUp = c.until({ $0.type == "joined" }) else { return nil }
            try? FileManager.default.removeItem(atPath: stall)
            guard let live = c.until({ $0.type == "message" }), a.until({ $0.type == "ack" }) != nil else { return nil }
            b.say("/who") // (what b has so far, read)
            guard b.until({ $0.type == "who" }) != nil else { return nil }
            // A failed fsync.
            _ = FileManager.default.createFile(atPath: fail, contents: nil)
            a.say(#"{"id":"f1","text":"lost"}"#)
            let refusal = a.until { $0.type == "error" || $0.type == "ack" }?.last
            b.say("/who")
            let bystander = b.until { $0.type == "who" }?.map { "\($0.type) \($0.text)" } ?? ["nothing"]
            try? FileManager.default.removeItem(atPath: fail)
            a.say("after")
            let after = a.until { $0.type == "error" || $0.type == "ack" }?.last
            return Seen(caughtUp: caughtUp.filter { $0.type == "message" }.compactMap(\.seq),
                        live: live.filter { $0.type == "message" }.compactMap(\.seq),
                        refusal: refusal?.object, bystander: bystander, after: after?.type == "ack" ? after?.seq : nil)
        }
        let seen = try #require(r ?? nil)
        #expect(seen.caughtUp == Array(1...140), "caught up: \(seen.caughtUp.suffix(3)) (\(seen.caughtUp.count))")
        #expect(seen.live == [141])
        #expect(seen.refusal?["id"] as? String == "f1" && seen.refusal?["outcome"] as? String == "refused",
                "\(String(describing: seen.refusal))")
        #expect((seen.refusal?["text"] as? String)?.contains("cannot sync") == true)
        #expect(seen.bystander.allSatisfy { !$0.hasPrefix("message") }, "\(seen.bystander)")
        #expect(seen.after == 142)
        app.terminate()
        app.waitUntilExit()
        // Restarted: what was acked, and nothing else.
        let (again, port2) = try startChatApp(extraArguments: ["--data-dir", data])
        defer { again.terminate(); again.waitUntilExit() }
        let history = await runG(procs: 2) { fullHistory(port: port2) } ?? nil
        #expect(history?.map(\.1).suffix(2) == ["uncommitted", "after"])
        #expect(history?.map(\.0) == Array(1...142))
    }

    @Test("A post taken as its room empties (a fresh room, then /leave at once) is answered, and the room is kept: the hub answers what its log G still commits before the room is unloaded",
          .enabled(if: cCompiler() != nil))
    func postAsTheRoomEmpties() async throws {
        let shim = try faultShim(named: "fsync_fault", source: fsyncShimSource)
        let dir = temporaryDirectory("durability-unload")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stall = dir + "/stall"
        let (app, port) = try startChatApp(extraArguments: ["--data-dir", dir + "/data", "--fsync", "always"],
                                           environment: ["LD_PRELOAD": shim, "SHIM_FSYNC_STALLS": stall])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2, timeout: 60) { () -> (answer: String, listed: Bool)? in
            guard let c = EnvelopeClient(port: port, query: "room=fresh"), c.until({ $0.type == "joined" }) != nil else { return nil }
            defer { c.close() }
            // Its write waits in fsync while the client leaves: the room has no member and no number yet.
            _ = FileManager.default.createFile(atPath: stall, contents: nil)
            c.say(#"{"id":"a","text":"hi"}"#)
            c.say("/leave")
            guard c.until({ $0.type == "joined" && $0.room == "lobby" }) != nil else { return nil }
            try? FileManager.default.removeItem(atPath: stall)
            let answer = c.until { $0.type == "ack" || $0.type == "error" }?.last
            c.say("/rooms")
            let rooms = c.until { $0.type == "rooms" }?.last?.object["rooms"] as? [[String: Any]] ?? []
            return (answer.map { "\($0.type) \($0.object["id"] ?? "-") \($0.seq ?? 0)" } ?? "none",
                    rooms.contains { $0["name"] as? String == "fresh" })
        }
        let got = try #require(r ?? nil)
        #expect(got.answer == "ack a 1")
        #expect(got.listed, "/rooms does not list the room")
    }

    @Test("A log that cannot be read at catch-up closes the joiner with 1013 (try again later), never a gap")
    func unreadableLogIsNotAGap() async throws {
        let dir = temporaryDirectory("durability-read")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (app, port) = try startChatApp(extraArguments: ["--data-dir", dir])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> (code: UInt16?, gap: Bool)? in
            guard let a = EnvelopeClient(port: port), a.next()?.type == "joined", post(a, 140, "m") == 140 else { return nil }
            defer { a.close() }
            // (As root no mode stops a read: a directory in the segment's place does.)
            let segment = dir + "/lobby/" + RoomLog.segmentName(1)
            guard rename(segment, segment + ".away") == 0, mkdir(segment, 0o755) == 0 else { return nil }
            guard let ws = try? dialWebSocket(host: "127.0.0.1", port: port, path: "/ws?since=0") else { return nil }
            defer { ws.conn.close() }
            ws.conn.setReadDeadline(.after(.seconds(10)))
            var gap = false
            while true {
                do throws(WebSocketError) {
                    if case .text(let t) = try ws.receive(), t.contains("\"type\":\"gap\"") { gap = true }
                } catch {
                    if case .closed(let code, _) = error { return (code, gap) }
                    return (nil, gap)
                }
            }
        }
        let got = try #require(r ?? nil)
        #expect(got.code == 1013)
        #expect(!got.gap)
    }

    @Test("Gap lines: from the log (a since older than the oldest kept segment) and from the hub (--memory, a since older than its tail), then every kept message once")
    func gapLines() async throws {
        let dir = temporaryDirectory("durability-gap")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for flags in [["--data-dir", dir, "--retain", "10"], ["--memory"]] {
            let (app, port) = try startChatApp(extraArguments: flags)
            defer { app.terminate(); app.waitUntilExit() }
            let r = await runG(procs: 2) { () -> (gap: (UInt64, UInt64)?, seqs: [UInt64])? in
                guard let a = EnvelopeClient(port: port), a.next()?.type == "joined", post(a, 140, "m") == 140 else { return nil }
                defer { a.close() }
                guard let c = EnvelopeClient(port: port, query: "since=1"), let lines = c.until({ $0.type == "joined" }) else { return nil }
                defer { c.close() }
                let g = lines.first { $0.type == "gap" }.flatMap { l -> (UInt64, UInt64)? in
                    guard let from = (l.object["from"] as? NSNumber)?.uint64Value, let to = (l.object["to"] as? NSNumber)?.uint64Value else { return nil }
                    return (from, to)
                }
                return (g, lines.filter { $0.type == "message" }.compactMap(\.seq))
            }
            let got = try #require(r ?? nil, "\(flags)")
            let first = try #require(got.seqs.first, "\(flags): no messages")
            #expect(got.gap.map { [$0.0, $0.1] } == [2, first - 1], "\(flags)")
            #expect(got.seqs == Array(first...140), "\(flags)")
            // The log keeps about --retain (10 to 15 here); the hub's tail 128.
            #expect(flags.contains("--memory") ? first == 13 : first > 120, "\(flags): from \(first)")
        }
    }

    @Test("--fsync interval: a write is synced within 100 ms while the server idles (the log G's timer)")
    func intervalSync() async throws {
        let dir = temporaryDirectory("durability-interval")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (app, port) = try startChatApp(extraArguments: ["--data-dir", dir, "--fsync", "interval", "--metrics"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2) { () -> Bool? in
            guard let a = EnvelopeClient(port: port), a.next()?.type == "joined", post(a, 1, "m") == 1 else { return nil }
            defer { a.close() }
            // (Bounded well past 100 ms: a loaded machine may be slow to run the timer.)
            return waitFor(seconds: 5, every: 5_000_000) { httpGet(port, "/metrics").contains("\nchat_history_fsync_seconds_count 1\n") }
        }
        #expect(r == true)
    }

    // (Not under AddressSanitizer: its quarantine keeps freed memory, and RSS with it.)
    @Test("Catch-up holds about a page for a client that does not read: 40 clients asking for 3,000 messages of 1 KB (since=0) that never read (4 KB receive buffers) leave the server's RSS within 64 MiB of before, until the write wait cuts them",
          .enabled(if: !GMP.isAddressSanitized))
    func catchUpMemoryBounded() async throws {
        // (Each held what it had read, up to 5,000 messages: these 40 took
        // the RSS up by 228 MiB.)
        let dir = temporaryDirectory("durability-memory")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (app, port) = try startChatApp(extraArguments: ["--data-dir", dir, "--rate", "0", "--stats", "--write-wait-ms", "2000",
                                                            "--max-conns-per-ip", "0", "--max-message", "2048"])
        defer { app.terminate(); app.waitUntilExit() }
        let r = await runG(procs: 2, timeout: 120) { () -> (before: Int, peak: Int, cut: Bool)? in
            guard let a = EnvelopeClient(port: port), a.next()?.type == "joined" else { return nil }
            defer { a.close() }
            let text = String(repeating: "x", count: 1_000)
            go { for k in 0..<3_000 { a.say("\(k) \(text)") } }
            guard a.until({ $0.type == "ack" && $0.seq == 3_000 }) != nil else { return nil }
            let stats = serverStats(port)
            guard let before = stats["rss_bytes"], let gs = stats["goroutines"] else { return nil }
            var readers: [Int32] = []
            defer { for fd in readers { close(fd) } }
            for _ in 0..<40 {
                guard let fd = stalledReader(port: port, path: "/ws?since=0") else { return nil }
                readers.append(fd)
            }
            // The peak while they hold on, until the write wait has cut every one.
            var peak = before
            let cut = waitFor(seconds: 40, every: 20_000_000) {
                let now = serverStats(port)
                peak = max(peak, now["rss_bytes"] ?? 0)
                return (now["goroutines"] ?? .max) <= gs + 2
            }
            return (before, peak, cut)
        }
        let got = try #require(r ?? nil)
        #expect(got.cut)
        #expect(got.peak - got.before < 64 << 20, "RSS from \(got.before >> 20) to \(got.peak >> 20) MiB")
    }
}

/// A WebSocket client that never reads: a socket with a 4 KB receive buffer
/// (set before it connects, so the window it offers stays small) that sends
/// the upgrade request for `path` and nothing more. Its descriptor.
private func stalledReader(port: Int, path: String) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var small: Int32 = 4096
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    let request = "GET \(path) HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    guard connected == 0, request.withCString({ send(fd, $0, strlen($0), 0) }) > 0 else {
        close(fd)
        return nil
    }
    return fd
}
