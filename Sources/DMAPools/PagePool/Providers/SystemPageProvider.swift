import Synchronization

/// System pages: the kernel's default page_pool backing. Private pages from the
/// general allocator (`alloc_pages`), DMA-mapped when they enter the pool
/// (`page_pool_dma_map`), unmapped and freed when they leave it.
///
/// ## What this does NOT do in a confidential VM
/// Pre-mapping private pages does **not** remove the bounce copy. Every device
/// of a confidential VM must bounce (`is_swiotlb_force_bounce`), so
/// `dma_map_page` of a private page allocates a swiotlb bounce slot, copies the
/// page into it, and returns the *slot's* bus address. Consequently, while a
/// page sits in the pool:
/// - it holds its bounce slot (`PAGE_SIZE << order` bytes of swiotlb per pooled
///   page: a pool of 1024 order-0 pages pins 4 MiB of a 64 MiB swiotlb, and a
///   swiotlb that is full fails the pool's slow path);
/// - the CPU writes into the private page, which no device can read; the bytes
///   reach the device only when `dma_sync_single_for_device` copies them into
///   the slot: with `PP_FLAG_DMA_SYNC_DEV` the pool pays `max_len` bytes of
///   `memcpy` on every recycle (counted in `bytesCopiedAtSync` here and in
///   swiotlb's `bytesBouncedToDevice`), and a transmit path must sync what it
///   wrote before the device reads it;
/// - for `DMA_FROM_DEVICE` / `DMA_BIDIRECTIONAL` the unmap at release copies the
///   whole page back.
/// The model shows that cost instead of hiding it: only pages that are
/// themselves shared memory (`SWIOTLBPageProvider`, `DecryptedPageProvider`)
/// remove the copy.
///
/// ## Contract
/// Pages are handed out owned by `.generalAllocator` (`pageOwner`), reference
/// count 1, with `dmaAddress` = the bounce slot's bus address when the pool maps
/// (`PP_FLAG_DMA_MAP`), else `.mappingError`. The pool restores
/// `.generalAllocator` before `releasePage`, which unmaps (the slot goes back to
/// swiotlb), clears the stored address and drops the pool's reference; when that
/// was the last, the run goes back to jemalloc. When someone else still holds
/// the page (`released_refcnt`), that holder frees it with
/// `GeneralAllocator.freePages`.
///
/// Thread-safe: `releasePage` and `syncForDevice` may run on any thread (ring
/// consumers, teardown, remote puts). jemalloc (tcache off), the DMA API and
/// swiotlb's areas are thread-safe; the counters are per-CPU and relaxed. The
/// per-page paths allocate nothing and take no lock of their own.
public final class SystemPageProvider: PagePoolMemoryProvider {
    public let name: String
    /// The general allocator's owner state, which `freePages` expects.
    public let pageOwner: PageOwner = .generalAllocator
    /// Where the pages come from.
    public let general: GeneralAllocator
    /// How they are mapped.
    public let dma: DMAAPI
    /// The device every page is mapped for.
    public let device: Device

    let accounting: _ProviderAccounting

    /// A provider of private pages from `general`, mapped through `dma` for `device`.
    /// - Precondition: `general` and `dma` model the same guest memory.
    public init(general: GeneralAllocator, dma: DMAAPI, device: Device, name: String = "system-pages") {
        precondition(general.memory === dma.memory, "SystemPageProvider: the general allocator and the DMA API belong to different guests")
        self.general = general
        self.dma = dma
        self.device = device
        self.name = name
        self.accounting = _ProviderAccounting(label: "dma-pools.page-pool.\(name)")
    }

    /// What the provider did so far.
    public var statistics: PagePoolProviderStatistics { accounting.statistics }

    /// The text of the last allocation or DMA failure, if any.
    public var lastFailure: String? { accounting.lastFailure }

    /// The largest pool order a mapping pool may use with `device`: each page is
    /// mapped whole, in one bounce mapping of at most `swiotlb_max_mapping_size`
    /// (256 KiB less the device's `min_align_mask`), so order 6 at most.
    public var maximumMappedOrder: Int {
        if device.iommu != nil { return min(PageGeometry.maxOrder, IOVAAllocator.maxOrder) }
        let maxBytes = dma.swiotlb.maxMappingSize(for: device)
        var order = -1
        // order < maxOrder (9) inside the loop: the increments cannot overflow.
        while order < PageGeometry.maxOrder && PageGeometry.bytes(order: order &+ 1) <= maxBytes { order &+= 1 }
        return order
    }

