import Logging
import Synchronization
import Testing
@testable import DMAPools

#if canImport(Glibc)
import Glibc
#endif

// MARK: Support

/// A small confidential guest with every subsystem a provider can stand on.
struct ProviderGuest {
    let memory: GuestMemory
    let general: GeneralAllocator
    let swiotlb: SWIOTLB
    let dma: DMAAPI
    let registry: DeviceRegistry
    let device: Device

    init() throws {
        memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free))
        general = try GeneralAllocator(memory: memory)
        swiotlb = try SWIOTLB(memory: memory)
        dma = DMAAPI(memory: memory, swiotlb: swiotlb)
        registry = DeviceRegistry(forceBounce: true)
        device = try registry.add(name: "eth0")
    }

    /// Pool parameters for a transmit pool that syncs `maxLength` bytes at
    /// `offset` for the device on every recycle.
    func txParameters(order: Int = 0, maxLength: Int = 4096, offset: Int = 0, poolSize: Int = 0,
                      device: Device? = nil) -> PagePoolParameters {
        PagePoolParameters(order: order, poolSize: poolSize, flags: [.dmaMap, .dmaSyncForDevice, .transmit],
                           dmaDirection: .toDevice, maxLength: maxLength, offset: offset,
                           device: device ?? self.device, name: "tx", logger: quietLogger)
    }

    /// The bytes a device reads at `address` (it must name shared memory).
    func deviceBytes(at address: DMAAddress) throws -> UnsafeMutableRawPointer {
        let physical = try #require(memory.physicalAddress(ofShared: address), "\(address) does not name shared memory")
        return try memory.pointer(to: physical)
    }

    /// No page is left with a pool, and every descriptor is back with its owner.
    func expectNoPoolPages(sourceLocation: SourceLocation = #_sourceLocation) {
        let census = memory.census()
        #expect(census[.pagePool] == nil, "pages still owned by a pool: \(census)", sourceLocation: sourceLocation)
        #expect(census[.swiotlbSlots] == memory.swiotlbPages.count, "swiotlb pages not back: \(census)", sourceLocation: sourceLocation)
    }
}

let quietLogger = Logger(label: "test.page-pool.providers") { _ in SwiftLogNoOpLogHandler() }

/// The three providers, for tests that compare them.
enum ProviderKind: String, CaseIterable, CustomTestStringConvertible {
    case system, swiotlb, decrypted

    var testDescription: String { rawValue }

    func make(_ g: ProviderGuest) throws -> any PagePoolMemoryProvider {
        switch self {
        case .system:
            return SystemPageProvider(general: g.general, dma: g.dma, device: g.device)
        case .swiotlb:
            try g.swiotlb.setZeroCopyPercent(50)
            return SWIOTLBPageProvider(swiotlb: g.swiotlb, device: g.device)
        case .decrypted:
            return DecryptedPageProvider(allocator: try DecryptedAllocator(general: g.general))
        }
    }
}

func providerStatistics(_ provider: any PagePoolMemoryProvider) -> PagePoolProviderStatistics {
    switch provider {
    case let p as SystemPageProvider: p.statistics
    case let p as SWIOTLBPageProvider: p.statistics
    case let p as DecryptedPageProvider: p.statistics
    default: PagePoolProviderStatistics()
    }
}

/// Fills `count` bytes at `pointer` with a pattern derived from `seed`.
func fillPattern(_ pointer: UnsafeMutableRawPointer, count: Int, seed: UInt8) {
    let bytes = pointer.assumingMemoryBound(to: UInt8.self)
    for i in 0..<count { bytes[i] = UInt8(truncatingIfNeeded: i &* 7) &+ seed | 1 }
}

func sameBytes(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) -> Bool {
    memcmp(a, b, count) == 0
}

/// The attach error of a pool built with `parameters` over `provider`.
func attachError(_ parameters: PagePoolParameters, _ provider: any PagePoolMemoryProvider,
                 sourceLocation: SourceLocation = #_sourceLocation) -> PagePoolError? {
    do {
        let pool = try PagePool(parameters, provider: provider)
        Issue.record("pool creation over \(provider.name) succeeded", sourceLocation: sourceLocation)
        pool.destroy()
        return nil
    } catch {
        return error
    }
}

