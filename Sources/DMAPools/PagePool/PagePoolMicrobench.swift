#if canImport(Glibc)
import Glibc
#endif

/// In-process page_pool micro-measurements for `txsim microbench --json`, the
/// analogs of the kernel's `bench_page_pool_simple`. Each figure is the median
/// over several batches of nanoseconds per operation, timed with the monotonic
/// clock; the pool is backed by `PagePoolTestProvider`, so no other subsystem
/// is involved. The ordo-one benchmarks in `Benchmarks/` measure the same
/// loops with malloc counting.
public enum PagePoolMicrobench {
    /// The JSON keys and their values: `pool_fast_ns`, `pool_ring_ns`,
    /// `pool_slow_ns`, `pool_frag_ns`.
    public static func run(iterations: Int = 1 << 20, batches: Int = 7) throws -> [String: Double] {
        [
            "pool_fast_ns": try fastPathNanoseconds(iterations: iterations, batches: batches),
            "pool_ring_ns": try ringPathNanoseconds(iterations: iterations, batches: batches),
            "pool_slow_ns": try slowPathNanoseconds(iterations: iterations / 8, batches: batches),
            "pool_frag_ns": try fragmentNanoseconds(iterations: iterations, batches: batches),
        ]
    }

    /// Alloc + direct recycle, order 0 (`page_pool_alloc_pages` +
    /// `page_pool_recycle_direct`). Kernel: 19 cycles, 5.4 ns at 3.6 GHz.
    public static func fastPathNanoseconds(iterations: Int, batches: Int = 7) throws -> Double {
        let fixture = try Fixture()
        let pool = fixture.pool
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            for _ in 0..<n {
                let page = try pool.allocatePage()
                pool.recycleDirect(page)
            }
        }
    }

    /// Alloc + put through the recycle ring from a thread that does not own
    /// the pool (direct recycling disabled). Kernel: 54 cycles, 15.1 ns.
    public static func ringPathNanoseconds(iterations: Int, batches: Int = 7) throws -> Double {
        let fixture = try Fixture()
        let pool = fixture.pool
        pool.disableDirectRecycling()
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            for _ in 0..<n {
                let page = try pool.allocatePage()
                pool.put(page)
            }
        }
    }

    /// Alloc + release to the provider: every page leaves the pool, so
    /// allocation goes to the provider (bulk 64). Kernel: 238 cycles, 66 ns.
    public static func slowPathNanoseconds(iterations: Int, batches: Int = 7) throws -> Double {
        let fixture = try Fixture()
        let pool = fixture.pool
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            for _ in 0..<n {
                let page = try pool.allocatePage()
                pool.releaseToProvider(page)
            }
        }
    }

    /// A 2 KiB fragment alloc + free (`page_pool_alloc_frag` + put).
    public static func fragmentNanoseconds(iterations: Int, batches: Int = 7) throws -> Double {
        let fixture = try Fixture()
        let pool = fixture.pool
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            for _ in 0..<n {
                let fragment = try pool.allocateFragment(size: 2048)
                pool.put(fragment)
            }
        }
    }

    /// A pool over a small guest, with a provider that needs nothing else.
    final class Fixture {
        let memory: GuestMemory
        let provider: PagePoolTestProvider
        let pool: PagePool

        init(order: Int = 0) throws {
            memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 4 << 20, hypercall: .free))
            provider = PagePoolTestProvider(memory: memory)
            let device = try DeviceRegistry().add(name: "microbench0")
            pool = try PagePool(.init(order: order, flags: .dmaMap, device: device, name: "microbench"), provider: provider)
        }

        deinit {
            pool.destroy()
        }
    }

    static func median(batches: Int, iterations: Int, _ body: (Int) throws(PagePoolError) -> Void) throws(PagePoolError) -> Double {
        precondition(batches > 0 && iterations > 0, "batches \(batches) and iterations \(iterations) must be positive")
        try body(min(iterations, 4096))   // warm-up: fill caches, fault pages in
        var samples: [Double] = []
        samples.reserveCapacity(batches)
        for _ in 0..<batches {
            let start = monotonicNanoseconds()
            try body(iterations)
            let end = monotonicNanoseconds()
            samples.append(Double(end - start) / Double(iterations))
        }
        samples.sort()
        return samples[samples.count / 2]
    }
}
