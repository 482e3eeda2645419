// A room's history on disk: an append-only log in a directory of its own
// under the data directory (`<data-dir>/<room>/`), cut into segments named
// for the sequence number of their first record
// (`00000000000000000001.log`).
//
// A record is its body's length (u32, little-endian), the CRC-32 of the body
// (u32), then the body: the sequence number (u64), the time (i64, ms since
// 1970), the sender's name (u16 length, then UTF-8) and the text (the rest,
// UTF-8). A batch of records goes to the file in one write(2); a process
// killed between writes leaves whole records, a power cut can leave a torn
// one. On open every segment is read back, and the first record that is
// short, fails its CRC or does not follow its predecessor's sequence number
// ends the log: its segment is cut there (ftruncate) and any later segment
// is set aside (renamed `*.corrupt`), with a note for the server's log. Nothing
// past the cut is ever served.
//
// One writer per room (the room's log G, Room.swift) appends, rolls a new
// segment every `segmentLength` records, syncs as its `FsyncPolicy` says,
// and removes a segment once all its records are older than the newest
// `retain`. A write that fails is cut back; if even that fails the log
// refuses further appends (`broken`) rather than write behind garbage.
// Readers (catch-up after a reconnect) open the segments by themselves and
// take whole records up to the log G's committed mark: a batch being
// written, or being cut back, is never read; a segment that retention
// removed under them is a gap they report, and one they cannot read is an
// error (never a gap). An fsync that fails under `always` refuses its batch
// (cut back) and stops appends until the log is read back (`recover`).
// All file I/O runs inside `GMP.blocking`: the G's P goes on with other Gs.
import Foundation
import GMP
import Glibc

/// When the history log is flushed to the disk (`fsync`).
public enum FsyncPolicy: String, Sendable, CaseIterable {
    /// Before a message is acknowledged or delivered; one fsync covers a batch.
    case always
    /// Within 100 ms of a write, by the room's log G (not its hub): one fsync
    /// covers every message of the interval. A process that is killed loses
    /// nothing (the kernel has the writes); a power cut, at most 100 ms.
    case interval
    /// Never: the kernel writes back when it sees fit.
    case never
}

/// One message of a room's history.
public struct Entry: Sendable, Equatable {
    /// Its number in the room: 1, 2, 3, … with no gap.
    public var seq: UInt64
    /// When the server took it, in milliseconds since 1970.
    public var time: Int64
    /// The sender's name ("" if it had none).
    public var from: String
    /// The message.
    public var text: String

    /// An entry with these fields.
    public init(seq: UInt64, time: Int64, from: String, text: String) {
        (self.seq, self.time, self.from, self.text) = (seq, time, from, text)
    }
}

/// A failure of the history store: what was being done, and the system's reason.
public struct StoreError: Error, CustomStringConvertible {
    /// What was being done, and why it failed.
    public let description: String
    init(_ what: String, errno e: Int32) { description = "\(what): \(String(cString: strerror(e)))" }
    init(_ d: String) { description = d }
}

/// Where a catch-up's last page of a log stopped: the segment, the byte
/// after the last record read, and that record's number.
struct LogCursor: Sendable {
    let segment: UInt64
    let offset: Int
    let after: UInt64
}

/// The system calls a log's appends make: the system's, or stand-ins that
/// fail the way a full or broken disk does (tests).
struct LogIO: Sendable {
    var write: @Sendable (Int32, UnsafeRawPointer, Int) -> Int
    var fsync: @Sendable (Int32) -> Int32

    static let system = LogIO(write: { Glibc.write($0, $1, $2) }, fsync: { Glibc.fsync($0) })
}

/// Records: encoding, and decoding with every check.
enum Record {
    static let headerSize = 8
    /// A body longer than this is corrupt. (A message is at most
    /// `ChatConfig.maxMessageLimit`, 1 MiB, plus its name and header.)
    static let maxBody = 1 << 21