// MARK: System pages

@Suite struct SystemPageProviderTests {
    @Test func pagesStayPrivateAndEachHoldsABounceSlot() throws {
        let g = try ProviderGuest()
        let provider = SystemPageProvider(general: g.general, dma: g.dma, device: g.device)
        let pool = try PagePool(g.txParameters(), provider: provider)
        let page = try pool.allocatePage()
        #expect(page.domain == .private && g.general.contains(page))
        #expect(page.owner == .pagePool && page.referenceCount == 1)
        let address = pool.dmaAddress(of: page)
        let physical = try #require(g.memory.physicalAddress(ofShared: address))
        #expect(g.swiotlb.contains(physical), "the DMA address is a bounce slot's")
        #expect(address != g.memory.unencryptedDMAAddress(of: page.physicalAddress))
        #expect(g.device.canAddress(address, size: 4096))
        // The slow path bulk-allocated 64 pages: 64 live bounce mappings of 2 slots.
        var tlb = g.swiotlb.statistics
        #expect(tlb.liveMappings == 64 && tlb.used == 128)
        var s = provider.statistics
        #expect(s.attaches == 1 && s.allocateCalls == 1 && s.pagesAllocated == 64)
        #expect(s.bytesCopiedAtMap == 64 * 4096, "dma_map bounces each page once")
        #expect(s.syncs == 64 && s.bytesCopiedAtSync == 64 * 4096, "PP_FLAG_DMA_SYNC_DEV syncs max_len after mapping")
        pool.recycleDirect(page)
        pool.destroy()
        #expect(pool.isShutdownComplete)
        tlb = g.swiotlb.statistics
        #expect(tlb.liveMappings == 0 && tlb.used == 0)
        #expect(g.general.statistics.livePages == 0)
        s = provider.statistics
        #expect(s.releases == 64 && s.pagesFreed == 64 && s.outstandingPages == 0 && s.detaches == 1)
        #expect(s.bytesCopiedAtUnmap == 0, "DMA_TO_DEVICE unmaps copy nothing back")
        #expect(g.swiotlb.invariantViolations().isEmpty)
        g.expectNoPoolPages()
    }

    @Test func cpuBytesReachTheDeviceOnlyAfterSyncForDevice() throws {
        let g = try ProviderGuest()
        let provider = SystemPageProvider(general: g.general, dma: g.dma, device: g.device)
        let pool = try PagePool(g.txParameters(maxLength: 1500, offset: 64), provider: provider)
        let page = try pool.allocatePage()
        let slot = try g.deviceBytes(at: pool.dmaAddress(of: page))
        let slotBytes = slot.assumingMemoryBound(to: UInt8.self)
        let before = (slotBytes[63], slotBytes[64 + 1500])
        // The CPU writes the whole private page.
        fillPattern(page.bytes, count: 4096, seed: 0x11)
        page.bytes.storeBytes(of: before.0 ^ 0xff, toByteOffset: 63, as: UInt8.self)
        page.bytes.storeBytes(of: before.1 ^ 0xff, toByteOffset: 64 + 1500, as: UInt8.self)
        #expect(!sameBytes(slot + 64, page.bytes + 64, count: 1500), "the device cannot see the write yet")
        let tlbBefore = g.swiotlb.statistics.bytesBouncedToDevice
        let syncBytesBefore = provider.statistics.bytesCopiedAtSync
        // Recycling with PP_FLAG_DMA_SYNC_DEV: dma_sync_single_for_device(max_len at offset).
        pool.recycleDirect(page)
        #expect(sameBytes(slot + 64, page.bytes + 64, count: 1500), "max_len bytes at offset reached the bounce slot")
        #expect(slotBytes[63] == before.0 && slotBytes[64 + 1500] == before.1, "nothing outside [offset, offset + max_len) was copied")
        #expect(g.swiotlb.statistics.bytesBouncedToDevice - tlbBefore == 1500)
        #expect(provider.statistics.bytesCopiedAtSync - syncBytesBefore == 1500)
        pool.destroy()
        #expect(g.swiotlb.statistics.used == 0 && g.general.statistics.livePages == 0)
    }

