import ArgumentParser
import DMAPools

/// Micro-measurements of the primitives every design is built from, all taken
/// in one run (medians of several batches) so that their ratios are meaningful.
struct Microbench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the primitives (allocators, swiotlb, page_pool, memcpy) in one run.")

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Option(parsing: .unconditional, help: "Operations per timed batch, 1000...100000000.")
    var iterations: Int = 200_000

    func validate() throws {
        guard iterations >= 1000 && iterations <= 100_000_000 else {
            throw ValidationError("invalid --iterations: \(iterations) must be in 1000...100000000")
        }
    }

    func run() throws {
        var results: [(String, Double)] = []
        let guest = try Guest(.init(guestBytes: 256 << 20, swiotlbBytes: 64 << 20, hypercall: .free))
        let device = try guest.devices.add(name: "nic0")

        // The general allocator: alloc + free pairs through the private arena.
        for order in [0, 3] {
            let allocator = guest.allocator
            let ns = try Measure.nanosecondsPerOperation(operations: iterations) {
                for _ in 0..<iterations { allocator.freePages(try allocator.allocatePages(order: order)) }
            }
            results.append(("jemalloc_order\(order)_ns", ns))
        }

        // swiotlb: map + unmap with the bounce copy, DMA_TO_DEVICE, through the DMA API.
        let source = try guest.allocator.allocatePages(order: 4)
        memset(source.bytes, 0x5a, source.byteCount)
        for size in [1500, 65536] {
            let dma = guest.dma
            let count = max(1000, iterations / (size > 4096 ? 20 : 1))
            let ns = try Measure.nanosecondsPerOperation(operations: count) {
                for _ in 0..<count {
                    let address = try dma.mapPage(source, offset: 0, size: size, direction: .toDevice, device: device)
                    try dma.unmapPage(address, size: size, direction: .toDevice, device: device)
                }
            }
            results.append(("swiotlb_map_unmap_\(size)_ns", ns))
        }
        guest.allocator.freePages(source)

        // page_pool: fast, ring, slow and fragment paths (PagePoolMicrobench).
        let pool = try PagePoolMicrobench.run(iterations: iterations * 5)
        for key in pool.keys.sorted() { results.append((key, pool[key]!)) }

        results.append(("memcpy_gbps", Measure.memcpyGigabytesPerSecond()))
        let byKey = Dictionary(uniqueKeysWithValues: results)
        if let fast = byKey["pool_fast_ns"], let order3 = byKey["jemalloc_order3_ns"], fast > 0 {
            results.append(("pool_fast_speedup_vs_jemalloc_order3", order3 / fast))
        }

        if json {
            print("{" + results.map { "\"\($0.0)\": \(fixed($0.1, 2))" }.joined(separator: ", ") + "}")
        } else {
            for (key, value) in results { print(key.padded(40) + fixed(value, 2)) }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
