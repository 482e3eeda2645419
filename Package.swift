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
        // No unsafe flags (SwiftPM refuses them in a dependency pinned by
        // version): the runtime's fields opt out of dynamic exclusivity
        // checks one by one (`@exclusivity(unchecked)`, each under a lock or
        // ownership rule written beside it), and the hot generic paths of
        // channels and select are `@inlinable` so clients specialize them.
        .target(name: "GMP", dependencies: ["CGMP"]),
        .target(name: "Channels", dependencies: ["GMP"]),
        .target(name: "NetPoller", dependencies: ["GMP", "CGMP", "Channels"]),
        .target(name: "Contexts", dependencies: ["NetPoller", "Channels", "GMP"]),
        // SHA-1, SHA-256, HMAC-SHA256 and base64, written here (no product:
        // its API is `package`, for the modules below).
        .target(name: "Digests"),
        .target(name: "WebSocket", dependencies: ["Digests", "NetPoller", "Channels", "GMP"]),
        .target(name: "Redis", dependencies: ["Digests", "NetPoller", "Channels", "GMP"]),
        .target(name: "Chat", dependencies: ["WebSocket", "Redis", "Digests", "Channels", "NetPoller", "GMP"]),
        .executableTarget(name: "ChatApp", dependencies: ["Chat", "Redis", "Channels", "NetPoller", "GMP"]),
        // Fuzz targets (the property checks) and their libFuzzer driver: see Fuzz/README.md.
        .target(name: "FuzzTargets", dependencies: ["WebSocket", "Chat", "Redis", "Digests"]),
        .executableTarget(name: "Fuzz", dependencies: ["FuzzTargets"]),
        .executableTarget(
            name: "Benchmarks", dependencies: ["GMP", "Channels", "NetPoller", "WebSocket"], path: "Benchmarks",
            exclude: ["peers"]),
        // Examples/: small programs to copy from (README, "Examples"); CI builds and runs each.
        .executableTarget(name: "WorkerPool", dependencies: ["GMP", "Channels"], path: "Examples/WorkerPool"),
        .executableTarget(name: "Pipeline", dependencies: ["GMP", "Channels", "Contexts"], path: "Examples/Pipeline"),
        .executableTarget(name: "EchoServer", dependencies: ["GMP", "Channels", "NetPoller"], path: "Examples/EchoServer"),
        .executableTarget(name: "RateLimiter", dependencies: ["GMP", "Channels"], path: "Examples/RateLimiter"),
        .executableTarget(name: "TasksAndGs", dependencies: ["GMP", "Channels"], path: "Examples/TasksAndGs"),
        .executableTarget(name: "Crawler", dependencies: ["GMP", "Channels", "NetPoller", "Contexts"], path: "Examples/Crawler"),
        .target(name: "GMPTestSupport", dependencies: ["GMP", "NetPoller"], path: "Tests/TestSupport"),
        // Programs the deadlock check's tests run, each in a clean process.
        .executableTarget(name: "DeadlockScenarios", dependencies: ["GMP", "Channels"], path: "Tests/DeadlockScenarios"),
        .testTarget(name: "GMPTests", dependencies: ["GMP", "CGMP", "GMPTestSupport"]),
        .testTarget(name: "ChannelsTests", dependencies: ["Channels", "GMP", "GMPTestSupport"]),
        .testTarget(name: "ContextsTests", dependencies: ["Contexts", "NetPoller", "Channels", "GMP", "GMPTestSupport"]),
        .testTarget(name: "NetPollerTests", dependencies: ["NetPoller", "GMP", "Channels", "GMPTestSupport"]),
        .testTarget(
            name: "ChatAppTests", dependencies: ["Chat", "Redis", "WebSocket", "NetPoller", "Channels", "GMP", "GMPTestSupport"]),
        .testTarget(name: "DigestsTests", dependencies: ["Digests"]),
        .testTarget(name: "FuzzTargetsTests", dependencies: ["FuzzTargets", "WebSocket", "Chat"]),
        .testTarget(name: "RedisTests", dependencies: ["Redis", "NetPoller", "Channels", "GMP", "GMPTestSupport"]),
        .testTarget(name: "WebSocketTests", dependencies: ["WebSocket", "NetPoller", "Channels", "GMP", "GMPTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
