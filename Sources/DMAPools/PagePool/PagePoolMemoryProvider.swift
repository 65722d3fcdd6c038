import Synchronization

/// Where a page_pool's pages come from and go back to: the kernel's
/// `struct memory_provider_ops` (`alloc_netmems`, `release_netmem`, `init`,
/// `destroy`), generalised so that the page allocator itself is a provider too.
///
/// A provider owns mapping: the pages it hands out carry their DMA address in
/// `Page.dmaAddress` (when the pool maps, `PP_FLAG_DMA_MAP`), and it unmaps them
/// when they come back. The pool takes ownership of each page it receives (owner
/// `.pagePool`, the pool signature, `ownerObject`), and before handing a page
/// back it restores owner `pageOwner` and clears the pool's fields, so the
/// provider finds the page as it gave it out.
///
/// The pool calls `allocatePages` and `attach`/`detach` from its owning context
/// only; `releasePage` and `syncForDevice` may come from any thread.
public protocol PagePoolMemoryProvider: AnyObject, Sendable {
    /// A name for diagnostics.
    var name: String { get }

    /// The owner state the provider's pages carry while the provider holds them;
    /// the pool restores it before `releasePage`.
    var pageOwner: PageOwner { get }

    /// `mp_ops->init`: a pool starts using the provider. Throwing fails pool creation.
    func attach(to pool: PagePool) throws(PagePoolError)

    /// `mp_ops->alloc_netmems`: fills the front of `pages` with order-`order`
    /// pages (compound heads), each with reference count 1 and, if
    /// `pool.mapsDMA`, its DMA address stored. Returns how many it filled; 0
    /// only by throwing. Bulk is a hint: returning fewer than asked is fine.
    func allocatePages(for pool: PagePool, order: Int, into pages: UnsafeMutableBufferPointer<Page>) throws(PagePoolError) -> Int

    /// `mp_ops->release_netmem`: takes back a page the pool no longer holds
    /// (unmapping it). The reference count may be above 1 if someone else still
    /// holds the page (the `released_refcnt` case): the provider then drops
    /// only the pool's reference.
    func releasePage(_ page: Page, from pool: PagePool)

    /// `dma_sync_single_for_device(dev, dma + offset, length, dir)` for a pool page
    /// being recycled. A provider whose pages are bounced copies here.
    func syncForDevice(_ page: Page, offset: Int, length: Int, for pool: PagePool)

    /// `mp_ops->destroy`: the pool is gone (every page it held has been released).
    func detach(from pool: PagePool)

    /// `__page_pool_unmap_netmem_dma` from `page_pool_scrub`: a destroyed pool
    /// unmaps at once every page it mapped that is still in flight. `address`
    /// is the page's stored DMA address; the pool holds no reference to the
    /// page, which may come home (and be freed) at any moment, so unmap by the
    /// address without touching the page's bytes (`DMA_ATTR_SKIP_CPU_SYNC`).
    /// When the page comes home, `releasePage` finds its `dmaAddress` cleared
    /// (`.mappingError`) and must not unmap it again. Providers whose pages
    /// carry their own address (nothing to unmap) keep the default, which does
    /// nothing.
    func unmapInflightPage(_ page: Page, address: DMAAddress, for pool: PagePool)

    /// Whether `unmapInflightPage` does anything. Only then does a mapping pool
    /// keep the record of its mapped pages (`pool->dma_mapped`) that the scrub
    /// walks: the record costs a locked insert and remove per page on the slow
    /// paths, which a provider with nothing to unmap should not pay. Default false.
    var unmapsInflightPages: Bool { get }
}

extension PagePoolMemoryProvider {
    public func attach(to pool: PagePool) throws(PagePoolError) {}
    public func syncForDevice(_ page: Page, offset: Int, length: Int, for pool: PagePool) {}
    public func detach(from pool: PagePool) {}
    public func unmapInflightPage(_ page: Page, address: DMAAddress, for pool: PagePool) {}
    public var unmapsInflightPages: Bool { false }
}