    // MARK: mp_ops

    /// `mp_ops->init`. For a mapping pool: the pool's device is this provider's,
    /// it is present, it bounces (private pages have no device-visible address
    /// of their own, so a device that does not bounce cannot map them at all), its
    /// mask reaches the swiotlb pool where the bounce slots are, and the pool's
    /// page fits one bounce mapping. Every `DMADirection` is accepted: the page is
    /// mapped in the pool's `dma_dir` (its rules are `PagePoolParameters.validate`'s).
    public func attach(to pool: PagePool) throws(PagePoolError) {
        try _ProviderAttachChecks.sameDevice(pool, device, provider: name)
        if pool.mapsDMA, device.iommu != nil {
            // Behind an IOMMU without encryption: each page is mapped whole
            // through the IOMMU once, when it enters the pool.
            try _ProviderAttachChecks.present(device, provider: name)
            try _ProviderAttachChecks.order(pool, supported: 0...maximumMappedOrder, provider: name,
                                            why: "each page is mapped whole in one IOVA range of at most \(PageGeometry.size << IOVAAllocator.maxOrder) bytes")
        } else if pool.mapsDMA {
            try _ProviderAttachChecks.present(device, provider: name)
            guard device.mustBounce else {
                throw .invalidParameter("device", "\(device.name) does not bounce: memory provider \(name) hands out private (encrypted) pages, which only a bounce mapping makes reachable; use DecryptedPageProvider for a device that maps shared memory directly")
            }
            let swiotlb = dma.swiotlb
            let first = swiotlb.dmaAddress(of: swiotlb.start)
            // nslabs slots of 2 KiB: the pool's size, inside guest memory.
            try _ProviderAttachChecks.reachable(
                device, first: first, last: first + (swiotlb.nslabs &<< SWIOTLB.slotShift &- 1),
                what: "the swiotlb bounce pool (every mapping of a private page bounces there)", provider: name)
            let maxOrder = maximumMappedOrder
            guard maxOrder >= 0 else {
                throw .invalidParameter("device", "\(device.name)'s min_align_mask leaves swiotlb mappings of \(swiotlb.maxMappingSize(for: device)) bytes, less than a page")
            }
            try _ProviderAttachChecks.order(
                pool, supported: 0...maxOrder, provider: name,
                why: "each page is mapped whole through one swiotlb bounce mapping of at most \(swiotlb.maxMappingSize(for: device)) bytes for \(device.name)")
        } else {
            try _ProviderAttachChecks.order(pool, supported: GeneralAllocator.orders, provider: name,
                                            why: "the general allocator's orders")
        }
        accounting.count(.attaches)
    }

    /// `mp_ops->destroy`.
    public func detach(from pool: PagePool) {
        accounting.count(.detaches)
    }

    /// Allocates up to `pages.count` runs of `order` from jemalloc and maps each
    /// whole (`dma_map_page(dev, page, 0, PAGE_SIZE << order, dma_dir)`), which in
    /// a confidential VM bounce-copies it into a slot the page keeps while pooled.
    /// Stops at the first failure: a full swiotlb or private range is
    /// `providerExhausted` (with the allocator's or swiotlb's text), other errors
    /// `providerFailed`; thrown only when no page was filled.
    public func allocatePages(for pool: PagePool, order: Int,
                              into pages: UnsafeMutableBufferPointer<Page>) throws(PagePoolError) -> Int {
        let maps = pool.mapsDMA
        let direction = pool.dmaDirection
        let bytes = PageGeometry.bytes(order: order)
        let filled = try accounting.fill(pages) { () throws(PagePoolError) -> Page in
            let page: Page
            do throws(AllocatorError) {
                page = try general.allocatePages(order: order)
            } catch {
                throw .from(error, provider: name, order: order)
            }
            guard maps else {
                page.dmaAddress = .mappingError
                return page
            }
            do throws(DMAError) {
                // A sender's refill may race the device's removal: refused
                // before it reaches the device, or finished before it goes.
                page.dmaAddress = try device.admittingAllocation { () throws(DMAError) in
                    try dma.mapPage(page, offset: 0, size: bytes, direction: direction, device: device)
                }
            } catch {
                general.freePages(page)
                throw .from(error, provider: name, order: order)
            }
            return page
        }
        // dma_map bounces for every direction; at most 64 pages of <= 2 MiB.
        // Behind an IOMMU nothing is copied.
        if maps && device.mustBounce { accounting.count(.bytesCopiedAtMap, filled &* bytes) }
        return filled
    }

