// swift-tools-version: 6.1
import PackageDescription

/// SwiftPM names a path dependency after its directory, so the main package's
/// identity is whatever the checkout is called (swift-dma-pools, main, ...).
let mainPackage = Context.packageDirectory.split(separator: "/").dropLast().last.map(String.init) ?? "swift-dma-pools"

/// Micro-benchmarks for swift-dma-pools, a package of its own so that the main
/// package does not depend on the benchmark harness.
///
///     swift package --package-path Benchmarks benchmark
let package = Package(
    name: "swift-dma-pools-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "PagePoolBenchmarks",
            dependencies: [
                "CAllocatorChain",
                .product(name: "DMAPools", package: mainPackage),
                .product(name: "DMAPoolsMicrobench", package: mainPackage),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/PagePoolBenchmarks",
            // A plain client of DMAPools (glibc's malloc; jemalloc serves only the
            // guest's arenas). `AllocatorChain` (PagePoolBenchmarks.swift) puts
            // the malloc interposer in front of every allocator before anything
            // is measured.
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark"),
            ]
        ),
        .executableTarget(
            name: "ProjectionBenchmarks",
            dependencies: [.product(name: "NetStack", package: mainPackage), .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/ProjectionBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // dladdr and dl_iterate_phdr (GNU extensions the Glibc module does not
        // import), to check the benchmark's allocator chain.
        .target(name: "CAllocatorChain", linkerSettings: [.linkedLibrary("dl")]),
        .executableTarget(
            name: "PagePoolMicrobenchRunner",
            dependencies: [.product(name: "DMAPoolsMicrobench", package: mainPackage)]
        ),
    ]
)
