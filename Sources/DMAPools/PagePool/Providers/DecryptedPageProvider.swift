import Synchronization

/// Pre-decrypted pages: shared runs of order 0...3 from a `DecryptedAllocator`,
/// the general pre-decrypted allocator the review asked for.
///
/// The allocator converts private memory to shared in large chunks (default
/// 2 MiB), one modelled hypercall per chunk (`GuestMemory.convert`, visible in
/// `memory.conversionStatistics` and the allocator's `conversions`), never per
/// page. A run is shared memory with its own bus address
/// (`phys_to_dma_unencrypted`): the CPU writes straight into device-visible
/// memory and nothing is bounced at map, sync or unmap time. Unlike
/// `SWIOTLBPageProvider` it takes nothing from swiotlb, so ordinary bounce
/// mappings keep the whole bounce pool.
///
/// ## Contract
/// Pages are handed out as `DecryptedAllocator.allocate` makes them: owned by
/// `.decryptedAllocator` (`pageOwner`), shared, reference count 1, `dmaAddress`
/// set on every page of the run. The pool restores `.decryptedAllocator`
/// before `releasePage`, which drops the pool's reference and frees the run to
/// the allocator when it was the last; when someone else still holds the page
/// (`released_refcnt`), that holder calls `DecryptedAllocator.free` after its own
/// `Page.release()`. Chunks whose runs are all free stay shared as spares (up to
/// the allocator's `spareChunks`) or are converted back, one hypercall each.
///
/// The device is the pool's (`PagePoolParameters.device`); a provider can serve
/// pools of several devices.
///
/// Thread-safe: `releasePage` may run on any thread; the allocator has its own
/// lock and the counters are per-CPU.
public final class DecryptedPageProvider: PagePoolMemoryProvider {
    public let name: String
    /// The decrypted allocator's owner state, which `free` expects.
    public let pageOwner: PageOwner = .decryptedAllocator
    /// Where the pages come from.
    public let allocator: DecryptedAllocator

    let accounting: _ProviderAccounting

    /// A provider of shared runs from `allocator`.
    public init(allocator: DecryptedAllocator, name: String = "decrypted-pages") {
        self.allocator = allocator
        self.name = name
        self.accounting = _ProviderAccounting(label: "dma-pools.page-pool.\(name)")
    }

    /// What the provider did so far.
    public var statistics: PagePoolProviderStatistics { accounting.statistics }

    /// The text of the last allocation failure, if any.
    public var lastFailure: String? { accounting.lastFailure }

    // MARK: mp_ops

    /// `mp_ops->init`: the pool's order is one the allocator hands out (0...3),
    /// and the pool's device, if it has one, is present and its mask reaches the
    /// shared bus addresses of the whole private range (chunks may be carved
    /// anywhere in it). Every `DMADirection` is accepted: the pages are shared.
    public func attach(to pool: PagePool) throws(PagePoolError) {
        try _ProviderAttachChecks.order(
            pool, supported: DecryptedAllocator.orders, provider: name,
            why: "DecryptedAllocator carves runs of at most the socket frag order, \(PageGeometry.bytes(order: DecryptedAllocator.orders.upperBound)) bytes")
        if let device = pool.device {
            let memory = allocator.memory
            let low = memory.page(at: memory.privatePages.lowerBound).physicalAddress
            // The private range is not empty (the allocator carves from it): its
            // last page and that page's last byte are inside guest memory.
            let high = memory.page(at: memory.privatePages.upperBound &- 1).physicalAddress + (PageGeometry.size &- 1)
            try _ProviderAttachChecks.reachable(
                device, first: memory.unencryptedDMAAddress(of: low), last: memory.unencryptedDMAAddress(of: high),
                what: "shared memory converted from the private range", provider: name)
        }
        accounting.count(.attaches)
    }

    /// `mp_ops->destroy`.
    public func detach(from pool: PagePool) {
        accounting.count(.detaches)
    }

    /// Takes up to `pages.count` shared runs of `order` from the allocator (which
    /// converts a new chunk, one hypercall, when it has no free run). Stops at the
    /// first failure: no chunk left is `providerExhausted`, a failed conversion
    /// `providerFailed`; thrown only when no page was filled.
    public func allocatePages(for pool: PagePool, order: Int,
                              into pages: UnsafeMutableBufferPointer<Page>) throws(PagePoolError) -> Int {
        try accounting.fill(pages) { () throws(PagePoolError) -> Page in
            do throws(AllocatorError) {
                return try allocator.allocate(order: order)
            } catch {
                throw .from(error, provider: name, order: order)
            }
        }
    }

    /// Drops the pool's reference; the last one frees the run to the allocator.
    /// Nothing to unmap: the address is the run's own.
    public func releasePage(_ page: Page, from pool: PagePool) {
        accounting.count(.releases)
        if page.release() {
            allocator.free(page)
            accounting.count(.pagesFreed)
        } else {
            accounting.count(.releasedWithOtherReferences)
        }
    }

    /// Nothing to copy: the device reads the shared run itself. Counted, so the
    /// pool's calls can be compared with the other providers'.
    public func syncForDevice(_ page: Page, offset: Int, length: Int, for pool: PagePool) {
        accounting.count(.syncs)
    }
}
