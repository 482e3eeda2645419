// The driver: every run of every implementation in a fresh child process
// (ours, the Swift concurrency peer, the Go peer, the Tokio peer),
// interleaved, repeated;
// the median and spread of each figure.
import Foundation
import Glibc

/// An implementation measured side by side.
enum Impl: String, CaseIterable, Sendable {
    case ours, swift, swiftgmp, go, tokio

    var title: String {
        switch self {
        case .ours: "GMP (ours)"
        case .swift: "Swift concurrency"
        case .swiftgmp: "Swift on GMP.executor"
        case .go: "Go"
        case .tokio: "Tokio"
        }
    }
}

/// How the Go peer runs a workload.
enum GoRun {
    /// `gmppeers -filter NAME`: the workload written in Go.
    case own
    /// Our chat client against `gmppeers -chat-server` (gorilla/websocket).
    case chatServer
}

/// A workload: our function, the Swift peer's (if any), how Go runs it,
/// whether the Tokio peer has it, and the figures the table shows.
struct Workload {
    let name: String
    let ours: () -> Result?
    let swift: (() -> Result?)?
    let go: GoRun?
    /// `gmppeers-tokio -filter NAME` runs it (Benchmarks/peers/tokio).
    var tokio = false
    let metrics: [Metric]
    /// One line for the report: what is measured.
    let about: String
}

/// A figure of a result: `ns_per_op`, or a `key=value` of its extra.
struct Metric {
    let key: String
    let label: String
    /// Rates: more is better. Times and memory: less is better.
    var higherIsBetter = false

    static let nsPerOp = Metric(key: "ns_per_op", label: "ns/op")
}

/// The figures of one result: ns_per_op plus every numeric `key=value` of `extra`.
func figures(_ r: Result) -> [String: Double] {
    var f = ["ns_per_op": r.nsPerOp]
    for token in r.extra.split(separator: " ") {
        let kv = token.split(separator: "=", maxSplits: 1)
        if kv.count == 2, let v = Double(kv[1]) { f[String(kv[0])] = v }
    }
    return f
}

/// Several runs of one implementation on one workload.
struct Series {
    var runs: [Result] = []

    func values(_ key: String) -> [Double] { runs.compactMap { figures($0)[key] }.sorted() }

    /// The median of `key` over the runs (nil if no run has it).
    func median(_ key: String) -> Double? {
        let v = values(key)
        guard !v.isEmpty else { return nil }
        return v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
    }

    /// (max − min) / |median|, as a fraction (nil with fewer than two runs).
    func spread(_ key: String) -> Double? {
        let v = values(key)
        guard v.count > 1, let m = median(key), m != 0 else { return nil }
        return (v.last! - v.first!) / abs(m)
    }

    /// The extra text of the run whose ns_per_op is the median one.
    var medianExtra: String {
        let sorted = runs.sorted { $0.nsPerOp < $1.nsPerOp }
        return sorted.isEmpty ? "" : sorted[sorted.count / 2].extra
    }
}

/// Our cost over the peer's: ours ÷ peer for times and memory, peer ÷ ours
/// for rates. Below 1 we are better. Nil when either side is missing or not
/// positive.
func costRatio(_ m: Metric, ours: Double?, peer: Double?) -> Double? {
    guard let o = ours, let p = peer, o > 0, p > 0 else { return nil }
    return m.higherIsBetter ? p / o : o / p
}

/// Writes a line to stderr (progress and notes; stdout is the table).
func note(_ s: String) {
    let line = s + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

/// What the driver was asked for.
struct Options {
    var filter: String?
    var repeats = 3
    var procs: Int?
    var json = false
    var report: String?
    var peers = true
}

/// Looks `name` up on PATH.
func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
        let p = "\(dir)/\(name)"
        if access(p, X_OK) == 0 { return p }
    }
    return nil
}

/// Runs a command to its end with a time limit; its stdout, or nil (with a
/// note) if it failed, timed out or could not start. Its stderr goes to ours.
func capture(_ exe: String, _ args: [String], env: [String: String] = [:], in dir: String? = nil,
             limit: Double = 300) -> String? {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    if let dir { p.currentDirectoryURL = URL(fileURLWithPath: dir) }
    p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
    let out = Pipe()
    p.standardOutput = out
    do { try p.run() } catch {
        note("cannot start \(exe): \(error)")
        return nil
    }
    let timedOut = DispatchWorkItem { p.terminate() }
    DispatchQueue.global().asyncAfter(deadline: .now() + limit, execute: timedOut)
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    timedOut.cancel()
    guard p.terminationReason == .exit, p.terminationStatus == 0 else {
        note("\(([exe] + args).joined(separator: " ")) failed (status \(p.terminationStatus))")
        return nil
    }
    return String(decoding: data, as: UTF8.self)
}

