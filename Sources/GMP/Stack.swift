import CGMP
import Glibc

/// A goroutine stack: `[lo, hi)` usable, growing down from `hi`; the stack
/// canary sits at `lo`. `guardLo..<guardHi` is its guard page, a guard
/// region or PROT_NONE (empty for stacks made after the `mprotect` guard
/// budget ran out).
struct Stack {
    var lo: UInt
    var hi: UInt
    var guardLo: UInt
    var guardHi: UInt
}

/// Where stacks come from and go back to.
///
/// Stacks are carved from slabs of `slabCount` stacks, one `mmap`
/// (`MAP_NORESERVE`: only touched pages cost memory) per slab. Each stack
/// gets a guard page below it. On Linux 6.13 and later that is a guard
/// region (`MADV_GUARD_INSTALL`): it splits no mapping and takes the address
/// space lock only for reading, so it neither counts against
/// `vm.max_map_count` nor stalls other Ms' page faults, and every stack is
/// guarded; a slab's 64 guard regions go in one `process_madvise` call
/// (`gmp_madvise_ranges`) where the kernel takes it. Elsewhere (or with
/// `GMP_GUARD_PAGES=mprotect`) it is `mprotect`, which splits the mapping
/// (two VMAs per stack) and takes the lock for writing; then only a budget
/// of stacks is guarded, and the rest rely on the canary checked at every
/// switch. The budget keeps the process well under `vm.max_map_count`
/// (65530 by default), so 100,000 parked Gs work on a default kernel.
///
/// Freed stacks are kept warm (pages intact). sysmon calls `scavenge`
/// periodically, which `madvise(MADV_DONTNEED)`s warm stacks beyond
/// `warmLimit` that stayed unused for a whole period (memory back to the
/// kernel, address range kept for reuse), coalescing neighbours into one
/// call. So freeing stays off the hot path, and a burst of Gs that ends and
/// restarts reuses its stacks instead of faulting them in again.
/// Slabs are never unmapped: unmapping part of one would split VMAs again.
///
/// Per-P caches in front of this (see `P.stackCache`) make the common case
/// lock-free; this pool is behind one lock.
final class StackPool: @unchecked Sendable {
    // @unchecked: every mutable field is guarded by `lock`.
    let stackSize: Int
    let pageSize: Int
    let slabCount = 64
    let warmLimit = 512
    private let guardBudget: Int
    /// Guard pages are guard regions (`MADV_GUARD_INSTALL`), not `mprotect`.
    let lightGuards: Bool
    private let lock = FutexLock()
    @exclusivity(unchecked) private var warm: [Stack] = []   // guarded by lock
    @exclusivity(unchecked) private var cold: [Stack] = []   // guarded by lock; pages released
    @exclusivity(unchecked) private var guarded = 0          // guarded by lock
    @exclusivity(unchecked) private var warmLowWater = 0     // guarded by lock; least `warm.count` since the last scavenge
    @exclusivity(unchecked) private(set) var mapped = 0      // guarded by lock; stacks ever carved