    /// Unmaps (`dma_unmap_page`: the bounce slot goes back to swiotlb, after a
    /// copy back for `DMA_FROM_DEVICE` / `DMA_BIDIRECTIONAL`), then drops the
    /// pool's reference and frees the run to jemalloc if it was the last.
    public func releasePage(_ page: Page, from pool: PagePool) {
        accounting.count(.releases)
        let address = page.dmaAddress
        if address != .mappingError {
            unlessDomainGone {
                let direction = pool.dmaDirection
                let bytes = page.byteCount
                do throws(DMAError) {
                    try dma.unmapPage(address, size: bytes, direction: direction, device: device)
                    if direction.copiesFromDevice && device.mustBounce { accounting.count(.bytesCopiedAtUnmap, bytes) }
                } catch {
                    // The slot stays allocated (as a driver bug leaks it in the kernel);
                    // the page itself is still freed below.
                    accounting.noteDMAFailure("dma_unmap_page of \(page) at \(address)", error, provider: name)
                }
            }
            page.dmaAddress = .mappingError
        }
        if page.release() {
            general.freePages(page)
            accounting.count(.pagesFreed)
        } else {
            accounting.count(.releasedWithOtherReferences)
        }
    }

    /// `page_pool_scrub`: unmaps a page still in flight at destroy, by its
    /// address and without a copy back, so its bounce slot goes back to
    /// swiotlb now rather than when the page comes home.
    /// Its pages hold bounce slots until unmapped: destroy must unmap them.
    public var unmapsInflightPages: Bool { true }

    public func unmapInflightPage(_ page: Page, address: DMAAddress, for pool: PagePool) {
        guard address != .mappingError else { return }
        unlessDomainGone {
            do throws(DMAError) {
                try dma.unmapPage(address, size: PageGeometry.bytes(order: pool.parameters.order),
                                  direction: pool.dmaDirection, device: device, skipCPUSync: true)
                accounting.count(.unmappedAtDestroy)
            } catch {
                accounting.noteDMAFailure("dma_unmap_page at destroy of \(page) at \(address)", error, provider: name)
            }
        }
    }

    /// `dma_sync_single_for_device(dev, dma + offset, length, dma_dir)`: copies
    /// `length` bytes of the private page into its bounce slot (for
    /// `DMA_TO_DEVICE` / `DMA_BIDIRECTIONAL`). This is the copy a pool of system
    /// pages cannot avoid in a confidential VM.
    public func syncForDevice(_ page: Page, offset: Int, length: Int, for pool: PagePool) {
        accounting.count(.syncs)
        let address = page.dmaAddress
        guard address != .mappingError, length > 0 else { return }
        let direction = pool.dmaDirection
        do {
            try dma.syncSingleForDevice(address + offset, size: length, direction: direction, device: device)
        } catch {
            accounting.noteDMAFailure("dma_sync_single_for_device of \(length) bytes at \(address) + \(offset)", error, provider: name)
            return
        }
        if direction.copiesToDevice && device.mustBounce { accounting.count(.bytesCopiedAtSync, length) }
    }

    /// Runs `unmap` unless the device was removed from behind an IOMMU,
    /// taking its domain and every mapping in it (the kernel's pool unmaps
    /// nothing then: its device is unbound). Behind an IOMMU the check and
    /// the unmap are one `Device.whilePresent` section, so a removal cannot
    /// fall between them; without one, the unmap runs (a bounce slot is
    /// released, or the failure on a removed device is recorded).
    private func unlessDomainGone(_ unmap: () -> Void) {
        if device.iommu == nil { unmap() } else { _ = device.whilePresent(unmap) }
    }
}
