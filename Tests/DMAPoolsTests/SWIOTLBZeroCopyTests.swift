import Testing
@_spi(PagePoolProvider) @testable import DMAPools

@Suite struct SWIOTLBZeroCopyTests {
    @Test func percentIsValidatedAndZeroDisables() throws {
        let f = try SWIOTLBFixture()
        #expect(f.swiotlb.zeroCopyPercent == 0)
        #expect(throws: DMAError.zeroCopyCapReached(percent: 0, usedSlots: 0, totalSlots: 2048)) {
            _ = try f.swiotlb.allocateZeroCopyPages(order: 0, device: f.device)
        }
        #expect(throws: DMAError.invalidArgument("zerocopy_tx_percent 91 must be in 0...90")) {
            try f.swiotlb.setZeroCopyPercent(91)
        }
        #expect(throws: DMAError.self) { try f.swiotlb.setZeroCopyPercent(-1) }
        try f.swiotlb.setZeroCopyPercent(90)
        #expect(f.swiotlb.zeroCopyPercent == 90)
        #expect(throws: DMAError.self) { _ = try f.swiotlb.allocateZeroCopyPages(order: 7, device: f.device) }
    }

    @Test func capStopsAllocationsOncePercentOfSlotsAreUsed() throws {
        let f = try SWIOTLBFixture()
        try f.swiotlb.setZeroCopyPercent(10)
        // Allowed while 10 * 2048 > used * 100, i.e. used < 204.8: order-3 runs
        // take 16 slots, so 13 runs fit (208 slots) and the 14th is refused.
        var runs: [Page] = []
        for _ in 0..<13 { runs.append(try f.swiotlb.allocateZeroCopyPages(order: 3, device: f.device)) }
        #expect(f.swiotlb.usedSlots == 208)
        #expect(throws: DMAError.zeroCopyCapReached(percent: 10, usedSlots: 208, totalSlots: 2048)) {
            _ = try f.swiotlb.allocateZeroCopyPages(order: 3, device: f.device)
        }
        // Ordinary bounce mappings count against the cap too.
        for run in runs.suffix(2) { run.setReferenceCount(0); f.swiotlb.freeZeroCopyPages(run) }
        runs.removeLast(2)
        let tlb = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 1), mappingSize: 64 << 10, direction: .toDevice)
        #expect(f.swiotlb.usedSlots == 176 + 32)
        #expect(throws: DMAError.self) { _ = try f.swiotlb.allocateZeroCopyPages(order: 0, device: f.device) }
        try f.swiotlb.unmapSingle(device: f.device, tlbAddress: tlb, mappingSize: 64 << 10, direction: .toDevice)
        for run in runs { run.setReferenceCount(0); f.swiotlb.freeZeroCopyPages(run) }
        #expect(f.swiotlb.usedSlots == 0)
        f.expectConsistent()
    }

    @Test(arguments: [0, 1, 3, 6])
    func runsAreNaturallyAlignedCompoundPagesWithTheirOwnDMAAddress(_ order: Int) throws {
        let f = try SWIOTLBFixture(areaCount: 1)
        try f.swiotlb.setZeroCopyPercent(90)
        // Misalign the area index first.
        let small = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 1), mappingSize: 100,
                                            direction: .toDevice, startArea: 0)
        let head = try f.swiotlb.allocateZeroCopyPages(order: order, device: f.device, startArea: 0)
        let bytes = PageGeometry.bytes(order: order)
        #expect(head.physicalAddress.rawValue % UInt64(bytes) == 0)
        #expect(f.swiotlb.contains(head.physicalAddress))
        #expect(head.owner == .swiotlbZeroCopy)
        #expect(head.order == order)
        #expect(head.referenceCount == 1)
        #expect(head.dmaAddress == f.memory.unencryptedDMAAddress(of: head.physicalAddress))
        #expect(f.swiotlb.isZeroCopy(head))
        #expect(f.swiotlb.zeroCopyDevice(of: head) === f.device)
        let lastTail = Page(descriptor: head.descriptor + (1 << order) - 1)
        #expect(lastTail.head == head)
        #expect(lastTail.owner == .swiotlbZeroCopy)
        #expect(f.swiotlb.isZeroCopy(lastTail))
        let stats = f.swiotlb.statistics
        #expect(stats.zeroCopyRuns == 1)
        #expect(stats.zeroCopyPages == 1 << order)
        #expect(stats.zeroCopySlots == 2 << order)
        #expect(stats.used == 1 + (2 << order))
        f.expectConsistent()

        head.setReferenceCount(0)
        f.swiotlb.freeZeroCopyPages(lastTail)    // any page of the run frees it
        #expect(head.owner == .swiotlbSlots)
        #expect(lastTail.owner == .swiotlbSlots)
        #expect(head.dmaAddress == .mappingError)
        #expect(!f.swiotlb.isZeroCopy(head))
        try f.swiotlb.unmapSingle(device: f.device, tlbAddress: small, mappingSize: 100, direction: .toDevice)
        let after = f.swiotlb.statistics
        #expect(after.used == 0)
        #expect(after.zeroCopyRuns == 0)
        #expect(after.zeroCopyPages == 0)
        #expect(after.zeroCopySlots == 0)
        #expect(f.swiotlb.slots[0].list == 128, "the run's slots merged back into a whole segment")
        f.expectConsistent()
    }

    @Test func theRunHoldsItsDeviceUntilFreed() throws {
        let f = try SWIOTLBFixture()
        try f.swiotlb.setZeroCopyPercent(50)
        weak var weakDevice: Device?
        var page: Page?
        do {
            // A registry of its own, dropped at the end of this scope: afterwards
            // only the zero-copy run can keep the device alive.
            let registry = DeviceRegistry()
            let device = try registry.add(name: "eth1")
            weakDevice = device
            page = try f.swiotlb.allocateZeroCopyPages(order: 2, device: device)
        }
        #expect(weakDevice != nil, "the run holds a reference to its device (get_device)")
        let run = try #require(page)
        #expect(f.swiotlb.zeroCopyDevice(of: run) === weakDevice)
        run.setReferenceCount(0)
        f.swiotlb.freeZeroCopyPages(run)
        #expect(f.swiotlb.zeroCopyDevice(of: run) == nil)
        #expect(weakDevice == nil, "freeing the run drops its device reference")
    }

    @Test func noFreeAlignedRunFailsZeroCopyAndCountsIt() throws {
        // Four areas of one segment each; one small mapping in every area leaves
        // the cap far away but no free 256 KiB run anywhere.
        let f = try SWIOTLBFixture(swiotlbBytes: 1 << 20, areaCount: 4)
        try f.swiotlb.setZeroCopyPercent(90)
        let pinned = try (0..<4).map { area in
            try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 1 + area), mappingSize: 100,
                                    direction: .toDevice, startArea: area)
        }
        #expect(pinned.map(f.slot(of:)) == [0, 128, 256, 384])
        #expect(throws: DMAError.swiotlbExhausted(size: 256 << 10, usedSlots: 4, totalSlots: 512)) {
            _ = try f.swiotlb.allocateZeroCopyPages(order: 6, device: f.device)
        }
        #expect(f.swiotlb.statistics.zeroCopyAllocationFailures == 1)
        #expect(f.swiotlb.statistics.exhaustionFailures == 0)
        // Half a segment is still free in each area.
        let half = try f.swiotlb.allocateZeroCopyPages(order: 5, device: f.device, startArea: 2)
        #expect(f.slot(of: half.physicalAddress) == 256 + 64)
        half.setReferenceCount(0)
        f.swiotlb.freeZeroCopyPages(half)
        f.expectConsistent()
    }
}