    init(stackSize requested: Int) {
        pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        stackSize = max(16 * 1024, (requested + pageSize - 1) / pageSize * pageSize)
        var maxMaps = 65530
        if let f = fopen("/proc/sys/vm/max_map_count", "r") {
            var buf = [CChar](repeating: 0, count: 32)
            if fgets(&buf, 32, f) != nil,
               let v = Int(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).filter { $0.isNumber }), v > 0 {
                maxMaps = v
            }
            fclose(f)
        }
        // Guarded stacks take two VMAs each: leave half of the map budget to the rest of the process.
        guardBudget = maxMaps / 4
        let forced = getenv("GMP_GUARD_PAGES").map { String(cString: $0) }
        // Under AddressSanitizer, PROT_NONE guards: LeakSanitizer scans every
        // slab for pointers (parked Gs hold some only on their stacks) and
        // skips unreadable pages, but would fault on a guard region.
        lightGuards = forced != "mprotect" && !gmp_asan_enabled() && StackPool.guardRegionsWork(pageSize: pageSize)
    }

    /// `madvise(MADV_GUARD_INSTALL)` (Linux 6.13+; 102 in the kernel's uapi).
    private static let madvGuardInstall: Int32 = 102

    /// Whether this kernel installs guard regions (tried on a scratch mapping).
    private static func guardRegionsWork(pageSize: Int) -> Bool {
        guard let p = mmap(nil, 2 * pageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              p != MAP_FAILED else { return false }
        defer { munmap(p, 2 * pageSize) }
        return madvise(p, pageSize, madvGuardInstall) == 0
    }

    /// Takes up to `count` stacks, appending them to `out`.
    func get(_ count: Int, into out: inout ContiguousArray<Stack>) {
        lock.lock()
        defer { lock.unlock() }
        var need = count
        while need > 0, let s = warm.popLast() { out.append(s); need -= 1 }
        warmLowWater = min(warmLowWater, warm.count)
        while need > 0, let s = cold.popLast() { out.append(s); need -= 1 }
        while need > 0 {
            carveSlab()
            while need > 0, let s = cold.popLast() { out.append(s); need -= 1 }
        }
    }

    /// Gives stacks back.
    func put<S: Sequence>(_ stacks: S) where S.Element == Stack {
        lock.lock()
        warm.append(contentsOf: stacks)
        lock.unlock()
    }

    /// Releases the memory of warm stacks beyond `keep`. With `idleOnly`
    /// (sysmon's periodic call) only as many as stayed unused since the last
    /// call. The oldest (bottom of the LIFO) go first; madvise runs outside
    /// the lock.
    func scavenge(keep: Int, idleOnly: Bool = false) {
        lock.lock()
        let idle = idleOnly ? min(warmLowWater, warm.count) : warm.count
        warmLowWater = warm.count
        guard idle > keep else { lock.unlock(); return }
        var excess = Array(warm[0..<(idle - keep)])
        warm.removeSubrange(0..<(idle - keep))
        warmLowWater = warm.count
        lock.unlock()
        StackPool.releasePages(of: &excess)
        lock.lock()
        cold.append(contentsOf: excess)
        lock.unlock()
    }

    /// Gives the pages of `stacks` back to the kernel (MADV_DONTNEED; the
    /// address ranges stay mapped), neighbours in one slab in one range: the
    /// guard page between two neighbours is in the range, and a guard region
    /// or PROT_NONE page survives it. The ranges go 64 to a system call
    /// (`gmp_madvise_ranges`), which on Linux 6.16+ also makes them share
    /// one TLB flush: every range given back is a round of IPIs to the other
    /// cores running this process, which the Gs there pay for. Sorts
    /// `stacks` by address. Returns the number of system calls.
    @discardableResult
    static func releasePages(of stacks: inout [Stack]) -> Int {
        stacks.sort { $0.lo < $1.lo }
        var starts: [UInt] = [], lens: [Int] = []
        var i = 0
        while i < stacks.count {
            let lo = stacks[i].lo
            var hi = stacks[i].hi
            var j = i + 1
            // The next stack (or its guard) starts where this one ends.
            while j < stacks.count, stacks[j].lo == hi || stacks[j].guardLo == hi {
                hi = stacks[j].hi
                j += 1
            }
            starts.append(lo)
            lens.append(Int(hi - lo))
            i = j
        }
        var calls: Int32 = 0
        _ = gmp_madvise_ranges(starts, lens, Int32(starts.count), 0, MADV_DONTNEED, &calls)
        return Int(calls)
    }

    /// Maps one slab and puts its stacks on `cold` (untouched pages cost nothing).
    private func carveSlab() {
        let withGuards = lightGuards || guarded + slabCount <= guardBudget
        let unit = stackSize + (withGuards ? pageSize : 0)
        let bytes = unit * slabCount
        guard let base = mmap(nil, bytes, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              base != MAP_FAILED else {
            gmp_fatal("fatal error: out of memory allocating goroutine stacks (mmap failed)")
        }
        let b = UInt(bitPattern: base)
        gmp_lsan_root(base, bytes)
        if withGuards {
            // Guard regions, the slab's in one call where the kernel can;
            // PROT_NONE pages where they cannot be had.
            let guards = (0..<slabCount).map { b + UInt($0 * unit) }
            if !lightGuards || gmp_madvise_ranges(guards, nil, Int32(slabCount), pageSize,
                                                  StackPool.madvGuardInstall, nil) != 0 {
                for g in guards { _ = mprotect(UnsafeMutableRawPointer(bitPattern: g), pageSize, PROT_NONE) }
            }
        }
        for i in (0..<slabCount).reversed() {
            let start = b + UInt(i * unit)
            if withGuards {
                cold.append(Stack(lo: start + UInt(pageSize), hi: start + UInt(unit),
                                  guardLo: start, guardHi: start + UInt(pageSize)))
            } else {
                cold.append(Stack(lo: start, hi: start + UInt(unit), guardLo: 0, guardHi: 0))
            }
        }
        if withGuards && !lightGuards { guarded += slabCount }
        mapped += slabCount
    }

    /// Counts for stats: (warm, cold, carved).
    func counts() -> (warm: Int, cold: Int, carved: Int) {
        lock.withLock { (warm.count, cold.count, mapped) }
    }
}

/// Parses sizes like `262144`, `256k`, `1m`.
func parseSize(_ s: String) -> Int? {
    let t = s.filter { !$0.isWhitespace }.lowercased()
    guard let last = t.last else { return nil }
    var mult = 1
    var digits = Substring(t)
    switch last {
    case "k": mult = 1024; digits = t.dropLast()
    case "m": mult = 1024 * 1024; digits = t.dropLast()
    default: break
    }
    guard let v = Int(digits), v > 0 else { return nil }
    return v * mult
}