    @Test func receivePoolCopiesBackAtUnmapAndLeavesAPageStillReferenced() throws {
        let g = try ProviderGuest()
        let provider = SystemPageProvider(general: g.general, dma: g.dma, device: g.device)
        let pool = try PagePool(.init(flags: .dmaMap, dmaDirection: .fromDevice, device: g.device, name: "rx", logger: quietLogger),
                                provider: provider)
        let page = try pool.allocatePage()
        // The device writes the bounce slot.
        let slot = try g.deviceBytes(at: pool.dmaAddress(of: page))
        fillPattern(slot, count: 4096, seed: 0x5a)
        // Someone else takes a page reference (an skb clone, say): the put releases it.
        page.retain()
        let mappingsBefore = g.swiotlb.statistics.liveMappings
        pool.put(page)
        #expect(pool.statistics.recycling.releasedRefcount == 1)
        #expect(sameBytes(page.bytes, slot, count: 4096), "dma_unmap copied the device's bytes back (DMA_FROM_DEVICE)")
        #expect(g.swiotlb.statistics.liveMappings == mappingsBefore - 1)
        #expect(page.owner == .generalAllocator && page.referenceCount == 1 && page.dmaAddress == .mappingError)
        var s = provider.statistics
        #expect(s.releasedWithOtherReferences == 1 && s.pagesFreed == 0 && s.bytesCopiedAtUnmap == 4096)
        // The other holder frees it.
        g.general.freePages(page)
        pool.destroy()
        s = provider.statistics
        #expect(s.releases == 64 && s.pagesFreed == 63 && s.bytesCopiedAtUnmap == 64 * 4096)
        #expect(g.swiotlb.statistics.used == 0 && g.general.statistics.livePages == 0)
        g.expectNoPoolPages()
    }

    @Test func releasesFromOtherThreadsReturnEverything() throws {
        let g = try ProviderGuest()
        let provider = SystemPageProvider(general: g.general, dma: g.dma, device: g.device)
        let pool = try PagePool(g.txParameters(maxLength: 256, poolSize: 16), provider: provider)
        var pages: [Page] = []
        for _ in 0..<256 { pages.append(try pool.allocatePage()) }
        // Two remote threads put everything back: 16 land in the ring, the rest
        // are released (unmapped and freed) from those threads.
        let halves = [PageBatch(pages: Array(pages[..<128])), PageBatch(pages: Array(pages[128...]))]
        let threads = halves.map { batch in TestThread { for page in batch.pages { pool.put(page) } } }
        for t in threads { t.join() }
        let stats = pool.statistics
        #expect(stats.recycling.ring == 16 && stats.recycling.ringFull == 240)
        pool.destroy()
        #expect(pool.isShutdownComplete)
        let s = provider.statistics
        #expect(s.pagesAllocated == 256 && s.releases == 256 && s.pagesFreed == 256 && s.dmaFailures == 0)
        #expect(g.swiotlb.statistics.used == 0 && g.general.statistics.livePages == 0)
        #expect(g.swiotlb.invariantViolations().isEmpty)
        g.expectNoPoolPages()
    }

    @Test func withoutDMAMapThePagesAreNotMapped() throws {
        let g = try ProviderGuest()
        let provider = SystemPageProvider(general: g.general, dma: g.dma, device: g.device)
        let pool = try PagePool(.init(order: 2, name: "unmapped", logger: quietLogger), provider: provider)
        let page = try pool.allocatePage()
        #expect(page.dmaAddress == .mappingError && page.order == 2 && page.domain == .private)
        #expect(g.swiotlb.statistics.used == 0 && provider.statistics.bytesCopied == 0)
        pool.put(page)
        pool.destroy()
        #expect(g.general.statistics.livePages == 0)
    }

