import CGMP
import GMP
import Glibc
import Synchronization

/// The poller's state for one fd number (Go's `pollDesc`): latched
/// readiness, the one read waiter and the one write waiter, deadlines and
/// their timers, and `closing`.
///
/// Everything mutable is guarded by `lock`; the deadlines are also atomics,
/// written under it, so that `checkDeadline` (before every read and write)
/// reads them without taking it. A waiter parks with the lock
/// released on the scheduler's stack, so a waker that takes the lock can never
/// ready a G that is still running. Waiters loop: after any wake-up they look
/// again at `closing`, the readiness latch and the deadline.
///
/// PollDescs are per fd number and never freed (see `Table`): an event for a
/// closed fd finds its PollDesc with a newer `seq` and is dropped.
final class PollDesc: @unchecked Sendable {
    // @unchecked: every mutable field is guarded by `lock` (the deadline
    // atomics are written under it too).
    let lock: FutexLock
    let fd: Int32
    var seq: UInt32 = 0
    var closing = false
    var readReady = false
    var writeReady = false
    var readWaiter: Waiter?
    var writeWaiter: Waiter?
    /// Absolute deadlines (`GMP.now` base); 0: none.
    let readDeadline = Atomic<Int64>(0)
    let writeDeadline = Atomic<Int64>(0)
    private var readTimer: Timer?
    private var writeTimer: Timer?

    private init(fd: Int32, lockWord: UnsafeMutableRawPointer) {
        self.fd = fd
        self.lock = FutexLock(word: lockWord)
    }

    enum Mode { case read, write }

    /// Who waits: a G (parked directly, as Go's `pollDesc.rg`) or a plain
    /// thread (on a sudog's futex note).
    enum Waiter {
        case g(G)
        case thread(Sudog)

        func ready() {
            switch self {
            case .g(let g): GMP.ready(g)
            case .thread(let sg): sg.ready()
            }
        }
    }

