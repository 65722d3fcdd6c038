import Synchronization
import Testing
@testable import DMAPools
import DMAPoolsMicrobench
import DMAPoolsTestSupport

#if canImport(Glibc)
import Glibc
#endif

// MARK: Support shared by the PagePool*Tests files

/// A guest, a test provider over its first `providerPages` private pages, and a pool.
struct PagePoolFixture {
    let memory: GuestMemory
    let provider: PagePoolTestProvider
    let pool: PagePool
    let device: Device

    init(_ parameters: PagePoolParameters = .init(flags: .dmaMap), providerPages: Int = 4096) throws {
        memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 4 << 20, hypercall: .free))
        provider = PagePoolTestProvider(memory: memory, pages: 0..<providerPages)
        device = try DeviceRegistry().add(name: "eth0")
        var parameters = parameters
        if parameters.flags.contains(.dmaMap) && parameters.device == nil { parameters.device = device }
        pool = try PagePool(parameters, provider: provider)
    }

    /// Every page of the provider's range is back with it, as it gave it out.
    func expectEveryPageHome(sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(provider.outstandingPages == 0, sourceLocation: sourceLocation)
        var bad = 0
        for index in provider.pages {
            let d = memory.descriptors + index
            // Home: the provider's owner, or never carved (free).
            let owner = d.pointee.owner
            if d.pointee.poolSignature != 0 || d.pointee.ownerObject != nil || (owner != provider.pageOwner && owner != .free)
                || d.pointee._fragmentReferenceCount.load(ordering: .relaxed) != 0 {
                bad += 1
            }
        }
        #expect(bad == 0, "\(bad) descriptors still carry pool state", sourceLocation: sourceLocation)
    }
}

/// A plain POSIX thread, so a test can act from a thread that does not own a pool.
final class TestThread: @unchecked Sendable {
    private final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
    private var thread = pthread_t()