/// Parses the last JSON result line of a child's output.
func parseResult(_ out: String) -> Result? {
    guard let line = out.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
          let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
          let name = obj["name"] as? String, let ops = obj["ops"] as? Int,
          let ns = (obj["ns_per_op"] as? NSNumber)?.doubleValue else { return nil }
    return Result(name: name, ops: ops, nsPerOp: ns, extra: obj["extra"] as? String ?? "")
}

/// The JSON line a child prints for its one result.
func resultJSON(_ r: Result) -> String {
    "{\"name\":\"\(r.name)\",\"ops\":\(r.ops),\"ns_per_op\":\(r.nsPerOp),\"extra\":\"\(r.extra)\"}"
}

/// The Go peer: `Benchmarks/peers/go` built once per run, or why not.
struct GoPeer {
    let binary: String
    let version: String

    /// Builds the Go peer from this source tree; nil (with a note) if `go`
    /// is missing or the build fails.
    static func build() -> GoPeer? {
        guard let go = which("go") else {
            note("Go peer: skipped, no `go` on PATH (Debian: apt-get install golang-go golang-github-gorilla-websocket-dev)")
            return nil
        }
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("peers/go").path
        let binary = NSTemporaryDirectory() + "gmppeers-\(getpid())"
        // A copy of go.mod (and its go.sum) in the temporary directory, so the
        // build writes nothing into the source tree. With Debian's
        // golang-github-gorilla-websocket-dev installed the copy points at it
        // and no network is needed; without it, `go` fetches the module.
        let debianGorilla = "/usr/share/gocode/src/github.com/gorilla/websocket"
        let modfile = NSTemporaryDirectory() + "gmppeers-\(getpid()).mod"
        var env = ["GOFLAGS": "-mod=mod"]
        guard var mod = try? String(contentsOfFile: dir + "/go.mod", encoding: .utf8) else {
            note("Go peer: skipped, no go.mod in \(dir)")
            return nil
        }
        if FileManager.default.fileExists(atPath: debianGorilla) {
            mod += "\nreplace github.com/gorilla/websocket => \(debianGorilla)\n"
            env["GOPROXY"] = "off"
        }
        defer {
            try? FileManager.default.removeItem(atPath: modfile)
            try? FileManager.default.removeItem(atPath: modfile.dropLast(4) + ".sum")
        }
        guard (try? mod.write(toFile: modfile, atomically: true, encoding: .utf8)) != nil,
              capture(go, ["build", "-modfile=\(modfile)", "-o", binary, "."], env: env, in: dir, limit: 300) != nil else {
            note("Go peer: skipped, it did not build in \(dir) (Debian: apt-get install golang-github-gorilla-websocket-dev)")
            return nil
        }
        let version = capture(go, ["version"])?.split(separator: " ").dropFirst(2).first.map(String.init) ?? "go"
        return GoPeer(binary: binary, version: version)
    }
}

/// The Tokio peer: `Benchmarks/peers/tokio` built once per run from a copy
/// (so nothing is written into the source tree), or why not. Offline
/// against Debian's packaged crates when they are installed
/// (librust-tokio-dev, Tokio 1.24), else cargo fetches the crates.
struct TokioPeer {
    let binary: String
    let version: String

