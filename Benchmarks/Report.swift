// Output of the driver: the text table, JSON lines, and the Markdown report
// with its SVG bar chart of the cost ratios (drawn here, no packages).
import Foundation
import Glibc

/// One row of the table: a figure of a workload for every implementation.
struct Row {
    let workload: Workload
    let metric: Metric
    let series: [Impl: Series]

    func median(_ i: Impl) -> Double? { series[i]?.median(metric.key) }

    /// Our cost over the peer's (below 1 we are better).
    func ratio(_ peer: Impl) -> Double? { costRatio(metric, ours: median(.ours), peer: median(peer)) }

    /// The Swift peer's cost on GMP.executor over its cost on Swift's own
    /// executor (below 1 our executor serves the same Swift code better).
    var executorRatio: Double? { costRatio(metric, ours: median(.swiftgmp), peer: median(.swift)) }

    /// "137 ±4%", or "—" if there is no figure.
    func cell(_ i: Impl) -> String {
        guard let m = median(i) else { return "—" }
        let v = abs(m) >= 100 ? String(Int(m.rounded())) : String(format: "%.3g", m)
        guard let s = series[i]?.spread(metric.key) else { return v }
        return "\(v) ±\(Int((s * 50).rounded()))%"
    }
}

func ratioText(_ r: Double?) -> String { r.map { String(format: "%.2f×", $0) } ?? "—" }

func rows(_ workloads: [Workload], _ results: [String: [Impl: Series]]) -> [Row] {
    workloads.flatMap { w in
        w.metrics.map { Row(workload: w, metric: $0, series: results[w.name] ?? [:]) }
    }
}

/// The table as aligned text (stdout).
func textTable(_ rows: [Row]) -> String {
    let header = ["workload", "figure", "ours", "Swift", "vs Swift", "Swift on GMP.executor", "÷ Swift", "Go", "vs Go",
                  "Tokio", "vs Tokio"]
    let body = rows.map { r in
        [r.workload.name, r.metric.label, r.cell(.ours), r.cell(.swift), ratioText(r.ratio(.swift)),
         r.cell(.swiftgmp), ratioText(r.executorRatio),
         r.cell(.go), ratioText(r.ratio(.go)), r.cell(.tokio), ratioText(r.ratio(.tokio))]
    }
    let widths = header.indices.map { i in ([header] + body).map { $0[i].count }.max()! }
    return ([header] + body).map { cols in
        cols.enumerated().map { i, c in c + String(repeating: " ", count: widths[i] - c.count) }
            .joined(separator: "  ")
    }.joined(separator: "\n")
}

/// One JSON object per workload and implementation: the median, min and max
/// of every figure, and the extra text of the median run.
func jsonLines(_ workloads: [Workload], _ results: [String: [Impl: Series]]) -> [String] {
    workloads.flatMap { w -> [String] in
        Impl.allCases.compactMap { impl -> String? in
            guard let s = results[w.name]?[impl], !s.runs.isEmpty else { return nil }
            let keys = Set(s.runs.flatMap { figures($0).keys }).sorted()
            let figs = keys.compactMap { k -> String? in
                let v = s.values(k)
                guard let m = s.median(k) else { return nil }
                return "\"\(k)\":{\"median\":\(m),\"min\":\(v.first!),\"max\":\(v.last!)}"
            }
            return "{\"name\":\"\(w.name)\",\"impl\":\"\(impl.rawValue)\",\"runs\":\(s.runs.count),"
                + "\"figures\":{\(figs.joined(separator: ","))},\"extra\":\"\(s.medianExtra)\"}"
        }
    }
}

/// What the report says about the machine and the run.
struct RunInfo {
    var cores: Int
    var procs: Int?
    var repeats: Int
    var swiftVersion: String
    var goVersion: String?
    var tokioVersion: String?
    var notes: [String]

    static func current(_ opts: Options, goPeer: GoPeer?, tokioPeer: TokioPeer?, notes: [String]) -> RunInfo {
        let swift = capture(which("swift") ?? "/usr/bin/swift", ["--version"])?
            .split(separator: "\n").first.map(String.init) ?? "unknown"
        return RunInfo(cores: sysconf(Int32(_SC_NPROCESSORS_ONLN)), procs: opts.procs, repeats: opts.repeats,
                       swiftVersion: swift, goVersion: goPeer?.version, tokioVersion: tokioPeer?.version, notes: notes)
    }

