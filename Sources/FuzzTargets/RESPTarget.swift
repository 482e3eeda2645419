import Redis

// RESP (Redis's protocol): what `RESPParser.parse` takes is a value that,
// encoded again, parses back to the same value; every prefix of the bytes
// it took is "not yet", never a value and never an error (a reader calls it
// after each read); what it refuses, it refuses with a `RESPError`, never a
// crash. Small bounds, so that inputs reach them.

func fuzzRESP(_ bytes: [UInt8]) {
    var parser = RESPParser()
    parser.maxLine = 256
    parser.maxBulk = 4096
    parser.maxElements = 64
    parser.maxDepth = 8
    let parsed: (RESPValue, Int)?
    do { parsed = try parser.parse(bytes[...]) } catch { return }
    guard let (value, used) = parsed else { return }
    check(used > 0 && used <= bytes.count, "took \(used) of \(bytes.count) bytes")
    for n in 0..<used {
        let prefix: (RESPValue, Int)??
        do { prefix = try parser.parse(bytes[..<n]) } catch {
            check(false, "a prefix of \(n) of \(used) bytes is an error: \(error)")
            return
        }
        check(prefix! == nil, "a prefix of \(n) of \(used) bytes is a value")
    }
    var again: [UInt8] = []
    value.encode(into: &again)
    do {
        let back = try RESPParser().parse(again[...])
        check(back?.0 == value && back?.1 == again.count, "\(value) encoded as \(again) reads back as \(String(describing: back))")
    } catch {
        check(false, "\(value) encoded as \(again) is refused: \(error)")
    }
}
