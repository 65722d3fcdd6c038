import Testing
@_spi(PagePoolProvider) @testable import DMAPools

/// A guest without encryption whose devices sit behind an IOMMU.
struct IOMMUGuest {
    let guest: Guest
    let device: Device
    var iommu: IOMMU { guest.iommu! }

    init(mode: IOMMUMode = .strict, flushQueue: Int = 256) throws {
        guest = try Guest(.init(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free),
                          platform: .iommu(IOMMUConfiguration(mode: mode, costs: .free, flushQueueSize: flushQueue)))
        device = try guest.devices.add(name: "eth0")
    }

    /// What the device reads at `address`, or the fault.
    func read(_ address: DMAAddress, _ length: Int) -> UnsafeMutableRawPointer? {
        try? iommu.translate(address, length: length, device: device).get()
    }
}

@Suite struct IOMMUTests {
    @Test(arguments: IOMMUMode.allCases)
    func entriesArePresentExactlyBetweenMapAndUnmap(_ mode: IOMMUMode) throws {
        let g = try IOMMUGuest(mode: mode)
        let page = try g.guest.allocator.allocatePages(order: 3)
        #expect(g.iommu.statistics.presentEntries == 0)
        // 20000 bytes at offset 3000 of an order-3 run touch 6 pages.
        let address = try g.guest.dma.mapPage(page, offset: 3000, size: 20000, direction: .toDevice, device: g.device)
        #expect(address.rawValue >= IOMMU.iovaBase, "the device is given an IOVA, not a physical address")
        #expect(g.iommu.statistics.presentEntries == 6 && g.iommu.statistics.pteWrites == 6 && g.iommu.statistics.maps == 1)
        #expect(g.iommu.isMapped(address, length: 20000, device: g.device))
        let bytes = try #require(g.read(address, 20000))
        #expect(bytes == page.bytes + 3000, "the entries translate to the mapped guest page")
        try g.guest.dma.unmapPage(address, size: 20000, direction: .toDevice, device: g.device)
        let s = g.iommu.statistics
        #expect(s.presentEntries == 0 && s.pteClears == 6 && s.unmaps == 1)
        #expect(!g.iommu.isMapped(address, length: 1, device: g.device))
        #expect(g.read(address, 1) == nil, "a read after the unmap faults, in \(mode) mode too")
        #expect(s.invalidations == (mode == .strict ? 1 : 0) && s.iovasQueued == (mode == .lazy ? 1 : 0))
        g.guest.allocator.freePages(page)
        #expect(g.guest.lostPages() == 0)
    }

    @Test func aStrictUnmapFreesTheIOVAAtOnce() throws {
        let g = try IOMMUGuest(mode: .strict)
        let page = try g.guest.allocator.allocatePages(order: 0)
        let first = try g.guest.dma.mapPage(page, offset: 0, size: 4096, direction: .toDevice, device: g.device)
        try g.guest.dma.unmapPage(first, size: 4096, direction: .toDevice, device: g.device)
        let second = try g.guest.dma.mapPage(page, offset: 0, size: 4096, direction: .toDevice, device: g.device)
        #expect(second == first, "invalidated at unmap: the IOVA is the next one of its size handed out")
        try g.guest.dma.unmapPage(second, size: 4096, direction: .toDevice, device: g.device)
        g.guest.allocator.freePages(page)
    }