    var cpuModel: String {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let line = info.split(separator: "\n").first { $0.hasPrefix("model name") }
        return line.flatMap { $0.split(separator: ":", maxSplits: 1).last }.map { $0.trimmingCharacters(in: .whitespaces) }
            ?? "unknown CPU"
    }
}

/// Writes the Markdown report to `path` and its chart next to it (`.svg`).
func writeReport(path: String, rows: [Row], info: RunInfo) throws {
    let url = URL(fileURLWithPath: path)
    let svgURL = url.deletingPathExtension().appendingPathExtension("svg")
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    try svgChart(rows).write(to: svgURL, atomically: true, encoding: .utf8)

    let date = ISO8601DateFormatter.string(from: Date(), timeZone: .gmt, formatOptions: [.withFullDate])
    var md = """
    # Benchmarks

    Written by `swift run -c release Benchmarks --report \(path)` on \(date).

    - Machine: \(info.cores) cores (\(info.cpuModel)), Linux.
    - Processors: \(info.procs.map { "GMPPROCS=\($0), GOMAXPROCS=\($0), Swift's pool pinned to \($0) CPUs" } ?? "every core (GMPPROCS, GOMAXPROCS and Swift's pool at their defaults)").
    - Peers: Swift concurrency (\(info.swiftVersion)); Go: \(info.goVersion ?? "not measured"); \
    Tokio (the runtime workloads, GMPPROCS worker threads): \(info.tokioVersion ?? "not measured").
    - Each figure is the median of \(info.repeats) runs, ± half the spread (max − min) as a share of the median. \
    Every run is a fresh process, and the runs of ours and of the peers alternate, because this machine is noisy.
    - **vs Swift**, **vs Go**, **vs Tokio**: our cost over the peer's (ours ÷ peer for times and memory, peer ÷ ours for rates). \
    Below 1.00 we are better; above, we lose.
    - **Swift on GMP.executor**: the Swift peer's own code with every task it makes preferring `GMP.executor` (its jobs \
    run as Gs, GMPPROCS Ps); **÷ Swift**: its cost over the same code on Swift's global executor (below 1.00 ours serves \
    it better).


    """
    md += "| workload | figure | GMP (ours) | Swift concurrency | vs Swift | Swift on GMP.executor | ÷ Swift | Go | vs Go "
        + "| Tokio | vs Tokio |\n"
        + "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    for r in rows {
        md += "| \(r.workload.name) | \(r.metric.label) | \(r.cell(.ours)) | \(r.cell(.swift)) | \(ratioText(r.ratio(.swift))) | "
            + "\(r.cell(.swiftgmp)) | \(ratioText(r.executorRatio)) | "
            + "\(r.cell(.go)) | \(ratioText(r.ratio(.go))) | \(r.cell(.tokio)) | \(ratioText(r.ratio(.tokio))) |\n"
    }
    md += "\n![Our cost over each peer's, per figure](\(svgURL.lastPathComponent))\n\n## Where we lose\n\n"
    let losses = rows.flatMap { r in
        [Impl.swift, .go, .tokio].compactMap { peer -> String? in
            guard let x = r.ratio(peer), x > 1.0 else { return nil }
            // Within the noise when the two medians' half-spreads overlap.
            let noise = ((r.series[.ours]?.spread(r.metric.key) ?? 0) + (r.series[peer]?.spread(r.metric.key) ?? 0)) / 2
            return "- **\(r.workload.name)**, \(r.metric.label): \(ratioText(x)) the cost of \(peer.title)"
                + (x - 1 <= noise ? " (within this run's spread)." : ".")
        }
    }
    md += losses.isEmpty ? "Nowhere in this run.\n" : losses.joined(separator: "\n") + "\n"
    // One line per workload: the first of its rows carries its series.
    var seen = Set<String>()
    md += "\n## Workloads\n\n" + rows.filter { seen.insert($0.workload.name).inserted }.map { r in
        let w = r.workload
        var line = "- **\(w.name)**: \(w.about)"
        if w.swift == nil { line += " No Swift concurrency peer." }
        // The median run's other figures (the table has the headline ones).
        let shown = Set(w.metrics.map(\.key))
        let extras = Impl.allCases.compactMap { i -> String? in
            guard let e = r.series[i]?.medianExtra else { return nil }
            let rest = e.split(separator: " ").filter { t in
                let kv = t.split(separator: "=", maxSplits: 1)
                return kv.count == 2 && !shown.contains(String(kv[0]))
            }
            return rest.isEmpty ? nil : "\(i.title): `\(rest.joined(separator: " "))`"
        }
        if !extras.isEmpty { line += " Median run: " + extras.joined(separator: "; ") + "." }
        return line
    }.joined(separator: "\n") + "\n"
    if !info.notes.isEmpty { md += "\n## Notes from the run\n\n" + info.notes.map { "- \($0)" }.joined(separator: "\n") + "\n" }
    try md.write(to: url, atomically: true, encoding: .utf8)
}

