import Synchronization
import Testing
@testable import DMAPools
import DMAPoolsTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The sequences on which the model once disagreed with the kernel's own
/// `net/core/page_pool.c` and `include/linux/ptr_ring.h` (issue 14), each with
/// the kernel's outcome. Notation in the names: `A` allocate, `M n` allocate n,
/// `R` a put from a thread that does not own the pool, `Z` an owner's put with
/// `allowDirect: false`, `BR n` a bulk put of n from a non-owner, `F n` a
/// fragment of n bytes, `Q` destroy.
@Suite struct PagePoolKernelSequenceTests {
    /// Puts `page` from a thread that does not own the pool.
    func remotePut(_ pool: PagePool, _ page: Page) {
        TestThread.run { pool.put(page) }
    }

    @Test func poolSizeOneHoldsOnePageAndCountsTheNextRingFull() throws {
        // pool_size 1, order 0; A; A; R; R; Q
        let f = try PagePoolFixture(.init(poolSize: 1, flags: .dmaMap))
        let pool = f.pool
        let a = try pool.allocatePage()
        let b = try pool.allocatePage()
        remotePut(pool, a)
        remotePut(pool, b)
        let s = pool.statistics
        #expect(s.recycling.ring == 1 && s.recycling.ringFull == 1)
        #expect(pool.ringPageCount == 1)
        pool.destroy()
        #expect(pool.isShutdownComplete && pool.inflight == 0)
        f.expectEveryPageHome()
    }

    @Test func theConsumerClearsSlotsInBatchesSoTheRingReportsFullEarly() throws {
        // pool_size 64; M 65; R; A; R x64 with a provider of 65 pages: the
        // kernel counts ring_full 1 with 63 pages in the ring.
        let f = try PagePoolFixture(.init(poolSize: 64, flags: .dmaMap), providerPages: 65)
        let pool = f.pool
        #expect(pool.ringBatch == 16)
        var held: [Page] = []
        for _ in 0..<65 { held.append(try pool.allocatePage()) }
        remotePut(pool, held.removeLast())
        held.append(try pool.allocatePage())   // refilled from the ring: one slot consumed, not cleared
        #expect(pool.statistics.allocation.refill == 1)
        let batch = PageBatch(pages: Array(held.prefix(64)))
        held.removeFirst(64)
        TestThread.run { for page in batch.pages { pool.put(page) } }
        let s = pool.statistics
        #expect(s.recycling.ringFull == 1)
        #expect(pool.ringPageCount == 63)
        #expect(pool.ringOccupiedSlotCount == 64, "the consumed slot still looks occupied to the producer")
        for page in held { pool.put(page) }
        pool.destroy()
        #expect(pool.isShutdownComplete)
        f.expectEveryPageHome()
    }

    @Test(arguments: [(1, 1), (2, 1), (31, 1), (32, 16), (33, 16), (1024, 16), (16384, 16)])
    func theRingBatchIsTwoCacheLinesOfPointersUnlessThatIsMoreThanHalf(_ size: Int, _ batch: Int) throws {
        #expect(_RecycleRing.batch(capacity: size, cacheLineBytes: 64) == batch)
        #expect(_RecycleRing.batch(capacity: 64, cacheLineBytes: 128) == 32)
        #expect(_RecycleRing.batch(capacity: 63, cacheLineBytes: 128) == 1)
    }

    @Test func aBulkPutCountsRingFullOncePerBulk() throws {
        // pool_size 16; M 32; BR 16; BR 16: the kernel counts ring_full 1.
        let f = try PagePoolFixture(.init(poolSize: 16, flags: .dmaMap))
        let pool = f.pool
        var pages: [Page] = []
        for _ in 0..<32 { pages.append(try pool.allocatePage()) }
        let first = PageBatch(pages: Array(pages[0..<16]))
        let second = PageBatch(pages: Array(pages[16..<32]))
        TestThread.run { pool.put(contentsOf: first.pages) }
        TestThread.run { pool.put(contentsOf: second.pages) }
        let s = pool.statistics
        #expect(s.recycling.ring == 16)
        #expect(s.recycling.ringFull == 1)
        #expect(s.releaseCount == 16, "the second bulk is released whole")
        pool.destroy()
        f.expectEveryPageHome()
    }