    @Test func aLazyIOVAIsNotReusedBeforeTheFlush() throws {
        let queue = 8
        let g = try IOMMUGuest(mode: .lazy, flushQueue: queue)
        let page = try g.guest.allocator.allocatePages(order: 0)
        var queued: Set<DMAAddress> = []
        for _ in 0..<(queue - 1) {
            let a = try g.guest.dma.mapPage(page, offset: 0, size: 4096, direction: .toDevice, device: g.device)
            #expect(!queued.contains(a), "an IOVA waiting on the flush queue was handed out again")
            try g.guest.dma.unmapPage(a, size: 4096, direction: .toDevice, device: g.device)
            queued.insert(a)
        }
        #expect(g.iommu.queuedIOVAs == queue - 1 && g.iommu.statistics.flushes == 0)
        #expect(g.iommu.allocatedIOVAPages == queue - 1, "queued IOVAs stay allocated")
        // The queue's last slot fills it: one flush frees them all.
        let last = try g.guest.dma.mapPage(page, offset: 0, size: 4096, direction: .toDevice, device: g.device)
        #expect(!queued.contains(last))
        try g.guest.dma.unmapPage(last, size: 4096, direction: .toDevice, device: g.device)
        queued.insert(last)
        #expect(g.iommu.statistics.flushes == 1 && g.iommu.queuedIOVAs == 0 && g.iommu.allocatedIOVAPages == 0)
        let reused = try g.guest.dma.mapPage(page, offset: 0, size: 4096, direction: .toDevice, device: g.device)
        #expect(queued.contains(reused), "after the flush the freed IOVAs are reusable")
        try g.guest.dma.unmapPage(reused, size: 4096, direction: .toDevice, device: g.device)
        g.guest.allocator.freePages(page)
        #expect(g.guest.lostPages() == 0)
    }

