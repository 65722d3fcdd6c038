import DMAPools
import DMAPoolsTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// In-process page_pool micro-measurements for `txsim microbench --json`, the
/// analogs of the kernel's `bench_page_pool_simple`. Each figure is the median
/// over several batches of nanoseconds per operation, timed with the monotonic
/// clock. The fast, ring and fragment paths use `PagePoolTestProvider` (no other
/// subsystem involved: they never reach the provider); the slow path is
/// measured through each real provider over a real `GuestMemory`,
/// `GeneralAllocator`, `SWIOTLB` and `DMAAPI` (conversions modelled as free:
/// `HypercallCostModel.free`). The ordo-one benchmarks in `Benchmarks/` measure
/// the same loops with malloc counting.
public enum PagePoolMicrobench {
    /// The JSON keys and their values:
    /// - `pool_fast_ns`, `pool_ring_ns`, `pool_frag_ns`: test provider;
    /// - `pool_slow_ns`: the slow path through `SystemPageProvider` (jemalloc +
    ///   `dma_map` with a bounce copy + `dma_unmap` + free);
    /// - `pool_slow_test_provider_ns`: the same loop over `PagePoolTestProvider`
    ///   (the pool's own slow-path cost, a free list behind it);
    /// - `pool_slow_swiotlb_ns`, `pool_slow_decrypted_ns`: through
    ///   `SWIOTLBPageProvider` and `DecryptedPageProvider`;
    /// - `pool_fast_sync_system_ns`, `pool_fast_sync_swiotlb_ns`: the fast path
    ///   with `PP_FLAG_DMA_SYNC_DEV` syncing a whole 4 KiB page on every recycle,
    ///   over system pages (a 4 KiB copy into the bounce slot) and over swiotlb
    ///   pages (nothing to copy).
    public static func run(iterations: Int = 1 << 20, batches: Int = 7) throws -> [String: Double] {
        let slowIterations = max(1, iterations / 8)
        return [
            "pool_fast_ns": try fastPathNanoseconds(iterations: iterations, batches: batches),
            "pool_ring_ns": try ringPathNanoseconds(iterations: iterations, batches: batches),
            "pool_slow_ns": try slowPathNanoseconds(iterations: slowIterations, batches: batches, provider: .system),
            "pool_slow_test_provider_ns": try slowPathNanoseconds(iterations: slowIterations, batches: batches, provider: .test),
            "pool_slow_swiotlb_ns": try slowPathNanoseconds(iterations: slowIterations, batches: batches, provider: .swiotlb),
            "pool_slow_decrypted_ns": try slowPathNanoseconds(iterations: slowIterations, batches: batches, provider: .decrypted),
            "pool_frag_ns": try fragmentNanoseconds(iterations: iterations, batches: batches),
            "pool_fast_sync_system_ns": try fastPathWithSyncNanoseconds(iterations: slowIterations, batches: batches, provider: .system),
            "pool_fast_sync_swiotlb_ns": try fastPathWithSyncNanoseconds(iterations: slowIterations, batches: batches, provider: .swiotlb),
        ]
    }

    /// The memory provider behind a measurement.
    public enum Provider: String, Sendable, CaseIterable {
        /// `PagePoolTestProvider`: a free list per order, no other subsystem.
        case test
        /// `SystemPageProvider`: private pages, mapped (bounced) at allocation.
        case system
        /// `SWIOTLBPageProvider`: swiotlb zero-copy runs (`zerocopy_tx_percent` 90).
        case swiotlb
        /// `DecryptedPageProvider`: shared runs from 2 MiB chunks converted once.
        case decrypted
    }