    @Test func badParametersAreRefusedAtAttach() throws {
        let g = try ProviderGuest()
        let provider = SystemPageProvider(general: g.general, dma: g.dma, device: g.device)
        // Order 7 (512 KiB) does not fit one bounce mapping (256 KiB).
        let order = attachError(g.txParameters(order: 7), provider)
        guard case .invalidParameter("order", let why)? = order else { Issue.record("got \(String(describing: order))"); return }
        #expect(why.contains("7") && why.contains("0...6") && why.contains("bounce"))
        // A 32-bit device cannot reach the bounce slots (shared bit 47).
        let narrow = try g.registry.add(name: "dma32", dmaMaskBits: 32)
        let unreachable = attachError(g.txParameters(device: narrow),
                                      SystemPageProvider(general: g.general, dma: g.dma, device: narrow))
        guard case .invalidParameter("device", let why32)? = unreachable else { Issue.record("got \(String(describing: unreachable))"); return }
        #expect(why32.contains("dma32") && why32.contains("cannot reach") && why32.contains("0xffffffff"))
        // A removed device.
        let gone = try g.registry.add(name: "gone0")
        gone.remove()
        let removed = attachError(g.txParameters(device: gone), SystemPageProvider(general: g.general, dma: g.dma, device: gone))
        guard case .invalidParameter("device", let whyGone)? = removed else { Issue.record("got \(String(describing: removed))"); return }
        #expect(whyGone.contains("gone0") && whyGone.contains("removed"))
        // A device that does not bounce cannot map private pages at all.
        let direct = try DeviceRegistry(forceBounce: false).add(name: "direct0")
        let noBounce = attachError(g.txParameters(device: direct), SystemPageProvider(general: g.general, dma: g.dma, device: direct))
        guard case .invalidParameter("device", let whyDirect)? = noBounce else { Issue.record("got \(String(describing: noBounce))"); return }
        #expect(whyDirect.contains("does not bounce"))
        // The pool maps for another device than the provider's.
        let other = attachError(g.txParameters(device: narrow), provider)
        guard case .invalidParameter("device", let whyOther)? = other else { Issue.record("got \(String(describing: other))"); return }
        #expect(whyOther.contains("dma32") && whyOther.contains("eth0"))
        #expect(provider.statistics.attaches == 0)
    }

    @Test func aFullSwiotlbExhaustsThePoolWithAClearError() throws {
        let g = try ProviderGuest()
        let provider = SystemPageProvider(general: g.general, dma: g.dma, device: g.device)
        // Order 6: 256 KiB per page, one segment each; 8 MiB of swiotlb holds 32.
        let pool = try PagePool(g.txParameters(order: 6, maxLength: 64), provider: provider)
        var pages: [Page] = []
        for _ in 0..<32 { pages.append(try pool.allocatePage()) }
        let error = #expect(throws: PagePoolError.self) { try pool.allocatePage() }
        guard case .providerExhausted("system-pages", 6, let reason)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(reason.contains("swiotlb buffer is full"), "each pooled system page holds a bounce slot: \(reason)")
        #expect(provider.lastFailure?.contains("swiotlb buffer is full") == true)
        #expect(g.general.statistics.livePages == 32 * 64, "the page of the failed mapping went back to jemalloc")
        // Pages it has keep recycling.
        pool.recycleDirect(pages.removeLast())
        pages.append(try pool.allocatePage())
        for page in pages { pool.put(page) }
        pool.destroy()
        #expect(g.swiotlb.statistics.used == 0 && g.general.statistics.livePages == 0)
    }
}

// MARK: swiotlb pages

