import CGMP
import Synchronization
// The symbolizer's entry from raw addresses, `Backtrace(architecture:frames:
// images:)`, is SPI in the toolchain's Runtime module (SE-0419); its public
// API only captures the calling thread. If the SPI changes in a later
// toolchain, this file is the one place to adapt.
@_spi(Internal) import Runtime

// Stacks for the goroutine dump.
//
// A switched-out G's stack ends in gmp_ctx_switch's frame, which holds the
// G's frame pointer and return address; from there the G's frames are a
// chain of saved frame pointers (Swift and our C keep frame pointers on
// x86_64 and AArch64). `gmp_ctx_frames` follows the chain without stopping
// the G: it never leaves the G's stack (always mapped), so a G that is
// resumed meanwhile yields a stale or bogus stack, never a crash. A running
// G has no saved frame to start from and shows no stack, except the G
// taking the dump, which captures its own. A G in a blocking call is running
// too, on its M.
//
// Symbolizing (ELF symbol tables, DWARF line tables and inlined frames, and
// demangling) is the Runtime module's; it runs after the registry lock is
// released, once per distinct address (cached across dumps), so a dump of
// 100,000 Gs parked alike symbolizes one stack.

extension G {
    /// The return addresses of a switched-out G (one that has run and now
    /// waits or is runnable: the caller checks), innermost first.
    func frames(max: Int = Traceback.depth) -> [UInt] {
        [UInt](unsafeUninitializedCapacity: max) { buf, n in
            n = Int(gmp_ctx_frames(ctxUnread, UnsafeMutablePointer(OpaquePointer(buf.baseAddress!)), Int32(max)))
        }
    }
}

/// Turns stacks of return addresses into readable lines.
enum Traceback {
    /// Frames kept per stack (Go keeps 100; ours are deeper per call because
    /// of thunks, but a G parked 64 frames deep is already exceptional).
    static let depth = 64

    /// The running G's return addresses, innermost first, without this
    /// function's own frame; none on a plain thread (the dump shows no
    /// stack for one). A walk of the frame pointers within the G's stack,
    /// in C: the Runtime module's `Backtrace.capture` also captured the
    /// process's image map, reading the ELF header of every file-backed
    /// mapping, and under ThreadSanitizer it once faulted on a mapping that
    /// went away meanwhile.
    @inline(never) // (its own frame is the one dropped)
    static func here() -> [UInt] {
        guard let g = GMP.currentG else { return [] }
        let stack = g.s.pointee.stack
        // Called from here, not from a closure: the first address is then
        // this function's, at every optimization level.
        let buf = UnsafeMutablePointer<UInt>.allocate(capacity: depth + 1)
        defer { buf.deallocate() }
        let n = Int(gmp_here_frames(stack.lo, stack.hi, buf, Int32(depth + 1)))
        return n > 1 ? Array(UnsafeBufferPointer(start: buf + 1, count: n - 1)) : []
    }

    /// Text for each stack, keyed by the stack: a line per frame (inlined
    /// frames included), the function's demangled name and, where debug
    /// information has it, `file:line` under it.
    static func symbolize(_ stacks: Set<[UInt]>) -> [[UInt]: String] {
        let known = symbols(for: Set(stacks.joined()))
        var out: [[UInt]: String] = [:]
        for pcs in stacks {
            var frames = pcs.flatMap { known[$0] ?? [] }
            // The bottom frames are the runtime starting the G (the
            // trampoline, the G's entry, GMP.run's wrapper), which
            // "created by" already says; they end at the first frame of
            // user code.
            while let last = frames.last, last.startup { frames.removeLast() }
            out[pcs] = frames.map(\.text).joined() + (pcs.count >= depth ? "    ...additional frames elided...\n" : "")
        }
        return out
    }

    /// One frame's text, and whether it belongs to the G's start-up.
    private struct FrameText {
        let text: String
        let startup: Bool
    }

    /// What each address symbolizes to (several frames where calls were
    /// inlined into it; none for a thunk), kept across dumps: symbolizing
    /// reads debug information and is the dump's slowest part. Bounded, in
    /// case of garbage addresses from stacks that changed while walked. The
    /// lock is held while symbolizing too: the Runtime module does not say
    /// its own symbol cache is safe for two threads at once, and two dumps
    /// at once (SIGQUIT during a /debug/goroutines) should not find out.
    private static let cache = SymbolCache()

    /// The cache's entries under the runtime's own lock, which
    /// ThreadSanitizer sees through (Synchronization's Mutex it does not, on
    /// Linux: two dumps at once were reported as a race on it).
    private final class SymbolCache: @unchecked Sendable {
        // @unchecked: `entries` is only touched with `lock` held.
        let lock = FutexLock()
        @exclusivity(unchecked) var entries: [UInt: [FrameText]] = [:]
    }

    private static func symbols(for pcs: Set<UInt>) -> [UInt: [FrameText]] {
        cache.lock.lock()
        defer { cache.lock.unlock() }
        let found = symbolize(pcs.filter { cache.entries[$0] == nil })
        if cache.entries.count + found.count > 8192 { cache.entries.removeAll() }
        cache.entries.merge(found) { a, _ in a }
        return cache.entries.filter { pcs.contains($0.key) }
    }

    private static func symbolize(_ missing: Set<UInt>) -> [UInt: [FrameText]] {
        guard !missing.isEmpty else { return [:] }
        // Every address is a return address: the first of a switched-out G
        // is where gmp_ctx_switch returns to, and `here()` keeps only those.
        let images = ImageMap.capture()
        let bt = Backtrace(architecture: architecture, frames: missing.map { RichFrame<UInt>.returnAddress($0) },
                           images: images)
        var found: [UInt: [FrameText]] = [:]
        for pc in missing { found[pc] = [] }
        if let sym = bt.symbolicated(with: images) {
            for f in sym.frames {
                switch f.captured {
                case .returnAddress, .programCounter: break
                default: continue
                }
                guard let pc = UInt(f.captured.originalProgramCounter), !f.isSwiftThunk else { continue }
                found[pc, default: []].append(FrameText(text: line(f), startup: isStartup(f)))
            }
        } else {
            for pc in missing { found[pc] = [FrameText(text: "    0x\(String(pc, radix: 16))\n", startup: false)] }
        }
        return found
    }

    /// A frame of the runtime's own G start-up: GMP's code, C entry code,
    /// the standard library's (`Result(catching:)` in `GMP.run`), or unknown.
    private static func isStartup(_ f: SymbolicatedBacktrace.Frame) -> Bool {
        guard let symbol = f.symbol else { return true }
        let raw = symbol.rawName
        return raw.hasPrefix("$s3GMP") || raw.hasPrefix("gmp_") || symbol.imageName.hasPrefix("libswiftCore")
    }

    private static func line(_ f: SymbolicatedBacktrace.Frame) -> String {
        let pc = UInt(f.captured.originalProgramCounter) ?? 0
        guard let symbol = f.symbol else { return "    0x\(String(pc, radix: 16))\n" }
        var text = "    \(symbol.name)\(f.inlined ? " [inlined]" : "")\n"
        if let loc = symbol.sourceLocation, loc.line > 0 {
            text += "        \(loc.path):\(loc.line)\n"
        } else if !f.inlined {
            text += "        \(symbol.imageName) +0x\(String(symbol.offset, radix: 16))\n"
        }
        return text
    }

    private static var architecture: String {
        #if arch(x86_64)
        "x86_64"
        #elseif arch(arm64)
        "arm64"
        #else
        "unknown"
        #endif
    }
}