    /// Alloc + direct recycle, order 0 (`page_pool_alloc_pages` +
    /// `page_pool_recycle_direct`). Kernel: 19 cycles, 5.4 ns at 3.6 GHz.
    public static func fastPathNanoseconds(iterations: Int, batches: Int = 7) throws -> Double {
        let fixture = try Fixture()
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            try fastPath(fixture.pool, operations: n)
        }
    }

    /// Alloc + put through the recycle ring from a thread that does not own
    /// the pool (direct recycling disabled). Kernel: 54 cycles, 15.1 ns.
    public static func ringPathNanoseconds(iterations: Int, batches: Int = 7) throws -> Double {
        let fixture = try Fixture(directRecycling: false)
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            try ringPath(fixture.pool, operations: n)
        }
    }

    /// Alloc + release to the provider: every page leaves the pool, so every
    /// 64th allocation goes to the provider (bulk 64) and every page is released
    /// to it. Kernel: 238 cycles, 66 ns (the page allocator, no DMA).
    ///
    /// With `.system` the pool is a transmit pool (`DMA_TO_DEVICE`, `PP_FLAG_DMA_MAP`)
    /// and each page costs a jemalloc allocation, a bounce map (slot search and a
    /// 4 KiB copy), an unmap (slot release; no copy back for `DMA_TO_DEVICE`) and
    /// a jemalloc free.
    public static func slowPathNanoseconds(iterations: Int, batches: Int = 7, provider: Provider = .system) throws -> Double {
        let fixture = try Fixture(provider: provider)
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            try slowPath(fixture.pool, operations: n)
        }
    }

    /// Alloc + direct recycle with `PP_FLAG_DMA_SYNC_DEV` syncing the whole 4 KiB
    /// page (`max_len` 4096) for the device on every recycle.
    public static func fastPathWithSyncNanoseconds(iterations: Int, batches: Int = 7, provider: Provider) throws -> Double {
        let fixture = try Fixture(provider: provider, syncLength: PageGeometry.size)
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            try fastPath(fixture.pool, operations: n)
        }
    }

    /// A 2 KiB fragment alloc + free (`page_pool_alloc_frag` + put).
    public static func fragmentNanoseconds(iterations: Int, batches: Int = 7) throws -> Double {
        let fixture = try Fixture()
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            try fragments(fixture.pool, operations: n)
        }
    }

    // The loop bodies, once: the medians above, `txsim microbench`, the
    // runner and the ordo-one benchmarks in `Benchmarks/` all run these.

    /// `operations` order-0 allocations, each recycled directly (the fast path;
    /// with `PP_FLAG_DMA_SYNC_DEV` each recycle also syncs for the device).
    /// Call from the pool's owning thread.
    public static func fastPath(_ pool: PagePool, operations: Int) throws(PagePoolError) {
        for _ in 0..<operations {
            let page = try pool.allocatePage()
            pool.recycleDirect(page)
        }
    }

    /// `operations` allocations, each put back through the recycle ring (the
    /// pool's direct recycling disabled, as for a put from another thread).
    public static func ringPath(_ pool: PagePool, operations: Int) throws(PagePoolError) {
        for _ in 0..<operations {
            let page = try pool.allocatePage()
            pool.put(page)
        }
    }

    /// `operations` allocations, each released to the provider (the slow path
    /// on every 64th allocation, a provider release on every one).
    public static func slowPath(_ pool: PagePool, operations: Int) throws(PagePoolError) {
        for _ in 0..<operations {
            let page = try pool.allocatePage()
            pool.releaseToProvider(page)
        }
    }

    /// `operations` 2 KiB fragments, each put back at once.
    public static func fragments(_ pool: PagePool, operations: Int) throws(PagePoolError) {
        for _ in 0..<operations {
            let fragment = try pool.allocateFragment(size: 2048)
            pool.put(fragment)
        }
    }

    /// A transmit pool over a small guest (64 MiB, 8 MiB of swiotlb, free
    /// conversions) and the provider asked for; `syncLength` > 0 sets
    /// `PP_FLAG_DMA_SYNC_DEV` with that `max_len`. The pool is destroyed with
    /// the fixture.
    public final class Fixture: @unchecked Sendable {
        public let memory: GuestMemory
        let general: GeneralAllocator?
        let swiotlb: SWIOTLB?
        public let provider: any PagePoolMemoryProvider
        public let pool: PagePool

        public init(provider kind: Provider = .test, order: Int = 0, syncLength: Int = 0, directRecycling: Bool = true) throws {
            memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free))
            let device = try DeviceRegistry(forceBounce: true).add(name: "microbench0")
            switch kind {
            case .test:
                general = nil
                swiotlb = nil
                provider = PagePoolTestProvider(memory: memory)
            case .system:
                let general = try GeneralAllocator(memory: memory)
                let swiotlb = try SWIOTLB(memory: memory)
                self.general = general
                self.swiotlb = swiotlb
                provider = SystemPageProvider(general: general, dma: DMAAPI(memory: memory, swiotlb: swiotlb), device: device)
            case .swiotlb:
                let swiotlb = try SWIOTLB(memory: memory)
                try swiotlb.setZeroCopyPercent(90)
                general = nil
                self.swiotlb = swiotlb
                provider = SWIOTLBPageProvider(swiotlb: swiotlb, device: device)
            case .decrypted:
                let general = try GeneralAllocator(memory: memory)
                self.general = general
                swiotlb = nil
                provider = DecryptedPageProvider(allocator: try DecryptedAllocator(general: general))
            }
            var flags: PagePoolFlags = [.dmaMap, .transmit]
            if syncLength > 0 { flags.insert(.dmaSyncForDevice) }
            pool = try PagePool(.init(order: order, flags: flags, dmaDirection: .toDevice, maxLength: syncLength,
                                      device: device, name: "microbench"), provider: provider)
            if !directRecycling { pool.disableDirectRecycling() }
        }

        deinit {
            pool.destroy()
        }
    }

    static func median(batches: Int, iterations: Int, _ body: (Int) throws(PagePoolError) -> Void) throws(PagePoolError) -> Double {
        // Warm-up: fill caches, fault pages in.
        try Measure.nanosecondsPerOperation(batches: batches, operations: iterations, warmUpOperations: min(iterations, 4096), body)
    }
}
