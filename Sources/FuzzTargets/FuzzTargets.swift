// Fuzz targets: one function per parser that takes bytes from strangers
// (the network) or from a file, each checking properties of what it parsed,
// not only that nothing crashed. A failed property is a `check` failure: a
// crash, which libFuzzer reports and saves as a reproducer.
//
// The same functions serve three callers: the `Fuzz` executable (libFuzzer,
// built by `Fuzz/run` with ASan and coverage), its plain build (which replays
// files), and FuzzTargetsTests (which replays the corpora in Fuzz/corpus on
// every test run, so a crash once found stays fixed).

/// A fuzz target: a name (its corpus directory under Fuzz/corpus) and the
/// function that takes one input.
public struct FuzzTarget: Sendable {
    /// The target's name, and its corpus directory's.
    public let name: String
    /// Runs one input through the parser and checks the properties.
    public let run: @Sendable ([UInt8]) -> Void

    /// Every target, by name.
    public static let all: [FuzzTarget] = [
        FuzzTarget(name: "http-head", run: fuzzHTTPHead),
        FuzzTarget(name: "frames", run: fuzzFrames),
        FuzzTarget(name: "close-payload", run: fuzzClosePayload),
        FuzzTarget(name: "chat-line", run: fuzzChatLine),
        FuzzTarget(name: "config", run: fuzzConfig),
        FuzzTarget(name: "resp", run: fuzzRESP),
        FuzzTarget(name: "jwt", run: fuzzJWT),
    ]

    /// The target called `name`, if any.
    public static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

/// A property that must hold: fails with `message` (and so crashes the
/// process, which is what a fuzzer watches for) when it does not.
@inline(__always)
func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
           file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError("property failed: \(message())", file: file, line: line) }
}

extension FuzzTarget {
    /// `check` itself, for the test that shows a failed check ends the process.
    public static func checkForTesting(_ condition: Bool, _ message: String) { check(condition, message) }
}
