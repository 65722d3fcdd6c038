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
}

extension PagePoolMemoryProvider {
    public func attach(to pool: PagePool) throws(PagePoolError) {}
    public func syncForDevice(_ page: Page, offset: Int, length: Int, for pool: PagePool) {}
    public func detach(from pool: PagePool) {}
    public func unmapInflightPage(_ page: Page, address: DMAAddress, for pool: PagePool) {}
}

/// A provider that needs no other subsystem: it hands out pages of a range of
/// guest memory with a free list per order, and treats them as DMA-able by
/// giving each its shared-bit DMA address (no conversion is modelled). For
/// tests, benchmarks and `PagePoolMicrobench`; the real providers (system pages,
/// swiotlb pages, pre-decrypted pages) build on swiotlb and the allocator.
///
/// It counts what it does so tests can check the pool's calls.
public final class PagePoolTestProvider: PagePoolMemoryProvider {
    public let name: String
    public let pageOwner: PageOwner = .free
    public let memory: GuestMemory
    /// The page indices it carves from.
    public let pages: Range<Int>

    private struct State {
        var next: Int
        var free: [[Int]] = Array(repeating: [], count: PageGeometry.maxPageOrder + 1)
        var outstanding = 0
        var allocateCalls = 0
        var pagesAllocated = 0
        var pagesReleased = 0
        var attached = 0
        var detached = 0
        var failNextAllocations = 0
        var failNextMappings = 0
        var pfmemallocNext = 0
    }
    private let state: Lock<State>
    private let syncs = Atomic<Int>(0)
    private let lastSyncLength = Atomic<Int>(-1)
    private let lastSyncOffset = Atomic<Int>(-1)

    /// A provider over `pages` of `memory` (default: the first 16 MiB of private pages).
    public init(memory: GuestMemory, pages: Range<Int>? = nil, name: String = "test-pages") {
        self.memory = memory
        let range = pages ?? memory.privatePages.lowerBound..<min(memory.privatePages.upperBound, memory.privatePages.lowerBound + 4096)
        precondition(range.lowerBound >= 0 && range.upperBound <= memory.pageCount, "page range \(range) outside guest memory")
        self.pages = range
        self.name = name
        self.state = Lock(State(next: range.lowerBound))
    }

    public func attach(to pool: PagePool) throws(PagePoolError) {
        state.withLock { $0.attached += 1 }
    }

    public func detach(from pool: PagePool) {
        state.withLock { $0.detached += 1 }
    }

    public func allocatePages(for pool: PagePool, order: Int, into out: UnsafeMutableBufferPointer<Page>) throws(PagePoolError) -> Int {
        let count = 1 << order
        let maps = pool.mapsDMA
        var mappingFailures = 0
        var pfmemalloc = 0
        let filled: Int = state.withLock { s in
            s.allocateCalls += 1
            if s.failNextAllocations > 0 {
                s.failNextAllocations -= 1
                return 0
            }
            var n = 0
            var unmapped: [Int] = []
            // As `alloc_pages_bulk` then `page_pool_dma_map` per page: a bulk of
            // `out.count` pages, less those whose mapping fails.
            var attempts = 0
            while attempts < out.count {
                attempts += 1
                let index: Int
                if let reused = s.free[order].popLast() {
                    index = reused
                } else {
                    let aligned = (s.next + count - 1) & ~(count - 1)
                    guard aligned + count <= pages.upperBound else { break }
                    index = aligned
                    s.next = aligned + count
                }
                if maps && s.failNextMappings > 0 {
                    // `page_pool_dma_map` failed: the page goes back (`put_page`)
                    // and the bulk carries on with the next one.
                    s.failNextMappings -= 1
                    unmapped.append(index)
                    continue
                }
                out[n] = memory.page(at: index)
                n += 1
            }
            // Back on the free list once the bulk is done (not to be taken again by it).
            s.free[order].append(contentsOf: unmapped)
            mappingFailures = unmapped.count
            pfmemalloc = min(n, s.pfmemallocNext)
            s.pfmemallocNext -= pfmemalloc
            s.outstanding += n
            s.pagesAllocated += n
            return n
        }
        guard filled > 0 else {
            if mappingFailures > 0 { throw .providerFailed(provider: name, reason: "DMA mapping failed for all \(mappingFailures) pages") }
            throw .providerExhausted(provider: name, order: order)
        }
        for i in 0..<filled {
            let page = out[i]
            memory.prepareCompound(page, order: order, owner: pageOwner)
            page.dmaAddress = maps ? memory.unencryptedDMAAddress(of: page.physicalAddress) : .mappingError
            page.descriptor.pointee.isPFMemalloc = i < pfmemalloc
            page.setReferenceCount(1)
        }
        return filled
    }

    public func releasePage(_ page: Page, from pool: PagePool) {
        if page.release() {
            // The last reference: the page is free again.
            page.dmaAddress = .mappingError
            let order = page.order
            memory.destroyCompound(page, owner: pageOwner)
            state.withLock { s in
                s.free[order].append(memory.index(of: page))
                s.outstanding -= 1
                s.pagesReleased += 1
            }
        } else {
            // Someone else still holds the page (released_refcnt): it leaves the
            // pool and the provider's accounting, and is not reused here.
            state.withLock { s in
                s.outstanding -= 1
                s.pagesReleased += 1
            }
        }
    }

    public func syncForDevice(_ page: Page, offset: Int, length: Int, for pool: PagePool) {
        syncs.wrappingAdd(1, ordering: .relaxed)
        lastSyncOffset.store(offset, ordering: .relaxed)
        lastSyncLength.store(length, ordering: .relaxed)
    }

    /// Makes the next `count` allocation calls fail (fault injection).
    public func failNextAllocations(_ count: Int) { state.withLock { $0.failNextAllocations = count } }
    /// Makes the DMA mapping of the next `count` pages fail (fault injection):
    /// each goes back to the free list and the bulk continues without it.
    public func failNextMappings(_ count: Int) { state.withLock { $0.failNextMappings = count } }
    /// Hands out the next `count` pages as pfmemalloc (from the reclaim reserves).
    public func handOutPFMemalloc(_ count: Int) { state.withLock { $0.pfmemallocNext = count } }

    /// Pages handed out and not yet released.
    public var outstandingPages: Int { state.withLock { $0.outstanding } }
    /// `allocatePages` calls so far.
    public var allocateCalls: Int { state.withLock { $0.allocateCalls } }
    /// Pages handed out so far.
    public var pagesAllocated: Int { state.withLock { $0.pagesAllocated } }
    /// Pages taken back so far.
    public var pagesReleased: Int { state.withLock { $0.pagesReleased } }
    /// `attach` / `detach` calls so far.
    public var attachCount: Int { state.withLock { $0.attached } }
    public var detachCount: Int { state.withLock { $0.detached } }
    /// `syncForDevice` calls so far, and the last call's offset and length.
    public var syncCount: Int { syncs.load(ordering: .relaxed) }
    public var lastSync: (offset: Int, length: Int) {
        (lastSyncOffset.load(ordering: .relaxed), lastSyncLength.load(ordering: .relaxed))
    }
}