    init(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let rc = pthread_create(&thread, nil, { argument in
            Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue().body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    func join() { pthread_join(thread, nil) }

    /// Runs `body` on a new thread and waits for it.
    static func run(_ body: @escaping @Sendable () -> Void) {
        let t = TestThread(body)
        t.join()
    }
}

/// Pages as a Sendable bag, to carry them to another thread in a test.
struct PageBatch: @unchecked Sendable { var pages: [Page] }

// MARK: Recycling

@Suite struct PagePoolRecyclingTests {
    @Test func fastPathAfterTheFirstSlowBulk() throws {
        let f = try PagePoolFixture()
        let pool = f.pool
        let page = try pool.allocatePage()
        var s = pool.statistics
        #expect(s.allocation.slow == 1 && s.allocation.fast == 0)
        #expect(s.holdCount == 64 && pool.cachedPageCount == 63)
        #expect(f.provider.allocateCalls == 1 && f.provider.pagesAllocated == 64)
        #expect(page.owner == .pagePool && page.referenceCount == 1)
        #expect(page.descriptor.pointee.poolSignature == pool.signature)
        #expect(page.descriptor.pointee.ownerObject == pool.ownerObject)
        #expect(pool.fragmentReferenceCount(of: page) == 1)
        pool.recycleDirect(page)
        #expect(pool.fragmentReferenceCount(of: page) == 0)
        let again = try pool.allocatePage()
        #expect(again == page, "the cache is LIFO")
        pool.put(again)   // on the owning thread: direct
        s = pool.statistics
        #expect(s.allocation.fast == 1 && s.recycling.cached == 2 && s.recycling.ring == 0)
        #expect(s.pagesAllocated == 2 && s.pagesReturned == 2)
        #expect(pool.inflight == 64)
        pool.destroy()
        #expect(pool.isShutdownComplete && pool.inflight == 0)
        f.expectEveryPageHome()
    }

    @Test func refillFromTheRingInSixtyFours() throws {
        let f = try PagePoolFixture()
        let pool = f.pool
        var pages: [Page] = []
        for _ in 0..<100 { pages.append(try pool.allocatePage()) }
        var s = pool.statistics
        #expect(s.allocation.slow == 2 && s.allocation.fast == 98 && s.allocation.empty == 2 && s.holdCount == 128)
        #expect(pool.cachedPageCount == 28)
        // Another thread gives all 100 back: through the ring.
        let batch = PageBatch(pages: pages)
        TestThread.run { for page in batch.pages { pool.put(page) } }
        s = pool.statistics
        #expect(s.recycling.ring == 100 && s.recycling.cached == 0 && pool.ringPageCount == 100)
        var held: [Page] = []
        for _ in 0..<28 { held.append(try pool.allocatePage()) }
        #expect(pool.statistics.allocation.refill == 0)
        held.append(try pool.allocatePage())           // refill: 64 out of the ring, one returned
        #expect(pool.statistics.allocation.refill == 1)
        #expect(pool.cachedPageCount == 63 && pool.ringPageCount == 36)
        for _ in 0..<63 { held.append(try pool.allocatePage()) }
        held.append(try pool.allocatePage())           // refill: the last 36
        #expect(pool.cachedPageCount == 35 && pool.ringPageCount == 0)
        for _ in 0..<35 { held.append(try pool.allocatePage()) }
        held.append(try pool.allocatePage())           // ring empty: `empty` (its third: slow paths 1 and 2 found it empty too), then the provider
        s = pool.statistics
        #expect(s.allocation.refill == 2 && s.allocation.empty == 3 && s.allocation.slow == 3)
        #expect(s.allocation.fast == 98 + 28 + 63 + 35)
        #expect(s.holdCount == 192)
        #expect(held.count == 129)
        pool.put(contentsOf: held)
        pool.destroy()
        #expect(pool.isShutdownComplete)
        f.expectEveryPageHome()
    }

    @Test func cacheFullGoesToTheRingAndRingFullToTheProvider() throws {
        let f = try PagePoolFixture(.init(poolSize: 100, flags: .dmaMap))
        let pool = f.pool
        var pages: [Page] = []
        for _ in 0..<250 { pages.append(try pool.allocatePage()) }
        // 4 bulks of 64 = 256 held; 6 left in the cache.
        #expect(pool.statistics.holdCount == 256 && pool.cachedPageCount == 6)
        for page in pages { pool.recycleDirect(page) }
        let s = pool.statistics
        #expect(s.recycling.cached == 122)        // the cache fills to 128
        #expect(s.recycling.cacheFull == 128)     // the other 128 find it full...
        #expect(s.recycling.ring == 100)          // ...100 fit in the ring...
        #expect(s.recycling.ringFull == 28)       // ...and 28 go back to the provider
        #expect(s.releaseCount == 28 && f.provider.pagesReleased == 28)
        #expect(s.inflight == 256 - 28)
        #expect(s.pagesReturned == s.pagesAllocated)
        pool.destroy()
        #expect(pool.isShutdownComplete)
        f.expectEveryPageHome()
    }

    @Test func anElevatedReferenceCountReleasesThePage() throws {
        let f = try PagePoolFixture()
        let pool = f.pool
        let page = try pool.allocatePage()
        page.retain()   // someone else (a clone, an skb head) holds the page too
        pool.put(page)
        let s = pool.statistics
        #expect(s.recycling.releasedRefcount == 1 && s.recycling.cached == 0)
        #expect(s.releaseCount == 1 && s.inflight == 63)
        #expect(page.descriptor.pointee.poolSignature == 0 && page.owner != .pagePool)
        #expect(page.referenceCount == 1, "the provider dropped only the pool's reference")
        #expect(page.release())   // the other holder lets go
        pool.destroy()
    }

    @Test func bulkAllocationAndBulkPut() throws {
        let f = try PagePoolFixture()
        let pool = f.pool
        let buffer = UnsafeMutableBufferPointer<Page>.allocate(capacity: 80)
        defer { buffer.deallocate() }
        #expect(try pool.allocatePages(into: buffer) == 80)
        #expect(Set(buffer).count == 80)
        #expect(pool.statistics.allocation.slow == 2)
        pool.put(contentsOf: UnsafeBufferPointer(buffer))
        var s = pool.statistics
        #expect(s.recycling.cached == 80 && s.pagesReturned == 80)
        // From another thread, bulk goes through the ring.
        #expect(try pool.allocatePages(into: buffer) == 80)
        let batch = PageBatch(pages: Array(buffer))
        TestThread.run { pool.put(contentsOf: batch.pages) }
        s = pool.statistics
        #expect(s.recycling.ring == 80)
        pool.destroy()
        f.expectEveryPageHome()
    }

    @Test func fragmentsShareAPageUntilTheLastComesBack() throws {
        let f = try PagePoolFixture()
        let pool = f.pool
        let a = try pool.allocateFragment(size: 2048)
        let b = try pool.allocateFragment(size: 2048)
        #expect(a.page == b.page && a.offset == 0 && b.offset == 2048)
        #expect(b.dmaAddress == a.page.dmaAddress + 2048)
        #expect(pool.fragmentReferenceCount(of: a.page) == PagePool.fragmentBias)
        // The next fragment does not fit: the first page is drained (bias minus
        // its 2 users) and a new one started.
        let c = try pool.allocateFragment(size: 100)
        #expect(c.page != a.page && c.offset == 0)
        #expect(pool.fragmentReferenceCount(of: a.page) == 2)
        let d = try pool.allocateFragment(size: 100)
        #expect(d.page == c.page && d.offset == 100, "x86-64: dma_get_cache_alignment() is 1, so no padding")
        pool.put(a)
        #expect(pool.fragmentReferenceCount(of: a.page) == 1 && pool.statistics.recycling.cached == 0)
        pool.retainFragment(b.page)   // a clone takes a frag ref
        pool.put(b)
        #expect(pool.statistics.recycling.cached == 0)
        pool.put(b)                   // the clone's: the last
        #expect(pool.fragmentReferenceCount(of: a.page) == 0)
        #expect(pool.statistics.recycling.cached == 1, "the page is recycled when its last fragment is freed")
        #expect(throws: PagePoolError.fragmentTooLarge(size: 5000, pageBytes: 4096)) {
            _ = try pool.allocateFragment(size: 5000)
        }
        pool.put(c)
        pool.put(d)
        pool.destroy()
        #expect(pool.isShutdownComplete)
        f.expectEveryPageHome()
    }

    @Test func aFullyReturnedFragmentPageIsReusedInPlace() throws {
        let f = try PagePoolFixture()
        let pool = f.pool
        let a = try pool.allocateFragment(size: 4096)
        pool.put(a)
        let fastBefore = pool.statistics.allocation.fast
        let b = try pool.allocateFragment(size: 4096)
        #expect(b.page == a.page)
        let s = pool.statistics
        #expect(s.allocation.fast == fastBefore + 1 && s.recycling.cached == 1)
        pool.put(b)
        pool.destroy()
        f.expectEveryPageHome()
    }

    @Test func syncForDeviceOnRecycleWithMaxLength() throws {
        let f = try PagePoolFixture(.init(flags: [.dmaMap, .dmaSyncForDevice], maxLength: 1500, offset: 256))
        let pool = f.pool
        let page = try pool.allocatePage()
        #expect(f.provider.syncCount == 64, "each page is synced once when mapped")
        pool.put(page)
        #expect(f.provider.syncCount == 65)
        #expect(f.provider.lastSync == (256, 1500))
        let again = try pool.allocatePage()
        pool.put(again, dmaSyncSize: 100, allowDirect: true)
        #expect(f.provider.lastSync == (256, 100))
        let third = try pool.allocatePage()
        pool.put(third, dmaSyncSize: 3000, allowDirect: true)
        #expect(f.provider.lastSync == (256, 1500), "capped at max_len")
        pool.destroy()
    }

    @Test func noSyncWithoutTheFlag() throws {
        let f = try PagePoolFixture()
        let page = try f.pool.allocatePage()
        f.pool.put(page)
        #expect(f.provider.syncCount == 0)
        f.pool.destroy()
    }

    @Test func theDMAAddressIsStoredInThePage() throws {
        let f = try PagePoolFixture()
        let page = try f.pool.allocatePage()
        #expect(page.dmaAddress == f.memory.unencryptedDMAAddress(of: page.physicalAddress))
        #expect(f.pool.dmaAddress(of: page) == page.dmaAddress)
        f.pool.put(page)
        f.pool.destroy()
        #expect(page.dmaAddress == .mappingError, "unmapped when it leaves the pool")

        let unmapped = try PagePoolFixture(.init())
        let other = try unmapped.pool.allocatePage()
        #expect(unmapped.pool.dmaAddress(of: other) == .mappingError)
        unmapped.pool.put(other)
        unmapped.pool.destroy()
    }

    @Test func highOrderPagesOneAtATime() throws {
        let f = try PagePoolFixture(.init(order: 2, flags: .dmaMap))
        let pool = f.pool
        let a = try pool.allocatePage()
        let b = try pool.allocatePage()
        #expect(a.order == 2 && a.byteCount == 16384)
        #expect(f.memory.index(of: a) % 4 == 0)
        #expect((1..<4).allSatisfy { Page(descriptor: a.descriptor + $0).owner == .pagePool })
        #expect(Page(descriptor: a.descriptor + 3).head == a)
        pool.put(Page(descriptor: a.descriptor + 3))   // a tail page finds its head
        pool.put(b)
        let s = pool.statistics
        #expect(s.allocation.slowHighOrder == 2 && s.allocation.slow == 0 && s.recycling.cached == 2)
        pool.destroy()
        f.expectEveryPageHome()
    }

    @Test func providerExhaustionThrows() throws {
        let f = try PagePoolFixture(providerPages: 64)
        let pool = f.pool
        var pages: [Page] = []
        for _ in 0..<64 { pages.append(try pool.allocatePage()) }
        #expect(throws: PagePoolError.providerExhausted(provider: "test-pages", order: 0)) {
            _ = try pool.allocatePage()
        }
        for page in pages { pool.put(page) }
        f.provider.failNextAllocations(1)
        let cached = try pool.allocatePage()   // served from the cache: the provider is not asked
        #expect(f.provider.allocateCalls == 2)
        pool.put(cached)
        pool.destroy()
        f.expectEveryPageHome()
    }
}

@Suite struct PagePoolRingTests {
    @Test(arguments: [1, 2, 3, 4, 5, 33, 100])
    func theRingKeepsOrderAndCapacityOverManyLaps(_ capacity: Int) throws {
        let memory = try GuestMemory(.init(guestBytes: 16 << 20, swiotlbBytes: 4 << 20, hypercall: .free))
        let ring = _RecycleRing(capacity: capacity)
        var next = 0, expected = 0
        for lap in 0..<10 {
            let empty = ring.isEmpty
            #expect(empty)
            for _ in 0..<capacity {
                let produced = ring.produce(memory.page(at: next))
                #expect(produced)
                next += 1
            }
            let overfilled = ring.produce(memory.page(at: 0))
            #expect(!overfilled, "full at exactly \(capacity)")
            let count = ring.count
            #expect(count == capacity)
            for _ in 0..<(lap % 2 == 0 ? capacity : capacity - 1) {
                let page = ring.consume()
                #expect(page == memory.page(at: expected))
                expected += 1
            }
            while let page = ring.consume() {
                #expect(page == memory.page(at: expected))
                expected += 1
            }
            let occupied = ring.occupiedSlotCount
            #expect(occupied == 0, "a whole lap consumed clears every slot")
        }
        let last = ring.consume()
        let produced = ring.producedCount
        #expect(last == nil)
        #expect(produced == 10 * capacity)
    }

