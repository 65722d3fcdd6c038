import DMAPools

#if canImport(Glibc)
import Glibc
#endif

/// The primitives every design is built from, measured in one run (medians of
/// several batches) so that their ratios are meaningful: `txsim microbench`.
public enum Microbench {
    /// Every figure, in report order: the general allocator's alloc + free
    /// pairs (`jemalloc_order{0,3}_ns`), swiotlb map + unmap with the bounce copy
    /// (`swiotlb_map_unmap_{1500,65536}_ns`), the page_pool paths
    /// (`PagePoolMicrobench.run` with `5 * iterations`), `memcpy_gbps`, and
    /// `pool_fast_speedup_vs_jemalloc_order3`.
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

        let pool = try PagePoolMicrobench.run(iterations: iterations * 5)
        for key in pool.keys.sorted() { results.append((key, pool[key] ?? 0)) }

        results.append(("memcpy_gbps", Measure.memcpyGigabytesPerSecond()))
        let byKey = Dictionary(uniqueKeysWithValues: results.map { ($0.key, $0.value) })
        // Like for like: an order-3 pool's fast path against an order-3 arena pair.
        if let fast = byKey["pool_fast_order3_ns"], let order3 = byKey["jemalloc_order3_ns"], fast > 0 {
            results.append(("pool_fast_speedup_vs_jemalloc_order3", order3 / fast))
        }
        return results
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