    @Test func aBulkPutLongerThanTheBulkQueueIsPutInRunsOfSixteen() throws {
        let f = try PagePoolFixture(.init(poolSize: 16, flags: .dmaMap))
        let pool = f.pool
        var pages: [Page] = []
        for _ in 0..<64 { pages.append(try pool.allocatePage()) }
        let all = PageBatch(pages: pages)
        TestThread.run { pool.put(contentsOf: all.pages) }
        let s = pool.statistics
        #expect(s.recycling.ring == 16 && s.recycling.ringFull == 3 && s.releaseCount == 48)
        pool.destroy()
        f.expectEveryPageHome()
    }

    @Test func anOwnersPutWithoutDirectIsCachedAsTheKernelWidensIt() throws {
        // A; Z: the kernel counts cached 1 (page_pool_napi_local).
        let f = try PagePoolFixture()
        let pool = f.pool
        let page = try pool.allocatePage()
        pool.put(page, allowDirect: false)
        let s = pool.statistics
        #expect(s.recycling.cached == 1 && s.recycling.ring == 0)
        try pool.tryPut(try pool.allocatePage(), allowDirect: false)
        #expect(pool.statistics.recycling.cached == 2)
        pool.destroy()
        f.expectEveryPageHome()
    }

    @Test func aRemotePutWithoutDirectTakesTheRing() throws {
        let f = try PagePoolFixture()
        let pool = f.pool
        let page = try pool.allocatePage()
        TestThread.run { pool.put(page, allowDirect: false) }
        #expect(pool.statistics.recycling.ring == 1 && pool.statistics.recycling.cached == 0)
        pool.destroy()
        f.expectEveryPageHome()
    }

    @Test func noSyncForTheDeviceAfterDestroy() throws {
        // DMA_SYNC_DEV, max_len 1500; A; Q; R: page_pool_scrub clears dma_sync.
        let f = try PagePoolFixture(.init(flags: [.dmaMap, .dmaSyncForDevice], maxLength: 1500,
                                          releaseRetryInterval: .milliseconds(1)))
        let pool = f.pool
        let page = try pool.allocatePage()
        let syncs = f.provider.syncCount
        pool.destroy()
        remotePut(pool, page)
        #expect(f.provider.syncCount == syncs)
        #expect(pool.waitForShutdown(timeout: .seconds(5)))
        f.expectEveryPageHome()
    }

    @Test func aLivePoolStillSyncsOnRecycle() throws {
        let f = try PagePoolFixture(.init(flags: [.dmaMap, .dmaSyncForDevice], maxLength: 1500))
        let pool = f.pool
        let page = try pool.allocatePage()
        let syncs = f.provider.syncCount
        remotePut(pool, page)
        #expect(f.provider.syncCount == syncs + 1)
        pool.destroy()
        f.expectEveryPageHome()
    }

    @Test(arguments: [(Architecture.x86_64, 130), (Architecture.arm64, 256)])
    func fragmentSizesAreAlignedToTheArchitecturesDMACacheAlignment(_ architecture: Architecture, _ secondOffset: Int) throws {
        // F 130; F 130: second offset 130 on x86-64, 256 on arm64.
        let f = try PagePoolFixture(.init(flags: .dmaMap, architecture: architecture))
        let pool = f.pool
        #expect(pool.fragmentAlignment == architecture.dmaCacheAlignment)
        let first = try pool.allocateFragment(size: 130)
        let second = try pool.allocateFragment(size: 130)
        #expect(first.offset == 0 && second.offset == secondOffset && second.page == first.page)
        pool.put(first)
        pool.put(second)
        pool.destroy()
        f.expectEveryPageHome()
    }

    @Test func aZeroSizeFragmentIsServed() throws {
        let f = try PagePoolFixture()
        let pool = f.pool
        let empty = try pool.allocateFragment(size: 0)
        #expect(empty.offset == 0 && empty.length == 0)
        let next = try pool.allocateFragment(size: 100)
        #expect(next.page == empty.page && next.offset == 0, "a zero-byte fragment reserves nothing")
        let again = try pool.allocateFragment(size: 0)
        #expect(again.page == empty.page && again.offset == 100)
        #expect(throws: PagePoolError.fragmentTooLarge(size: -1, pageBytes: 4096)) { _ = try pool.allocateFragment(size: -1) }
        for fragment in [empty, next, again] { pool.put(fragment) }
        pool.destroy()
        f.expectEveryPageHome()
    }

