@testable import Chat
import Foundation
import Glibc
import Synchronization
import Testing
import WebSocket

/// A fresh temporary directory.
func temporaryDirectory(_ prefix: String = "chat-test") -> String {
    let dir = NSTemporaryDirectory() + "\(prefix)-\(getpid())-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

private func entry(_ seq: UInt64, _ text: String = "", from: String = "ann") -> Entry {
    Entry(seq: seq, time: 1_700_000_000_000 + Int64(seq), from: from, text: text.isEmpty ? "message \(seq)" : text)
}

@Suite struct HistoryTests {
    @Test("CRC-32 is zlib's: the check value of \"123456789\" is CBF43926")
    func crc() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
    }

    @Test("Records read back as written; a short record, a flipped bit or a sequence out of order ends the read there")
    func records() {
        var bytes: [UInt8] = []
        let es = [entry(1, "héllo"), entry(2, "", from: ""), entry(3, String(repeating: "x", count: 600))]
        for e in es { Record.append(e, to: &bytes) }
        let whole = Record.decode(bytes, after: 0)
        #expect(whole.entries == es && whole.end == bytes.count && whole.problem == nil)
        // Torn: the last record cut short.
        let torn = Record.decode(Array(bytes.dropLast(10)), after: 0)
        #expect(torn.entries == Array(es.prefix(2)) && torn.problem == "a short record")
        let firstTwo = torn.end
        // Corrupt: one bit of the second record's text flipped.
        var flipped = bytes
        flipped[firstTwo - 1] ^= 0x04
        let bad = Record.decode(flipped, after: 0)
        #expect(bad.entries == [es[0]] && bad.problem == "a CRC mismatch")
        // A header alone, and nonsense for a length.
        #expect(Record.decode(Array(bytes.prefix(4)), after: nil).problem == "a short record header")
        #expect(Record.decode([0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0], after: nil).problem?.hasPrefix("a bad record length") == true)
        // Out of order.
        #expect(Record.decode(bytes, after: 5).problem == "sequence number 1 where 6 was due")
    }

    @Test("A log reopened has every record; a torn tail is cut off and reported, never served, and the log goes on from the cut")
    func tornTail() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let (log, tail, notes) = try RoomLog.open(dir: dir, policy: .always, retain: 100, tailLength: 10)
            #expect(tail.isEmpty && notes.isEmpty && log.last == 0)
            try log.append([entry(1), entry(2)])
            try log.append([entry(3)])
            #expect(log.last == 3 && !log.unsynced)
        }
        // A power cut mid-write: half a record at the end.
        let segment = dir + "/" + RoomLog.segmentName(1)
        var half: [UInt8] = []
        Record.append(entry(4), to: &half)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: segment))
        h.seekToEndOfFile()
        h.write(Data(half.prefix(half.count / 2)))
        try h.close()
        let (log, tail, notes) = try RoomLog.open(dir: dir, policy: .always, retain: 100, tailLength: 2)
        #expect(log.last == 3)
        #expect(tail == [entry(2), entry(3)])
        #expect(notes.count == 1 && notes[0].contains("a short record") && notes[0].contains("cut there"), "\(notes)")
        #expect(try RoomLog.read(dir: dir, after: 0, through: .max, limit: 10) == [entry(1), entry(2), entry(3)])
        // Appending goes on from the cut: the next reopen finds a clean log.
        try log.append([entry(4, "after the cut")])
        let (again, _, notesAgain) = try RoomLog.open(dir: dir, policy: .never, retain: 100, tailLength: 10)
        #expect(again.last == 4 && notesAgain.isEmpty)
        #expect(try RoomLog.read(dir: dir, after: 2, through: .max, limit: 10) == [entry(3), entry(4, "after the cut")])
    }

    @Test("Corruption inside an older segment: the log ends there, later segments are set aside as .corrupt")
    func corruptMiddle() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let (log, _, _) = try RoomLog.open(dir: dir, policy: .never, retain: 4, tailLength: 10) // 2 a segment
            for s in 1...6 as ClosedRange<UInt64> { try log.append([entry(s)]) }
        }
        // Retention is applied as a segment starts: when 5 began, 1 to 4 were the newest 4.
        #expect(RoomLog.listSegments(dir) == [1, 3, 5])
        // Flip a byte in the middle segment's second record.
        let path = dir + "/" + RoomLog.segmentName(3)
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count - 3] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let (log, tail, notes) = try RoomLog.open(dir: dir, policy: .never, retain: 4, tailLength: 10)
        #expect(log.last == 3 && tail == [entry(1), entry(2), entry(3)])
        #expect(notes.count == 2 && notes[0].contains("a CRC mismatch") && notes[1].contains(".corrupt"), "\(notes)")
        #expect(FileManager.default.fileExists(atPath: dir + "/" + RoomLog.segmentName(5) + ".corrupt"))
        #expect(RoomLog.listSegments(dir) == [1, 3])
    }

    @Test("Retention: segments whose messages are all older than the newest --retain go; a read from before them starts at the oldest kept")
    func retention() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _, _) = try RoomLog.open(dir: dir, policy: .never, retain: 10, tailLength: 0) // 5 a segment
        for s in stride(from: 1 as UInt64, through: 100, by: 2) { try log.append([entry(s), entry(s + 1)]) }
        let kept = try RoomLog.read(dir: dir, after: 0, through: .max, limit: 1_000)
        #expect(kept.last?.seq == 100)
        #expect(kept.count >= 10 && kept.count <= 20, "kept \(kept.count)")
        #expect(zip(kept, kept.dropFirst()).allSatisfy { $0.seq + 1 == $1.seq })
        #expect(try RoomLog.read(dir: dir, after: 95, through: .max, limit: 3).map(\.seq) == [96, 97, 98])
        // Nothing past the committed mark (a batch being written, or cut back).
        #expect(try RoomLog.read(dir: dir, after: 95, through: 97, limit: 10).map(\.seq) == [96, 97])
    }

    @Test("The data directory: created if missing; a path that cannot be a directory is a clear error at start")
    func dataDirectory() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let rooms = try Directory.openStore(StoreSettings(dataDir: dir + "/a/b"), policy: .interval)
        #expect(rooms.isEmpty && FileManager.default.fileExists(atPath: dir + "/a/b"))
        FileManager.default.createFile(atPath: dir + "/file", contents: Data("x".utf8))
        #expect {
            _ = try Directory.openStore(StoreSettings(dataDir: dir + "/file/sub"), policy: .interval)
        } throws: { error in
            "\(error)".hasPrefix("cannot create the data directory \(dir)/file/sub")
        }
    }

    @Test("/ws options: room, since and format from the query; bad values are a 400 that says which")
    func socketOptions() {
        func request(_ target: String) -> HTTPRequest {
            try! HTTPRequest.parse(Array("GET \(target) HTTP/1.1\r\nHost: x\r\n\r\n".utf8)[...])!.0
        }
        func parse(_ target: String) -> Result<SocketOptions, HTTPError> { SocketOptions.parse(request(target).query) }
        #expect(parse("/ws") == .success(SocketOptions()))
        #expect(parse("/ws?room=dev-1&since=42&format=text&x=y")
                    == .success(SocketOptions(room: "dev-1", since: 42, format: .text)))
        #expect(parse("/ws?room=Dev") == .failure(HTTPError(status: .badRequest, detail: "room: " + ChatCommand.roomNameRule)))
        #expect(parse("/ws?room=" + String(repeating: "a", count: 33)) == parse("/ws?room=Dev"))
        #expect(parse("/ws?since=-1") == .failure(HTTPError(status: .badRequest, detail: "since: a message number (0 or more) is wanted")))
        #expect(parse("/ws?format=xml") == .failure(HTTPError(status: .badRequest, detail: "format: json or text")))
        #expect(parse("/ws?room=%zz") == .failure(HTTPError(status: .badRequest, detail: "the query is not well formed")))
        #expect(request("/a?x=1+2&y=%41%c3%a9&z").query?.map { [$0.name, $0.value] }
                    == [["x", "1 2"], ["y", "Aé"], ["z", ""]])
    }

    @Test("Config keys for rooms and history; wrong types are clear errors")
    func configKeys() throws {
        var c = ChatConfig()
        c.dataDir = "x"
        _ = try parseConfig(Data(#"{"dataDir": null, "fsync": "always", "history": 0, "retain": 5, "maxRooms": 3, "joinsPerMinute": 9}"#.utf8),
                            name: "c.json", into: &c)
        #expect(c.dataDir == nil && c.fsync == .always && c.history == 0 && c.retain == 5 && c.maxRooms == 3 && c.joinsPerMinute == 9)
        _ = try parseConfig(Data(#"{"dataDir": "/var/chat"}"#.utf8), name: "c.json", into: &c)
        #expect(c.dataDir == "/var/chat")
        // 0 and 1 are numbers here (JSONSerialization's NSNumbers for them also cast to Bool).
        _ = try parseConfig(Data(#"{"maxConns": 0, "burst": 1, "rate": 0}"#.utf8), name: "c.json", into: &c)
        #expect(c.maxConns == 0 && c.burst == 1 && c.rate == 0)
        for (json, message) in [(#"{"fsync": "sometimes"}"#, "c.json: key 'fsync' must be \"always\", \"interval\" or \"never\""),
                                (#"{"retain": 0}"#, "c.json: key 'retain' must be a positive integer"),
                                (#"{"history": true}"#, "c.json: key 'history' must be an integer, 0 or more"),
                                (#"{"maxRooms": 1.5}"#, "c.json: key 'maxRooms' must be an integer, 0 or more"),
                                (#"{"dataDir": ""}"#, "c.json: key 'dataDir' must be a directory, or null to keep history in memory")] {
            #expect { _ = try parseConfig(Data(json.utf8), name: "c.json", into: &c) } throws: { "\($0)" == message }
        }
    }

    @Test("Records that skip forward (1, 2, 4) end the read at the gap, as one that goes back does")
    func decodeSkipForward() {
        var bytes: [UInt8] = []
        for e in [entry(1), entry(2), entry(4)] { Record.append(e, to: &bytes) }
        let d = Record.decode(bytes, after: 0)
        #expect(d.entries == [entry(1), entry(2)] && d.problem == "sequence number 4 where 3 was due")
    }

    @Test("A segment named for another number than its first record (…100.log holding 1 to 3 and a torn 4th) is set aside at start, with the segments after it; no trap")
    func misnamedSegment() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var bytes: [UInt8] = []
        for s in 1...3 as ClosedRange<UInt64> { Record.append(entry(s), to: &bytes) }
        var torn: [UInt8] = []
        Record.append(entry(4), to: &torn)
        bytes += torn.prefix(torn.count / 2)
        let path = dir + "/" + RoomLog.segmentName(100)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let (log, tail, notes) = try RoomLog.open(dir: dir, policy: .never, retain: 100, tailLength: 10)
        #expect(log.last == 0 && tail.isEmpty)
        #expect(notes.count == 1 && notes[0].contains("its first record is number 1") && notes[0].contains(".corrupt"), "\(notes)")
        #expect(FileManager.default.fileExists(atPath: path + ".corrupt") && RoomLog.listSegments(dir).isEmpty)
        try log.append([entry(1, "new")]) // the log goes on, empty
        #expect(try RoomLog.read(dir: dir, after: 0, through: .max, limit: 10) == [entry(1, "new")])
    }

    @Test("Retention at the boundary: the newest --retain records are all kept, and a segment goes as soon as all of its are older")
    func retentionBoundary() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _, _) = try RoomLog.open(dir: dir, policy: .never, retain: 5, tailLength: 0) // 2 a segment
        for s in 1...7 as ClosedRange<UInt64> { try log.append([entry(s)]) }
        // Segment 7 started with 1 to 6 written: the newest 5 were 2 to 6, so segment 1 (1 and 2) stays.
        #expect(RoomLog.listSegments(dir) == [1, 3, 5, 7])
        #expect(try RoomLog.read(dir: dir, after: 0, through: .max, limit: 100).map(\.seq) == Array(1...7))
        try log.append([entry(8)])
        try log.append([entry(9)]) // segment 9: the newest 5 were 4 to 8; 1 and 2 go, 3 and 4 stay
        #expect(RoomLog.listSegments(dir) == [3, 5, 7, 9])
    }

    @Test("A segment that is there but cannot be read is an error for catch-up, never a gap")
    func unreadableSegment() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _, _) = try RoomLog.open(dir: dir, policy: .never, retain: 4, tailLength: 0)
        for s in 1...6 as ClosedRange<UInt64> { try log.append([entry(s)]) }
        // (As root no mode stops a read: a directory in the segment's place does.)
        let path = dir + "/" + RoomLog.segmentName(3)
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        #expect { _ = try RoomLog.read(dir: dir, after: 2, through: .max, limit: 10) } throws: {
            "\($0)".hasPrefix("cannot read \(path)")
        }
        // One that retention removed is skipped: the reader reports the gap.
        try FileManager.default.removeItem(atPath: path)
        #expect(try RoomLog.read(dir: dir, after: 2, through: .max, limit: 10).map(\.seq) == [5, 6])
    }

    @Test("--fsync always: a failed fsync refuses its batch (cut back, never read) and the log takes nothing until it is read back and synced")
    func failedFsync() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let failing = Atomic<Bool>(false)
        var io = LogIO.system
        io.fsync = { fd in
            if failing.load(ordering: .relaxed) {
                errno = EIO
                return -1
            }
            return fsync(fd)
        }
        let (log, _, _) = try RoomLog.open(dir: dir, policy: .always, retain: 100, tailLength: 0, io: io)
        try log.append([entry(1)])
        failing.store(true, ordering: .relaxed)
        #expect(throws: StoreError.self) { try log.append([entry(2)]) }
        #expect(log.last == 1 && log.broken != nil)
        #expect(try RoomLog.read(dir: dir, after: 0, through: .max, limit: 10) == [entry(1)])
        #expect(throws: StoreError.self) { try log.recover() } // the sync still fails
        #expect(log.broken != nil)
        failing.store(false, ordering: .relaxed)
        try log.recover()
        #expect(log.broken == nil && log.last == 1)
        try log.append([entry(2, "again")])
        #expect(try RoomLog.read(dir: dir, after: 0, through: .max, limit: 10) == [entry(1), entry(2, "again")])
    }

    @Test("A write that fails part way (a full disk) is cut back: nothing of its batch is read, after a reopen either, and the log goes on")
    func failedWriteCutBack() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let failing = Atomic<Bool>(false)
        var io = LogIO.system
        io.write = { fd, p, n in
            guard failing.load(ordering: .relaxed) else { return write(fd, p, n) }
            // What fits goes (two records and a bit), then the disk is full.
            let room = 100
            if n > room { return write(fd, p, room) }
            errno = ENOSPC
            return -1
        }
        let (log, _, _) = try RoomLog.open(dir: dir, policy: .never, retain: 100, tailLength: 0, io: io)
        try log.append([entry(1)])
        failing.store(true, ordering: .relaxed)
        #expect(throws: StoreError.self) { try log.append([entry(2), entry(3), entry(4), entry(5)]) }
        #expect(log.last == 1 && log.broken == nil)
        #expect(try RoomLog.read(dir: dir, after: 0, through: .max, limit: 10) == [entry(1)])
        let (again, _, notes) = try RoomLog.open(dir: dir, policy: .never, retain: 100, tailLength: 0)
        #expect(again.last == 1 && notes.isEmpty, "\(notes)")
        failing.store(false, ordering: .relaxed)
        try log.append([entry(2, "again")])
        #expect(try RoomLog.read(dir: dir, after: 0, through: .max, limit: 10) == [entry(1), entry(2, "again")])
    }

    @Test("Reads go through a segment in 64 KiB pieces: records cut by a piece's end (one of 150 KB too) come whole, from any point, up to the limit")
    func readInPieces() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _, _) = try RoomLog.open(dir: dir, policy: .never, retain: 1_000, tailLength: 0)
        var all: [Entry] = []
        for s in 1...40 as ClosedRange<UInt64> {
            let e = entry(s, String(repeating: Character(UnicodeScalar(UInt8(96 + s % 26))), count: s == 20 ? 150_000 : 9_000 + Int(s)))
            all.append(e)
            try log.append([e])
        }
        #expect(try RoomLog.read(dir: dir, after: 0, through: .max, limit: 100) == all)
        #expect(try RoomLog.read(dir: dir, after: 17, through: .max, limit: 5) == Array(all[17..<22]))
        #expect(try RoomLog.read(dir: dir, after: 30, through: 33, limit: 100) == Array(all[30..<33]))
        // Pages of 7 with a cursor (across segments of 20): the same entries, and a cursor
        // that does not fit the next read (another `after`) is not used.
        let (small, _, _) = try RoomLog.open(dir: dir + "-pages", policy: .never, retain: 40, tailLength: 0)
        defer { try? FileManager.default.removeItem(atPath: dir + "-pages") }
        for e in all { try small.append([e]) }
        var cursor: LogCursor?
        var paged: [Entry] = []
        while true {
            let page = try RoomLog.read(dir: dir + "-pages", after: paged.last?.seq ?? 0, through: .max, limit: 7, cursor: &cursor)
            paged += page
            if page.count < 7 { break }
        }
        #expect(paged == all)
        var stale = LogCursor?(LogCursor(segment: 21, offset: 0, after: 25))
        #expect(try RoomLog.read(dir: dir + "-pages", after: 2, through: .max, limit: 3, cursor: &stale) == Array(all[2..<5]))
    }
}
