import CGMP
import Glibc
import Synchronization

// The goroutine dump: `GMP.dump()`, printed on SIGQUIT (then exit 2, as Go)
// and in a deadlock report.
//
// Every G state is in a registry (`allgs`, under `allgLock`): a G is added
// when its state is first made, which pooled Gs skip, and removed when its
// state is freed. A G records why it parks, and g0 stamps since when once it
// has (sysmon's coarse clock, so the park path reads no clock); the G also
// holds the file and line of the `go`
// statement that made it (`#fileID`/`#line`, two stores). The dump reads
// these, and each switched-out G's stack (Traceback.swift), without stopping
// anything: a G that changes state meanwhile may show the old one, or a
// stale stack. Gs that wait for the same reason at the same stack and were
// made by the same `go` statement are grouped, with a count, so a dump of
// 100,000 Gs parked alike is one stack long.
//
// SIGQUIT: the handler (C, in place of Swift's backtracer) only writes to a
// pipe; a thread of its own, which takes no lock but `allgLock` and the
// scheduler's, prints the dump and exits, so it works when every M is
// wedged.

extension G {
    /// Where its `go` statement is (two words and two stores on `go`'s path).
    @inline(__always) func setCreator(_ file: StaticString, _ line: UInt) {
        s.pointee.goLine = UInt32(truncatingIfNeeded: line)
        if file.hasPointerRepresentation {
            s.pointee.goFile = file.utf8Start
            s.pointee.goFileCount = UInt32(truncatingIfNeeded: file.utf8CodeUnitCount)
        } else {
            s.pointee.goFile = nil
        }
    }

    /// Records, before it parks, why the G waits, and whether another party
    /// will touch its stack meanwhile (then it is not trimmed). Since when is stamped on
    /// g0 once it has parked (`Scheduler.execute`), where the scheduler is at
    /// hand: reaching `Scheduler.shared` from here cost a call per park
    /// (pingpong 4% slower).
    @inline(__always) func noteWait(_ reason: WaitReason, pinsStack: Bool = false) {
        s.pointee.waitReason = reason
        s.pointee.stackPinned = pinsStack
    }
}

/// A G state as the dump saw it.
struct GView {
    var status: GStatus
    var reason: WaitReason
    var since: Int64
    var id: Int64
    var file: UnsafePointer<UInt8>?
    var fileCount: UInt32
    var line: UInt32
    var stack: [UInt]

    /// The `go` statement's file name.
    var fileName: String {
        guard let file else { return "?" }
        return String(decoding: UnsafeBufferPointer(start: file, count: Int(fileCount)), as: UTF8.self)
    }
}

extension G {
    /// Reads what the dump shows of the G, and its stack, while the Ms that
    /// run it may be changing it (the dump stops nothing). The state is
    /// copied with `gmp_peek` (plain loads, hidden from TSan: racy by
    /// design) before and after the stack walk; if the two copies differ
    /// the G moved meanwhile and it is read again. A G that keeps moving is
    /// running: it is shown so, with `line` `.max` for "unknown".
    /// `myStack` is the stack of the calling G, if this is it.
    func view(myStack: [UInt]?) -> GView {
        let size = MemoryLayout<GState>.stride
        return withUnsafeTemporaryAllocation(byteCount: 2 * size, alignment: 16) { buf -> GView in
            let a = buf.baseAddress!, b = a + size
            for _ in 0..<4 {
                gmp_peek(a, UnsafeRawPointer(s), size)
                guard let status = GStatus(rawValue: a.load(fromByteOffset: Self.statusOffset, as: UInt8.self)) else {
                    continue
                }
                var stack: [UInt] = []
                if let myStack {
                    stack = myStack
                } else if (status == .waiting || status == .runnable) && a.load(fromByteOffset: Self.hasStackOffset, as: Bool.self) {
                    stack = frames()
                }
                gmp_peek(b, UnsafeRawPointer(s), size)
                guard memcmp(a, b, size) == 0 else { continue }
                return GView(
                    status: status,
                    reason: WaitReason(rawValue: a.load(fromByteOffset: Self.reasonOffset, as: UInt8.self)) ?? .unknown,
                    since: a.load(fromByteOffset: Self.sinceOffset, as: Int64.self),
                    id: a.load(fromByteOffset: Self.idOffset, as: Int64.self),
                    file: a.load(fromByteOffset: Self.fileOffset, as: UnsafePointer<UInt8>?.self),
                    fileCount: a.load(fromByteOffset: Self.fileCountOffset, as: UInt32.self),
                    line: a.load(fromByteOffset: Self.lineOffset, as: UInt32.self),
                    stack: stack)
            }
            return GView(status: .running, reason: .unknown, since: 0,
                         id: a.load(fromByteOffset: Self.idOffset, as: Int64.self), file: nil, fileCount: 0, line: .max,
                         stack: [])
        }
    }

    static let statusOffset = MemoryLayout<GState>.offset(of: \.status)!
    private static let hasStackOffset = MemoryLayout<GState>.offset(of: \.hasStack)!
    static let reasonOffset = MemoryLayout<GState>.offset(of: \.waitReason)!
    static let pinnedOffset = MemoryLayout<GState>.offset(of: \.stackPinned)!
    static let sinceOffset = MemoryLayout<GState>.offset(of: \.waitSince)!
    private static let idOffset = MemoryLayout<GState>.offset(of: \.id)!
    private static let fileOffset = MemoryLayout<GState>.offset(of: \.goFile)!
    private static let fileCountOffset = MemoryLayout<GState>.offset(of: \.goFileCount)!
    private static let lineOffset = MemoryLayout<GState>.offset(of: \.goLine)!
}

