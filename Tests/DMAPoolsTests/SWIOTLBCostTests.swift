import CJemalloc
import Testing
@_spi(PagePoolProvider) @_spi(DMAPoolsSupport) @testable import DMAPools

#if canImport(Glibc)
import Glibc
#endif

/// Cost checks of the hot path: no heap allocation per map/unmap (jemalloc's
/// per-thread `thread.allocated` counter does not move, in an optimized build
/// run with jemalloc as the process allocator: `LD_PRELOAD=libjemalloc.so.2
/// swift test -c release`; a client of DMAPools keeps glibc's `malloc`
/// otherwise, which jemalloc's counter does not see), and, when
/// `DMAPOOLS_MEASURE=1` is set, a timing of map+unmap pairs printed to stdout
/// (meaningful with `swift test -c release`).
@Suite struct SWIOTLBCostTests {
    /// Bytes jemalloc has handed to the calling thread so far.
    static func threadAllocatedBytes() -> UInt64 {
        var value: UInt64 = 0
        var length = MemoryLayout<UInt64>.size
        let status = mallctl("thread.allocated", &value, &length, nil, 0)
        precondition(status == 0, "mallctl(thread.allocated) failed: \(status)")
        return value
    }

    /// Whether this is an optimized build: -Onone code allocates on the hot path
    /// (~290 B per round here; not investigated), so the allocation check runs
    /// only in optimized builds (`scripts/release-checks.sh`, which CI runs).
    #if DEBUG
    static let optimized = false
    #else
    static let optimized = true
    #endif

    @Test(.enabled(if: optimized, "an optimized build only: scripts/release-checks.sh"), arguments: [1500, 64 << 10])
    func mapAndUnmapDoNotAllocate(size: Int) throws {
        let f = try SWIOTLBFixture()
        let dma = DMAAPI(memory: f.memory, swiotlb: f.swiotlb)
        let run = f.memory.page(at: 1024)
        f.memory.prepareCompound(run, order: 4, owner: .generalAllocator)
        // Warm up: first calls may initialize lazy globals.
        let warm = try dma.mapPage(run, offset: 0, size: size, direction: .toDevice, device: f.device)
        try dma.unmapPage(warm, size: size, direction: .toDevice, device: f.device)

        let before = Self.threadAllocatedBytes()
        for _ in 0..<1000 {
            let address = try dma.mapPage(run, offset: 0, size: size, direction: .bidirectional, device: f.device)
            try dma.syncSingleForDevice(address, size: size, direction: .bidirectional, device: f.device)
            try dma.unmapPage(address, size: size, direction: .bidirectional, device: f.device)
            let tlb = try f.swiotlb.mapSingle(device: f.device, original: run.physicalAddress, mappingSize: size,
                                              direction: .toDevice)
            try f.swiotlb.unmapSingle(device: f.device, tlbAddress: tlb, mappingSize: size, direction: .toDevice)
        }
        let after = Self.threadAllocatedBytes()
        try #require(ClientAllocatorTests.library(of: "malloc", is: "libjemalloc.so"),
                     "thread.allocated sees malloc only with jemalloc as the process allocator: run with LD_PRELOAD=libjemalloc.so.2")
        #expect(after == before, "\(after - before) bytes allocated over 1000 map/sync/unmap rounds of \(size) bytes")
    }

    @Test(.enabled(if: getenv("DMAPOOLS_MEASURE") != nil), arguments: [1500, 64 << 10])
    func measureMapUnmap(size: Int) throws {
        let f = try SWIOTLBFixture(swiotlbBytes: 32 << 20)
        let dma = DMAAPI(memory: f.memory, swiotlb: f.swiotlb)
        let run = f.memory.page(at: 1024)
        f.memory.prepareCompound(run, order: 4, owner: .generalAllocator)
        let rounds = 200_000
        for _ in 0..<3 {
            let start = monotonicNanoseconds()
            for _ in 0..<rounds {
                let address = try dma.mapPage(run, offset: 0, size: size, direction: .toDevice, device: f.device)
                try dma.unmapPage(address, size: size, direction: .toDevice, device: f.device)
            }
            let dmaNanoseconds = Double(monotonicNanoseconds() - start) / Double(rounds)
            // The same copies to the destinations the search walks through
            // (area.index advances by the run each time), so cache misses match.
            let copyStart = monotonicNanoseconds()
            let stride = (size + 2047) & ~2047
            let span = f.swiotlb.areaSlots << 11
            var destination = 0
            for _ in 0..<rounds {
                (f.swiotlb.startPointer + destination).copyMemory(from: run.bytes, byteCount: size)
                destination += stride
                if destination + stride > span { destination = 0 }
            }
            let copyNanoseconds = Double(monotonicNanoseconds() - copyStart) / Double(rounds)
            print("swiotlb map+unmap \(size) B: \(dmaNanoseconds) ns/pair (memcpy alone \(copyNanoseconds) ns)")
        }
    }
}
