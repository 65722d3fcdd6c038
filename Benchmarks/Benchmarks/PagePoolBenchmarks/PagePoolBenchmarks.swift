import Benchmark
import DMAPools

#if canImport(Glibc)
import Glibc
#endif

/// page_pool micro-benchmarks, after the kernel's `bench_page_pool_simple`.
///
///     swift package --package-path Benchmarks benchmark --target PagePoolBenchmarks
///
/// Each benchmark iteration runs `scaledIterations` (1M) operations; the
/// reported wall clock is per operation, malloc counts are per iteration
/// (so 0 means no malloc on the path at all).
final class PoolFixture: @unchecked Sendable {
    let memory: GuestMemory
    let provider: PagePoolTestProvider
    let pool: PagePool

    init(order: Int = 0) {
        memory = try! GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 4 << 20, hypercall: .free))
        provider = PagePoolTestProvider(memory: memory)
        let device = try! DeviceRegistry().add(name: "bench0")
        pool = try! PagePool(.init(order: order, flags: .dmaMap, device: device, name: "bench"), provider: provider)
    }
}

/// A transmit pool over one of the real memory providers, on a small guest with
/// a general allocator, swiotlb and the DMA API (conversions modelled as free).
final class ProviderPoolFixture: @unchecked Sendable {
    enum Kind { case system, swiotlb, decrypted }

    let memory: GuestMemory
    let provider: any PagePoolMemoryProvider
    let pool: PagePool

    init(_ kind: Kind, syncLength: Int = 0) {
        memory = try! GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free))
        let device = try! DeviceRegistry(forceBounce: true).add(name: "bench0")
        switch kind {
        case .system:
            let swiotlb = try! SWIOTLB(memory: memory)
            provider = SystemPageProvider(general: try! GeneralAllocator(memory: memory),
                                          dma: DMAAPI(memory: memory, swiotlb: swiotlb), device: device)
        case .swiotlb:
            let swiotlb = try! SWIOTLB(memory: memory)
            try! swiotlb.setZeroCopyPercent(90)
            provider = SWIOTLBPageProvider(swiotlb: swiotlb, device: device)
        case .decrypted:
            provider = DecryptedPageProvider(allocator: try! DecryptedAllocator(general: try! GeneralAllocator(memory: memory)))
        }
        var flags: PagePoolFlags = [.dmaMap, .transmit]
        if syncLength > 0 { flags.insert(.dmaSyncForDevice) }
        pool = try! PagePool(.init(flags: flags, dmaDirection: .toDevice, maxLength: syncLength, device: device, name: "bench"),
                             provider: provider)
    }
}

nonisolated(unsafe) var providerFixture: ProviderPoolFixture?

/// jemalloc's `mallocx` / `sdallocx`, loaded privately (RTLD_LOCAL) so it does
/// not replace the process allocator, for the 32 KiB (order-3) comparison.
struct Jemalloc {
    typealias MallocX = @convention(c) (Int, Int32) -> UnsafeMutableRawPointer?
    typealias SDallocX = @convention(c) (UnsafeMutableRawPointer?, Int, Int32) -> Void
    let mallocx: MallocX
    let sdallocx: SDallocX

    static func load() -> Jemalloc? {
        let handle = dlsym(nil, "mallocx") != nil ? nil : dlopen("libjemalloc.so.2", RTLD_NOW | RTLD_LOCAL)
        let lookup = { (name: String) -> UnsafeMutableRawPointer? in
            if let handle { return dlsym(handle, name) }
            return dlsym(UnsafeMutableRawPointer(bitPattern: 0), name)
        }
        guard let m = lookup("mallocx"), let f = lookup("sdallocx") else { return nil }
        return Jemalloc(mallocx: unsafeBitCast(m, to: MallocX.self), sdallocx: unsafeBitCast(f, to: SDallocX.self))
    }
}

