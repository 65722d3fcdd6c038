import Testing
@_spi(PagePoolProvider) @testable import DMAPools

@Suite struct DMAAPITests {
    struct Fixture {
        let base: SWIOTLBFixture
        let dma: DMAAPI
        var memory: GuestMemory { base.memory }
        var swiotlb: SWIOTLB { base.swiotlb }
        var device: Device { base.device }

        init(forceBounce: Bool = true) throws {
            base = try SWIOTLBFixture(forceBounce: forceBounce)
            dma = DMAAPI(memory: base.memory, swiotlb: base.swiotlb)
        }

        func physical(_ address: DMAAddress) throws -> PhysicalAddress {
            try #require(memory.physicalAddress(ofShared: address))
        }
    }

    @Test(arguments: DMADirection.allCases)
    func bouncedMappingCopiesByDirection(_ direction: DMADirection) throws {
        let f = try Fixture()
        let page = f.memory.page(at: 500)
        let size = 1500, offset = 64
        try f.base.fill(page.physicalAddress + offset, count: size, seed: 4)
        let before = try f.base.bytes(at: page.physicalAddress + offset, count: size)

        let address = try f.dma.mapPage(page, offset: offset, size: size, direction: direction, device: f.device)
        let bounce = try f.physical(address)
        #expect(address.rawValue & f.memory.sharedMask != 0)
        #expect(f.swiotlb.contains(bounce))
        #expect(try f.base.bytes(at: bounce, count: size) == before, "map bounces the data for \(direction)")

        try f.base.fill(bounce, count: size, seed: 222)         // the device writes
        let written = try f.base.bytes(at: bounce, count: size)
        try f.dma.syncSingleForCPU(address + 100, size: 200, direction: direction, device: f.device)
        let synced = try f.base.bytes(at: page.physicalAddress + offset, count: size)
        if direction.copiesFromDevice {
            #expect(Array(synced[100..<300]) == Array(written[100..<300]))
            #expect(Array(synced[300...]) == Array(before[300...]))
        } else {
            #expect(synced == before)
        }
        try f.dma.unmapPage(address, size: size, direction: direction, device: f.device)
        #expect(try f.base.bytes(at: page.physicalAddress + offset, count: size) == (direction == .toDevice ? before : written))

        let stats = f.dma.statistics
        #expect(stats.maps == 1 && stats.bouncedMaps == 1 && stats.unmaps == 1)
        #expect(stats.syncs == 1)
        #expect(stats.bytesCopied == size + (direction.copiesFromDevice ? 200 + size : 0))
        #expect(f.swiotlb.usedSlots == 0)
        f.base.expectConsistent()
    }

