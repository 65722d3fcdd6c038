import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension PagePool {
    /// `page_pool_alloc_pages`: one page of the pool's order, reference count 1,
    /// DMA address stored when the pool maps. Owning context only.
    ///
    /// Fast path: pop the alloc cache. Slow path: refill 64 from the ring, else
    /// ask the provider (64 order-0 pages in bulk, or one high-order page).
    ///
    /// - Throws: `poolDestroyed` after `destroy()`; the provider's error when it
    ///   has nothing left.
    @inlinable
    public func allocatePage() throws(PagePoolError) -> Page {
        #if DMAPOOLS_INVARIANTS
        _checkAllocationContext()
        #endif
        let hot = self.hot
        let count = hot.pointee.cacheCount
        if _fastPath(count > 0) {
            let top = count &- 1   // count > 0: cannot underflow
            hot.pointee.cacheCount = top
            hot.pointee.allocFast &+= 1   // a 64-bit event counter: cannot overflow in practice
            let page = cache[top]
            _markHeld(page)
            return page
        }
        return try _allocatePageSlow()
    }

    /// Fills `pages` (as far as it can) with pages of the pool, as
    /// `allocatePage()` would one by one: what the alloc cache holds is taken
    /// in one pass (one update of the cache count and of `fast`), the rest one
    /// page at a time through the slow path. Returns how many it filled;
    /// throws only if it could fill none. Owning context only.
    public func allocatePages(into pages: UnsafeMutableBufferPointer<Page>) throws(PagePoolError) -> Int {
        #if DMAPOOLS_INVARIANTS
        _checkAllocationContext()
        #endif
        let hot = self.hot
        let count = hot.pointee.cacheCount
        let taken = Swift.min(count, pages.count)
        if _fastPath(taken > 0) {
            // Pops in the order allocatePage() would: the top of the cache first.
            for i in 0..<taken {
                let page = cache[count &- 1 &- i]
                _markHeld(page)
                pages[i] = page
            }
            hot.pointee.cacheCount = count &- taken
            hot.pointee.allocFast &+= taken   // a 64-bit event counter: cannot overflow in practice
        }
        var filled = taken
        while filled < pages.count {
            do {
                pages[filled] = try allocatePage()
            } catch {
                if filled == 0 { throw error }
                break
            }
            filled += 1
        }
        return filled
    }

    /// A page leaving the cache or ring for a user: its fragment count goes from
    /// 0 ("in the pool") to 1. Relaxed: the pool holds the page exclusively here.
    @inlinable
    func _markHeld(_ page: Page) {
        #if DMAPOOLS_INVARIANTS
        let old = page.descriptor.pointee._fragmentReferenceCount.load(ordering: .relaxed)
        precondition(old == 0 && page.descriptor.pointee.poolSignature == signature && page.referenceCount == 1,
                     "\(page) handed out by \(self) while not idle in the pool (pp_ref_count \(old))")
        #endif
        page.descriptor.pointee._fragmentReferenceCount.store(1, ordering: .relaxed)
    }

    @inline(never)
    @usableFromInline
    func _allocatePageSlow() throws(PagePoolError) -> Page {
        if _slowPath(shared.destroyed.load(ordering: .acquiring)) {
            throw .poolDestroyed(pool: description)
        }
        if let page = _refillAllocCache() {
            _markHeld(page)
            return page
        }
        let page = try _allocateFromProvider()
        _markHeld(page)
        return page
    }

    /// `page_pool_refill_alloc_cache`: moves up to 64 pages from the ring into
    /// the cache and returns the last one. A page of another NUMA node than the
    /// pool prefers is released instead (`alloc.waive`) and the refill stops
    /// there, so the slow path runs if nothing came before it.
    func _refillAllocCache() -> Page? {
        // Quick check before the ring walk (`__ptr_ring_empty`).
        if ring.isEmpty {
            hot.pointee.allocEmpty &+= 1   // event counter: cannot overflow in practice
            return nil
        }
        let preferredNode = hot.pointee.preferredNode
        var count = hot.pointee.cacheCount
        repeat {
            guard let page = ring.consume() else { break }
            guard _fastPath(page.node == preferredNode) else {
                _returnToProvider(page)
                hot.pointee.allocWaive &+= 1   // event counter: cannot overflow in practice
                break
            }
            cache[count] = page
            count += 1
        } while count < PagePool.allocCacheRefill
        guard count > 0 else { return nil }
        count -= 1
        hot.pointee.cacheCount = count
        hot.pointee.allocRefill &+= 1   // event counter: cannot overflow in practice
        return cache[count]
    }

    /// `__page_pool_alloc_netmems_slow` / `__page_pool_alloc_page_order`.
    func _allocateFromProvider() throws(PagePoolError) -> Page {
        let order = parameters.order
        // The cache is empty here (the refill found nothing), so its slots are
        // the landing area, as the kernel bulk-allocates into `alloc.cache`.
        precondition(hot.pointee.cacheCount == 0, "slow path with a non-empty alloc cache")
        if order > 0 {
            // High order: one page at a time, straight to the caller.
            let got = try provider.allocatePages(for: self, order: order, into: UnsafeMutableBufferPointer(start: cache, count: 1))
            precondition(got == 1, "memory provider \(provider.name) returned \(got) pages for 1")
            let page = cache[0]
            _takeOwnership(page)
            hot.pointee.allocSlowHighOrder &+= 1   // event counter: cannot overflow in practice
            return page
        }
        let got = try provider.allocatePages(
            for: self, order: 0,
            into: UnsafeMutableBufferPointer(start: cache, count: PagePool.allocCacheRefill))
        precondition((1...PagePool.allocCacheRefill).contains(got),
                     "memory provider \(provider.name) returned \(got) pages for at most \(PagePool.allocCacheRefill)")
        for i in 0..<got { _takeOwnership(cache[i]) }
        let top = got - 1
        hot.pointee.cacheCount = top
        hot.pointee.allocSlow &+= 1   // event counter: cannot overflow in practice
        return cache[top]
    }

    /// `page_pool_set_pp_info` plus the hold count: the page now belongs to the
    /// pool. It is left "in the pool" (fragment count 0) for `_markHeld`.
    func _takeOwnership(_ page: Page) {
        let descriptor = page.descriptor
        precondition(page.referenceCount == 1, "memory provider \(provider.name) returned \(page) with reference count \(page.referenceCount), not 1")
        precondition(!mapsDMA || page.dmaAddress != .mappingError, "memory provider \(provider.name) returned \(page) without a DMA address for a mapping pool")
        descriptor.pointee.poolSignature = signature
        descriptor.pointee.ownerObject = ownerObject
        for i in 0..<(1 << Int(descriptor.pointee.order)) { descriptor[i].owner = .pagePool }
        descriptor.pointee._fragmentReferenceCount.store(0, ordering: .relaxed)
        if readMostly.pointee.dmaSync {
            // `page_pool_dma_map` syncs max_len for the device right after mapping.
            provider.syncForDevice(page, offset: readMostly.pointee.syncOffset, length: readMostly.pointee.maxLength, for: self)
        }
        if tracksMappedPages { shared.dmaMapped.withLock { _ = $0.insert(page) } }
        // Single writer (the owner), atomic so others can read: load + store, no RMW.
        shared.holdCount.store(shared.holdCount.load(ordering: .relaxed) + 1, ordering: .relaxed)
    }

    #if DMAPOOLS_INVARIANTS
    @inlinable
    func _checkAllocationContext() {
        let owner = readMostly.pointee.owner
        if owner != _PagePoolReadMostlyState.noOwner && !_isCurrentThread(owner) {
            _allocationFromWrongThread()
        }
    }

    @inline(never)
    @usableFromInline
    func _allocationFromWrongThread() -> Never {
        fatalError("\(self): allocation from a thread that does not own the pool (the alloc cache is lockless)")
    }
    #endif
}
