import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension PagePool {
    // MARK: Public put API

    /// `page_pool_put_full_page`: gives back one reference to a pool page (the
    /// whole page, or one fragment of it). When it was the last, the page is
    /// recycled: directly into the alloc cache on the owning thread, through the
    /// ring anywhere else; released to the provider if the ring is full or
    /// someone else still holds a page reference.
    ///
    /// Traps (naming the page and the pool) for a page that is not this pool's,
    /// is already back in the pool, or comes after the pool released it.
    @inlinable
    public func put(_ page: Page) {
        _put(page, dmaSyncSize: -1, allowDirect: isNAPILocal)
    }

    /// `page_pool_put_page(pool, page, dma_sync_size, allow_direct)`.
    ///
    /// As `page_pool_put_unrefed_netmem` does, `allowDirect: false` is widened
    /// to direct recycling when the caller is the pool's owning context
    /// (`page_pool_napi_local`): an owner's put lands in the alloc cache either way.
    ///
    /// - Parameters:
    ///   - dmaSyncSize: bytes to sync for the device on recycle (capped at
    ///     `maxLength`; -1 = `maxLength`), with `PP_FLAG_DMA_SYNC_DEV`.
    ///   - allowDirect: the caller vouches for recycling into the lockless
    ///     cache. Only the owning thread may; from any other thread this traps
    ///     (after `destroy()` it is ignored, as destroy disables direct recycling).
    @inlinable
    public func put(_ page: Page, dmaSyncSize: Int = -1, allowDirect: Bool) {
        let local = isOwnedByCurrentThread
        if allowDirect && !local && !isDestroyed { _directRecycleFromNonOwner(page) }
        _put(page, dmaSyncSize: dmaSyncSize, allowDirect: allowDirect ? local : local && !preemptRT)
    }

    /// `page_pool_recycle_direct`: the owning thread gives a page straight back
    /// to the alloc cache. Traps on any other thread.
    @inlinable
    public func recycleDirect(_ page: Page) {
        put(page, allowDirect: true)
    }

    /// Like `put(_:)`, but a misuse the caller can recover from (a foreign page,
    /// a page already back in the pool, a direct recycle off the owning thread
    /// given as `allowDirect`) throws instead of trapping.
    public func tryPut(_ page: Page, allowDirect: Bool? = nil) throws(PagePoolError) {
        let head = page.head
        if let problem = _diagnose(head) { throw problem }
        let local = isOwnedByCurrentThread
        if allowDirect == true && !local && !isDestroyed { throw .notOwner(pool: description) }
        _put(head, dmaSyncSize: -1, allowDirect: allowDirect == true ? local : local && !preemptRT)
    }

    /// `XDP_BULK_QUEUE_SIZE`: the most pages one `page_pool_put_netmem_bulk`
    /// call handles; longer batches are put in runs of this size.
    public static let bulkPutSize = 16

    /// `page_pool_put_netmem_bulk`: gives back a batch of pages of this pool.
    ///
    /// Each page drops its reference; the ones that were last are recycled
    /// (into the cache in the owning context, else collected), and the
    /// collected ones go into the ring under one hold of the producer lock
    /// (`page_pool_recycle_ring_bulk`): when the ring fills, `ring_full` counts
    /// once for the run and the rest of the run is released to the provider.
    /// Runs are at most `bulkPutSize` pages.
    public func put(contentsOf pages: UnsafeBufferPointer<Page>) {
        let direct = isNAPILocal
        var start = 0
        while start < pages.count {
            let end = min(start + PagePool.bulkPutSize, pages.count)
            _putBulk(UnsafeBufferPointer(rebasing: pages[start..<end]), allowDirect: direct)
            start = end
        }
    }

    /// `page_pool_put_netmem_bulk` for any sequence of pages of this pool.
    public func put<S: Sequence<Page>>(contentsOf pages: S) {
        let direct = isNAPILocal
        withUnsafeTemporaryAllocation(of: Page.self, capacity: PagePool.bulkPutSize) { run in
            var count = 0
            for page in pages {
                run.initializeElement(at: count, to: page)
                count += 1
                if count == PagePool.bulkPutSize {
                    _putBulk(UnsafeBufferPointer(rebasing: run[0..<count]), allowDirect: direct)
                    count = 0
                }
            }
            if count > 0 { _putBulk(UnsafeBufferPointer(rebasing: run[0..<count]), allowDirect: direct) }
        }
    }

    /// One run (at most `bulkPutSize` pages) of `page_pool_put_netmem_bulk`.
    ///
    /// One pass drops every page's reference and collects the pages that can
    /// be recycled (`__page_pool_put_page` without the cache step); then, in
    /// the owning context, as many as the alloc cache has room for move into
    /// it with one update of its count (the kernel pushes them one by one, to
    /// the same effect: the first ones in the run fill the cache), and the
    /// rest go into the ring under one hold of the producer lock
    /// (`page_pool_recycle_ring_bulk`).
    func _putBulk(_ pages: UnsafeBufferPointer<Page>, allowDirect: Bool) {
        withUnsafeTemporaryAllocation(of: Page.self, capacity: PagePool.bulkPutSize) { bulk in
            let collected = _collectRecyclable(pages, into: bulk.baseAddress!)
            guard collected > 0 else { return }
            var start = 0
            if allowDirect {
                // `page_pool_recycle_in_cache` for the whole run at once.
                let hot = self.hot
                let count = hot.pointee.cacheCount
                let moved = Swift.min(collected, PagePool.allocCacheSize &- count)
                (cache + count).update(from: bulk.baseAddress!, count: moved)
                hot.pointee.cacheCount = count &+ moved          // <= allocCacheSize
                hot.pointee.recycleCached &+= moved               // event counter: cannot overflow in practice
                hot.pointee.recycleCacheFull &+= collected &- moved
                start = moved
            }
            guard start < collected else { return }
            let rest = UnsafeBufferPointer(rebasing: bulk[start..<collected])
            if _slowPath(shared.destroyed.load(ordering: .relaxed)) {
                for page in rest { _releaseAfterDestroy(page) }
                return
            }
            let produced = ring.produce(contentsOf: rest)
            if _slowPath(produced < rest.count) {
                // Once per bulk, as the kernel counts it; the rest go to the provider.
                shared.ringFull.wrappingAdd(1, ordering: .relaxed)
                for page in rest[produced...] { _returnToProvider(page) }
            }
        }
    }

    /// The per-page part of a bulk put: each page's reference dropped (the
    /// pool-signature check and `page_pool_unref_and_test`), and the heads
    /// that were last and may be recycled (`__page_pool_page_can_be_recycled`,
    /// then the sync for the device) written to `recyclable`. Returns how
    /// many. Pages that may not be recycled are released on the way.
    @inline(__always)
    func _collectRecyclable(_ pages: UnsafeBufferPointer<Page>, into recyclable: UnsafeMutablePointer<Page>) -> Int {
        // Read once per run: the stores into the descriptors below would
        // otherwise make the compiler reload them for every page.
        let signature = readMostly.pointee.signature
        let dmaSync = readMostly.pointee.dmaSync
        var count = 0
        for page in pages {
            let head = page.head
            guard _unreference(head, signature: signature) else { continue }
            // `__page_pool_put_page` without the cache step: the caller moves
            // the whole run into the cache at once.
            guard _fastPath(_canBeRecycled(head)) else {
                _releaseElevatedReference(head)
                continue
            }
            if _slowPath(dmaSync) { _syncForDeviceUnlessDestroyed(head, size: -1) }
            (recyclable + count).initialize(to: head)
            count &+= 1   // at most bulkPutSize
        }
        return count
    }

    /// Takes a page out of the pool for good and gives it to the provider (the
    /// old `page_pool_release_page` followed by `put_page`). The caller holds the
    /// page's only reference.
    public func releaseToProvider(_ page: Page) {
        let head = page.head
        if let problem = _diagnose(head) { _misuse(problem) }
        head.descriptor.pointee._fragmentReferenceCount.store(0, ordering: .relaxed)
        _returnToProvider(head)
    }

    // MARK: The recycle machinery

    /// `page_pool_put_netmem`: drop one fragment reference and, when it was the
    /// last, recycle.
    @inlinable
    func _put(_ page: Page, dmaSyncSize: Int, allowDirect: Bool) {
        let head = page.head
        guard _unreference(head) else { return }
        _putUnreferenced(head, dmaSyncSize: dmaSyncSize, allowDirect: allowDirect)
    }

    /// The pool-signature check and `page_pool_unref_and_test`: true if this
    /// was the page's last fragment reference.
    @inlinable
    func _unreference(_ head: Page) -> Bool {
        _unreference(head, signature: readMostly.pointee.signature)
    }

    /// `_unreference(_:)` with the pool's signature already loaded (a bulk
    /// loads it once per run).
    @inlinable
    func _unreference(_ head: Page, signature: UInt64) -> Bool {
        let descriptor = head.descriptor
        // The sentinel: every put checks the pool signature (`pp_magic`).
        if _slowPath(descriptor.pointee.poolSignature != signature) {
            _misuse(_diagnose(head) ?? .foreignPage(page: "\(head)", pool: description, owner: "unknown"))
        }
        // Relaxed: a count of 1 means we are the only holder, and whoever
        // handed us the page synchronized with us already.
        let references = descriptor.pointee._fragmentReferenceCount.load(ordering: .relaxed)
        if _fastPath(references == 1) {
            // Back to "in the pool". Nobody else can see this page any more.
            descriptor.pointee._fragmentReferenceCount.store(0, ordering: .relaxed)
            return true
        }
        return _dropFragmentReference(head, references)
    }

    /// The multi-holder case of `page_pool_unref_and_test`: returns true if this
    /// was the last fragment reference. Traps on a page already back in the pool.
    @inline(never)
    @usableFromInline
    func _dropFragmentReference(_ head: Page, _ observed: Int) -> Bool {
        if observed <= 0 { _misuse(.doublePut(page: "\(head)", pool: description)) }
        // Acquiring-and-releasing: every holder's writes to the page happen
        // before the last holder recycles it (the kernel's full-barrier sub_return).
        let remaining = head.descriptor.pointee._fragmentReferenceCount.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue
        if remaining < 0 { _misuse(.doublePut(page: "\(head)", pool: description)) }
        return remaining == 0
    }

    /// `page_pool_put_unrefed_netmem`: the pool holds the page again; recycle
    /// it into the cache or the ring, or release it.
    @inlinable
    func _putUnreferenced(_ head: Page, dmaSyncSize: Int, allowDirect: Bool) {
        if _recycleCandidate(head, dmaSyncSize: dmaSyncSize, allowDirect: allowDirect) {
            _recycleInRing(head)
        }
    }

    /// `__page_pool_put_page`: a page whose reference count is not 1 is
    /// released (`released_refcnt`); otherwise it is synced for the device
    /// (with `PP_FLAG_DMA_SYNC_DEV`, until `destroy()` clears the sync as
    /// `page_pool_scrub` does) and, if `allowDirect`, recycled into the cache.
    /// Returns true if the page still needs the ring (the cache was full, or
    /// direct recycling was not allowed).
    @inlinable
    func _recycleCandidate(_ head: Page, dmaSyncSize: Int, allowDirect: Bool) -> Bool {
        guard _fastPath(_canBeRecycled(head)) else {
            _releaseElevatedReference(head)
            return false
        }
        let hot = self.hot
        if _slowPath(readMostly.pointee.dmaSync) { _syncForDeviceUnlessDestroyed(head, size: dmaSyncSize) }
        if allowDirect {
            // `page_pool_recycle_in_cache`.
            let count = hot.pointee.cacheCount
            if _fastPath(count < PagePool.allocCacheSize) {
                cache[count] = head
                hot.pointee.cacheCount = count &+ 1   // < 128: cannot overflow
                hot.pointee.recycleCached &+= 1       // event counter: cannot overflow in practice
                return false
            }
            hot.pointee.recycleCacheFull &+= 1        // event counter: cannot overflow in practice
        }
        return true
    }

    /// `page_pool_recycle_in_ring`, or straight to the provider once destroyed.
    @inlinable
    func _recycleInRing(_ head: Page) {
        // Relaxed: a put that misses the flag lands in the ring, which teardown's
        // retries drain; one that sees it saves the retry the work.
        if _slowPath(shared.destroyed.load(ordering: .relaxed)) {
            _releaseAfterDestroy(head)
            return
        }
        // `recycle.ring` is the ring's producer position: no extra counter here.
        if _slowPath(!ring.produce(head)) {
            _ringFull(head)
        }
    }

    @inline(never)
    @usableFromInline
    func _ringFull(_ head: Page) {
        shared.ringFull.wrappingAdd(1, ordering: .relaxed)
        _returnToProvider(head)
    }

    @inline(never)
    @usableFromInline
    func _releaseAfterDestroy(_ head: Page) {
        shared.releasedAfterDestroy.wrappingAdd(1, ordering: .relaxed)
        _returnToProvider(head)
    }

    /// `__page_pool_page_can_be_recycled`: the pool holds the only page
    /// reference and the page is not from the reclaim reserves (pfmemalloc).
    /// The acquiring load of the count (the kernel's page_ref_count read
    /// barrier) orders a concurrent put_page.
    @inlinable
    func _canBeRecycled(_ head: Page) -> Bool {
        head.referenceCount == 1 && !head.descriptor.pointee.isPFMemalloc
    }

    /// Someone else holds a page reference, or the page is pfmemalloc
    /// (`released_refcnt` counts both, as the kernel's does): the page leaves
    /// the pool, unmapped, and the pool's reference goes to the provider.
    @inline(never)
    @usableFromInline
    func _releaseElevatedReference(_ head: Page) {
        shared.releasedRefcount.wrappingAdd(1, ordering: .relaxed)
        _returnToProvider(head)
    }

    /// `page_pool_dma_sync_for_device` under the kernel's RCU re-check: no sync
    /// once `destroy()` has cleared it (`page_pool_scrub`). A pool whose destroy
    /// unmaps (`tracksMappedPages`) also waits for a sync under way first; for
    /// it the put announces itself, sequentially consistent on both sides (the
    /// put bumps the count then reads the flag, destroy sets the flag then
    /// reads the count), so one of them sees the other. Any other pool unmaps
    /// nothing at destroy and needs only the flag.
    @inline(never)
    @usableFromInline
    func _syncForDeviceUnlessDestroyed(_ head: Page, size: Int) {
        guard tracksMappedPages else {
            // Acquiring: a put that sees the pool destroyed also sees the scrub.
            if !shared.destroyed.load(ordering: .acquiring) { _syncForDevice(head, size: size) }
            return
        }
        shared.syncsInProgress.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if !shared.destroyed.load(ordering: .sequentiallyConsistent) { _syncForDevice(head, size: size) }
        shared.syncsInProgress.wrappingSubtract(1, ordering: .releasing)
    }

    /// `page_pool_dma_sync_for_device`: `min(size, max_len)` bytes at `offset`.
    @inline(never)
    @usableFromInline
    func _syncForDevice(_ head: Page, size: Int) {
        let maxLength = readMostly.pointee.maxLength
        let length = size < 0 ? maxLength : min(size, maxLength)
        provider.syncForDevice(head, offset: readMostly.pointee.syncOffset, length: length, for: self)
    }

    /// `page_pool_return_netmem`: clear the pool's marks, give the page to the
    /// provider and count the release. May finish a destroyed pool's shutdown.
    @usableFromInline
    func _returnToProvider(_ head: Page) {
        let descriptor = head.descriptor
        // `__page_pool_release_netmem_dma`: whoever takes the page out of the
        // record unmaps it. A page destroy's scrub took first is unmapped
        // already: clear its address so the provider does not unmap it again.
        if tracksMappedPages && shared.dmaMapped.withLock({ $0.remove(head) == nil }) {
            descriptor.pointee.dmaAddress = .mappingError
        }
        descriptor.pointee.poolSignature = 0
        descriptor.pointee.ownerObject = nil
        descriptor.pointee._fragmentReferenceCount.store(0, ordering: .relaxed)
        let owner = provider.pageOwner
        for i in 0..<(1 << Int(descriptor.pointee.order)) { descriptor[i].owner = owner }
        provider.releasePage(head, from: self)
        // Relaxed, as the kernel's atomic_inc_return_relaxed: a counter. The
        // teardown check below takes the lock, which orders what it reads.
        shared.releaseCount.wrappingAdd(1, ordering: .relaxed)
        if _slowPath(shared.destroyed.load(ordering: .acquiring)) { _checkShutdownComplete() }
    }

    // MARK: Diagnosis

    /// What is wrong with putting `head` into this pool, or nil.
    @usableFromInline
    func _diagnose(_ head: Page) -> PagePoolError? {
        let descriptor = head.descriptor
        let found = descriptor.pointee.poolSignature
        if found != signature {
            let owner: String
            if found == 0 {
                owner = isShutdownComplete || isDestroyed
                    ? "no pool: it was used after \(self) was destroyed and released it (owner now \(head.owner))"
                    : "no pool (owner \(head.owner)): put twice after it left the pool, or never allocated from one"
            } else if found & 0xffff_ffff == PagePool.signatureMagic {
                owner = "page_pool id \(found >> 32)"
            } else {
                owner = "an unknown owner (signature 0x\(String(found, radix: 16)))"
            }
            return .foreignPage(page: "\(head)", pool: description, owner: owner)
        }
        if descriptor.pointee._fragmentReferenceCount.load(ordering: .relaxed) <= 0 {
            return .doublePut(page: "\(head)", pool: description)
        }
        return nil
    }

    @inline(never)
    @usableFromInline
    func _misuse(_ problem: PagePoolError) -> Never {
        fatalError("page_pool misuse: \(problem)")
    }

    @inline(never)
    @usableFromInline
    func _directRecycleFromNonOwner(_ page: Page) -> Never {
        fatalError("page_pool misuse: direct recycle of \(page.head) into \(self) from a thread that does not own it (use put(_:), which goes through the ring)")
    }
}