    static func build() -> TokioPeer? {
        guard let cargo = which("cargo") else {
            note("Tokio peer: skipped, no `cargo` on PATH (Debian: apt-get install cargo librust-tokio-dev)")
            return nil
        }
        let src = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("peers/tokio").path
        let dir = NSTemporaryDirectory() + "gmppeers-tokio-\(getpid())"
        let fm = FileManager.default
        defer { try? fm.removeItem(atPath: dir) }
        guard (try? fm.copyItem(atPath: src, toPath: dir)) != nil else {
            note("Tokio peer: skipped, cannot copy \(src)")
            return nil
        }
        var args = ["build", "--release", "--quiet"]
        let debian = "/usr/share/cargo/registry"
        let crates = (try? fm.contentsOfDirectory(atPath: debian)) ?? []
        if crates.contains(where: { $0.hasPrefix("tokio-1.") }) {
            args += ["--offline", "--config", "source.crates-io.replace-with=\"debian\"",
                     "--config", "source.debian.directory=\"\(debian)\""]
        }
        guard capture(cargo, args, in: dir, limit: 600) != nil else {
            note("Tokio peer: skipped, it did not build (Debian: apt-get install librust-tokio-dev)")
            return nil
        }
        let binary = NSTemporaryDirectory() + "gmppeers-tokio-bin-\(getpid())"
        guard (try? fm.moveItem(atPath: dir + "/target/release/gmppeers-tokio", toPath: binary)) != nil else {
            note("Tokio peer: skipped, no binary after the build")
            return nil
        }
        // The version cargo resolved, from the lock file it wrote.
        let lock = (try? String(contentsOfFile: dir + "/Cargo.lock", encoding: .utf8)) ?? ""
        let blocks = lock.components(separatedBy: "[[package]]")
        let version = blocks.first { $0.contains("name = \"tokio\"") }?
            .split(separator: "\n").first { $0.hasPrefix("version = ") }?
            .split(separator: "\"").dropFirst().first.map { "Tokio \($0)" } ?? "Tokio"
        return TokioPeer(binary: binary, version: version)
    }
}

/// Runs each selected workload `repeats` times per implementation,
/// interleaved (ours, Swift, Go, ours, ...), each run in a fresh process.
func measure(_ workloads: [Workload], _ opts: Options, goPeer: GoPeer?, tokioPeer: TokioPeer?) -> [String: [Impl: Series]] {
    let me = selfPath
    let cores = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    var oursEnv: [String: String] = [:], goEnv: [String: String] = [:]
    var swiftPrefix: [String] = []
    if let n = opts.procs {
        oursEnv["GMPPROCS"] = String(n)
        goEnv["GOMAXPROCS"] = String(n)
        // Swift's global executor has no width setting: pin its process to n CPUs.
        if n < cores, let taskset = which("taskset") { swiftPrefix = [taskset, "-c", "0-\(n - 1)"] }
    }
    var all: [String: [Impl: Series]] = [:]
    for w in workloads {
        var series: [Impl: Series] = [:]
        for r in 1...opts.repeats {
            for impl in Impl.allCases {
                let cmd: (String, [String], [String: String])?
                switch impl {
                case .ours:
                    cmd = (me, ["--run", w.name], oursEnv)
                case .swift:
                    guard opts.peers, w.swift != nil else { continue }
                    let args = ["--run", w.name, "--impl", "swift"]
                    cmd = swiftPrefix.isEmpty ? (me, args, [:]) : (swiftPrefix[0], swiftPrefix.dropFirst() + [me] + args, [:])
                case .swiftgmp:
                    // The Swift peer's own code with its tasks on GMP.executor (SwiftPeer.swift).
                    guard opts.peers, w.swift != nil else { continue }
                    cmd = (me, ["--run", w.name, "--impl", "swift"], oursEnv.merging(["SWIFT_EXECUTOR": "gmp"]) { $1 })
                case .go:
                    guard opts.peers, let g = w.go, let peer = goPeer else { continue }
                    switch g {
                    case .own: cmd = (peer.binary, ["-filter", w.name], goEnv)
                    case .chatServer:
                        cmd = (me, ["--run", w.name, "--chat-server", peer.binary], oursEnv.merging(goEnv) { $1 })
                    }
                case .tokio:
                    guard opts.peers, w.tokio, let peer = tokioPeer else { continue }
                    cmd = (peer.binary, ["-filter", w.name], oursEnv) // GMPPROCS: its worker count
                }
                guard let (exe, args, env) = cmd,
                      let out = capture(exe, args, env: env), let res = parseResult(out) else {
                    note("\(w.name) [\(impl.rawValue)] run \(r): no result")
                    continue
                }
                series[impl, default: Series()].runs.append(res)
                let ns = (res.nsPerOp * 10).rounded() / 10
                note("\(w.name) [\(impl.rawValue)] run \(r)/\(opts.repeats): \(ns) ns/op \(res.extra)")
            }
        }
        all[w.name] = series
    }
    return all
}