    /// Whether a G or thread is parked waiting for `mode`. For tests.
    func hasWaiter(_ mode: Mode) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return mode == .read ? readWaiter != nil : writeWaiter != nil
    }

    /// Starts a registration of `fd` (fresh socket): clears the state and
    /// registers with epoll under the current sequence number.
    static func open(_ fd: Int32) throws(NetError) -> PollDesc {
        let poller = EpollPoller.shared
        let pd = table.get(fd)
        pd.lock.lock()
        pd.closing = false
        pd.readReady = false
        pd.writeReady = false
        pd.readDeadline.store(0, ordering: .relaxed)
        pd.writeDeadline.store(0, ordering: .relaxed)
        let data = UInt64(UInt32(bitPattern: fd)) | UInt64(pd.seq) << 32
        pd.lock.unlock()
        let events = evIn | evOut | evRdHup | evEdge
        let r = gmp_epoll_ctl(poller.epfd, 1, fd, events, data)
        if r < 0 { throw NetError(errno: Int32(-r), op: "epoll_ctl") }
        return pd
    }

    /// An event for this fd arrived (on the poller's thread).
    func ready(events: UInt32, seq s: UInt32, into list: inout GList) {
        var wake: [Waiter] = []
        lock.lock()
        if s != seq || closing {
            lock.unlock()
            return
        }
        let err = events & (evErr | evHup) != 0
        if events & (evIn | evRdHup) != 0 || err {
            readReady = true
            if let w = readWaiter { readWaiter = nil; wake.append(w) }
        }
        if events & evOut != 0 || err {
            writeReady = true
            if let w = writeWaiter { writeWaiter = nil; wake.append(w) }
        }
        lock.unlock()
        for w in wake {
            EpollPoller.shared.waiters.subtract(1, ordering: .relaxed)
            switch w {
            case .g(let g): list.push(g)
            case .thread(let sg): sg.ready()
            }
        }
    }

    /// Waits until the fd may be ready for `mode` again. Throws `.closed`,
    /// or `.timeout` once the deadline has passed.
    func wait(_ mode: Mode) throws(NetError) {
        lock.lock()
        let mySeq = seq
        while true {
            // A newer seq: closed, and the fd number maybe already reused.
            if closing || seq != mySeq {
                lock.unlock()
                throw .closed
            }
            if mode == .read ? readReady : writeReady {
                if mode == .read { readReady = false } else { writeReady = false }
                lock.unlock()
                return
            }
            let deadline = self.deadline(mode)
            if deadline != 0 && GMP.now >= deadline {
                lock.unlock()
                throw .timeout
            }
            if deadline != 0 { armTimer(mode, deadline) }
            EpollPoller.shared.waiters.add(1, ordering: .relaxed)
            if let g = GMP.currentG {
                if mode == .read { readWaiter = .g(g) } else { writeWaiter = .g(g) }
                GMP.parkForIO(unlocking: lock)
            } else {
                let sg = Sudog.acquire()
                if mode == .read { readWaiter = .thread(sg) } else { writeWaiter = .thread(sg) }
                sg.park(unlocking: lock)
                sg.release()
            }
            lock.lock()
        }
    }

    @inline(__always) private func deadline(_ mode: Mode) -> Int64 {
        mode == .read ? readDeadline.load(ordering: .relaxed) : writeDeadline.load(ordering: .relaxed)
    }

    /// Throws `.timeout` if the deadline for `mode` has passed. Called before
    /// a read or write system call, so that an expired deadline fails the call
    /// even when data is waiting or buffer space is free (Go's `prepareRead`).
    @inline(__always) func checkDeadline(_ mode: Mode) throws(NetError) {
        let d = deadline(mode)
        if d != 0 && GMP.now >= d { throw .timeout }
    }

    /// Lock held.
    private func armTimer(_ mode: Mode, _ at: Int64) {
        if mode == .read {
            if readTimer == nil { readTimer = Timer { [unowned self] in self.deadlineFired(.read) } }
            readTimer!.reset(at: at)
        } else {
            if writeTimer == nil { writeTimer = Timer { [unowned self] in self.deadlineFired(.write) } }
            writeTimer!.reset(at: at)
        }
    }

    private func deadlineFired(_ mode: Mode) {
        lock.lock()
        let w = takeWaiter(mode)
        lock.unlock()
        w?.ready()
    }

    /// Lock held: takes the waiter for `mode` (for waking it).
    private func takeWaiter(_ mode: Mode) -> Waiter? {
        let w: Waiter?
        if mode == .read { w = readWaiter; readWaiter = nil } else { w = writeWaiter; writeWaiter = nil }
        if w != nil { EpollPoller.shared.waiters.subtract(1, ordering: .relaxed) }
        return w
    }

    /// Sets a deadline (0: none). A waiter blocked now sees the new deadline:
    /// one already past wakes it with `.timeout` at once.
    func setDeadline(_ mode: Mode, _ at: Int64) {
        lock.lock()
        if mode == .read { readDeadline.store(at, ordering: .relaxed) } else { writeDeadline.store(at, ordering: .relaxed) }
        var wake: Waiter?
        let waiting = mode == .read ? readWaiter != nil : writeWaiter != nil
        if at == 0 {
            (mode == .read ? readTimer : writeTimer)?.stop()
        } else if waiting {
            if at <= GMP.now { wake = takeWaiter(mode) } else { armTimer(mode, at) }
        }
        lock.unlock()
        wake?.ready()
    }

    /// Marks the fd closing, wakes both waiters (they get `.closed`) and
    /// deregisters it. The caller closes the fd afterwards.
    func close() {
        lock.lock()
        closing = true
        seq &+= 1
        let r = takeWaiter(.read)
        let w = takeWaiter(.write)
        readTimer?.stop()
        writeTimer?.stop()
        lock.unlock()
        _ = gmp_epoll_ctl(EpollPoller.shared.epfd, 2, fd, 0, 0)
        r?.ready()
        w?.ready()
    }

    /// PollDescs by fd number, created on first use and kept.
    struct Table: @unchecked Sendable {
        // @unchecked: slots are atomic words; creation is under `lock`.
        static let capacity = 1 << 20
        let slots: UnsafeMutablePointer<Atomic<UInt>>
        let lock = FutexLock()
        /// Lock words for the PollDescs, carved from chunks (PollDescs are
        /// never freed, so neither are their words): 4 bytes each instead of
        /// a heap block each. Guarded by `lock`.
        private let words = WordArena()

        init() {
            slots = .allocate(capacity: Table.capacity)
            for i in 0..<Table.capacity { (slots + i).initialize(to: Atomic(0)) }
        }

        func lookup(_ fd: Int32) -> PollDesc? {
            guard fd >= 0, Int(fd) < Table.capacity else { return nil }
            let raw = slots[Int(fd)].load(ordering: .acquiring)
            if raw == 0 { return nil }
            return Unmanaged<PollDesc>.fromOpaque(UnsafeRawPointer(bitPattern: raw)!).takeUnretainedValue()
        }

        func get(_ fd: Int32) -> PollDesc {
            if let pd = lookup(fd) { return pd }
            precondition(Int(fd) < Table.capacity, "fd \(fd) beyond the poller's table")
            lock.lock()
            defer { lock.unlock() }
            if let pd = lookup(fd) { return pd }
            let pd = PollDesc(fd: fd, lockWord: words.next())
            slots[Int(fd)].store(UInt(bitPattern: Unmanaged.passRetained(pd).toOpaque()), ordering: .releasing)
            return pd
        }
    }

    static let table = Table()
}

/// Hands out 4-byte words from 4 KiB chunks that are never freed.
final class WordArena: @unchecked Sendable {
    // @unchecked: used only under PollDesc.Table's lock.
    private var chunk = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
    private var used = 0

    func next() -> UnsafeMutableRawPointer {
        if used == 4096 {
            chunk = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
            used = 0
        }
        defer { used += 4 }
        return chunk + used
    }
}