    @Test func aBulkProduceStopsAtTheFirstOccupiedSlot() throws {
        let memory = try GuestMemory(.init(guestBytes: 16 << 20, swiotlbBytes: 4 << 20, hypercall: .free))
        let ring = _RecycleRing(capacity: 5)
        let pages = (0..<8).map { memory.page(at: $0) }
        let first = pages.withUnsafeBufferPointer { ring.produce(contentsOf: $0) }
        let oldest = ring.consume()
        let second = pages.withUnsafeBufferPointer { ring.produce(contentsOf: UnsafeBufferPointer(rebasing: $0[5..<8])) }
        let (count, produced) = (ring.count, ring.producedCount)
        #expect(first == 5 && oldest == pages[0] && second == 1)
        #expect(count == 5 && produced == 6)
    }

    @Test func theMicrobenchEntryPointReportsEveryKey() throws {
        let results = try PagePoolMicrobench.run(iterations: 2000, batches: 1)
        #expect(Set(results.keys) == ["pool_fast_ns", "pool_ring_ns", "pool_slow_ns", "pool_frag_ns",
                                      "pool_fast_64_ns", "pool_fast_1024_ns", "pool_fast_order3_ns",
                                      "pool_bulk32_ns_per_page", "pool_bulk32_touched_ns_per_page", "pool_ring_remote_ns",
                                      "cache_line_handover_ns",
                                      "pool_slow_test_provider_ns", "pool_slow_swiotlb_ns", "pool_slow_decrypted_ns",
                                      "pool_fast_sync_system_ns", "pool_fast_sync_swiotlb_ns"])
        #expect(results.values.allSatisfy { $0 > 0 })
    }
}