@Suite struct SWIOTLBPageProviderTests {
    @Test func pagesAreSharedBounceMemoryWithTheirOwnAddress() throws {
        let g = try ProviderGuest()
        try g.swiotlb.setZeroCopyPercent(50)
        let provider = SWIOTLBPageProvider(swiotlb: g.swiotlb, device: g.device)
        let pool = try PagePool(g.txParameters(), provider: provider)
        let page = try pool.allocatePage()
        #expect(page.domain == .shared && g.swiotlb.contains(page.physicalAddress))
        #expect(page.owner == .pagePool && page.referenceCount == 1)
        let address = pool.dmaAddress(of: page)
        #expect(address == g.memory.unencryptedDMAAddress(of: page.physicalAddress))
        #expect(g.device.canAddress(address, size: 4096))
        // The CPU's bytes are the device's: the same memory, nothing to copy.
        let deviceView = try g.deviceBytes(at: address)
        #expect(deviceView == page.bytes)
        fillPattern(page.bytes, count: 4096, seed: 0x33)
        #expect(sameBytes(deviceView, page.bytes, count: 4096))
        var tlb = g.swiotlb.statistics
        #expect(tlb.zeroCopyRuns == 64 && tlb.used == 128 && tlb.liveMappings == 0 && tlb.bytesBouncedToDevice == 0)
        pool.recycleDirect(page)
        pool.destroy()
        tlb = g.swiotlb.statistics
        #expect(tlb.zeroCopyRuns == 0 && tlb.zeroCopyPages == 0 && tlb.used == 0 && tlb.bytesBouncedToDevice == 0)
        let s = provider.statistics
        #expect(s.pagesAllocated == 64 && s.releases == 64 && s.pagesFreed == 64 && s.bytesCopied == 0 && s.detaches == 1)
        #expect(g.swiotlb.invariantViolations().isEmpty)
        g.expectNoPoolPages()
    }

    @Test func theZeroCopyCapExhaustsThePoolAndItsPagesKeepWorking() throws {
        let g = try ProviderGuest()
        try g.swiotlb.setZeroCopyPercent(1)
        let provider = SWIOTLBPageProvider(swiotlb: g.swiotlb, device: g.device)
        let pool = try PagePool(g.txParameters(maxLength: 128), provider: provider)
        // Allocation is allowed while used * 100 < percent * nslabs: order-0 runs
        // take 2 slots, so used = 0, 2, ..., 40 of 4096 pass and 42 is refused.
        let nslabs = g.swiotlb.nslabs
        let allowed = (nslabs - 1) / 100 / 2 + 1
        #expect(allowed == 21)
        var pages: [Page] = []
        for _ in 0..<allowed { pages.append(try pool.allocatePage()) }
        #expect(pool.statistics.holdCount == allowed, "the bulk fill stopped at the cap")
        let error = #expect(throws: PagePoolError.self) { try pool.allocatePage() }
        guard case .providerExhausted("swiotlb-pages", 0, let reason)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(reason.contains("zero-copy cap reached") && reason.contains("zerocopy_tx_percent 1"))
        #expect(error?.description.contains("swiotlb-pages") == true)
        #expect(provider.lastFailure?.contains("zerocopy_tx_percent 1") == true)
        // The pool keeps working with the pages it has.
        for round in 0..<3 {
            for page in pages { pool.recycleDirect(page) }
            pages.removeAll()
            for _ in 0..<allowed { pages.append(try pool.allocatePage()) }
            #expect(pool.statistics.holdCount == allowed, "round \(round) needed no new run")
        }
        for page in pages { pool.put(page) }
        pool.destroy()
        #expect(g.swiotlb.statistics.used == 0 && g.swiotlb.statistics.zeroCopyRuns == 0)
        g.expectNoPoolPages()
    }

    @Test func aPageStillReferencedElsewhereKeepsItsDeviceUntilFreed() throws {
        let g = try ProviderGuest()
        try g.swiotlb.setZeroCopyPercent(50)
        let provider = SWIOTLBPageProvider(swiotlb: g.swiotlb, device: g.device)
        let pool = try PagePool(g.txParameters(order: 3, maxLength: 1024), provider: provider)
        let page = try pool.allocatePage()
        #expect(page.order == 3 && page.byteCount == 32 << 10)
        page.retain()
        pool.put(page)
        #expect(page.owner == .swiotlbZeroCopy && page.referenceCount == 1)
        #expect(g.swiotlb.zeroCopyDevice(of: page) === g.device, "the run's device pointer is back in place")
        #expect(provider.statistics.releasedWithOtherReferences == 1)
        // The other holder drops the last reference and frees the run.
        #expect(page.release())
        g.swiotlb.freeZeroCopyPages(page)
        pool.destroy()
        #expect(g.swiotlb.statistics.used == 0 && g.swiotlb.statistics.zeroCopyRuns == 0)
        g.expectNoPoolPages()
    }

