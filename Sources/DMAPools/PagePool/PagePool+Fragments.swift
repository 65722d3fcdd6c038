import Synchronization
/// A piece of a pool page (`page_pool_alloc_frag`).
@frozen
public struct PagePoolFragment: Hashable, Sendable {
    /// The page (compound head) the fragment lives in.
    public let page: Page
    /// Byte offset of the fragment in the page.
    public let offset: Int
    /// Bytes requested (the pool reserves `length` rounded up to its `fragmentAlignment`).
    public let length: Int

    @inlinable
    public init(page: Page, offset: Int, length: Int) {
        self.page = page
        self.offset = offset
        self.length = length
    }

    /// The fragment's bytes.
    @inlinable
    public var bytes: UnsafeMutableRawPointer { page.bytes + offset }

    /// The fragment's DMA address (the page's stored address plus the offset).
    @inlinable
    public var dmaAddress: DMAAddress { page.dmaAddress + offset }
}

extension PagePool {
    /// `dma_get_cache_alignment()` of the pool's architecture: fragment sizes
    /// are rounded up to it (1 on x86-64, 128 on arm64).
    public var fragmentAlignment: Int { parameters.architecture.dmaCacheAlignment }

    /// `page_pool_alloc_frag`: `size` bytes carved from the pool's current
    /// fragment page. The page's fragment count (`pp_ref_count`) starts at a
    /// large bias and is drained when the next fragment does not fit; each
    /// fragment holds one reference, given back with `put(_:)` (or
    /// `put(_ fragment:)`). The page is recycled when its last fragment is freed.
    /// Owning context only.
    ///
    /// A zero-byte fragment is served, as the kernel serves it (it only refuses
    /// `size > PAGE_SIZE << order`): it takes a reference at the current offset.
    ///
    /// - Throws: `fragmentTooLarge` for a size outside `0...pageBytes`.
    public func allocateFragment(size: Int) throws(PagePoolError) -> PagePoolFragment {
        let pageBytes = parameters.pageBytes
        guard size >= 0, size <= pageBytes else {
            throw .fragmentTooLarge(size: size, pageBytes: pageBytes)
        }
        let alignment = fragmentAlignment
        // `ALIGN(size, dma_get_cache_alignment())`: the alignment is a power of
        // two dividing the page, so a size <= pageBytes stays <= pageBytes.
        let reserved = (size &+ alignment &- 1) & ~(alignment &- 1)
        let hot = self.hot
        var page = hot.pointee.fragmentPage
        let offset = hot.pointee.fragmentOffset
        if let current = page {
            if offset + reserved <= pageBytes {
                // Fits: one more user of the current page.
                hot.pointee.fragmentUsers &+= 1   // each user holds a reference, fewer than BIAS_MAX: cannot overflow
                hot.pointee.fragmentOffset = offset &+ reserved   // <= pageBytes
                return PagePoolFragment(page: current, offset: offset, length: size)
            }
            page = _drainFragmentPage(current)
            if let reused = page {
                // Every fragment came back already: reuse the page in place.
                hot.pointee.recycleCached &+= 1   // event counters: cannot overflow in practice
                hot.pointee.allocFast &+= 1
                return _startFragmentPage(reused, reserved: reserved, size: size)
            }
        }
        hot.pointee.fragmentPage = nil
        let fresh = try allocatePage()
        return _startFragmentPage(fresh, reserved: reserved, size: size)
    }

    /// Gives back a fragment (the same as `put(fragment.page)`).
    @inlinable
    public func put(_ fragment: PagePoolFragment) {
        put(fragment.page)
    }

    /// `page_pool_ref_netmem`: one more fragment reference to a pool page the
    /// caller holds (a clone taking a frag ref). Give it back with `put(_:)`.
    public func retainFragment(_ page: Page) {
        let head = page.head
        if let problem = _diagnose(head) { _misuse(problem) }
        // Relaxed: the caller already holds a reference, as for `get_page`.
        head.descriptor.pointee._fragmentReferenceCount.wrappingAdd(1, ordering: .relaxed)
    }

    /// The `pp_ref_count` of a pool page (0 while idle in the pool).
    public func fragmentReferenceCount(of page: Page) -> Int {
        page.head.descriptor.pointee._fragmentReferenceCount.load(ordering: .acquiring)
    }

    func _startFragmentPage(_ page: Page, reserved: Int, size: Int) -> PagePoolFragment {
        hot.pointee.fragmentPage = page
        hot.pointee.fragmentUsers = 1
        hot.pointee.fragmentOffset = reserved
        // `page_pool_fragment_netmem(BIAS_MAX)`. Relaxed: the pool holds the page alone.
        page.descriptor.pointee._fragmentReferenceCount.store(PagePool.fragmentBias, ordering: .relaxed)
        return PagePoolFragment(page: page, offset: 0, length: size)
    }

    /// `page_pool_unref_netmem(page, BIAS_MAX - frag_users)`: drops the pool's
    /// unused bias. Returns the remaining count (0: every fragment is back).
    func _dropFragmentBias(_ page: Page) -> Int {
        let drain = PagePool.fragmentBias - hot.pointee.fragmentUsers
        let descriptor = page.descriptor
        // Acquiring: if every user is gone, their writes happen before our reuse.
        if descriptor.pointee._fragmentReferenceCount.load(ordering: .acquiring) == drain { return 0 }
        // Acquiring-and-releasing: whoever reaches 0 sees every other holder's writes.
        let remaining = descriptor.pointee._fragmentReferenceCount.wrappingSubtract(drain, ordering: .acquiringAndReleasing).newValue
        precondition(remaining >= 0, "\(page) of \(self): fragment count underflow (\(remaining)): a fragment put twice?")
        return remaining
    }

    /// `page_pool_drain_frag`: the current fragment page is full. Returns it for
    /// reuse if every fragment is already back; otherwise the last fragment's
    /// put will recycle it.
    func _drainFragmentPage(_ page: Page) -> Page? {
        hot.pointee.fragmentPage = nil
        if _dropFragmentBias(page) != 0 { return nil }
        if _canBeRecycled(page) {
            if readMostly.pointee.dmaSync { _syncForDevice(page, size: -1) }
            return page
        }
        _returnToProvider(page)
        return nil
    }

    /// `page_pool_free_frag` (teardown): drop the bias of the current fragment page.
    func _freeFragmentPage() {
        guard let page = hot.pointee.fragmentPage else { return }
        hot.pointee.fragmentPage = nil
        if _dropFragmentBias(page) != 0 { return }
        _returnToProvider(page)
    }
}