    @Test func theKernelsParameterRules() throws {
        let device = try DeviceRegistry().add(name: "eth0")
        // Accepted by page_pool_init.
        try PagePoolParameters(order: 10).validate()
        try PagePoolParameters(flags: .systemPool).validate()
        try PagePoolParameters(flags: .allowUnreadableNetmem).validate()
        try PagePoolParameters(flags: [.dmaMap, .systemPool, .allowUnreadableNetmem], device: device).validate()
        // offset + max_len is checked only when the pool syncs.
        try PagePoolParameters(flags: .dmaMap, maxLength: 4096, offset: 256, device: device).validate()
        #expect(throws: PagePoolError.self) {
            try PagePoolParameters(flags: [.dmaMap, .dmaSyncForDevice], maxLength: 4096, offset: 256, device: device).validate()
        }
        // Refused by page_pool_init.
        #expect(throws: PagePoolError.self) { try PagePoolParameters(order: 11).validate() }
        #expect(throws: PagePoolError.self) { try PagePoolParameters(flags: PagePoolFlags(rawValue: 1 << 4)).validate() }
        #expect(throws: PagePoolError.self) { try PagePoolParameters(flags: .dmaSyncForDevice, maxLength: 64).validate() }
        #expect(throws: PagePoolError.self) { try PagePoolParameters(flags: [.dmaMap, .dmaSyncForDevice], device: device).validate() }
        #expect(throws: PagePoolError.self) {
            try PagePoolParameters(flags: .dmaMap, dmaDirection: .toDevice, device: device).validate()
        }
        // Refused on purpose although the kernel accepts it: a mapping pool with no device.
        #expect(throws: PagePoolError.invalidParameter("device", "PP_FLAG_DMA_MAP needs a device to map for")) {
            try PagePoolParameters(flags: .dmaMap).validate()
        }
    }

    @Test func anOrderTenPoolServesFourMiBPages() throws {
        let f = try PagePoolFixture(.init(order: 10, flags: .dmaMap))
        let pool = f.pool
        let page = try pool.allocatePage()
        #expect(page.byteCount == 4 << 20 && f.memory.index(of: page) % 1024 == 0)
        pool.put(page)
        #expect(pool.statistics.allocation.slowHighOrder == 1 && pool.statistics.recycling.cached == 1)
        pool.destroy()
        f.expectEveryPageHome()
    }
}

/// No ring size loses a page while other threads put concurrently.
@Suite struct PagePoolRingSizeProperty {
    /// Every size from 1 to 64, sizes around the batch and cache boundaries,
    /// sizes that are not powers of two, the cap and past it.
    static let sizes = Array(1...64) + [65, 96, 100, 127, 128, 129, 255, 1000, 1023, 1024, 1025, 4097, 16383, 16384, 20000]

    @Test(arguments: sizes)
    func noRingSizeLosesAPageUnderConcurrentRemotePuts(_ poolSize: Int) throws {
        let f = try PagePoolFixture(.init(poolSize: poolSize, flags: .dmaMap), providerPages: 1024)
        let pool = f.pool
        let inboxes = [PageInbox(), PageInbox()]
        let threads = inboxes.map { inbox in
            TestThread {
                while true {
                    if let batch = inbox.pop() {
                        // Singles and bulks, as completions come.
                        if batch.count % 2 == 0 { pool.put(contentsOf: batch) } else { for page in batch { pool.put(page) } }
                    } else if inbox.closed.load(ordering: .acquiring) && inbox.count == 0 {
                        break
                    } else {
                        sched_yield()
                    }
                }
            }
        }
        var allocated = 0
        var round = 0
        while allocated < 6000 {
            var batch: [Page] = []
            for _ in 0..<(round % 37 + 1) {
                batch.append(try pool.allocatePage())
            }
            allocated += batch.count
            inboxes[round % 2].push(batch)
            round += 1
            while inboxes[round % 2].count > 4 { sched_yield() }
        }
        for inbox in inboxes { inbox.closed.store(true, ordering: .releasing) }
        for thread in threads { thread.join() }
        let s = pool.statistics
        #expect(s.pagesAllocated == allocated)
        #expect(s.holdCount - s.releaseCount == s.inflight)
        #expect(s.inflight == pool.cachedPageCount + pool.ringPageCount, "every page the pool holds is idle in its cache or ring: \(s)")
        #expect(pool.ringPageCount <= pool.ringCapacity)
        pool.destroy()
        #expect(pool.isShutdownComplete && pool.inflight == 0)
        #expect(f.provider.outstandingPages == 0)
        f.expectEveryPageHome()
    }
}