    @Test func badParametersAreRefusedAtAttach() throws {
        let g = try ProviderGuest()
        let provider = SWIOTLBPageProvider(swiotlb: g.swiotlb, device: g.device)
        // The mode is off by default.
        let off = attachError(g.txParameters(), provider)
        guard case .providerFailed("swiotlb-pages", let whyOff)? = off else { Issue.record("got \(String(describing: off))"); return }
        #expect(whyOff.contains("zerocopy_tx_percent 0"))
        try g.swiotlb.setZeroCopyPercent(50)
        let order = attachError(g.txParameters(order: 7), provider)
        guard case .invalidParameter("order", let why)? = order else { Issue.record("got \(String(describing: order))"); return }
        #expect(why.contains("7") && why.contains("0...6") && why.contains("segment"))
        let narrow = try g.registry.add(name: "dma32", dmaMaskBits: 32)
        let unreachable = attachError(g.txParameters(device: narrow), SWIOTLBPageProvider(swiotlb: g.swiotlb, device: narrow))
        guard case .invalidParameter("device", let why32)? = unreachable else { Issue.record("got \(String(describing: unreachable))"); return }
        #expect(why32.contains("dma32") && why32.contains("cannot reach"))
        let gone = try g.registry.add(name: "gone0")
        gone.remove()
        let removed = attachError(g.txParameters(device: gone), SWIOTLBPageProvider(swiotlb: g.swiotlb, device: gone))
        guard case .invalidParameter("device", let whyGone)? = removed else { Issue.record("got \(String(describing: removed))"); return }
        #expect(whyGone.contains("gone0") && whyGone.contains("removed"))
        #expect(g.swiotlb.statistics.used == 0)
    }
}

// MARK: Pre-decrypted pages

@Suite struct DecryptedPageProviderTests {
    @Test func pagesAreSharedWithTheirOwnAddress() throws {
        let g = try ProviderGuest()
        let allocator = try DecryptedAllocator(general: g.general)
        let provider = DecryptedPageProvider(allocator: allocator)
        let pool = try PagePool(g.txParameters(order: 1, maxLength: 8192), provider: provider)
        let page = try pool.allocatePage()
        #expect(page.domain == .shared && !g.swiotlb.contains(page.physicalAddress))
        #expect(page.owner == .pagePool && page.order == 1)
        let address = pool.dmaAddress(of: page)
        #expect(address == g.memory.unencryptedDMAAddress(of: page.physicalAddress))
        #expect(g.device.canAddress(address, size: 8192))
        let deviceView = try g.deviceBytes(at: address)
        #expect(deviceView == page.bytes)
        fillPattern(page.bytes, count: 8192, seed: 0x77)
        #expect(sameBytes(deviceView, page.bytes, count: 8192))
        pool.recycleDirect(page)
        pool.destroy()
        #expect(allocator.statistics.livePages == 0)
        let s = provider.statistics
        #expect(s.pagesAllocated == 1 && s.releases == 1 && s.pagesFreed == 1 && s.bytesCopied == 0)
        #expect(s.syncs == 2, "one sync after allocation, one on recycle, both free")
        #expect(g.swiotlb.statistics.used == 0 && g.swiotlb.statistics.bytesBouncedToDevice == 0)
        g.expectNoPoolPages()
    }

