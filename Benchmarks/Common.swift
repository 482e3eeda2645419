// Shared pieces of the workloads: the result record, clock and RSS.
import Channels
import Foundation
import GMP
import Glibc
import NetPoller
import WebSocket

/// One run of one workload, as every implementation prints it.
struct Result {
    var name: String
    var ops: Int
    var nsPerOp: Double
    var extra: String
}

func now() -> Int64 { GMP.now }

/// This binary's path (children are started from it; ChatApp sits beside it).
let selfPath = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path

/// Resident set size of process `pid` in bytes.
func rssBytes(pid: Int32) -> Int {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return 0 }
    let parts = s.split(separator: " ")
    return parts.count > 1 ? (Int(parts[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
}

/// Resident set size of this process in bytes.
func rssBytes() -> Int { rssBytes(pid: getpid()) }

/// CPU time (user + system) process `pid` has used, in milliseconds.
func cpuMs(pid: Int32) -> Int {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = s.lastIndex(of: ")") else { return 0 }
    // Fields after the command name: state is field 3; utime and stime are 14 and 15.
    let f = s[s.index(after: close)...].split(separator: " ")
    guard f.count > 12, let u = Int(f[11]), let k = Int(f[12]) else { return 0 }
    return (u + k) * 1000 / sysconf(Int32(_SC_CLK_TCK))
}
