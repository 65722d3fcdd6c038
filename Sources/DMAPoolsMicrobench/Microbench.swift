@_spi(DMAPoolsSupport) import DMAPools

#if canImport(Glibc)
import Glibc
#endif

/// The primitives every design is built from, measured in one run (medians of
/// several batches) so that their ratios are meaningful: `txsim microbench`.
public enum Microbench {
    /// Every figure, in report order: the general allocator's alloc + free
    /// pairs (`jemalloc_order{0,3}_ns`), swiotlb map + unmap with the bounce copy
    /// (`swiotlb_map_unmap_{1500,65536}_ns`), the page_pool paths
    /// (`PagePoolMicrobench.run` with `5 * iterations`), `memcpy_gbps`,
    /// `pool_fast_speedup_vs_jemalloc_order3`, and the cost of one read of the
    /// monotonic and the thread CPU clock (`clock_monotonic_ns`,
    /// `clock_thread_cputime_ns`).
    public static func run(iterations: Int) throws -> [(key: String, value: Double)] {
        var results: [(key: String, value: Double)] = []
        let guest = try Guest(.init(guestBytes: 256 << 20, swiotlbBytes: 64 << 20, hypercall: .free))
        let device = try guest.devices.add(name: "nic0")

        for order in [0, 3] {
            let allocator = guest.allocator
            let ns = try Measure.nanosecondsPerOperation(operations: iterations) { (n) throws(AllocatorError) in
                try allocatePairs(allocator, order: order, operations: n)
            }
            results.append(("jemalloc_order\(order)_ns", ns))
        }

        let source = try guest.allocator.allocatePages(order: 4)
        memset(source.bytes, 0x5a, source.byteCount)
        for size in [1500, 65536] {
            let count = max(1000, iterations / (size > 4096 ? 20 : 1))
            let ns = try Measure.nanosecondsPerOperation(operations: count) { (n) throws(DMAError) in
                try mapUnmapPairs(guest.dma, source, size: size, device: device, operations: n)
            }
            results.append(("swiotlb_map_unmap_\(size)_ns", ns))
        }
        guest.allocator.freePages(source)

        for order in [0, 3] {
            let (plain, hooked) = try generalFreeNanoseconds(order: order, frees: max(4096, iterations / 4))
            let suffix = order == 0 ? "" : "_order3"
            results.append(("general_free\(suffix)_ns", plain))
            results.append(("general_free_hooked\(suffix)_ns", hooked))
        }

        let pool = try PagePoolMicrobench.run(iterations: iterations * 5)
        for key in pool.keys.sorted() { results.append((key, pool[key] ?? 0)) }

        results.append(("memcpy_gbps", Measure.memcpyGigabytesPerSecond()))
        let byKey = Dictionary(uniqueKeysWithValues: results.map { ($0.key, $0.value) })
        // Like for like: an order-3 pool's fast path against an order-3 arena pair.
        if let fast = byKey["pool_fast_order3_ns"], let order3 = byKey["jemalloc_order3_ns"], fast > 0 {
            results.append(("pool_fast_speedup_vs_jemalloc_order3", order3 / fast))
        }
        // What a transmit path's accounting pays per clock read: the
        // monotonic clock a queue run reads at both ends, and the thread's
        // CPU clock it read until 2026-12-03 (a system call where the vDSO
        // does not serve it, as in this VM).
        let reads = max(1000, iterations / 20)
        results.append(("clock_monotonic_ns", Measure.nanosecondsPerOperation(operations: reads) { readClock(CLOCK_MONOTONIC, times: $0) }))
        results.append(("clock_thread_cputime_ns",
                        Measure.nanosecondsPerOperation(operations: reads) { readClock(CLOCK_THREAD_CPUTIME_ID, times: $0) }))
        return results
    }