    @Test func conversionIsPaidOncePerChunk() throws {
        let g = try ProviderGuest()
        let allocator = try DecryptedAllocator(general: g.general, configuration: .init(chunkOrder: 9, spareChunks: 1, perCPURuns: 0))
        let provider = DecryptedPageProvider(allocator: allocator)
        let pool = try PagePool(g.txParameters(order: 3, maxLength: 1500), provider: provider)
        let before = g.memory.conversionStatistics
        #expect(before.calls == 0)
        // A 2 MiB chunk holds 64 order-3 (32 KiB) pages: one conversion for all.
        var pages: [Page] = []
        for _ in 0..<64 { pages.append(try pool.allocatePage()) }
        var c = g.memory.conversionStatistics
        #expect(c.calls == 1 && c.pagesDecrypted == 512)
        #expect(allocator.statistics.conversions == 1 && allocator.statistics.chunksConverted == 1)
        pages.append(try pool.allocatePage())
        c = g.memory.conversionStatistics
        #expect(c.calls == 2 && c.pagesDecrypted == 1024, "the 65th page needed a second chunk")
        // Recycling converts nothing.
        for _ in 0..<5 {
            for page in pages { pool.recycleDirect(page) }
            pages.removeAll()
            for _ in 0..<65 { pages.append(try pool.allocatePage()) }
        }
        #expect(g.memory.conversionStatistics.calls == 2)
        for page in pages { pool.put(page) }
        pool.destroy()
        // Both chunks are free: one stays as a spare, one is converted back.
        let a = allocator.statistics
        #expect(a.livePages == 0 && a.spareChunks == 1 && a.chunksReleased == 1)
        #expect(g.memory.conversionStatistics.calls == 3 && g.memory.conversionStatistics.pagesEncrypted == 512)
        allocator.releaseSpareChunks()
        #expect(g.memory.conversionStatistics.calls == 4)
        #expect(g.general.statistics.livePages == 0)
        #expect(g.memory.sharedPageCount() == g.memory.swiotlbPages.count)
        g.expectNoPoolPages()
    }

    @Test func badParametersAreRefusedAtAttach() throws {
        let g = try ProviderGuest()
        let provider = DecryptedPageProvider(allocator: try DecryptedAllocator(general: g.general))
        let order = attachError(g.txParameters(order: 4, maxLength: 4096), provider)
        guard case .invalidParameter("order", let why)? = order else { Issue.record("got \(String(describing: order))"); return }
        #expect(why.contains("4") && why.contains("0...3") && why.contains("decrypted-pages"))
        #expect(order?.description.contains("invalid page_pool parameter order") == true)
        let narrow = try g.registry.add(name: "dma32", dmaMaskBits: 32)
        let unreachable = attachError(g.txParameters(device: narrow), provider)
        guard case .invalidParameter("device", let why32)? = unreachable else { Issue.record("got \(String(describing: unreachable))"); return }
        #expect(why32.contains("dma32") && why32.contains("cannot reach") && why32.contains("shared memory"))
        let gone = try g.registry.add(name: "gone0")
        gone.remove()
        let removed = attachError(g.txParameters(device: gone), provider)
        guard case .invalidParameter("device", let whyGone)? = removed else { Issue.record("got \(String(describing: removed))"); return }
        #expect(whyGone.contains("gone0") && whyGone.contains("removed"))
        #expect(provider.statistics.attaches == 0 && g.memory.conversionStatistics.calls == 0)
    }
}

// MARK: All three

@Suite struct PagePoolProviderComparisonTests {
    /// Recycling with `PP_FLAG_DMA_SYNC_DEV` copies `max_len` bytes per recycle
    /// for system pages (into the bounce slot) and nothing for the others.
    @Test(arguments: ProviderKind.allCases)
    func recycleWithSyncForDeviceCopiesOnlyForSystemPages(_ kind: ProviderKind) throws {
        let g = try ProviderGuest()
        let provider = try kind.make(g)
        let maxLength = 2048
        let pool = try PagePool(g.txParameters(maxLength: maxLength), provider: provider)
        let page = try pool.allocatePage()
        pool.recycleDirect(page)
        let tlbBefore = g.swiotlb.statistics.bytesBouncedToDevice
        let dmaBefore = g.dma.statistics.bytesCopied
        let before = providerStatistics(provider)
        let recycles = 100
        for _ in 0..<recycles {
            let page = try pool.allocatePage()
            page.bytes.storeBytes(of: 0xab, as: UInt8.self)      // the CPU writes the page
            pool.recycleDirect(page)
        }
        let after = providerStatistics(provider)
        let copied = g.swiotlb.statistics.bytesBouncedToDevice - tlbBefore
        let expected = kind == .system ? recycles * maxLength : 0
        #expect(after.syncs - before.syncs == recycles)
        #expect(after.bytesCopiedAtSync - before.bytesCopiedAtSync == expected)
        #expect(copied == expected, "swiotlb copied \(copied) bytes for \(recycles) recycles")
        #expect(g.dma.statistics.bytesCopied - dmaBefore == expected)
        pool.destroy()
        #expect(providerStatistics(provider).outstandingPages == 0)
        #expect(g.swiotlb.statistics.used == 0)
        g.expectNoPoolPages()
    }

