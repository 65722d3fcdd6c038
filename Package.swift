// swift-tools-version: 6.1
import PackageDescription

/// Invariant checks (descriptor consistency, swiotlb free-list walks) are compiled
/// into debug builds and into any build with `-Xswiftc -DDMAPOOLS_INVARIANTS`.
let invariantSettings: [SwiftSetting] = [
    .define("DMAPOOLS_INVARIANTS", .when(configuration: .debug)),
]

/// How DMAPools links Debian's libjemalloc (unprefixed symbols: `malloc` as
/// well as `mallocx`) without making it the client's `malloc`. The dynamic
/// linker binds each symbol to the first library in the executable's
/// `DT_NEEDED` order that defines it, and that order is the order of the `-l`
/// flags. Naming libc and libstdc++ first puts them ahead of libjemalloc, so
/// `malloc`, `free` and C++ `operator new`/`delete` stay glibc's and
/// libstdc++'s, while `mallocx`, `sdallocx` and `mallctl`, which only
/// libjemalloc defines, bind to it. (Loading it with `dlopen` instead fails:
/// Debian builds it with initial-exec TLS, `DF_STATIC_TLS`, and its 2.6 KiB
/// of TLS do not fit in glibc's static TLS surplus.) Checked by
/// `ClientAllocatorTests`. A client that wants jemalloc as its `malloc` too
/// opts in with `LD_PRELOAD=libjemalloc.so.2`.
let jemallocLinking: [LinkerSetting] = [
    .linkedLibrary("c", .when(platforms: [.linux])),
    .linkedLibrary("stdc++", .when(platforms: [.linux])),
    .linkedLibrary("jemalloc"),
]

let package = Package(
    name: "swift-dma-pools",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "DMAPools", targets: ["DMAPools"]),
        .library(name: "NetStack", targets: ["NetStack"]),
        // The report txsim prints (table, JSON, CSV, SVG), for a package that
        // compares designs of its own.
        .library(name: "NetStackReports", targets: ["NetStackReports"]),
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
        // Documentation only: `swift package generate-documentation` (scripts/docs.sh).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // jemalloc's declarations only; DMAPools links the library itself (see
        // `jemallocLinking`).
        .systemLibrary(name: "CJemalloc"),
        .systemLibrary(name: "CSanitizer"),
        // The calling thread's identity without a call (header only).
        .systemLibrary(name: "CThread"),
        .target(
            name: "DMAPools",
            dependencies: [
                "CJemalloc",
                "CSanitizer",
                "CThread",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: invariantSettings,
            linkerSettings: jemallocLinking
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
        // Test doubles for the network stack (planted wrong designs), for the
        // tests and txsim's reliability campaign; not in a library product.
        .target(
            name: "NetStackTestSupport",
            dependencies: ["NetStack", "DMAPools"],
            swiftSettings: invariantSettings
        ),
        .target(
            name: "NetStackReports",
            dependencies: ["NetStack", "DMAPools"]
        ),
        .executableTarget(
            name: "txsim",
            dependencies: [
                "DMAPools",
                "NetStackReports",
                "DMAPoolsTestSupport",
                "DMAPoolsMicrobench",
                "NetStack",
                "NetStackTestSupport",
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
            dependencies: ["NetStack", "DMAPools", "NetStackTestSupport"],
            swiftSettings: invariantSettings
        ),
        .testTarget(
            name: "NetStackReportsTests",
            dependencies: ["NetStackReports", "NetStack", "DMAPools"]
        ),
        // Runs the built txsim (the dependency makes `swift build --build-tests`
        // build it first) on bad input and checks its messages and exit status.
        .testTarget(
            name: "TXSimTests",
            dependencies: ["txsim"]
        ),
    ]
)
