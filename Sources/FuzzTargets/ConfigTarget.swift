import Chat
import Foundation

// The config file: a config that is taken holds only values the server can
// use; one that is refused is refused with a message naming the file.

func fuzzConfig(_ bytes: [UInt8]) {
    var config = ChatConfig()
    do {
        let procs = try parseConfig(Data(bytes), name: "fuzz.json", into: &config)
        check((0...65535).contains(config.port), "port \(config.port)")
        check(!config.host.isEmpty, "an empty host")
        check(config.maxMessage > 0, "maxMessage \(config.maxMessage)")
        check(config.rate >= 0 && config.rate.isFinite && config.burst > 0, "rate \(config.rate), burst \(config.burst)")
        check(config.maxConns >= 0 && config.maxConnsPerIP >= 0, "maxConns \(config.maxConns), per IP \(config.maxConnsPerIP)")
        if let procs { check((1...1024).contains(procs), "gmpprocs \(procs)") }
        check(config.dataDir.map { !$0.isEmpty } ?? true, "an empty dataDir")
        check(config.history >= 0 && config.retain > 0 && config.maxRooms >= 0 && config.joinsPerMinute > 0,
              "history \(config.history), retain \(config.retain), maxRooms \(config.maxRooms), joins \(config.joinsPerMinute)")
    } catch {
        check(error.description.hasPrefix("fuzz.json: "), "a message that does not name the file: \(error)")
    }
}
