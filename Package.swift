// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "SwiftGMP",
    products: [
        .library(name: "GMP", targets: ["GMP"]),
        .library(name: "Channels", targets: ["Channels"]),
        .library(name: "NetPoller", targets: ["NetPoller"]),
        .library(name: "Contexts", targets: ["Contexts"]),
        .library(name: "WebSocket", targets: ["WebSocket"]),
        .library(name: "Chat", targets: ["Chat"]),
        .library(name: "Redis", targets: ["Redis"]),
        .executable(name: "ChatApp", targets: ["ChatApp"]),
        .executable(name: "Benchmarks", targets: ["Benchmarks"]),
    ],
    targets: [
        .target(name: "CGMP"),
        .target(
            name: "GMP", dependencies: ["CGMP"],
            // The runtime's own class fields are guarded by its locks and
            // ownership rules (documented beside them); dynamic exclusivity
            // checks there cost a thread-local access set per field write.
            // User code keeps its checks (and the G carries their state).
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"])]),
        .target(
            name: "Channels", dependencies: ["GMP"],
            // Chan<T> is generic: clients need its bodies to specialize them
            // (otherwise every send/receive goes through runtime metadata).
            // A channel's fields are guarded by its lock: no dynamic
            // exclusivity checks inside the critical sections.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"])]),
        .target(name: "NetPoller", dependencies: ["GMP", "CGMP", "Channels"]),
        .target(name: "Contexts", dependencies: ["NetPoller", "Channels", "GMP"]),
        .target(name: "WebSocket", dependencies: ["NetPoller", "Channels", "GMP"]),
        .target(name: "Redis", dependencies: ["NetPoller", "Channels", "GMP"]),
        .target(name: "Chat", dependencies: ["WebSocket", "Redis", "Channels", "NetPoller", "GMP"]),
        .executableTarget(name: "ChatApp", dependencies: ["Chat", "Redis", "Channels", "NetPoller", "GMP"]),
        // Fuzz targets (the property checks) and their libFuzzer driver: see Fuzz/README.md.
        .target(name: "FuzzTargets", dependencies: ["WebSocket", "Chat", "Redis"]),
        .executableTarget(name: "Fuzz", dependencies: ["FuzzTargets"]),
        .executableTarget(
            name: "Benchmarks", dependencies: ["GMP", "Channels", "NetPoller", "WebSocket"], path: "Benchmarks",
            exclude: ["peers"]),
        .target(name: "GMPTestSupport", dependencies: ["GMP", "NetPoller"], path: "Tests/TestSupport"),
        // Programs the deadlock check's tests run, each in a clean process.
        .executableTarget(name: "DeadlockScenarios", dependencies: ["GMP", "Channels"], path: "Tests/DeadlockScenarios"),
        .testTarget(name: "GMPTests", dependencies: ["GMP", "CGMP", "GMPTestSupport"]),
        .testTarget(name: "ChannelsTests", dependencies: ["Channels", "GMP", "GMPTestSupport"]),
        .testTarget(name: "ContextsTests", dependencies: ["Contexts", "NetPoller", "Channels", "GMP", "GMPTestSupport"]),
        .testTarget(name: "NetPollerTests", dependencies: ["NetPoller", "GMP", "Channels", "GMPTestSupport"]),
        .testTarget(
            name: "ChatAppTests", dependencies: ["Chat", "Redis", "WebSocket", "NetPoller", "Channels", "GMP", "GMPTestSupport"]),
        .testTarget(name: "FuzzTargetsTests", dependencies: ["FuzzTargets", "WebSocket", "Chat"]),
        .testTarget(name: "RedisTests", dependencies: ["Redis", "NetPoller", "Channels", "GMP", "GMPTestSupport"]),
        .testTarget(name: "WebSocketTests", dependencies: ["WebSocket", "NetPoller", "Channels", "GMP", "GMPTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
