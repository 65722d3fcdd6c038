import Benchmark
import CAllocatorChain
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

/// The process's allocator chain, made one allocator before anything is measured.
///
/// The malloc counters come from ordo-one's malloc interposer
/// (`libMallocInterposerSwift.so`), which must be the process's `malloc` and
/// forward (`dlsym(RTLD_NEXT)`) to jemalloc, the allocator DMAPools uses for
/// everything else (`mallocx`, its arenas). But DMAPools links libjemalloc,
/// which exports `malloc`, `free` and C++ `operator new`/`delete` too, and the
/// link puts it before the interposer: jemalloc becomes the process allocator,
/// the interposer counts nothing (the sanity benchmark read 0 mallocs for an
/// array per operation), and whichever library comes first on a given link
/// decides who frees what the other allocated. So when the interposer is not
/// first, the benchmark re-executes itself with the interposer preloaded (right
/// after the executable, so its `RTLD_NEXT` is jemalloc), and libstdc++ too
/// (so `operator new` goes through `malloc` rather than straight to jemalloc),
/// then checks the chain and stops with a message if it is still wrong.
enum AllocatorChain {
    static let marker = "PAGEPOOL_BENCHMARKS_ALLOCATOR_CHAIN"

    /// What is wrong with the chain, or nil.
    static func problem() -> String? {
        guard let interposer = resolve("replacement_malloc") else { return "the malloc interposer is not loaded" }
        for symbol in ["malloc", "free", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign", "valloc", "malloc_usable_size"] {
            let owner = resolve(symbol) ?? "nothing"
            if owner != interposer { return "\(symbol) resolves to \(owner), not the malloc interposer \(interposer)" }
        }
        // operator new / delete (_Znwm, _ZdlPv, _ZdlPvm): libstdc++'s, through malloc and free.
        for symbol in ["_Znwm", "_ZdlPv", "_ZdlPvm"] {
            let owner = resolve(symbol) ?? "nothing"
            if owner.contains("jemalloc") { return "\(symbol) resolves to \(owner): it would bypass the interposer" }
        }
        let i = allocator_chain_load_index("libMallocInterposerSwift.so")
        let j = allocator_chain_load_index("libjemalloc")
        guard i >= 0, j >= 0 else { return "libjemalloc is not loaded" }
        if i > j { return "libjemalloc is loaded before the malloc interposer, whose RTLD_NEXT would then skip it" }
        return nil
    }

    /// The file of the loaded object whose `symbol` is first in scope.
    static func resolve(_ symbol: String) -> String? {
        allocator_chain_owner(symbol).map { String(cString: $0) }
    }

    /// Returns once the chain is right; else re-executes the benchmark with the
    /// interposer preloaded, or stops.
    static func ensure() {
        guard let problem = problem() else { return }
        guard getenv(marker) == nil, let interposer = resolve("replacement_malloc") else {
            fatalError("malloc counters would be wrong: \(problem)")
        }
        let existing = getenv("LD_PRELOAD").map { " " + String(cString: $0) } ?? ""
        setenv("LD_PRELOAD", interposer + " libstdc++.so.6" + existing, 1)
        setenv(marker, problem, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        fatalError("could not re-execute the benchmark with the malloc interposer preloaded: errno \(errno)")
    }
}

let benchmarks: @Sendable () -> Void = {
    AllocatorChain.ensure()
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 2,
        scalingFactor: .mega,
        maxDuration: .seconds(2),
        maxIterations: 25
    )

    typealias Fixture = PagePoolMicrobench.Fixture
    typealias Loop = (Fixture, Int) throws(PagePoolError) -> Void
    // One benchmark per `txsim microbench` page_pool key (without `_ns`): the
    // fixture it needs, the loop it times, and 1M (mega) or 1k (kilo)
    // operations per iteration. The slow paths through the real providers pay
    // jemalloc, swiotlb or the decrypted allocator on every page; the sync
    // paths sync the whole 4 KiB page on every recycle (a bounce copy for
    // system pages, nothing for swiotlb pages).
    let cases: [(name: String, scale: BenchmarkScalingFactor, fixture: () throws -> Fixture, loop: Loop)] = [
        ("pool_fast", .mega, { try Fixture() }, PagePoolMicrobench.fastPath),
        ("pool_fast_64", .mega, { try Fixture(outstanding: 64) }, PagePoolMicrobench.fastPath),
        ("pool_fast_1024", .mega, { try Fixture(outstanding: 1024) }, PagePoolMicrobench.fastPath),
        ("pool_fast_order3", .mega, { try Fixture(order: 3) }, PagePoolMicrobench.fastPath),
        ("pool_bulk32_per_page", .mega, { try Fixture(bulk: 32) }, PagePoolMicrobench.bulk),
        ("pool_bulk32_touched_per_page", .mega, { try Fixture(bulk: 32) }, PagePoolMicrobench.bulkTouched),
        ("pool_ring", .mega, { try Fixture(directRecycling: false) }, PagePoolMicrobench.ringPath),
        ("pool_ring_remote", .mega, { try Fixture(remotePutter: true) }, PagePoolMicrobench.ringRemote),
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
            guard let fixture else { return }
            try loop(fixture, benchmark.scaledIterations.count)
        }
    }

    // Unscaled malloc totals: one benchmark iteration = 1M operations, so the
    // malloc count is the exact total over 1M fast-path (or ring-path) operations.
    for (name, makeFixture, loop) in [
        ("pool_fast_mallocs_per_1M_ops", { try Fixture() }, PagePoolMicrobench.fastPath),
        ("pool_ring_mallocs_per_1M_ops", { try Fixture(directRecycling: false) }, PagePoolMicrobench.ringPath),
        ("pool_fast_1024_mallocs_per_1M_ops", { try Fixture(outstanding: 1024) }, PagePoolMicrobench.fastPath),
        ("pool_bulk32_mallocs_per_1M_pages", { try Fixture(bulk: 32) }, PagePoolMicrobench.bulk),
        ("pool_bulk32_touched_mallocs_per_1M_pages", { try Fixture(bulk: 32) }, PagePoolMicrobench.bulkTouched),
        ("pool_ring_remote_mallocs_per_1M_ops", { try Fixture(remotePutter: true) }, PagePoolMicrobench.ringRemote),
    ] as [(String, () throws -> Fixture, Loop)] {
        Benchmark(name, configuration: .init(
            metrics: [.mallocCountTotal], scalingFactor: .one, maxIterations: 5,
            setup: { fixture = try makeFixture() },
            teardown: { fixture = nil }
        )) { benchmark in
            guard let fixture else { return }
            try loop(fixture, 1_000_000)
        }
    }

    // Sanity check of the malloc counter: one array allocation per operation
    // must read as 1 (so the zeros above are the interposer seeing every
    // malloc, not missing them: before `AllocatorChain` it read 0).
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