nonisolated(unsafe) var fixture: PoolFixture?
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

    // pool_fast_ns: alloc + direct recycle, order 0.
    Benchmark("pool_fast", configuration: .init(
        setup: { fixture = PoolFixture() },
        teardown: { fixture?.pool.destroy(); fixture = nil }
    )) { benchmark in
        let pool = fixture!.pool
        for _ in benchmark.scaledIterations {
            let page = try! pool.allocatePage()
            pool.recycleDirect(page)
        }
    }

    // pool_ring_ns: alloc + put through the recycle ring from a thread that
    // does not own the pool (direct recycling disabled for it).
    Benchmark("pool_ring", configuration: .init(
        setup: { fixture = PoolFixture(); fixture!.pool.disableDirectRecycling() },
        teardown: { fixture?.pool.destroy(); fixture = nil }
    )) { benchmark in
        let pool = fixture!.pool
        for _ in benchmark.scaledIterations {
            let page = try! pool.allocatePage()
            pool.put(page)
        }
    }

    // pool_slow_test_provider_ns: alloc + release through the test provider
    // (bulk 64 from the provider on every 64th allocation, every page released).
    Benchmark("pool_slow_test_provider", configuration: .init(
        scalingFactor: .kilo,
        setup: { fixture = PoolFixture() },
        teardown: { fixture?.pool.destroy(); fixture = nil }
    )) { benchmark in
        let pool = fixture!.pool
        for _ in benchmark.scaledIterations {
            let page = try! pool.allocatePage()
            pool.releaseToProvider(page)
        }
    }

    // pool_slow_ns (system pages), pool_slow_swiotlb_ns, pool_slow_decrypted_ns:
    // the same loop through the real providers. System pages pay jemalloc, a
    // bounce map with a 4 KiB copy, the unmap and the free for every page.
    for (name, kind) in [("pool_slow", ProviderPoolFixture.Kind.system),
                         ("pool_slow_swiotlb", .swiotlb), ("pool_slow_decrypted", .decrypted)] {
        Benchmark(name, configuration: .init(
            scalingFactor: .kilo,
            setup: { providerFixture = ProviderPoolFixture(kind) },
            teardown: { providerFixture?.pool.destroy(); providerFixture = nil }
        )) { benchmark in
            let pool = providerFixture!.pool
            for _ in benchmark.scaledIterations {
                let page = try! pool.allocatePage()
                pool.releaseToProvider(page)
            }
        }
    }

    // pool_fast_sync_*: the fast path with PP_FLAG_DMA_SYNC_DEV syncing the whole
    // 4 KiB page on every recycle: a 4 KiB bounce copy for system pages, nothing
    // for swiotlb pages.
    for (name, kind) in [("pool_fast_sync_system", ProviderPoolFixture.Kind.system), ("pool_fast_sync_swiotlb", .swiotlb)] {
        Benchmark(name, configuration: .init(
            scalingFactor: .kilo,
            setup: { providerFixture = ProviderPoolFixture(kind, syncLength: 4096) },
            teardown: { providerFixture?.pool.destroy(); providerFixture = nil }
        )) { benchmark in
            let pool = providerFixture!.pool
            for _ in benchmark.scaledIterations {
                let page = try! pool.allocatePage()
                pool.recycleDirect(page)
            }
        }
    }

    // pool_frag_ns: 2 KiB fragment alloc + free.
    Benchmark("pool_frag", configuration: .init(
        setup: { fixture = PoolFixture() },
        teardown: { fixture?.pool.destroy(); fixture = nil }
    )) { benchmark in
        let pool = fixture!.pool
        for _ in benchmark.scaledIterations {
            let fragment = try! pool.allocateFragment(size: 2048)
            pool.put(fragment)
        }
    }

    // Unscaled malloc totals: one benchmark iteration = 1M operations, so the
    // malloc count is the exact total over 1M fast-path (or ring-path) operations.
    Benchmark("pool_fast_mallocs_per_1M_ops", configuration: .init(
        metrics: [.mallocCountTotal], scalingFactor: .one, maxIterations: 5,
        setup: { fixture = PoolFixture() },
        teardown: { fixture?.pool.destroy(); fixture = nil }
    )) { benchmark in
        let pool = fixture!.pool
        for _ in 0..<1_000_000 {
            let page = try! pool.allocatePage()
            pool.recycleDirect(page)
        }
    }

    Benchmark("pool_ring_mallocs_per_1M_ops", configuration: .init(
        metrics: [.mallocCountTotal], scalingFactor: .one, maxIterations: 5,
        setup: { fixture = PoolFixture(); fixture!.pool.disableDirectRecycling() },
        teardown: { fixture?.pool.destroy(); fixture = nil }
    )) { benchmark in
        let pool = fixture!.pool
        for _ in 0..<1_000_000 {
            let page = try! pool.allocatePage()
            pool.put(page)
        }
    }

    // Sanity check of the malloc counter: one array allocation per operation
    // must read as 1 (jemalloc is linked into this executable, as DMAPools
    // links it, so this also shows the interposer still sees mallocs).
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
