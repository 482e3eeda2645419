import Foundation
import FuzzTargets
import Testing

/// Fuzz/corpus/<target>: each target's seeds, and every input a fuzzer
/// found that once failed a check (kept as a regression test).
private func corpusFiles(_ target: String) -> [URL] {
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus/\(target)")
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
    return names.sorted().map { dir.appendingPathComponent($0) }
}

/// Runs every corpus file of `target` through it (a failed check ends the
/// process, so callers run this in an exit test); returns how many ran.
private func replay(_ target: String) -> Int {
    let files = corpusFiles(target)
    for f in files {
        guard let d = FileManager.default.contents(atPath: f.path) else {
            FuzzTarget.checkForTesting(false, "cannot read \(f.path)")
            continue
        }
        FuzzTarget.named(target)!.run(Array(d))
    }
    return files.count
}

@Suite struct CorpusTests {
    @Test("Every target has a corpus, and nothing else is in Fuzz/corpus")
    func corporaExist() {
        for t in FuzzTarget.all { #expect(corpusFiles(t.name).count >= 5, "\(t.name): too few seeds") }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus")
        let dirs = Set((try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? [])
        #expect(dirs == Set(FuzzTarget.all.map(\.name)))
    }

    @Test("Every file of the corpus passes the target's checks (a failed one ends the process)",
          arguments: FuzzTarget.all.map(\.name))
    func corpusPasses(_ target: String) async {
        await #expect(processExitsWith: .success) { [target] in _ = replay(target) }
    }

    @Test("A failed check ends the process, so the replays above can fail")
    func checksCanFail() async {
        #expect(FuzzTarget.named("no-such-target") == nil)
        await #expect(processExitsWith: .failure) {
            FuzzTarget.checkForTesting(false, "on purpose")
        }
    }
}