    /// Every provider works behind fragments too, and destroy leaves nothing.
    @Test(arguments: ProviderKind.allCases)
    func fragmentsAndTeardownLeaveNothingBehind(_ kind: ProviderKind) throws {
        let g = try ProviderGuest()
        let provider = try kind.make(g)
        let pool = try PagePool(g.txParameters(order: 2, maxLength: 1024), provider: provider)
        var fragments: [PagePoolFragment] = []
        for _ in 0..<40 { fragments.append(try pool.allocateFragment(size: 1500)) }
        for fragment in fragments { pool.put(fragment) }
        pool.destroy()
        #expect(pool.isShutdownComplete && pool.inflight == 0)
        let s = providerStatistics(provider)
        #expect(s.pagesAllocated > 0 && s.outstandingPages == 0 && s.detaches == 1)
        #expect(g.swiotlb.statistics.used == 0)
        if kind == .system { #expect(g.general.statistics.livePages == 0) }
        g.expectNoPoolPages()
    }
}

/// `page_pool_scrub`: destroy unmaps the pages still in flight at once.
@Suite struct PagePoolScrubTests {
    @Test func destroyUnmapsInflightSystemPagesAndTheyComeHomeUnmapped() throws {
        let g = try ProviderGuest()
        let provider = SystemPageProvider(general: g.general, dma: g.dma, device: g.device)
        var parameters = g.txParameters()
        parameters.releaseRetryInterval = .milliseconds(1)
        let pool = try PagePool(parameters, provider: provider)
        let held = [try pool.allocatePage(), try pool.allocatePage()]
        #expect(g.swiotlb.statistics.used == 128, "64 pages of the bulk, 2 slots each")
        pool.destroy()
        #expect(!pool.isShutdownComplete)
        #expect(g.swiotlb.statistics.used == 0, "the 62 idle pages were released, the 2 in flight unmapped")
        #expect(provider.statistics.unmappedAtDestroy == 2)
        for page in held { TestThread.run { pool.put(page) } }
        #expect(pool.waitForShutdown(timeout: .seconds(5)))
        let s = provider.statistics
        #expect(s.dmaFailures == 0, "no page was unmapped twice: \(s)")
        #expect(s.outstandingPages == 0 && s.pagesFreed == 64)
        #expect(g.general.statistics.livePages == 0)
    }

    @Test func theScrubDoesNotCopyBackIntoPagesItHoldsNoReferenceTo() throws {
        let g = try ProviderGuest()
        let provider = SystemPageProvider(general: g.general, dma: g.dma, device: g.device)
        let pool = try PagePool(.init(flags: .dmaMap, dmaDirection: .fromDevice, device: g.device, name: "rx",
                                      releaseRetryInterval: .milliseconds(1), logger: quietLogger),
                                provider: provider)
        let page = try pool.allocatePage()
        let copiedBefore = provider.statistics.bytesCopiedAtUnmap
        pool.destroy()
        #expect(provider.statistics.bytesCopiedAtUnmap == copiedBefore + 63 * 4096, "the idle pages' release copies back; the scrub does not")
        pool.put(page)
        #expect(pool.waitForShutdown(timeout: .seconds(5)))
        #expect(provider.statistics.bytesCopiedAtUnmap == copiedBefore + 63 * 4096)
        #expect(g.swiotlb.statistics.used == 0 && provider.statistics.dmaFailures == 0)
    }
}
