// The fuzzing driver: one executable for every target in FuzzTargets.
//
// Built for libFuzzer (`Fuzz/run`: ASan, libFuzzer's coverage flags,
// `-DFUZZING` and libFuzzer linked without its own main), main hands
// the command line to libFuzzer's driver, which runs the target named by the
// FUZZ_TARGET environment variable (`Fuzz/run` does all of this). Built
// plainly (`swift run Fuzz TARGET FILE...`), it replays files through a
// target, which is how a crash file is looked at under a debugger.
//
// (libFuzzer's own `main` cannot be used: SwiftPM links every executable
// with `main` bound to the module's entry point, so the entry point calls
// `LLVMFuzzerRunDriver`, libFuzzer's documented way in.)
import Foundation
import FuzzTargets

/// The target FUZZ_TARGET names; read once, before the first input.
private let target: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["FUZZ_TARGET"] ?? ""
    guard let t = FuzzTarget.named(name) else {
        let names = FuzzTarget.all.map(\.name).joined(separator: ", ")
        FileHandle.standardError.write(Data("Fuzz: set FUZZ_TARGET to one of: \(names)\n".utf8))
        exit(2)
    }
    return t
}()

/// One input, from libFuzzer.
private let fuzzOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt = { data, size in
    target.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

#if FUZZING
/// libFuzzer's driver (compiler-rt's FuzzerInterface.h): parses its flags
/// from argv and runs the fuzzing loop, calling back once per input.
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@main
enum Driver {
    static func main() {
        _ = target // a bad FUZZ_TARGET fails before fuzzing starts
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv as UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
    }
}
#else
@main
enum Replay {
    static func main() {
        var args = CommandLine.arguments.dropFirst()
        guard let name = args.popFirst(), let t = FuzzTarget.named(name), !args.isEmpty else {
            let names = FuzzTarget.all.map(\.name).joined(separator: ", ")
            FileHandle.standardError.write(Data("usage: Fuzz TARGET FILE... (targets: \(names))\n".utf8))
            exit(2)
        }
        for path in args {
            guard let d = FileManager.default.contents(atPath: path) else {
                FileHandle.standardError.write(Data("Fuzz: cannot read \(path)\n".utf8))
                exit(1)
            }
            t.run(Array(d))
            print("\(path): ok")
        }
    }
}
#endif
