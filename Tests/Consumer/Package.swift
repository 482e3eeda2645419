// swift-tools-version:6.0
// A package that depends on SwiftGMP the way a user's would: by version, from
// a git repository. SwiftPM refuses `unsafeFlags` in a dependency pinned by
// version, so this building at all is the check that SwiftGMP has none.
// `.ci/consumer` publishes the checkout at the URL below, tagged 0.1.0, and
// builds and runs this package from a copy. (Not part of SwiftGMP's build.)
import PackageDescription

let package = Package(
    name: "Consumer",
    dependencies: [
        .package(url: "file:///tmp/swiftgmp-consumer/SwiftGMP", from: "0.1.0"),
    ],
    targets: [
        .executableTarget(
            name: "Consumer",
            dependencies: [
                .product(name: "GMP", package: "SwiftGMP"),
                .product(name: "Channels", package: "SwiftGMP"),
                .product(name: "NetPoller", package: "SwiftGMP"),
                .product(name: "Contexts", package: "SwiftGMP"),
                .product(name: "WebSocket", package: "SwiftGMP"),
                .product(name: "Redis", package: "SwiftGMP"),
                .product(name: "Chat", package: "SwiftGMP"),
            ]),
    ]
)