extension Scheduler {
    /// Makes a G state and adds it to the registry.
    func gmake() -> G {
        let g = G.make()
        allgLock.lock()
        g.s.pointee.allgIndex = Int32(allgs.count)
        allgs.append(g)
        allgLock.unlock()
        return g
    }

    /// Takes a G state (on no list, running nowhere) out of the registry
    /// and frees it.
    func gfree(_ g: G) {
        allgLock.lock()
        let i = Int(g.s.pointee.allgIndex)
        let last = allgs.removeLast()
        if last != g {
            allgs[i] = last
            last.s.pointee.allgIndex = Int32(i)
        }
        allgLock.unlock()
        g.free()
    }

    /// Starts the thread that prints the dump on SIGQUIT and exits 2.
    func startQuitWatcher() {
        let fd = gmp_install_quit_handler()
        if fd < 0 { return } // no pipe: SIGQUIT keeps its old action
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        var tid = pthread_t()
        let arg = UnsafeMutableRawPointer(bitPattern: Int(fd) + 1) // never nil
        let r = pthread_create(&tid, &attr, { arg in
            let fd = Int32(Int(bitPattern: arg) - 1)
            Scheduler.shared.registerOwnThread()
            var b: UInt8 = 0
            while read(fd, &b, 1) != 1 {} // EINTR: read again
            let text = "SIGQUIT: quit\n\n" + Scheduler.shared.dump()
            _ = text.withCString { write(2, $0, strlen($0)) }
            _exit(2)
        }, arg)
        pthread_attr_destroy(&attr)
        if r != 0 { gmp_fatal("fatal error: cannot start the SIGQUIT watcher") }
    }

    /// The dump's text (see the comment at the top of this file).
    func dump() -> String {
        struct Key: Hashable {
            let status: GStatus
            let reason: WaitReason
            let file: UInt // the StaticString's address
            let line: UInt32
            let stack: [UInt]
        }
        struct Group {
            var ids: [Int64] = []
            var count = 0
            var oldest: Int64 = .max
            var file = ""
        }
        var groups: [Key: Group] = [:]
        let me = GMP.currentG
        let myStack = Traceback.here() // before the lock: it allocates and reads files
        allgLock.lock()
        for g in allgs {
            let v = g.view(myStack: g == me ? myStack : nil)
            guard v.status != .idle && v.status != .dead else { continue }
            let key = Key(status: v.status, reason: v.reason, file: UInt(bitPattern: v.file),
                          line: v.line, stack: v.stack)
            var gr = groups[key] ?? Group(file: v.fileName)
            gr.count += 1
            if gr.ids.count < 10 { gr.ids.append(v.id) }
            if v.status == .waiting || v.status == .syscall { gr.oldest = min(gr.oldest, v.since) }
            groups[key] = gr
        }
        allgLock.unlock()
        let stacks = Traceback.symbolize(Set(groups.keys.map(\.stack)))
        let now = coarseNow.load(ordering: .relaxed)
        let total = groups.values.reduce(0) { $0 + $1.count }
        let chaos = GMP.chaosSeed.map { " (GMP_CHAOS=\($0))" } ?? ""
        var out = "goroutine dump: \(total) goroutine(s)\(chaos)\n\(Stats.capture(self).traceLine)\n"
        let ordered = groups.sorted { a, b in
            a.value.count != b.value.count ? a.value.count > b.value.count : a.value.ids.min()! < b.value.ids.min()!
        }
        for (key, gr) in ordered {
            var state: String
            switch key.status {
            case .waiting: state = key.reason.description
            case .syscall: state = "blocking call"
            case .runnable: state = "runnable"
            case .running: state = "running"
            case .idle, .dead: continue
            }
            if gr.oldest != .max {
                let waited = max(0, now - gr.oldest) / 1_000_000_000
                if waited >= 60 { state += ", \(waited / 60) minutes" } else if waited > 0 { state += ", \(waited) s" }
            }
            let ids = gr.ids.sorted().map(String.init).joined(separator: " ") + (gr.count > gr.ids.count ? " ..." : "")
            if gr.count == 1 {
                out += "\ngoroutine \(ids) [\(state)]:\n"
            } else {
                out += "\n\(gr.count) goroutines [\(state)]: \(ids)\n"
            }
            out += stacks[key.stack] ?? ""
            switch key.line {
            case 0: out += "    created by GMP.run\n"
            case .max: out += "    (changing while the dump read it)\n"
            default: out += "    created by go at \(gr.file):\(key.line)\n"
            }
        }
        return out
    }
}

extension GMP {
    /// Every live G: its id, state (running, runnable, waiting and why:
    /// `chan receive`, `chan send`, `select`, `sleep`, `IO wait`, `Mutex`,
    /// `WaitGroup`; or `blocking call`), how long it has waited, its stack
    /// (innermost first, demangled, with `file:line` where the binary has
    /// debug information; none for a G that is running, except the caller's
    /// own), and the file and line of the `go` statement that made it. Gs
    /// alike (same state, same stack, same `go` statement) are grouped with a
    /// count. Printed on SIGQUIT (which then exits with status 2) and in a
    /// deadlock report. Taken without stopping anything, so approximate
    /// while Gs run. Cost: O(Gs ever alive at once), plus symbolizing each
    /// distinct stack once.
    public static func dump() -> String {
        Scheduler.shared.dump()
    }
}