    /// Appends `e` as a record to `out`.
    static func append(_ e: Entry, to out: inout [UInt8]) {
        let name = Array(e.from.utf8.prefix(Int(UInt16.max)))
        var body: [UInt8] = []
        body.reserveCapacity(18 + name.count + e.text.utf8.count)
        withUnsafeBytes(of: e.seq.littleEndian) { body += $0 }
        withUnsafeBytes(of: e.time.littleEndian) { body += $0 }
        withUnsafeBytes(of: UInt16(name.count).littleEndian) { body += $0 }
        body += name
        body += e.text.utf8
        withUnsafeBytes(of: UInt32(body.count).littleEndian) { out += $0 }
        withUnsafeBytes(of: CRC32.checksum(body).littleEndian) { out += $0 }
        out += body
    }

    /// The records at the start of `bytes`, and where the last whole one
    /// ends. `problem` says why decoding stopped before the end, if it did:
    /// a short record, a CRC mismatch, a bad length, or a sequence number
    /// that does not follow `after` (when given) or its predecessor. Records
    /// numbered up to `keepAfter` are checked but not kept (a reader's skip),
    /// and decoding stops once `limit` are kept (`end`: after the last).
    static func decode(_ bytes: [UInt8], after: UInt64?, keepAfter: UInt64 = 0,
                       limit: Int = .max) -> (entries: [Entry], end: Int, problem: String?) {
        var entries: [Entry] = []
        var at = 0
        var expected = after.map { $0 + 1 }
        return bytes.withUnsafeBytes { raw -> ([Entry], Int, String?) in
            func u32(_ i: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: UInt32.self)) }
            while at < raw.count {
                guard raw.count - at >= headerSize else { return (entries, at, "a short record header") }
                let length = Int(u32(at)), crc = u32(at + 4)
                guard length >= 18 && length <= maxBody else { return (entries, at, "a bad record length \(length)") }
                guard raw.count - at - headerSize >= length else { return (entries, at, "a short record") }
                let body = UnsafeRawBufferPointer(rebasing: raw[(at + headerSize)..<(at + headerSize + length)])
                guard CRC32.checksum(body) == crc else { return (entries, at, "a CRC mismatch") }
                let seq = UInt64(littleEndian: body.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
                let time = Int64(littleEndian: body.loadUnaligned(fromByteOffset: 8, as: Int64.self))
                let nameLength = Int(UInt16(littleEndian: body.loadUnaligned(fromByteOffset: 16, as: UInt16.self)))
                guard 18 + nameLength <= length else { return (entries, at, "a bad name length") }
                if let e = expected, seq != e { return (entries, at, "sequence number \(seq) where \(e) was due") }
                guard seq > 0 && seq < UInt64.max else { return (entries, at, "sequence number \(seq)") }
                if seq > keepAfter {
                    let name = String(decoding: body[18..<(18 + nameLength)], as: UTF8.self)
                    let text = String(decoding: body[(18 + nameLength)...], as: UTF8.self)
                    entries.append(Entry(seq: seq, time: time, from: name, text: text))
                }
                expected = seq + 1
                at += headerSize + length
                if entries.count >= limit { return (entries, at, nil) }
            }
            return (entries, at, nil)
        }
    }
}

/// A room's log: its segments, the newest open for appending. Used by one
/// G at a time (the room's log G); `read` is for anyone. The room's
/// directory is made with its first segment: a room that never had a
/// message leaves nothing on disk.
final class RoomLog {
    /// The room's directory.
    let dir: String
    let policy: FsyncPolicy
    /// Messages kept at least (older ones go with their segment).
    let retain: Int
    /// Records per segment.
    let segmentLength: Int
    /// The newest record's sequence number (0: none yet).
    private(set) var last: UInt64 = 0
    /// Whether a write has not been synced yet.
    private(set) var unsynced = false
    /// How long the last fsync took (nil once read): for the metrics.
    var lastSyncNanoseconds: Int64?
    /// Why the log takes no more appends: a failed write could not be cut
    /// back, and appending after it would put records behind garbage.
    private(set) var broken: StoreError?
    /// The first sequence number of each segment, oldest first.
    private var segments: [UInt64] = []
    /// The newest segment, open for appending (-1: none yet).
    private var fd: Int32 = -1
    private var size = 0
    private var inSegment = 0
    /// write(2) and fsync(2), or stand-ins that fail (tests).
    let io: LogIO

