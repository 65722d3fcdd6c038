#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
@testable import DMAPools

/// Small DMA-able objects over pre-decrypted pages.
@Suite struct DecryptedSlabCacheTests {
    func guest() throws -> Guest { try Guest(.init(guestBytes: 128 << 20, swiotlbBytes: 8 << 20, hypercall: .free)) }

    @Test func objectsAreSharedWithTheirPagesStoredAddressAndDoNotOverlap() throws {
        let g = try guest()
        let slab = DecryptedSlabCache(allocator: g.decrypted)
        var objects: [DecryptedSlabCache.Object] = []
        for size in [1, 64, 65, 200, 1000, 2048] {
            for _ in 0..<50 { objects.append(try slab.allocate(size: size)) }
        }
        for o in objects {
            #expect(o.page.domain == .shared)
            #expect(o.dmaAddress == o.page.dmaAddress + (o.bytes - o.page.bytes))
            #expect(DecryptedSlabCache.objectSizes.contains(o.size))
        }
        let ranges = objects.map { UInt(bitPattern: $0.bytes)..<(UInt(bitPattern: $0.bytes) + UInt($0.size)) }.sorted { $0.lowerBound < $1.lowerBound }
        for (a, b) in zip(ranges, ranges.dropFirst()) { #expect(a.upperBound <= b.lowerBound) }
        #expect(slab.statistics.liveObjects == objects.count)
        for o in objects { slab.free(o) }
        #expect(slab.shrink() == 0)
        #expect(slab.statistics.pages == 0)
        #expect(g.lostPages() == 0)
    }

    @Test func kmallocObjectsArePrivateWithoutADMAAddressAndComeHome() throws {
        let g = try guest()
        let slab = SlabCache(general: g.allocator)
        #expect(!slab.isPreDecrypted && slab.allocator == nil)
        var objects: [SlabCache.Object] = []
        for size in [64, 128, 2048] { for _ in 0..<40 { objects.append(try slab.allocate(size: size)) } }
        for o in objects {
            #expect(o.page.domain == .private)
            #expect(o.dmaAddress == .mappingError, "a private object is reachable only through the DMA API")
        }
        #expect(slab.statistics.peakPages == slab.statistics.pages && slab.statistics.pages > 0)
        for o in objects { slab.free(o) }
        #expect(slab.shrink() == 0 && slab.statistics.pages == 0)
        #expect(g.lostPages() == 0)
    }

    @Test func thePeakCountsTheMostPagesHeldAtOnce() throws {
        let g = try guest()
        let slab = DecryptedSlabCache(allocator: g.decrypted)
        let objects = try (0..<(2 * PageGeometry.size / 1024)).map { _ in try slab.allocate(size: 1024) }
        #expect(slab.statistics.pages == 2 && slab.statistics.peakPages == 2)
        for o in objects { slab.free(o) }
        slab.shrink()
        #expect(slab.statistics.pages == 0 && slab.statistics.peakPages == 2)
        #expect(g.decrypted.statistics.peakLivePages >= 2 && g.decrypted.statistics.livePages == 0)
        #expect(g.lostPages() == 0)
    }

    @Test func aSizeOutsideTheClassesIsRefused() throws {
        let slab = DecryptedSlabCache(allocator: try guest().decrypted)
        #expect(throws: AllocatorError.self) { _ = try slab.allocate(size: 0) }
        #expect(throws: AllocatorError.self) { _ = try slab.allocate(size: 2049) }
    }

    @Test func anEmptyPageGoesBackWhenItsClassHasAnother() throws {
        let slab = DecryptedSlabCache(allocator: try guest().decrypted)
        let perPage = PageGeometry.size / 2048
        let first = try (0..<perPage).map { _ in try slab.allocate(size: 2048) }
        let second = try slab.allocate(size: 2048)      // a second page
        #expect(slab.statistics.pages == 2)
        for o in first { slab.free(o) }                 // the first page empties while the second has free objects
        #expect(slab.statistics.pages == 1 && slab.statistics.pagesReturned == 1)
        slab.free(second)
        #expect(slab.shrink() == 0)
    }

    @Test func twoThreadsAllocateAndFreeConcurrently() throws {
        let g = try guest()
        let slab = DecryptedSlabCache(allocator: g.decrypted)
        let done = Atomic<Int>(0)
        let threads = (0..<2).map { t in
            Thread {
                for i in 0..<2000 {
                    if let o = try? slab.allocate(size: 64 << ((i + t) % 6)) {
                        o.bytes.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
                        slab.free(o)
                    }
                }
                done.add(1, ordering: .releasing)
            }
        }
        for thread in threads { thread.join() }
        #expect(done.load(ordering: .acquiring) == 2)
        #expect(slab.statistics.allocations == 4000 && slab.statistics.liveObjects == 0)
        #expect(slab.shrink() == 0)
        #expect(g.lostPages() == 0)
    }
}

/// A plain joinable thread for the test.
private final class Thread: @unchecked Sendable {
    private var handle = pthread_t()
    init(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        pthread_create(&handle, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
    }
    func join() { pthread_join(handle, nil) }
    private final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
}