    /// `times` reads of `clock`, their sum consumed.
    @inline(never)
    static func readClock(_ clock: clockid_t, times: Int) {
        var ts = timespec()
        var sum: UInt64 = 0
        for _ in 0..<times {
            clock_gettime(clock, &ts)
            sum &+= UInt64(ts.tv_nsec)
        }
        Measure.consume(sum)
    }

    /// What frag-refill's free-path hook costs a free that has nothing to do
    /// with networking: ordinary pages of `order` freed through the general
    /// allocator (the arena path the stack's frees take) of a guest without
    /// the hook and of one with the seed patch's check (`Guest.swiotlbFreeHook`,
    /// which declines every one of these pages). Pages are allocated in
    /// batches of 64 outside the timed part; only the 64 frees are timed. The
    /// two allocators alternate batch by batch, so a change in the machine's
    /// speed falls on both; each figure is the median over 9 rounds of the
    /// nanoseconds per free.
    public static func generalFreeNanoseconds(order: Int, frees: Int) throws -> (plain: Double, hooked: Double) {
        let configuration = GuestMemoryConfiguration(guestBytes: 128 << 20, swiotlbBytes: 8 << 20, hypercall: .free)
        let plainMemory = try GuestMemory(configuration)
        let plain = try GeneralAllocator(memory: plainMemory)
        let hookedMemory = try GuestMemory(configuration)
        let swiotlb = try SWIOTLB(memory: hookedMemory)
        let hooked = try GeneralAllocator(memory: hookedMemory, freeHook: Guest.swiotlbFreeHook(swiotlb))
        let batch = 64
        let pages = UnsafeMutableBufferPointer<Page>.allocate(capacity: batch)
        defer { pages.deallocate() }
        func timeFrees(_ allocator: GeneralAllocator, count: Int) throws(AllocatorError) -> Double {
            var elapsed: UInt64 = 0
            var done = 0
            var sum: UInt64 = 0
            while done < count {
                for i in 0..<batch {
                    pages[i] = try allocator.allocatePages(order: order)
                    sum &+= UInt64(UInt(bitPattern: pages[i].bytes))
                }
                let start = monotonicNanoseconds()
                for i in 0..<batch { allocator.freePages(pages[i]) }
                elapsed &+= monotonicNanoseconds() &- start
                done += batch
            }
            Measure.consume(sum)
            return Double(elapsed) / Double(done)
        }
        _ = try timeFrees(plain, count: batch * 16)    // warm-up: the arenas carve their extents
        _ = try timeFrees(hooked, count: batch * 16)
        var plainSamples: [Double] = []
        var hookedSamples: [Double] = []
        for round in 0..<9 {
            // Alternate which goes first, so neither always follows the other.
            if round % 2 == 0 {
                plainSamples.append(try timeFrees(plain, count: frees))
                hookedSamples.append(try timeFrees(hooked, count: frees))
            } else {
                hookedSamples.append(try timeFrees(hooked, count: frees))
                plainSamples.append(try timeFrees(plain, count: frees))
            }
        }
        return (Measure.median(plainSamples), Measure.median(hookedSamples))
    }

    /// `operations` alloc + free pairs of order `order` through the general
    /// allocator's private arena (no tcache).
    public static func allocatePairs(_ allocator: GeneralAllocator, order: Int, operations: Int) throws(AllocatorError) {
        for _ in 0..<operations { allocator.freePages(try allocator.allocatePages(order: order)) }
    }

    /// `operations` `dma_map_page` + `dma_unmap_page` pairs of `size` bytes of
    /// `page`, `DMA_TO_DEVICE`: through swiotlb with the bounce copy when the
    /// device bounces.
    public static func mapUnmapPairs(_ dma: DMAAPI, _ page: Page, size: Int, device: Device, operations: Int) throws(DMAError) {
        for _ in 0..<operations {
            let address = try dma.mapPage(page, offset: 0, size: size, direction: .toDevice, device: device)
            try dma.unmapPage(address, size: size, direction: .toDevice, device: device)
        }
    }
}