    @Test func syncForDeviceRefreshesTheBounceBuffer() throws {
        let f = try Fixture()
        let page = f.memory.page(at: 501)
        let address = try f.dma.mapPage(page, offset: 0, size: 4096, direction: .toDevice, device: f.device)
        try f.base.fill(page.physicalAddress + 1000, count: 500, seed: 9)
        try f.dma.syncSingleForDevice(address + 1000, size: 500, direction: .toDevice, device: f.device)
        #expect(try f.base.bytes(at: f.physical(address) + 1000, count: 500)
                == (try f.base.bytes(at: page.physicalAddress + 1000, count: 500)))
        try f.dma.unmapPage(address, size: 4096, direction: .toDevice, device: f.device)
    }

    @Test func zeroCopyPagesMapToThemselvesWithoutACopy() throws {
        let f = try Fixture()
        try f.swiotlb.setZeroCopyPercent(50)
        let run = try f.swiotlb.allocateZeroCopyPages(order: 3, device: f.device)
        let tail = Page(descriptor: run.descriptor + 2)
        try f.base.fill(tail.physicalAddress + 10, count: 3000, seed: 5)
        let used = f.swiotlb.usedSlots
        let bounced = f.swiotlb.statistics.bytesBouncedToDevice

        let address = try f.dma.mapPage(tail, offset: 10, size: 3000, direction: .toDevice, device: f.device)
        #expect(address == run.dmaAddress + (2 * 4096 + 10), "its own unencrypted address")
        #expect(f.swiotlb.usedSlots == used, "no bounce slot taken")
        #expect(f.swiotlb.statistics.bytesBouncedToDevice == bounced)
        try f.dma.syncSingleForDevice(address, size: 3000, direction: .toDevice, device: f.device)
        try f.dma.unmapPage(address, size: 3000, direction: .toDevice, device: f.device)
        #expect(f.swiotlb.isZeroCopy(run), "unmap leaves the run allocated")
        #expect(f.swiotlb.usedSlots == used)
        // A second map of the same run works again: the mapping is the page's own.
        #expect(try f.dma.mapPage(run, offset: 0, size: 32 << 10, direction: .fromDevice, device: f.device) == run.dmaAddress)
        let stats = f.dma.statistics
        #expect(stats.zeroCopyMaps == 2 && stats.zeroCopyUnmaps == 1 && stats.bouncedMaps == 0)
        #expect(stats.bytesCopied == 0)

        run.setReferenceCount(0)
        f.swiotlb.freeZeroCopyPages(run)
        #expect(f.swiotlb.usedSlots == 0)
        f.base.expectConsistent()
    }

    @Test func devicesThatDoNotBounceMapSharedMemoryOnly() throws {
        let f = try Fixture(forceBounce: false)
        let privatePage = f.memory.page(at: 600)
        #expect(throws: DMAError.privateMemory(privatePage.physicalAddress)) {
            _ = try f.dma.mapPage(privatePage, offset: 0, size: 100, direction: .toDevice, device: f.device)
        }
        let shared = f.memory.page(at: 602)
        try f.memory.convert(shared, count: 1, to: .shared)
        let address = try f.dma.mapPage(shared, offset: 8, size: 100, direction: .toDevice, device: f.device)
        #expect(address == f.memory.unencryptedDMAAddress(of: shared.physicalAddress + 8))
        try f.dma.unmapPage(address, size: 100, direction: .toDevice, device: f.device)
        // A range that runs into a private page is refused.
        f.memory.prepareCompound(f.memory.page(at: 600), order: 2, owner: .generalAllocator)
        #expect(throws: DMAError.privateMemory(f.memory.page(at: 603).physicalAddress)) {
            _ = try f.dma.mapPage(shared, offset: 4000, size: 200, direction: .toDevice, device: f.device)
        }
        #expect(throws: DMAError.notMapped(f.memory.unencryptedDMAAddress(of: privatePage.physicalAddress))) {
            try f.dma.unmapPage(f.memory.unencryptedDMAAddress(of: privatePage.physicalAddress), size: 1,
                                direction: .toDevice, device: f.device)
        }
        #expect(f.dma.statistics.directMaps == 1)
        #expect(f.swiotlb.usedSlots == 0)
    }

    @Test func offsetAndSizeMustStayInsideThePagesRun() throws {
        let f = try Fixture()
        let head = f.memory.page(at: 704)
        f.memory.prepareCompound(head, order: 2, owner: .generalAllocator)
        let second = Page(descriptor: head.descriptor + 1)
        // 3 pages remain from the second page of an order-2 run.
        let address = try f.dma.mapPage(second, offset: 100, size: 3 * 4096 - 100, direction: .toDevice, device: f.device)
        try f.dma.unmapPage(address, size: 3 * 4096 - 100, direction: .toDevice, device: f.device)
        for (offset, size) in [(-1, 10), (0, 0), (0, 3 * 4096 + 1), (3 * 4096, 1), (Int.max, 1), (1, Int.max)] {
            #expect(throws: DMAError.self, "offset \(offset) size \(size)") {
                _ = try f.dma.mapPage(second, offset: offset, size: size, direction: .toDevice, device: f.device)
            }
        }
        #expect(f.dma.statistics.maps == 1)
    }

    @Test func removedDevicesAndUnknownAddressesAreRefused() throws {
        let f = try Fixture()
        let page = f.memory.page(at: 800)
        let address = try f.dma.mapPage(page, offset: 0, size: 100, direction: .toDevice, device: f.device)
        // Not a bus address of shared memory, inside the pool but not a mapping, outside the pool.
        for bogus in [DMAAddress(page.physicalAddress.rawValue), address + 4096,
                      f.memory.unencryptedDMAAddress(of: page.physicalAddress)] {
            #expect(throws: DMAError.notMapped(bogus)) {
                try f.dma.unmapPage(bogus, size: 100, direction: .toDevice, device: f.device)
            }
            #expect(throws: DMAError.notMapped(bogus)) {
                try f.dma.syncSingleForCPU(bogus, size: 100, direction: .fromDevice, device: f.device)
            }
        }
        let gone = try f.base.registry.add(name: "gone")
        gone.remove()
        #expect(throws: DMAError.deviceRemoved("gone")) {
            _ = try f.dma.mapPage(page, offset: 0, size: 100, direction: .toDevice, device: gone)
        }
        #expect(throws: DMAError.deviceRemoved("gone")) {
            try f.dma.unmapPage(address, size: 100, direction: .toDevice, device: gone)
        }
        #expect(gone.staleAccessCount == 2)
        let narrow = try f.base.registry.add(name: "dma32", dmaMaskBits: 32)
        #expect(throws: DMAError.self) {
            _ = try f.dma.mapPage(page, offset: 0, size: 100, direction: .toDevice, device: narrow)
        }
        try f.dma.unmapPage(address, size: 100, direction: .toDevice, device: f.device)
        #expect(throws: DMAError.notMapped(address)) {
            try f.dma.unmapPage(address, size: 100, direction: .toDevice, device: f.device)
        }
        #expect(f.swiotlb.usedSlots == 0)
        f.base.expectConsistent()
    }

    @Test func mapSaysWhatKindOfMappingItMade() throws {
        let f = try Fixture()
        try f.swiotlb.setZeroCopyPercent(50)
        let run = try f.swiotlb.allocateZeroCopyPages(order: 0, device: f.device)
        let zeroCopy = try f.dma.map(run, offset: 0, size: 64, direction: .toDevice, device: f.device)
        #expect(zeroCopy == DMAMapping(address: run.dmaAddress, kind: .zeroCopyRun))
        let privatePage = f.memory.page(at: 500)
        let used = f.swiotlb.usedSlots
        let bounced = try f.dma.map(privatePage, offset: 0, size: 64, direction: .toDevice, device: f.device)
        #expect(bounced.kind == .bounced && f.swiotlb.usedSlots == used + 1)
        try f.dma.unmapPage(bounced.address, size: 64, direction: .toDevice, device: f.device)
        run.setReferenceCount(0)
        f.swiotlb.freeZeroCopyPages(run)

        let direct = try Fixture(forceBounce: false)
        let shared = direct.memory.page(at: 602)
        try direct.memory.convert(shared, count: 1, to: .shared)
        #expect(try direct.dma.map(shared, offset: 8, size: 100, direction: .toDevice, device: direct.device)
                == DMAMapping(address: direct.memory.unencryptedDMAAddress(of: shared.physicalAddress + 8), kind: .direct))
    }

    @Test func zeroCopyRunAReachLimitedDeviceCannotAddressBounces() throws {
        // With force-bounce every device shares the pool; a run the device's mask
        // cannot reach falls back to a bounce, which fails the same reach check.
        let f = try Fixture()
        try f.swiotlb.setZeroCopyPercent(50)
        let run = try f.swiotlb.allocateZeroCopyPages(order: 0, device: f.device)
        let narrow = try f.base.registry.add(name: "dma47", dmaMaskBits: 47)
        #expect(throws: DMAError.self) {
            _ = try f.dma.mapPage(run, offset: 0, size: 64, direction: .toDevice, device: narrow)
        }
        #expect(f.swiotlb.usedSlots == 2)
        run.setReferenceCount(0)
        f.swiotlb.freeZeroCopyPages(run)
    }
}
