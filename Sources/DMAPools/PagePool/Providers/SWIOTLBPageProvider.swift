import Synchronization

/// swiotlb pages: pool pages that are themselves bounce memory, taken out of
/// the swiotlb pool as naturally aligned zero-copy runs (the seed patch's
/// allocation mode, `swiotlb_alloc_pages`), behind page_pool as the review
/// proposed.
///
/// A run is shared from boot, so its DMA address is its own bus address
/// (`phys_to_dma_unencrypted`): the CPU writes straight into device-visible
/// memory, nothing is bounced at map, sync or unmap time, and no conversion is
/// paid. The price is swiotlb capacity: every pooled page holds
/// `PAGE_SIZE << order` bytes of the bounce pool, and allocation is refused
/// once `zerocopy_tx_percent` of the pool's slots are in use (the cap that
/// leaves slots for ordinary bounce mappings). A pool over this provider that
/// reaches the cap, or a full swiotlb, gets `providerExhausted` naming the cap
/// or the pool's fill; the pages it already has keep recycling.
///
/// ## Contract
/// Pages are handed out as `SWIOTLB.allocateZeroCopyPages` makes them: owned
/// by `.swiotlbZeroCopy` (`pageOwner`), reference count 1, `dmaAddress` their
/// own bus address, and the head's `ownerObject` a retained reference to the
/// bounce device. The pool overwrites `ownerObject` with itself (`page->pp`)
/// while it holds the page and clears it on the way out; the provider keeps the
/// device alive and puts the device pointer back before the run is freed, so
/// `freeZeroCopyPages` drops the reference the allocation took. Release drops
/// the pool's page reference; the run goes back to the slots when it was the
/// last (`freeZeroCopyPages` needs a count of 0). When someone else still holds
/// the page (`released_refcnt`), that holder calls `freeZeroCopyPages` after its
/// own `Page.release()`.
///
/// Pool pages must be used through the address the pool stores
/// (`page_pool_get_dma_addr`), not mapped again: while the pool holds a run its
/// owner is `.pagePool`, and `DMAAPI` recognises zero-copy runs by the
/// `.swiotlbZeroCopy` owner, so a second `dma_map_page` would bounce it.
///
/// Thread-safe: `releasePage` and `syncForDevice` may run on any thread;
/// swiotlb's areas have their own locks and the counters are per-CPU.
public final class SWIOTLBPageProvider: PagePoolMemoryProvider {
    public let name: String
    /// swiotlb's zero-copy owner state, which `freeZeroCopyPages` expects.
    public let pageOwner: PageOwner = .swiotlbZeroCopy
    /// The bounce pool the runs come from.
    public let swiotlb: SWIOTLB
    /// The bounce device of every run (and the device the pool maps for).
    public let device: Device

    let accounting: _ProviderAccounting

    /// A provider of zero-copy runs of `swiotlb` for `device`. Enable the mode
    /// first with `SWIOTLB.setZeroCopyPercent`.
    public init(swiotlb: SWIOTLB, device: Device, name: String = "swiotlb-pages") {
        self.swiotlb = swiotlb
        self.device = device
        self.name = name
        self.accounting = _ProviderAccounting(label: "dma-pools.page-pool.\(name)")
    }

    /// What the provider did so far.
    public var statistics: PagePoolProviderStatistics { accounting.statistics }

    /// The text of the last allocation failure, if any (for instance the cap).
    public var lastFailure: String? { accounting.lastFailure }

    // MARK: mp_ops

    /// `mp_ops->init`: the pool's device is this provider's, it is present and
    /// its mask reaches the whole swiotlb pool (a run may come from any area),
    /// the pool's order fits one segment (0...6), and the zero-copy mode is on.
    /// Every `DMADirection` is accepted: the pages are shared memory either way.
    public func attach(to pool: PagePool) throws(PagePoolError) {
        try _ProviderAttachChecks.present(device, provider: name)
        try _ProviderAttachChecks.sameDevice(pool, device, provider: name)
        try _ProviderAttachChecks.order(
            pool, supported: 0...SWIOTLB.maxZeroCopyOrder, provider: name,
            why: "a zero-copy run is at most one swiotlb segment, \(SWIOTLB.segmentBytes) bytes")
        let first = swiotlb.dmaAddress(of: swiotlb.start)
        // nslabs slots of 2 KiB: the pool's size, inside guest memory.
        try _ProviderAttachChecks.reachable(
            device, first: first, last: first + (swiotlb.nslabs &<< SWIOTLB.slotShift &- 1),
            what: "the swiotlb pool the zero-copy runs come from", provider: name)
        guard swiotlb.zeroCopyPercent > 0 else {
            throw .providerFailed(provider: name, reason: "the swiotlb zero-copy allocation mode is disabled (zerocopy_tx_percent 0); enable it with SWIOTLB.setZeroCopyPercent(1...90)")
        }
        accounting.count(.attaches)
    }

    /// `mp_ops->destroy`.
    public func detach(from pool: PagePool) {
        accounting.count(.detaches)
    }

    /// Takes up to `pages.count` zero-copy runs of `order` out of swiotlb.
    /// Stops at the first refusal: the cap (`zerocopy_tx_percent`) or a pool with
    /// no free aligned run is `providerExhausted` with swiotlb's text; thrown only
    /// when no page was filled.
    public func allocatePages(for pool: PagePool, order: Int,
                              into pages: UnsafeMutableBufferPointer<Page>) throws(PagePoolError) -> Int {
        try accounting.fill(pages) { () throws(PagePoolError) -> Page in
            do throws(DMAError) {
                return try swiotlb.allocateZeroCopyPages(order: order, device: device)
            } catch {
                throw .from(error, provider: name, order: order)
            }
        }
    }

    /// Drops the pool's reference; the last one returns the run to the slots.
    /// Nothing to unmap: the address was the run's own.
    public func releasePage(_ page: Page, from pool: PagePool) {
        accounting.count(.releases)
        // The pool cleared `page->pp`; the device reference allocateZeroCopyPages
        // retained is still held, so put back the same pointer (no ARC here).
        page.descriptor.pointee.ownerObject = Unmanaged.passUnretained(device).toOpaque()
        if page.release() {
            swiotlb.freeZeroCopyPages(page)
            accounting.count(.pagesFreed)
        } else {
            accounting.count(.releasedWithOtherReferences)
        }
    }

    /// Nothing to copy: the device reads the run itself (the patch's
    /// `swiotlb_sync_single_for_device` returns early for a zero-copy address).
    /// Counted, so the pool's calls can be compared with the other providers'.
    public func syncForDevice(_ page: Page, offset: Int, length: Int, for pool: PagePool) {
        accounting.count(.syncs)
    }
}