    private init(dir: String, policy: FsyncPolicy, retain: Int, io: LogIO) {
        self.dir = dir
        self.policy = policy
        self.io = io
        self.retain = max(1, retain)
        segmentLength = max(1, min(self.retain / 2, 5_000))
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// A segment's file name.
    static func segmentName(_ first: UInt64) -> String {
        let digits = String(first)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".log"
    }

    /// The segments in `dir`, oldest first (by their names).
    static func listSegments(_ dir: String) -> [UInt64] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.compactMap { n -> UInt64? in
            guard n.hasSuffix(".log"), n.count == 24 else { return nil }
            return UInt64(n.dropLast(4))
        }.sorted()
    }

    /// Opens (creating) the log in `dir`, reads it back and cuts off a bad
    /// tail. Returns the log, its newest `tailLength` entries, and notes on
    /// what was cut.
    static func open(dir: String, policy: FsyncPolicy, retain: Int, tailLength: Int,
                     io: LogIO = .system)
        throws(StoreError) -> (RoomLog, tail: [Entry], notes: [String]) {
        let log = RoomLog(dir: dir, policy: policy, retain: retain, io: io)
        var tail: [Entry] = []
        var notes: [String] = []
        try GMP.blocking { () throws(StoreError) in
            let found = listSegments(dir) // (none if the directory is not there yet)
            var kept: [UInt64] = []
            var expected: UInt64? = nil
            for (i, first) in found.enumerated() {
                let path = dir + "/" + segmentName(first)
                guard let bytes = FileManager.default.contents(atPath: path) else {
                    throw StoreError("cannot read \(path)", errno: errno)
                }
                let (entries, end, problem) = Record.decode(Array(bytes), after: expected)
                if let e = entries.first, e.seq != first {
                    // Named for another number than it holds: the log ends
                    // before it; it and every later segment are set aside.
                    for later in found[i...] {
                        let p = dir + "/" + segmentName(later)
                        notes.append(later == first ? "\(p): its first record is number \(e.seq); set aside as \(p).corrupt"
                                                    : "\(p): after it; set aside as \(p).corrupt")
                        rename(p, p + ".corrupt")
                    }
                    break
                }
                tail += entries
                if tail.count > tailLength { tail.removeFirst(tail.count - tailLength) }
                if let e = entries.last { expected = e.seq; log.last = e.seq }
                if let problem {
                    notes.append("\(path): \(problem) at byte \(end) of \(bytes.count); "
                                 + "cut there (\(bytes.count - end) bytes), \(entries.count) records kept")
                    if truncate(path, off_t(end)) != 0 { throw StoreError("cannot cut \(path)", errno: errno) }
                    if !entries.isEmpty { kept.append(first) } else { unlink(path) }
                    for later in found[(i + 1)...] {
                        let p = dir + "/" + segmentName(later)
                        notes.append("\(p): after the cut; set aside as \(p).corrupt")
                        rename(p, p + ".corrupt")
                    }
                    break
                }
                if entries.isEmpty { unlink(path) } else { kept.append(first) }
            }
            log.segments = kept
            if let newest = kept.last {
                let path = dir + "/" + segmentName(newest)
                log.fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
                if log.fd < 0 { throw StoreError("cannot open \(path)", errno: errno) }
                var st = stat()
                fstat(log.fd, &st)
                log.size = Int(st.st_size)
                log.inSegment = Int(log.last - newest + 1)
            }
        }
        return (log, tail, notes)
    }

