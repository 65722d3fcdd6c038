import Testing
@testable import DMAPools

/// A small guest (64 MiB, 4 MiB swiotlb = 2048 slots, 16 segments) and devices.
struct SWIOTLBFixture {
    let memory: GuestMemory
    let swiotlb: SWIOTLB
    let registry: DeviceRegistry
    let device: Device

    init(swiotlbBytes: Int = 4 << 20, areaCount: Int? = 2, forceBounce: Bool = true) throws {
        memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: swiotlbBytes, hypercall: .free))
        swiotlb = try SWIOTLB(memory: memory, areaCount: areaCount)
        registry = DeviceRegistry(forceBounce: forceBounce)
        device = try registry.add(name: "nic0")
    }

    /// Private guest memory at page `page` plus `offset` bytes.
    func original(page: Int, offset: Int = 0) -> PhysicalAddress {
        memory.page(at: page).physicalAddress + offset
    }

    func bytes(at address: PhysicalAddress, count: Int) throws -> [UInt8] {
        let pointer = try memory.pointer(to: address)
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    func fill(_ address: PhysicalAddress, count: Int, seed: UInt8) throws {
        let pointer = try memory.pointer(to: address)
        for i in 0..<count { pointer.storeBytes(of: UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed)), toByteOffset: i, as: UInt8.self) }
    }

    func slot(of tlb: PhysicalAddress) -> Int {
        Int((tlb.rawValue - swiotlb.start.rawValue) >> 11)
    }

    func expectConsistent(sourceLocation: SourceLocation = #_sourceLocation) {
        let violations = swiotlb.invariantViolations()
        #expect(violations.isEmpty, "\(violations)", sourceLocation: sourceLocation)
    }
}

@Suite struct SWIOTLBTests {
    // MARK: Geometry and areas

    /// `swiotlb_tbl_map_single` does not check `swiotlb_max_mapping_size()` (only
    /// `dma_max_mapping_size()` tells drivers about it): a mapping over it whose
    /// allocation fits a segment is served, as the kernel serves it.
    @Test func aMappingOverTheAdvertisedMaximumIsServedWhenItFitsASegment() throws {
        let f = try SWIOTLBFixture(swiotlbBytes: 2 << 20, areaCount: 4)
        let nvme = try f.registry.add(name: "nvme0", minAlignMask: 0xfff)
        #expect(f.swiotlb.maxMappingSize(for: nvme) == 258_048)
        let original = f.original(page: 40)
        try f.fill(original, count: 262_143, seed: 7)
        let tlb = try f.swiotlb.mapSingle(device: nvme, original: original, mappingSize: 262_143, allocAlignMask: 0xffff,
                                          direction: .toDevice, startArea: 0)
        #expect(f.swiotlb.usedSlots == 128)
        #expect(f.slot(of: tlb) % SWIOTLB.segmentSlots == 0)
        #expect(try f.bytes(at: tlb, count: 262_143) == f.bytes(at: original, count: 262_143))
        f.expectConsistent()
        try f.swiotlb.unmapSingle(device: nvme, tlbAddress: tlb, mappingSize: 262_143, direction: .toDevice)
        #expect(f.swiotlb.usedSlots == 0)
        f.expectConsistent()
    }

    @Test func geometryFollowsTheKernel() throws {
        let f = try SWIOTLBFixture(areaCount: 4)
        #expect(f.swiotlb.nslabs == 2048)
        #expect(f.swiotlb.areaCount == 4)
        #expect(f.swiotlb.areaSlots == 512)
        #expect(f.swiotlb.start == f.memory.page(at: f.memory.swiotlbPages.lowerBound).physicalAddress)
        #expect(f.swiotlb.maxMappingSize(for: f.device) == 256 << 10)
        let nvme = try f.registry.add(name: "nvme0", minAlignMask: 4095)
        #expect(f.swiotlb.maxMappingSize(for: nvme) == (256 << 10) - 4096)
        #expect(SWIOTLB.defaultConfidentialBytes(guestBytes: 4 << 30) == 984 * (256 << 10))
        // Every slot starts free: list counts down to each segment's end.
        #expect(f.swiotlb.slots[0].list == 128)
        #expect(f.swiotlb.slots[127].list == 1)
        #expect(f.swiotlb.slots[130].list == 126)
        f.expectConsistent()
    }

