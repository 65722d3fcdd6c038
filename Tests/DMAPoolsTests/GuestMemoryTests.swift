import Testing
@testable import DMAPools

@Suite struct GuestMemoryTests {
    @Test func layoutFollowsTheConfidentialRule() throws {
        #expect(GuestMemoryConfiguration.confidentialSWIOTLBBytes(guestBytes: 1 << 30) == 64 << 20)
        #expect(GuestMemoryConfiguration.confidentialSWIOTLBBytes(guestBytes: 4 << 30) == 984 * (256 << 10))
        #expect(GuestMemoryConfiguration.confidentialSWIOTLBBytes(guestBytes: 64 << 30) == 1 << 30)
        let memory = try GuestMemory(.init(guestBytes: 128 << 20, swiotlbBytes: 16 << 20, hypercall: .free))
        #expect(memory.pageCount == 32768)
        #expect(memory.swiotlbPages.count == 4096)
        #expect(memory.page(at: 0).domain == .private)
        #expect(memory.page(at: memory.pageCount - 1).domain == .shared)
        #expect(memory.page(at: memory.pageCount - 1).owner == .swiotlbSlots)
    }

    @Test func addressesAndDescriptorsMapBothWays() throws {
        let memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 4 << 20, hypercall: .free))
        for index in [0, 1, 777, memory.pageCount - 1] {
            let page = memory.page(at: index)
            #expect(try memory.page(containing: page.physicalAddress) == page)
            #expect(try memory.page(containing: page.physicalAddress + 4095) == page)
            #expect(try memory.page(containing: UnsafeRawPointer(page.bytes + 17)) == page)
            #expect(try memory.physicalAddress(of: page.bytes) == page.physicalAddress)
            #expect(try memory.pointer(to: page.physicalAddress) == page.bytes)
        }
        #expect(throws: MemoryError.self) { try memory.page(containing: PhysicalAddress(0)) }
    }

    @Test func conversionIsCountedAndCharged() throws {
        let model = HypercallCostModel(perCallNanoseconds: 1000, perPageNanoseconds: 10, charge: .accountOnly, failEveryNthCall: 3)
        let memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 4 << 20, hypercall: model))
        let first = memory.page(at: 64)
        #expect(try memory.convert(first, count: 8, to: .shared) == 1080)
        #expect(first.domain == .shared)
        #expect(throws: MemoryError.alreadyInDomain(first.physicalAddress, .shared)) {
            try memory.convert(first, count: 1, to: .shared)
        }
        try memory.convert(first, count: 8, to: .private)
        #expect(throws: MemoryError.conversionFailed(pages: 8, call: 3)) {
            try memory.convert(first, count: 8, to: .shared)
        }
        let stats = memory.conversionStatistics
        #expect(stats.calls == 3)
        #expect(stats.pagesDecrypted == 8)
        #expect(stats.pagesEncrypted == 8)
        #expect(stats.failures == 1)
    }
}

/// Over-aligned set-up memory is carved from a plain allocation (so that a
/// malloc interposer's header precedes it), aligned and inside the block.
@Suite struct AlignedAllocationTests {
    @Test(arguments: [16, 64, 128, 4096])
    func theBlockIsAlignedAndInsideItsAllocation(alignment: Int) {
        for byteCount in [1, 384, 5000] {
            let a = AlignedAllocation(byteCount: byteCount, alignment: alignment)
            #expect(Int(bitPattern: a.pointer) & (alignment - 1) == 0)
            #expect(a.pointer >= a.base && a.pointer + byteCount <= a.base + byteCount + alignment - 16)
            a.pointer.initializeMemory(as: UInt8.self, repeating: 0xA5, count: byteCount)
            a.deallocate()
        }
    }
}

/// The descriptor is one cache line, and the table starts on one, so no
/// descriptor's fields straddle two lines (the fast path touches one line).
@Suite struct PageDescriptorLayoutTests {
    @Test func aDescriptorIsOneCacheLine() throws {
        #expect(MemoryLayout<PageDescriptor>.size <= 64)
        #expect(MemoryLayout<PageDescriptor>.stride == 64)
        let memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free))
        let first = memory.page(at: 0)
        let second = memory.page(at: 1)
        #expect(Int(bitPattern: first.descriptor) % 64 == 0)
        #expect(Int(bitPattern: second.descriptor) - Int(bitPattern: first.descriptor) == 64)
    }

    /// A put on another CPU reads the pool's read-mostly state (owner,
    /// signature, sync settings); the owner writes its alloc-cache state on
    /// every allocation. They must not share a line (nor a pair of lines,
    /// for the adjacent-line prefetcher): sharing one made every remote put
    /// pull the owner's line across (`pool_ring_remote_ns` 22-28 ns, against
    /// 7 ns apart).
    @Test func aPoolsReadMostlyAndOwnerStateAreOnLinesOfTheirOwn() throws {
        let pool = try PagePoolFixture(.init()).pool
        let lineBytes = _PagePoolHotState.lineBytes
        let readMostly = Int(bitPattern: pool.readMostly)
        let hot = Int(bitPattern: pool.hot)
        #expect(readMostly % lineBytes == 0)
        #expect(hot % lineBytes == 0)
        #expect(readMostly + MemoryLayout<_PagePoolReadMostlyState>.size <= hot)
        #expect(MemoryLayout<_PagePoolReadMostlyState>.size <= lineBytes)
    }

    @Test func physicalAddressesSurviveTheFrameNumberPacking() throws {
        let base: UInt64 = 1 << 44   // needs the frame number's high byte
        let memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, physicalBase: base,
                                           sharedBit: 51, hypercall: .free))
        for index in [0, 1, 4095, memory.pageCount - 1] {
            #expect(memory.page(at: index).physicalAddress.rawValue == base + UInt64(index << PageGeometry.shift))
        }
        #expect(throws: MemoryError.self) {
            _ = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, physicalBase: 1 << 52,
                                      sharedBit: 62, hypercall: .free))
        }
    }
}
