import Benchmark
import DMAPools
import DMAPoolsMicrobench

#if canImport(Glibc)
import Glibc
#endif

/// page_pool micro-benchmarks, after the kernel's `bench_page_pool_simple`.
///
///     swift package --package-path Benchmarks benchmark --target PagePoolBenchmarks
///
/// Each benchmark iteration runs `scaledIterations` (1M) operations; the
/// reported wall clock is per operation, malloc counts are per iteration
/// (so 0 means no malloc on the path at all). The fixtures and loop bodies are
/// `DMAPoolsMicrobench`'s, the same that `txsim microbench` and
/// `PagePoolMicrobenchRunner` time.
nonisolated(unsafe) var fixture: PagePoolMicrobench.Fixture?

/// jemalloc's `mallocx` / `sdallocx` for the 32 KiB (order-3) comparison.
/// DMAPools links libjemalloc behind glibc (it serves `mallocx`, not
/// `malloc`), so the entry points are found in the global scope.
struct Jemalloc {
    typealias MallocX = @convention(c) (Int, Int32) -> UnsafeMutableRawPointer?
    typealias SDallocX = @convention(c) (UnsafeMutableRawPointer?, Int, Int32) -> Void
    let mallocx: MallocX
    let sdallocx: SDallocX

    static func load() -> Jemalloc? {
        let global = UnsafeMutableRawPointer(bitPattern: 0)
        guard let m = dlsym(global, "mallocx"), let f = dlsym(global, "sdallocx") else { return nil }
        return Jemalloc(mallocx: unsafeBitCast(m, to: MallocX.self), sdallocx: unsafeBitCast(f, to: SDallocX.self))
    }
}

nonisolated(unsafe) var jemalloc: Jemalloc?

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 2,
        scalingFactor: .mega,
        maxDuration: .seconds(2),
        maxIterations: 25
    )

    typealias Fixture = PagePoolMicrobench.Fixture
    typealias Loop = (PagePool, Int) throws(PagePoolError) -> Void
    // One benchmark per `txsim microbench` page_pool key (without `_ns`): the
    // fixture it needs, the loop it times, and 1M (mega) or 1k (kilo)
    // operations per iteration. The slow paths through the real providers pay
    // jemalloc, swiotlb or the decrypted allocator on every page; the sync
    // paths sync the whole 4 KiB page on every recycle (a bounce copy for
    // system pages, nothing for swiotlb pages).
    let cases: [(name: String, scale: BenchmarkScalingFactor, fixture: () throws -> Fixture, loop: Loop)] = [
        ("pool_fast", .mega, { try Fixture() }, PagePoolMicrobench.fastPath),
        ("pool_ring", .mega, { try Fixture(directRecycling: false) }, PagePoolMicrobench.ringPath),
        ("pool_slow_test_provider", .kilo, { try Fixture() }, PagePoolMicrobench.slowPath),
        ("pool_slow", .kilo, { try Fixture(provider: .system) }, PagePoolMicrobench.slowPath),
        ("pool_slow_swiotlb", .kilo, { try Fixture(provider: .swiotlb) }, PagePoolMicrobench.slowPath),
        ("pool_slow_decrypted", .kilo, { try Fixture(provider: .decrypted) }, PagePoolMicrobench.slowPath),
        ("pool_fast_sync_system", .kilo, { try Fixture(provider: .system, syncLength: 4096) }, PagePoolMicrobench.fastPath),
        ("pool_fast_sync_swiotlb", .kilo, { try Fixture(provider: .swiotlb, syncLength: 4096) }, PagePoolMicrobench.fastPath),
        ("pool_frag", .mega, { try Fixture() }, PagePoolMicrobench.fragments),
    ]
    for (name, scale, makeFixture, loop) in cases {
        Benchmark(name, configuration: .init(
            scalingFactor: scale,
            setup: { fixture = try makeFixture() },
            teardown: { fixture = nil }
        )) { benchmark in
            guard let pool = fixture?.pool else { return }
            try loop(pool, benchmark.scaledIterations.count)
        }
    }

    // Unscaled malloc totals: one benchmark iteration = 1M operations, so the
    // malloc count is the exact total over 1M fast-path (or ring-path) operations.
    for (name, makeFixture, loop) in [
        ("pool_fast_mallocs_per_1M_ops", { try Fixture() }, PagePoolMicrobench.fastPath),
        ("pool_ring_mallocs_per_1M_ops", { try Fixture(directRecycling: false) }, PagePoolMicrobench.ringPath),
    ] as [(String, () throws -> Fixture, Loop)] {
        Benchmark(name, configuration: .init(
            metrics: [.mallocCountTotal], scalingFactor: .one, maxIterations: 5,
            setup: { fixture = try makeFixture() },
            teardown: { fixture = nil }
        )) { benchmark in
            guard let pool = fixture?.pool else { return }
            try loop(pool, 1_000_000)
        }
    }

    // Sanity check of the malloc counter: one array allocation per operation
    // must read as 1 (so the zeros above are the interposer seeing no malloc,
    // not missing them).
    Benchmark("malloc_counter_sanity", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for i in benchmark.scaledIterations {
            blackHole([i, i &+ 1, i &+ 2])
        }
    }

    // The yardstick: a jemalloc order-3 (32 KiB) mallocx + sdallocx.
    Benchmark("jemalloc_order3", configuration: .init(
        scalingFactor: .kilo,
        setup: { jemalloc = Jemalloc.load() }
    )) { benchmark in
        guard let jemalloc else { return }
        for _ in benchmark.scaledIterations {
            let p = jemalloc.mallocx(32 << 10, 0)
            blackHole(p)
            jemalloc.sdallocx(p, 32 << 10, 0)
        }
    }

    // The same without the thread cache (MALLOCX_TCACHE_NONE): every call
    // reaches the arena, as a cold or cross-thread allocation does.
    Benchmark("jemalloc_order3_no_tcache", configuration: .init(
        scalingFactor: .kilo,
        setup: { jemalloc = Jemalloc.load() }
    )) { benchmark in
        guard let jemalloc else { return }
        let noTcache: Int32 = 1 << 8
        for _ in benchmark.scaledIterations {
            let p = jemalloc.mallocx(32 << 10, noTcache)
            blackHole(p)
            jemalloc.sdallocx(p, 32 << 10, noTcache)
        }
    }
}