    @Test func defaultAreasAreAPowerOfTwoWithWholeSegments() throws {
        let memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 4 << 20, hypercall: .free))
        let swiotlb = try SWIOTLB(memory: memory)
        let cpus = roundUpToPowerOfTwo(CPUIdentity.onlineCount())
        #expect(swiotlb.areaCount == min(cpus, 16))
        // 3 segments: only one area can hold whole segments.
        let odd = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 3 << 18, hypercall: .free))
        #expect(try SWIOTLB(memory: odd).areaCount == 1)
    }

    @Test(arguments: [0, 3, 6, -2, 32])
    func invalidAreaCountsAreRejected(_ count: Int) throws {
        let memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 4 << 20, hypercall: .free))
        do {
            _ = try SWIOTLB(memory: memory, areaCount: count)
            Issue.record("areaCount \(count) accepted")
        } catch {
            guard case .invalidArgument(let why) = error else { Issue.record("\(error)"); return }
            #expect(why.contains("areaCount \(count)"))
        }
    }

    // MARK: Copy rules

    @Test(arguments: DMADirection.allCases)
    func mapCopiesForEveryDirectionAndUnmapCopiesBackFromDevice(_ direction: DMADirection) throws {
        let f = try SWIOTLBFixture()
        let size = 1500
        let original = f.original(page: 100, offset: 123)
        try f.fill(original, count: size, seed: 7)
        let before = try f.bytes(at: original, count: size)
        let tlb = try f.swiotlb.mapSingle(device: f.device, original: original, mappingSize: size, direction: direction)
        #expect(f.swiotlb.contains(tlb))
        #expect(try f.bytes(at: tlb, count: size) == before, "map copies original -> bounce for \(direction)")
        // The device writes the bounce buffer.
        try f.fill(tlb, count: size, seed: 99)
        let written = try f.bytes(at: tlb, count: size)
        try f.swiotlb.unmapSingle(device: f.device, tlbAddress: tlb, mappingSize: size, direction: direction)
        let after = try f.bytes(at: original, count: size)
        if direction == .toDevice {
            #expect(after == before, "unmap must not copy back for DMA_TO_DEVICE")
        } else {
            #expect(after == written, "unmap copies bounce -> original for \(direction)")
        }
        let stats = f.swiotlb.statistics
        #expect(stats.used == 0)
        #expect(stats.liveMappings == 0)
        #expect(stats.bytesBouncedToDevice == size)
        #expect(stats.bytesBouncedToCPU == (direction == .toDevice ? 0 : size))
        f.expectConsistent()
    }

    @Test(arguments: DMADirection.allCases)
    func syncCopiesASubRangeByDirection(_ direction: DMADirection) throws {
        let f = try SWIOTLBFixture()
        let size = 9000   // five slots, page aligned
        let original = f.original(page: 200)
        try f.fill(original, count: size, seed: 1)
        let tlb = try f.swiotlb.mapSingle(device: f.device, original: original, mappingSize: size, direction: direction)

        // CPU rewrites bytes 3000..<7000 and syncs them for the device.
        try f.fill(original + 3000, count: 4000, seed: 55)
        try f.swiotlb.syncForDevice(device: f.device, tlbAddress: tlb + 3000, size: 4000, direction: direction)
        let bounceAfterSyncForDevice = try f.bytes(at: tlb, count: size)
        if direction.copiesToDevice {
            #expect(bounceAfterSyncForDevice == (try f.bytes(at: original, count: size)))
        } else {
            #expect(Array(bounceAfterSyncForDevice[3000..<7000]) != (try f.bytes(at: original + 3000, count: 4000)))
        }

        // The device writes bytes 2100..<2200 (inside the second slot) and the CPU syncs them.
        let originalBefore = try f.bytes(at: original, count: size)
        try f.fill(tlb + 2100, count: 100, seed: 200)
        try f.swiotlb.syncForCPU(device: f.device, tlbAddress: tlb + 2100, size: 100, direction: direction)
        var expected = originalBefore
        if direction.copiesFromDevice {
            expected.replaceSubrange(2100..<2200, with: try f.bytes(at: tlb + 2100, count: 100))
        }
        #expect(try f.bytes(at: original, count: size) == expected)

        // A sync past the mapping's end, or outside any mapping, is refused.
        #expect(throws: DMAError.self) {
            try f.swiotlb.syncForCPU(device: f.device, tlbAddress: tlb + 8000, size: 2000, direction: direction)
        }
        #expect(throws: DMAError.notMapped(f.swiotlb.dmaAddress(of: f.swiotlb.start + (64 << 11)))) {
            try f.swiotlb.syncForDevice(device: f.device, tlbAddress: f.swiotlb.start + (64 << 11), size: 1, direction: direction)
        }
        try f.swiotlb.unmapSingle(device: f.device, tlbAddress: tlb, mappingSize: size, direction: direction)
        f.expectConsistent()
    }

    @Test func syncWithMinAlignOffsetsAddressesTheRightOriginalBytes() throws {
        let f = try SWIOTLBFixture()
        let nvme = try f.registry.add(name: "nvme0", minAlignMask: 4095)
        let original = f.original(page: 300, offset: 0x923)
        let size = 6000
        try f.fill(original, count: size, seed: 3)
        let tlb = try f.swiotlb.mapSingle(device: nvme, original: original, mappingSize: size, direction: .bidirectional)
        #expect(tlb.rawValue & 4095 == 0x923)
        // Device writes 50 bytes straddling the second slot boundary.
        let at = tlb + (2048 - 0x123 - 20)
        try f.fill(at, count: 50, seed: 77)
        try f.swiotlb.syncForCPU(device: nvme, tlbAddress: at, size: 50, direction: .bidirectional)
        #expect(try f.bytes(at: original + (2048 - 0x123 - 20), count: 50) == (try f.bytes(at: at, count: 50)))
        try f.swiotlb.unmapSingle(device: nvme, tlbAddress: tlb, mappingSize: size, direction: .toDevice)
        f.expectConsistent()
    }

    // MARK: Alignment

    @Test func mappingsOfAPageOrMoreArePageAligned() throws {
        let f = try SWIOTLBFixture(areaCount: 1)
        // A one-slot mapping moves the area index to slot 1.
        let small = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 10), mappingSize: 100,
                                            direction: .toDevice, startArea: 0)
        #expect(f.slot(of: small) == 0)
        let page = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 11, offset: 5), mappingSize: 4096,
                                           direction: .toDevice, startArea: 0)
        #expect(page.rawValue & 4095 == 0)
        #expect(f.slot(of: page) == 2)
        // Below a page: any slot will do.
        let below = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 12), mappingSize: 4095,
                                            direction: .toDevice, startArea: 0)
        #expect(f.slot(of: below) == 4)
        let odd = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 13), mappingSize: 2048,
                                          direction: .toDevice, startArea: 0)
        #expect(f.slot(of: odd) == 6)
        let next = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 14), mappingSize: 2049,
                                           direction: .toDevice, startArea: 0)
        #expect(f.slot(of: next) == 7, "a two-slot mapping below PAGE_SIZE needs no alignment")
        #expect(f.swiotlb.slots[1].list == 1, "slot 1 stays free, renumbered to end at slot 2")
        f.expectConsistent()
    }

    @Test func allocAlignMaskAlignsTheAllocation() throws {
        let f = try SWIOTLBFixture(areaCount: 1)
        _ = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 10), mappingSize: 100,
                                    direction: .toDevice, startArea: 0)
        let aligned = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 11), mappingSize: 100,
                                              allocAlignMask: 0xFFFF, direction: .toDevice, startArea: 0)
        #expect(aligned.rawValue & 0xFFFF == 0)
        #expect(f.slot(of: aligned) == 32)
        // The size rounds up to the alignment: 32 slots.
        #expect(f.swiotlb.usedSlots == 1 + 32)
        f.expectConsistent()
    }

    @Test func minAlignMaskKeepsLowBitsWithPadSlots() throws {
        let f = try SWIOTLBFixture(areaCount: 1)
        let nvme = try f.registry.add(name: "nvme0", minAlignMask: 4095)
        // min_align_mask alone: bit 11 comes from slot choice, the rest from the offset.
        let original = f.original(page: 400, offset: 0x923)
        let tlb = try f.swiotlb.mapSingle(device: nvme, original: original, mappingSize: 512,
                                          direction: .toDevice, startArea: 0)
        #expect(tlb.rawValue & 4095 == original.rawValue & 4095)
        #expect(f.slot(of: tlb) == 1)
        #expect(f.swiotlb.slots[1].padSlots == 0)
        #expect(f.swiotlb.slots[0].list == 1, "slot 0 skipped, still free")

        // With an alloc_align_mask, the offset spans whole slots: pad slots.
        let padded = try f.swiotlb.mapSingle(device: nvme, original: original, mappingSize: 512,
                                             allocAlignMask: 4095, direction: .toDevice, startArea: 0)
        #expect(padded.rawValue & 4095 == 0x923)
        let head = f.slot(of: padded)
        #expect(f.swiotlb.slots[head].padSlots == 1)
        #expect(f.swiotlb.slots[head - 1].flags.contains(.allocated), "the pad slot is allocated")
        #expect(f.swiotlb.slots[head - 1].originalAddress == Slot.invalidAddress)
        #expect(f.swiotlb.slots[head].originalAddress == original.rawValue)
        #expect(f.swiotlb.usedSlots == 1 + 2)
        try f.fill(original, count: 512, seed: 9)
        try f.swiotlb.unmapSingle(device: nvme, tlbAddress: padded, mappingSize: 512, direction: .fromDevice)
        try f.swiotlb.unmapSingle(device: nvme, tlbAddress: tlb, mappingSize: 512, direction: .toDevice)
        #expect(f.swiotlb.usedSlots == 0)
        f.expectConsistent()
    }

    @Test func aMappingNeverCrossesASegment() throws {
        let f = try SWIOTLBFixture(areaCount: 1)
        var held: [PhysicalAddress] = []
        for i in 0..<100 {
            held.append(try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 10 + i), mappingSize: 1000,
                                                direction: .toDevice, startArea: 0))
        }
        // 28 slots remain in segment 0; 32 do not fit there.
        let big = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 200), mappingSize: 64 << 10,
                                          direction: .toDevice, startArea: 0)
        #expect(f.slot(of: big) == 128)
        // A full segment fits only at a segment start.
        let whole = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 300), mappingSize: 256 << 10,
                                            direction: .toDevice, startArea: 0)
        #expect(f.slot(of: whole) == 256)
        #expect(f.swiotlb.slots[127].list == 1, "segment 0's tail stays free up to its end")
        f.expectConsistent()
        for tlb in held { try f.swiotlb.unmapSingle(device: f.device, tlbAddress: tlb, mappingSize: 1000, direction: .toDevice) }
        try f.swiotlb.unmapSingle(device: f.device, tlbAddress: big, mappingSize: 64 << 10, direction: .toDevice)
        try f.swiotlb.unmapSingle(device: f.device, tlbAddress: whole, mappingSize: 256 << 10, direction: .toDevice)
        #expect(f.swiotlb.slots[0].list == 128, "released runs merge back into whole segments")
        f.expectConsistent()
    }

    @Test func searchStartsInTheGivenAreaThenTriesTheOthers() throws {
        let f = try SWIOTLBFixture(areaCount: 4)
        let inArea2 = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 10), mappingSize: 256 << 10,
                                              direction: .toDevice, startArea: 2)
        #expect(f.slot(of: inArea2) == 2 * 512)
        // Fill area 3 (four segments), then the next request from area 3 wraps to area 0.
        for i in 0..<4 {
            _ = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 20 + i), mappingSize: 256 << 10,
                                        direction: .toDevice, startArea: 3)
        }
        let wrapped = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 30), mappingSize: 256 << 10,
                                              direction: .toDevice, startArea: 3)
        #expect(f.slot(of: wrapped) == 0)
        #expect(f.swiotlb.statistics.areaUsed == [128, 0, 128, 512])
        #expect(f.swiotlb.statistics.usedHighWater == 6 * 128)
        f.expectConsistent()
    }

    // MARK: Errors

    @Test func badInputIsRejectedWithANamedReason() throws {
        let f = try SWIOTLBFixture()
        func reason(_ body: () throws -> Void) -> String {
            do { try body(); return "accepted" } catch {
                if case .invalidArgument(let why)? = error as? DMAError { return why }
                return "\(error)"
            }
        }
        #expect(reason { _ = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 1), mappingSize: 0, direction: .toDevice) }
            .contains("size 0"))
        #expect(reason { _ = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 1), mappingSize: (256 << 10) + 1, direction: .toDevice) }
            .contains("needs more than a segment"))
        // With min_align_mask the original's low bits (below a slot) add to the
        // allocation: one byte more than a segment holds.
        let nvme = try f.registry.add(name: "nvme0", minAlignMask: 4095)
        #expect(reason { _ = try f.swiotlb.mapSingle(device: nvme, original: f.original(page: 1, offset: 0x7ff), mappingSize: (256 << 10) - 0x7ff + 1, direction: .toDevice) }
            .contains("needs more than a segment"))
        #expect(reason { _ = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 1), mappingSize: 10, allocAlignMask: 0x1234, direction: .toDevice) }
            .contains("allocAlignMask"))
        #expect(reason { _ = try f.swiotlb.mapSingle(device: f.device, original: PhysicalAddress(0x1000), mappingSize: 10, direction: .toDevice) }
            .contains("outside guest memory"))
        let lastPage = f.original(page: f.memory.pageCount - 1, offset: 4000)
        #expect(reason { _ = try f.swiotlb.mapSingle(device: f.device, original: lastPage, mappingSize: 200, direction: .toDevice) }
            .contains("outside guest memory"))

        let narrow = try f.registry.add(name: "legacy", dmaMaskBits: 32)
        #expect(throws: DMAError.addressNotReachable(device: "legacy", address: f.swiotlb.dmaAddress(of: f.swiotlb.start), size: 4 << 20)) {
            _ = try f.swiotlb.mapSingle(device: narrow, original: f.original(page: 1), mappingSize: 10, direction: .toDevice)
        }

        let gone = try f.registry.add(name: "gone")
        gone.remove()
        #expect(throws: DMAError.deviceRemoved("gone")) {
            _ = try f.swiotlb.mapSingle(device: gone, original: f.original(page: 1), mappingSize: 10, direction: .toDevice)
        }
        #expect(gone.staleAccessCount == 1)
        #expect(gone.refusedAllocationCount == 0)
        // Asking for zero-copy memory for a removed device is refused before it
        // reaches the device: counted as a refused allocation, not a stale access.
        #expect(throws: DMAError.deviceRemoved("gone")) {
            _ = try f.swiotlb.allocateZeroCopyPages(order: 0, device: gone)
        }
        #expect(gone.refusedAllocationCount == 1)
        #expect(gone.staleAccessCount == 1)
        #expect(f.swiotlb.usedSlots == 0)
        #expect(f.swiotlb.statistics.exhaustionFailures == 0)
        f.expectConsistent()
    }

    @Test func unmapOfAnythingButALiveMappingIsNotMapped() throws {
        let f = try SWIOTLBFixture()
        let tlb = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 5), mappingSize: 5000, direction: .toDevice)
        let dma = { (a: PhysicalAddress) in f.swiotlb.dmaAddress(of: a) }
        #expect(throws: DMAError.notMapped(dma(tlb + 2048))) {
            try f.swiotlb.unmapSingle(device: f.device, tlbAddress: tlb + 2048, mappingSize: 100, direction: .toDevice)
        }
        #expect(throws: DMAError.notMapped(dma(tlb + 1))) {
            try f.swiotlb.unmapSingle(device: f.device, tlbAddress: tlb + 1, mappingSize: 100, direction: .toDevice)
        }
        #expect(throws: DMAError.notMapped(dma(f.original(page: 5)))) {
            try f.swiotlb.unmapSingle(device: f.device, tlbAddress: f.original(page: 5), mappingSize: 100, direction: .toDevice)
        }
        #expect(throws: DMAError.self) {
            try f.swiotlb.unmapSingle(device: f.device, tlbAddress: tlb, mappingSize: 8193, direction: .toDevice)
        }
        try f.swiotlb.unmapSingle(device: f.device, tlbAddress: tlb, mappingSize: 5000, direction: .toDevice)
        #expect(throws: DMAError.notMapped(dma(tlb))) {
            try f.swiotlb.unmapSingle(device: f.device, tlbAddress: tlb, mappingSize: 5000, direction: .toDevice)
        }
        f.expectConsistent()
    }

    @Test func exhaustionIsAnErrorAndCounted() throws {
        let f = try SWIOTLBFixture(areaCount: 2)
        var held: [PhysicalAddress] = []
        for i in 0..<16 {
            held.append(try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 10 + i), mappingSize: 256 << 10,
                                                direction: .toDevice))
        }
        #expect(f.swiotlb.usedSlots == 2048)
        #expect(throws: DMAError.swiotlbExhausted(size: 1500, usedSlots: 2048, totalSlots: 2048)) {
            _ = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 1), mappingSize: 1500, direction: .toDevice)
        }
        try f.swiotlb.unmapSingle(device: f.device, tlbAddress: held.removeLast(), mappingSize: 256 << 10, direction: .toDevice)
        // The freed segment takes another whole-segment mapping; then the pool is full again.
        let fits = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 1), mappingSize: 256 << 10, direction: .toDevice)
        #expect(throws: DMAError.self) {
            _ = try f.swiotlb.mapSingle(device: f.device, original: f.original(page: 1), mappingSize: 1, direction: .toDevice)
        }
        let stats = f.swiotlb.statistics
        #expect(stats.exhaustionFailures == 2)
        #expect(stats.used == 2048)
        #expect(stats.liveMappings == 16)
        held.append(fits)
        for tlb in held { try f.swiotlb.unmapSingle(device: f.device, tlbAddress: tlb, mappingSize: 256 << 10, direction: .toDevice) }
        #expect(f.swiotlb.statistics.used == 0)
        #expect(f.swiotlb.statistics.usedHighWater == 2048)
        f.expectConsistent()
    }
}
