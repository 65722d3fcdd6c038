// swift-tools-version: 6.1
import PackageDescription

/// Invariant checks (descriptor consistency, swiotlb free-list walks) are compiled
/// into debug builds and into any build with `-Xswiftc -DDMAPOOLS_INVARIANTS`.
let invariantSettings: [SwiftSetting] = [
    .define("DMAPOOLS_INVARIANTS", .when(configuration: .debug)),
]

let package = Package(
    name: "swift-dma-pools",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "DMAPools", targets: ["DMAPools"]),
        .library(name: "NetStack", targets: ["NetStack"]),
        // Not part of the library: a page_pool test provider, fuzzers and
        // reference models for tests of the pools and of a user's providers,
        // and the micro-benchmark loops txsim and Benchmarks/ run.
        .library(name: "DMAPoolsTestSupport", targets: ["DMAPoolsTestSupport"]),
        .library(name: "DMAPoolsMicrobench", targets: ["DMAPoolsMicrobench"]),
        .executable(name: "txsim", targets: ["txsim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CJemalloc",
            pkgConfig: "jemalloc",
            providers: [.apt(["libjemalloc-dev"])]
        ),
        .systemLibrary(name: "CSanitizer"),
        .target(
            name: "DMAPools",
            dependencies: [
                "CJemalloc",
                "CSanitizer",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: invariantSettings
        ),
        .target(
            name: "DMAPoolsTestSupport",
            dependencies: ["DMAPools"],
            swiftSettings: invariantSettings
        ),
        .target(
            name: "DMAPoolsMicrobench",
            dependencies: ["DMAPools", "DMAPoolsTestSupport"]
        ),
        .target(
            name: "NetStack",
            dependencies: ["DMAPools"],
            swiftSettings: invariantSettings
        ),
        .executableTarget(
            name: "txsim",
            dependencies: [
                "DMAPools",
                "DMAPoolsTestSupport",
                "DMAPoolsMicrobench",
                "NetStack",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "DMAPoolsTests",
            dependencies: ["DMAPools", "DMAPoolsTestSupport", "DMAPoolsMicrobench"],
            swiftSettings: invariantSettings
        ),
        .testTarget(
            name: "NetStackTests",
            dependencies: ["NetStack", "DMAPools"],
            swiftSettings: invariantSettings
        ),
    ]
)