    @Test func aDoubleUnmapIsRefusedAndCounted() throws {
        let g = try IOMMUGuest()
        let page = try g.guest.allocator.allocatePages(order: 0)
        let a = try g.guest.dma.mapPage(page, offset: 0, size: 100, direction: .toDevice, device: g.device)
        try g.guest.dma.unmapPage(a, size: 100, direction: .toDevice, device: g.device)
        #expect(throws: DMAError.notMapped(a)) { try g.guest.dma.unmapPage(a, size: 100, direction: .toDevice, device: g.device) }
        #expect(throws: DMAError.notMapped(DMAAddress(12345))) {
            try g.guest.dma.unmapPage(DMAAddress(12345), size: 100, direction: .toDevice, device: g.device)
        }
        #expect(g.iommu.statistics.badUnmaps == 2 && g.iommu.statistics.unmaps == 1)
        g.guest.allocator.freePages(page)
    }

    @Test func aDeviceCannotReadAnotherDevicesMappingOrAnUnmappedIOVA() throws {
        let g = try IOMMUGuest()
        let other = try g.guest.devices.add(name: "blk0")
        let page = try g.guest.allocator.allocatePages(order: 0)
        let a = try g.guest.dma.mapPage(page, offset: 0, size: 4096, direction: .toDevice, device: other)
        #expect(g.read(a, 64) == nil, "eth0 reads into blk0's domain")
        #expect(g.read(a + 8192, 64) == nil, "an IOVA never mapped")
        #expect(g.read(DMAAddress(page.physicalAddress.rawValue), 64) == nil, "a physical address is no IOVA")
        #expect(g.iommu.statistics.translationFaults == 3)
        try g.guest.dma.unmapPage(a, size: 4096, direction: .toDevice, device: other)
        g.guest.allocator.freePages(page)
    }

    @Test func removingADeviceTearsDownItsMappings() throws {
        let g = try IOMMUGuest(mode: .lazy)
        let page = try g.guest.allocator.allocatePages(order: 2)
        let kept = try g.guest.devices.add(name: "blk0")
        let a = try g.guest.dma.mapPage(page, offset: 0, size: 16384, direction: .toDevice, device: g.device)
        let b = try g.guest.dma.mapPage(page, offset: 0, size: 4096, direction: .toDevice, device: kept)
        g.device.remove()
        #expect(g.read(a, 64) == nil)
        #expect(g.iommu.statistics.mappingsTornDown == 1 && g.iommu.statistics.presentEntries == 1)
        #expect(g.iommu.isMapped(b, length: 4096, device: kept), "another device's domain is untouched")
        try g.guest.dma.unmapPage(b, size: 4096, direction: .toDevice, device: kept)
        g.guest.allocator.freePages(page)
        #expect(g.guest.lostPages() == 0)
    }

    @Test func aNeverUnmappedEntryCountsAsLost() throws {
        let g = try IOMMUGuest()
        let page = try g.guest.allocator.allocatePages(order: 0)
        _ = try g.guest.dma.mapPage(page, offset: 0, size: 4096, direction: .toDevice, device: g.device)
        g.guest.allocator.freePages(page)
        #expect(g.guest.lostPages() == 1, "a mapping that outlives its user pins the page")
    }

    @Test func modelledCostsAreCountedPerOperation() throws {
        let costs = IOMMUCostModel(mapNanoseconds: 100, pteNanoseconds: 10, invalidateNanoseconds: 1000,
                                   flushNanoseconds: 5000, charge: .accountOnly)
        for mode in IOMMUMode.allCases {
            let guest = try Guest(.init(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free),
                                  platform: .iommu(IOMMUConfiguration(mode: mode, costs: costs, flushQueueSize: 2)))
            let device = try guest.devices.add(name: "eth0")
            let page = try guest.allocator.allocatePages(order: 1)
            for _ in 0..<2 {
                let a = try guest.dma.mapPage(page, offset: 0, size: 8192, direction: .toDevice, device: device)
                try guest.dma.unmapPage(a, size: 8192, direction: .toDevice, device: device)
            }
            let s = guest.iommu!.statistics
            // Two maps of 2 entries, two unmaps clearing 2; strict: 2 invalidations, lazy: 1 flush of 2.
            let expected = 2 * (100 + 2 * 10) + 2 * (2 * 10) + (mode == .strict ? 2 * 1000 : 5000)
            #expect(s.modelledNanoseconds == expected, "\(mode)")
            #expect(s.pteWrites == 4 && s.pteClears == 4)
            #expect(mode == .strict ? s.invalidations == 2 && s.flushes == 0 : s.invalidations == 0 && s.flushes == 1)
            guest.allocator.freePages(page)
        }
    }

    @Test func thePagePoolMapsEachPageOnceWhenItEntersThePool() throws {
        let g = try IOMMUGuest()
        let provider = SystemPageProvider(general: g.guest.allocator, dma: g.guest.dma, device: g.device)
        let parameters = PagePoolParameters(order: 3, flags: [.dmaMap, .transmit], dmaDirection: .toDevice,
                                            device: g.device, name: "tx", logger: quietLogger)
        let pool = try PagePool(parameters, provider: provider)
        var seen: Set<Page> = []
        for _ in 0..<1000 {
            let page = try pool.allocatePage()
            seen.insert(page)
            let address = pool.dmaAddress(of: page)
            #expect(g.iommu.isMapped(address, length: 32768, device: g.device), "a pooled page keeps its IOVA")
            pool.recycleDirect(page)
        }
        var s = g.iommu.statistics
        #expect(s.maps == provider.statistics.pagesAllocated, "one map per page that entered the pool")
        #expect(s.pteWrites == 8 * s.maps && s.unmaps == 0, "recycling maps and unmaps nothing")
        #expect(s.maps < 1000 && seen.count <= s.maps)
        #expect(provider.statistics.bytesCopiedAtMap == 0 && provider.statistics.bytesCopiedAtSync == 0, "nothing bounces")
        pool.destroy()
        #expect(pool.isShutdownComplete)
        s = g.iommu.statistics
        #expect(s.unmaps == s.maps && s.presentEntries == 0, "every page unmapped when it left the pool")
        #expect(g.guest.lostPages() == 0)
    }

    @Test func theBuddyAllocatorSplitsCoalescesAndRunsOut() {
        var a = IOVAAllocator(pages: 1 << IOVAAllocator.maxOrder)
        let small = a.allocate(order: 0)
        #expect(small == 0)
        let big = a.allocate(order: IOVAAllocator.maxOrder)
        #expect(big == nil, "a split block cannot give the whole space")
        var ranges: [Int] = []
        while let r = a.allocate(order: 4) { ranges.append(r) }
        #expect(ranges.allSatisfy { $0 % 16 == 0 }, "ranges are size-aligned")
        #expect(a.allocatedPages == 1 + 16 * ranges.count)
        for r in ranges { a.free(r) }
        a.free(small!)
        #expect(a.allocatedPages == 0)
        #expect(a.allocate(order: IOVAAllocator.maxOrder) == 0, "freed buddies coalesce back into the whole space")
    }
}