/// The fuzzer tells each old behaviour from the kernel's.
@Suite struct PagePoolFuzzerCatchesOldBehaviour {
    @Test(arguments: [
        (PagePoolFuzzer.ModelFault.ringOfOneOverwrites, 1),
        (.consumerClearsAtOnce, 64),
        (.ringFullPerBulkPage, 16),
        (.ownerPutSkipsTheCache, 0),
        (.cacheHoldsOneLess, 0),
    ])
    func aModelWithTheOldBehaviourDisagrees(_ fault: PagePoolFuzzer.ModelFault, _ poolSize: Int) throws {
        var caught = 0
        for seed in UInt64(1)...8 {
            var source = FuzzSource(seed: seed)
            let report = try PagePoolFuzzer.run(&source, steps: 4000, modelFault: fault, poolSize: poolSize)
            if report.problem != nil { caught += 1 }
            #expect(report.lostPages == 0, "teardown still brings every page home: \(report)")
        }
        #expect(caught > 0, "\(fault) went unnoticed in 8 seeded runs")
    }

    @Test(arguments: [1, 2, 3, 5, 17, 32, 33, 64])
    func theKernelModelAgreesAtEveryRingSize(_ poolSize: Int) throws {
        for seed in UInt64(1)...3 {
            var source = FuzzSource(seed: seed &* 7919 &+ UInt64(poolSize))
            let report = try PagePoolFuzzer.run(&source, steps: 3000, poolSize: poolSize)
            #expect(report.passed, "\(report)")
        }
    }
}

/// Kernel behaviour beyond the sequences: pfmemalloc pages and DMA-map failures.
@Suite struct PagePoolKernelBehaviourTests {
    @Test func aPFMemallocPageIsNeverRecycled() throws {
        let f = try PagePoolFixture()
        let pool = f.pool
        f.provider.handOutPFMemalloc(1)
        let page = try pool.allocatePage()   // the last of the bulk: not the pfmemalloc one
        let reserve = Page(descriptor: f.memory.descriptors + f.provider.pages.lowerBound)
        #expect(reserve.isPFMemalloc && !page.isPFMemalloc)
        pool.put(page)
        var held: [Page] = []
        for _ in 0..<64 { held.append(try pool.allocatePage()) }
        #expect(held.contains(reserve))
        for page in held { pool.put(page) }
        let s = pool.statistics
        #expect(s.recycling.releasedRefcount == 1, "released_refcnt counts the pfmemalloc page: \(s)")
        #expect(s.recycling.cached == 64 && s.releaseCount == 1)
        #expect(!reserve.isPFMemalloc, "the flag goes with the page")
        pool.destroy()
        f.expectEveryPageHome()
    }

    @Test func aDMAMapFailureDropsThatPageAndTheBulkCarriesOn() throws {
        let f = try PagePoolFixture()
        let pool = f.pool
        f.provider.failNextMappings(3)
        let page = try pool.allocatePage()
        let s = pool.statistics
        #expect(s.holdCount == 61 && s.allocation.slow == 1 && pool.cachedPageCount == 60)
        #expect(f.provider.outstandingPages == 61)
        pool.put(page)
        pool.destroy()
        f.expectEveryPageHome()
    }

    @Test func aBulkWhoseEveryMappingFailsFailsTheAllocation() throws {
        let f = try PagePoolFixture(providerPages: 64)
        let pool = f.pool
        f.provider.failNextMappings(64)
        #expect(throws: PagePoolError.providerFailed(provider: "test-pages", reason: "DMA mapping failed for all 64 pages")) {
            _ = try pool.allocatePage()
        }
        let s = pool.statistics
        #expect(s.allocation.slow == 0 && s.allocation.empty == 1 && s.holdCount == 0)
        let page = try pool.allocatePage()   // the pages went back: they map now
        pool.put(page)
        pool.destroy()
        f.expectEveryPageHome()
    }
}

/// NUMA: a refill keeps only pages of the node the pool prefers.
@Suite struct PagePoolNUMATests {
    /// A two-node guest (64 MiB: pages 0..<8192 on node 0, 8192..<16384 on
    /// node 1) and a provider over 64 pages each side of the boundary.
    func fixture(node: Int) throws -> (GuestMemory, PagePoolTestProvider, PagePool) {
        var configuration = GuestMemoryConfiguration(guestBytes: 64 << 20, swiotlbBytes: 4 << 20, hypercall: .free)
        configuration.numaNodes = 2
        let memory = try GuestMemory(configuration)
        let provider = PagePoolTestProvider(memory: memory, pages: 8128..<8256)
        let device = try DeviceRegistry().add(name: "eth0")
        let pool = try PagePool(.init(poolSize: 256, flags: .dmaMap, device: device, node: node), provider: provider)
        return (memory, provider, pool)
    }

    @Test func pagesKnowTheirNode() throws {
        let (memory, _, pool) = try fixture(node: 0)
        #expect(memory.page(at: 8191).node == 0 && memory.page(at: 8192).node == 1)
        #expect(pool.preferredNode == 0)
        pool.destroy()
    }