/// Horizontal bars of our cost ratio against each peer, on a log scale
/// centred on 1 (left of the line we are better, right we lose).
func svgChart(_ rows: [Row]) -> String {
    let peers: [(Impl, String)] = [(.swift, "#e8743b"), (.go, "#00add8"), (.tokio, "#7b3f98")]
    let labelW = 230.0, plotW = 520.0, barH = 9.0, rowH = 36.0, top = 48.0
    let lo = -4.0, hi = 4.0 // log2 of the ratio: 1/16 ... 16
    func x(_ ratio: Double) -> Double { labelW + (min(max(log2(ratio), lo), hi) - lo) / (hi - lo) * plotW }
    let height = top + Double(rows.count) * rowH + 40
    let width = labelW + plotW + 90
    func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    }
    var s = """
    <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
    <rect width="100%" height="100%" fill="white"/>
    <text x="10" y="18" font-size="14" font-weight="bold">GMP's cost over each peer's (log scale; left of 1× we are better)</text>
    <rect x="\(labelW)" y="26" width="10" height="10" fill="\(peers[0].1)"/><text x="\(labelW + 14)" y="35">vs Swift concurrency</text>
    <rect x="\(labelW + 160)" y="26" width="10" height="10" fill="\(peers[1].1)"/><text x="\(labelW + 174)" y="35">vs Go</text>
    <rect x="\(labelW + 240)" y="26" width="10" height="10" fill="\(peers[2].1)"/><text x="\(labelW + 254)" y="35">vs Tokio</text>

    """
    for tick in [1.0 / 16, 1.0 / 4, 1, 4, 16] {
        let tx = x(tick)
        s += "<line x1=\"\(tx)\" y1=\"\(top - 4)\" x2=\"\(tx)\" y2=\"\(height - 30)\" stroke=\"\(tick == 1 ? "#333" : "#ddd")\"/>"
        s += "<text x=\"\(tx)\" y=\"\(height - 14)\" text-anchor=\"middle\">\(tick < 1 ? "1/\(Int(1 / tick))" : "\(Int(tick))")×</text>\n"
    }
    for (i, r) in rows.enumerated() {
        let y = top + Double(i) * rowH
        s += "<text x=\"\(labelW - 8)\" y=\"\(y + 16)\" text-anchor=\"end\">\(esc(r.workload.name)) · \(esc(r.metric.label))</text>\n"
        for (k, (peer, colour)) in peers.enumerated() {
            let by = y + 3 + Double(k) * (barH + 1)
            guard let ratio = r.ratio(peer) else { continue }
            let (a, b) = (min(x(1), x(ratio)), max(x(1), x(ratio)))
            s += "<rect x=\"\(a)\" y=\"\(by)\" width=\"\(max(b - a, 1))\" height=\"\(barH)\" fill=\"\(colour)\"/>"
            s += "<text x=\"\(b + 4)\" y=\"\(by + barH - 1)\" font-size=\"10\">\(ratioText(ratio))</text>\n"
        }
    }
    return s + "</svg>\n"
}