    /// Appends `entries` (numbered from `last + 1` on, no gap) in one write,
    /// rolling a new segment first if the newest is full, and under the
    /// policy `always` syncs them. If the write or the fsync fails nothing
    /// of the batch is kept (the segment is cut back to where it was) and
    /// the error says why. After a failed fsync the kernel may have dropped
    /// writes it had (and marked them clean): what is on the disk is
    /// unknown, so the log takes no more appends (`broken`) until `recover`
    /// has read it back and a sync succeeds.
    func append(_ entries: [Entry]) throws(StoreError) {
        guard let first = entries.first else { return }
        if let broken { throw broken }
        precondition(first.seq == last + 1, "history: entries must follow the log")
        var bytes: [UInt8] = []
        for e in entries { Record.append(e, to: &bytes) }
        try GMP.blocking { () throws(StoreError) in
            if fd < 0 || inSegment >= segmentLength { try roll(first: first.seq) }
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { io.write(fd, $0.baseAddress! + done, $0.count - done) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    let failure = StoreError("cannot write to \(dir)", errno: n < 0 ? errno : ENOSPC)
                    if ftruncate(fd, off_t(size)) != 0 { // no half batch left behind, or no more appends
                        broken = StoreError("the log in \(dir) cannot be cut back after a failed write", errno: errno)
                    }
                    throw failure
                }
                done += n
            }
            unsynced = true
            if policy == .always {
                do throws(StoreError) { try syncNow() } catch {
                    _ = ftruncate(fd, off_t(size)) // not served, not acked: not kept either (if the cut fails, `recover` reads it)
                    broken = StoreError("\(error.description); the log takes no appends until it is read back")
                    throw error
                }
            }
            size += bytes.count
            inSegment += entries.count
            last = entries[entries.count - 1].seq
        }
    }

    /// After a failed fsync (`broken`): reads the log back from the disk
    /// as `open` does (cutting a bad tail), then syncs it; appends go on
    /// from what it holds. Throws, and stays broken, if either fails.
    func recover() throws(StoreError) {
        guard broken != nil else { return }
        if fd >= 0 {
            let old = fd
            GMP.blocking { _ = Glibc.close(old) }
            fd = -1
        }
        // The refused batch is cut again first (if the cut after the failure
        // failed too, it would read back as records); what reads back must
        // end where the log did before it, or numbers would be served that
        // were refused, or given again.
        if let newest = segments.last {
            let path = dir + "/" + Self.segmentName(newest), keep = size
            GMP.blocking { _ = truncate(path, off_t(keep)) }
        }
        let (fresh, _, notes) = try RoomLog.open(dir: dir, policy: policy, retain: retain, tailLength: 0, io: io)
        for n in notes { Chat.log("history: \(n)") }
        guard fresh.last == last else {
            throw StoreError("the log in \(dir) reads back to \(fresh.last) where \(last) was committed; it takes no appends until the server restarts")
        }
        (last, segments, size, inSegment) = (fresh.last, fresh.segments, fresh.size, fresh.inSegment)
        swap(&fd, &fresh.fd) // (fresh's deinit closes nothing)
        unsynced = true
        if fd >= 0 { try GMP.blocking { () throws(StoreError) in try syncNow() } }
        unsynced = false
        broken = nil
    }

    /// Flushes what was written to the disk (fsync), if anything.
    func sync() throws(StoreError) {
        guard unsynced else { return }
        try GMP.blocking { () throws(StoreError) in try syncNow() }
    }

    private func syncNow() throws(StoreError) {
        let start = GMP.now
        defer { lastSyncNanoseconds = GMP.now - start }
        if io.fsync(fd) != 0 { throw StoreError("cannot sync \(dir)", errno: errno) }
        unsynced = false
    }

    /// Syncs (unless the policy is `never`) and closes the newest segment.
    func close() {
        guard fd >= 0 else { return }
        if policy != .never { try? sync() }
        GMP.blocking { _ = Glibc.close(fd) }
        fd = -1
    }

    /// Starts a segment whose first record is `first` (the old one synced
    /// first unless the policy is `never`), then drops the segments that
    /// only hold messages older than the newest `retain`.
    private func roll(first: UInt64) throws(StoreError) {
        if fd >= 0 {
            if policy != .never && unsynced { try syncNow() }
            Glibc.close(fd)
            fd = -1
        }
        if segments.isEmpty { // the room's first segment: its directory too
            if mkdir(dir, 0o755) != 0 && errno != EEXIST { throw StoreError("cannot create \(dir)", errno: errno) }
            if policy != .never { Self.syncDirectory((dir as NSString).deletingLastPathComponent) }
        }
        let path = dir + "/" + Self.segmentName(first)
        let f = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if f < 0 { throw StoreError("cannot create \(path)", errno: errno) }
        if policy != .never { Self.syncDirectory(dir) }
        fd = f
        size = 0
        inSegment = 0
        segments.append(first)
        // Segment i holds [segments[i], segments[i+1]); it goes once its
        // newest record is older than the newest `retain`, i.e. once
        // segments[i+1] - 1 <= newest - retain (newest = first - 1 here).
        while segments.count > 1 && segments[1] + UInt64(retain) <= first {
            unlink(dir + "/" + Self.segmentName(segments.removeFirst()))
        }
    }

    /// Syncs a directory, so that a new entry's name survives a power cut.
    private static func syncDirectory(_ dir: String) {
        let d = Glibc.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if d >= 0 { fsync(d); Glibc.close(d) }
    }

    /// Up to `limit` entries numbered after `after` and up to `through`, from
    /// the segments in `dir` as they are now, oldest first. `through` is the
    /// newest record the log G has committed (`Room.durable`): what lies
    /// beyond may be a batch still being written, or one about to be cut back
    /// after a failed write. Entries may start later than `after + 1` if
    /// retention removed the older ones (the caller reports the gap). A
    /// segment is read 64 KiB at a time and only the entries wanted are
    /// decoded: a read holds about `limit` entries, not a segment. A read
    /// that stopped at `limit` leaves `cursor` where it stopped, and the
    /// next read after its last entry starts there (pages cost what they
    /// read, not the segment before them).
    /// - Throws: a segment that is there but cannot be read (EMFILE, EIO):
    ///   never taken for one that retention removed, which would be a gap.
    static func read(dir: String, after: UInt64, through: UInt64, limit: Int) throws(StoreError) -> [Entry] {
        var cursor: LogCursor?
        return try read(dir: dir, after: after, through: through, limit: limit, cursor: &cursor)
    }

    /// `read`, starting where `cursor` says if it fits `after`, and leaving
    /// it where this read stopped if it stopped at `limit`.
    static func read(dir: String, after: UInt64, through: UInt64, limit: Int,
                     cursor: inout LogCursor?) throws(StoreError) -> [Entry] {
        let resume = cursor
        cursor = nil
        return try GMP.blocking { () throws(StoreError) -> [Entry] in
            let found = listSegments(dir)
            // The newest segment that starts at or before after + 1 (or the
            // oldest), or where the last page stopped.
            var start = found.lastIndex(where: { $0 <= after + 1 }) ?? 0
            var offset = 0
            if let c = resume, c.after == after, let i = found.firstIndex(of: c.segment) { (start, offset) = (i, c.offset) }
            var out: [Entry] = []
            for first in found[start...] {
                let path = dir + "/" + segmentName(first)
                let f = Glibc.open(path, O_RDONLY | O_CLOEXEC)
                if f < 0 {
                    if errno == ENOENT { continue } // removed by retention meanwhile
                    throw StoreError("cannot open \(path)", errno: errno)
                }
                defer { Glibc.close(f) }
                var consumed = offset // the file's offset at pending[0]
                if offset > 0 && lseek(f, off_t(offset), SEEK_SET) < 0 { throw StoreError("cannot read \(path)", errno: errno) }
                offset = 0
                var pending: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = chunk.withUnsafeMutableBytes { Glibc.read(f, $0.baseAddress!, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    if n < 0 { throw StoreError("cannot read \(path)", errno: errno) }
                    pending += chunk[..<n]
                    let (entries, end, problem) = Record.decode(pending, after: nil, keepAfter: max(after, out.last?.seq ?? 0),
                                                                limit: limit - out.count)
                    pending.removeFirst(end)
                    consumed += end
                    for e in entries where out.last.map({ e.seq == $0.seq + 1 }) ?? true {
                        if e.seq > through { return out }
                        out.append(e)
                    }
                    if out.count >= limit {
                        cursor = LogCursor(segment: first, offset: consumed, after: out[out.count - 1].seq)
                        return out
                    }
                    // A record cut by the chunk's end is read whole next time;
                    // one short at the end of the file is still being written.
                    let short = problem == "a short record" || problem == "a short record header"
                    if problem != nil && (n == 0 || !short) { return out }
                    if n == 0 { break }
                }
            }
            return out
        }
    }
}