    @Test func aRefillReleasesAPageOfAnotherNodeAndTakesTheSlowPath() throws {
        let (_, provider, pool) = try fixture(node: 0)
        var held: [Page] = []
        for _ in 0..<128 { held.append(try pool.allocatePage()) }   // two bulks: node 0, then node 1
        #expect(held.filter { $0.node == 1 }.count == 64)
        let batch = PageBatch(pages: held)
        TestThread.run { for page in batch.pages { pool.put(page) } }   // the ring: node 0 first
        held = []
        for _ in 0..<64 { held.append(try pool.allocatePage()) }    // one refill of 64 node-0 pages
        #expect(pool.statistics.allocation.refill == 1 && pool.statistics.allocation.waive == 0)
        #expect(held.allSatisfy { $0.node == 0 })
        let next = try pool.allocatePage()   // the ring's next page is on node 1: waived
        held.append(next)
        let s = pool.statistics
        #expect(s.allocation.waive == 1)
        #expect(s.allocation.slow == 3 && s.allocation.refill == 1, "nothing came before the mismatch: the slow path ran: \(s)")
        #expect(s.releaseCount == 1)
        for page in held { pool.put(page) }
        pool.destroy()
        #expect(pool.isShutdownComplete && provider.outstandingPages == 0)
    }

    @Test func updateNodeFlushesTheCacheAndLaterRefillsWaive() throws {
        let (_, provider, pool) = try fixture(node: PagePoolParameters.noNode)
        #expect(pool.preferredNode == 0)
        let page = try pool.allocatePage()   // a bulk of 64 node-0 pages: 63 cached
        #expect(pool.cachedPageCount == 63)
        pool.updateNode(1)
        #expect(pool.preferredNode == 1 && pool.cachedPageCount == 0 && pool.statistics.releaseCount == 63)
        TestThread.run { pool.put(page) }   // a node-0 page in the ring
        let fresh = try pool.allocatePage()
        #expect(pool.statistics.allocation.waive == 1)
        pool.put(fresh)
        pool.destroy()
        #expect(pool.isShutdownComplete && provider.outstandingPages == 0)
    }

    @Test func aNegativeNodeOtherThanNoNodeIsRefused() {
        #expect(throws: PagePoolError.invalidParameter("node", "-2 must be -1 (NUMA_NO_NODE) or a node number")) {
            try PagePoolParameters(node: -2).validate()
        }
        var configuration = GuestMemoryConfiguration(guestBytes: 64 << 20, swiotlbBytes: 4 << 20, hypercall: .free)
        configuration.numaNodes = 0
        #expect(throws: MemoryError.self) { _ = try GuestMemory(configuration) }
    }
}

/// `CONFIG_PREEMPT_RT`: `page_pool_napi_local` is false, so the owner's plain
/// puts are not widened to direct recycling; an explicit direct recycle still is.
@Suite struct PagePoolPreemptRTTests {
    func pool(preemptRT: Bool) throws -> (PagePool, PagePoolTestProvider) {
        let memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free))
        let provider = PagePoolTestProvider(memory: memory)
        var parameters = PagePoolParameters()
        parameters.preemptRT = preemptRT
        return (try PagePool(parameters, provider: provider), provider)
    }

    @Test func anOwnersPutTakesTheRingUnderPreemptRT() throws {
        let (rt, _) = try pool(preemptRT: true)
        defer { rt.destroy() }
        #expect(!rt.isNAPILocal && rt.isOwnedByCurrentThread)
        rt.put(try rt.allocatePage())
        rt.put(contentsOf: [try rt.allocatePage()])
        rt.put(try rt.allocatePage(), allowDirect: false)
        #expect(rt.statistics.recycling.ring == 3)
        #expect(rt.statistics.recycling.cached == 0)
        rt.recycleDirect(try rt.allocatePage())
        #expect(rt.statistics.recycling.cached == 1, "an explicit allow_direct still recycles into the cache")
    }

    @Test func withoutPreemptRTTheSamePutsAreDirect() throws {
        let (plain, _) = try pool(preemptRT: false)
        defer { plain.destroy() }
        #expect(plain.isNAPILocal)
        plain.put(try plain.allocatePage())
        plain.put(contentsOf: [try plain.allocatePage()])
        plain.put(try plain.allocatePage(), allowDirect: false)
        #expect(plain.statistics.recycling.ring == 0)
        #expect(plain.statistics.recycling.cached == 3)
    }
}