/// The micro-benchmark loops leave their pools whole: every page they held,
/// bulked or handed to another thread comes home.
@Suite struct MicrobenchLoopTests {
    @Test func theHeldBulkAndRemoteLoopsLoseNoPage() throws {
        for make in [{ try PagePoolMicrobench.Fixture(outstanding: 64) }, { try PagePoolMicrobench.Fixture(bulk: 32) },
                     { try PagePoolMicrobench.Fixture(remotePutter: true) }] as [() throws -> PagePoolMicrobench.Fixture] {
            let fixture = try make()
            if fixture.held != nil { try PagePoolMicrobench.fastPath(fixture, operations: 5000) }
            if fixture.bulkPages != nil { try PagePoolMicrobench.bulk(fixture, operations: 5000) }
            if fixture.putter != nil { try PagePoolMicrobench.ringRemote(fixture, operations: 5000) }
            let pool = fixture.pool
            let outside = pool.inflight - pool.cachedPageCount - pool.ringPageCount
            #expect(outside == (fixture.held.map { $0.count - 1 } ?? 0), "pages outside the pool: \(outside)")
        }
    }

    /// `pool_ring_remote_ns` measures the cross-CPU ring: every page the
    /// owner allocates comes back through the ring (none through the cache,
    /// none to the provider), and the owner refills from the ring.
    @Test func theRemoteLoopRecyclesThroughTheRing() throws {
        let fixture = try PagePoolMicrobench.Fixture(remotePutter: true)
        let before = fixture.pool.statistics
        try PagePoolMicrobench.ringRemote(fixture, operations: 5000)
        let after = fixture.pool.statistics
        #expect(after.recycling.ring - before.recycling.ring == 5000)
        #expect(after.recycling.cached == before.recycling.cached)
        #expect(after.recycling.ringFull == 0)
        #expect(after.releaseCount == before.releaseCount)
        #expect(after.allocation.refill > before.allocation.refill)
    }

    @Test func bulkAllocationTakesTheCacheInPopOrder() throws {
        let fixture = try PagePoolMicrobench.Fixture(bulk: 32)
        let pool = fixture.pool
        var singles: [Page] = []
        for _ in 0..<8 { singles.append(try pool.allocatePage()) }
        for page in singles.reversed() { pool.recycleDirect(page) }   // cache top is singles[0]
        let pages = UnsafeMutableBufferPointer<Page>.allocate(capacity: 8)
        defer { pages.deallocate() }
        #expect(try pool.allocatePages(into: pages) == 8)
        #expect(Array(pages).map(\.descriptor) == singles.map(\.descriptor))
        pool.put(contentsOf: UnsafeBufferPointer(pages))
        #expect(pool.inflight - pool.cachedPageCount - pool.ringPageCount == 0)
    }
}
