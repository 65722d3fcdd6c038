import Synchronization

/// A handle to one page (or the head of a compound run) of guest memory.
///
/// `Page` is a trivial value: a pointer to the page's descriptor. Copying it costs
/// nothing and does no reference counting; ownership of the page itself is tracked
/// in the descriptor (`referenceCount`, `owner`), the way the kernel passes
/// `struct page *` around.
@frozen
public struct Page: Hashable, @unchecked Sendable, CustomStringConvertible {
    public let descriptor: UnsafeMutablePointer<PageDescriptor>

    @inlinable
    public init(descriptor: UnsafeMutablePointer<PageDescriptor>) {
        self.descriptor = descriptor
    }

    /// The page's bytes (`page_address`).
    @inlinable
    public var bytes: UnsafeMutableRawPointer { descriptor.pointee.virtualAddress }

    /// The page's guest-physical address (`page_to_phys`).
    @inlinable
    public var physicalAddress: PhysicalAddress { descriptor.pointee.physicalAddress }

    /// The compound order of a head page.
    @inlinable
    public var order: Int { Int(descriptor.pointee.order) }

    /// Bytes covered by this page and its tail pages.
    @inlinable
    public var byteCount: Int { PageGeometry.size << Int(descriptor.pointee.order) }

    /// The compound head (`compound_head`); a head or single page is its own head.
    @inlinable
    public var head: Page {
        Page(descriptor: descriptor - Int(descriptor.pointee.headOffset))
    }

    /// Whether this is a tail page of a compound run.
    @inlinable
    public var isTail: Bool { descriptor.pointee.headOffset != 0 }

    /// The page's current memory domain.
    @inlinable
    public var domain: MemoryDomain {
        MemoryDomain(rawValue: descriptor.pointee._domain.load(ordering: .acquiring)) ?? .private
    }

    /// Who holds the page. Set by the framework (allocators, pools); a
    /// provider sets it through `GuestMemory.prepareCompound` / `destroyCompound`.
    @inlinable
    public package(set) var owner: PageOwner {
        get { descriptor.pointee.owner }
        nonmutating set { descriptor.pointee.owner = newValue }
    }

    /// The stored DMA address (meaningful while a pool or a zero-copy run holds it).
    /// A provider stores it with `setDMAAddress(_:)` (provider SPI).
    @inlinable
    public package(set) var dmaAddress: DMAAddress {
        get { descriptor.pointee.dmaAddress }
        nonmutating set { descriptor.pointee.dmaAddress = newValue }
    }

    /// `page_to_nid`: the NUMA node of the page.
    @inlinable
    public var node: Int { Int(descriptor.pointee.node) }

    /// `page_is_pfmemalloc`: the page came from the reclaim reserves.
    @inlinable
    public var isPFMemalloc: Bool { descriptor.pointee.isPFMemalloc }

    /// `page_ref_count`.
    @inlinable
    public var referenceCount: Int {
        Int(descriptor.pointee._referenceCount.load(ordering: .acquiring))
    }

    /// `get_page`: takes one more reference. The caller already holds one, so the
    /// count cannot be zero; relaxed is enough (the kernel's `atomic_inc`).
    @inlinable
    public func retain() {
        descriptor.pointee._referenceCount.wrappingAdd(1, ordering: .relaxed)
    }

    /// `put_page_testzero`: drops one reference and says whether it was the last.
    /// The acquiring-and-releasing decrement orders every earlier write to the page
    /// before whoever frees it. Dropping a reference that is not held traps.
    @inlinable
    public func release() -> Bool {
        let old = descriptor.pointee._referenceCount.wrappingSubtract(1, ordering: .acquiringAndReleasing).oldValue
        if old <= 0 { Page.referenceUnderflow(self, old: old) }
        return old == 1
    }

    /// Sets the reference count of a page its owner holds exclusively (`set_page_count`).
    /// Provider SPI: an allocator or provider handing a page out sets it to 1.
    @_spi(PagePoolProvider)
    @inlinable
    public func setReferenceCount(_ count: Int) { storeReferenceCount(count) }

    @inlinable
    func storeReferenceCount(_ count: Int) {
        descriptor.pointee._referenceCount.store(Int32(count), ordering: .releasing)
    }

    @inline(never)
    @usableFromInline
    static func referenceUnderflow(_ page: Page, old: Int32) -> Never {
        fatalError("page reference underflow: \(page) had \(old) references (a page put twice?)")
    }

    public var description: String {
        "page(\(physicalAddress), order \(descriptor.pointee.order), \(owner), \(domain), ref \(referenceCount))"
    }
}

// MARK: Provider SPI

/// What a memory provider (or any allocator handing out pages) must set on the
/// pages it owns, and nobody else may: `@_spi(PagePoolProvider) import DMAPools`.
/// The contract is `PagePoolMemoryProvider`'s (Design/page-pool.md).
extension Page {
    /// Stores the page's DMA address (`page_pool_set_dma_addr`): a provider
    /// does it when it maps a page it hands to a pool, and clears it
    /// (`.mappingError`) when it takes the page back.
    @_spi(PagePoolProvider)
    @inlinable
    public func setDMAAddress(_ address: DMAAddress) {
        descriptor.pointee.dmaAddress = address
    }

    /// Marks a page handed out from the reclaim reserves (`page_is_pfmemalloc`):
    /// a pool never recycles it. Cleared with the compound run
    /// (`GuestMemory.destroyCompound`).
    @_spi(PagePoolProvider)
    @inlinable
    public func setPFMemalloc(_ value: Bool) {
        descriptor.pointee.isPFMemalloc = value
    }

    /// `page->pp` / the owner's object: a pool's while the pool holds the page
    /// (the pool overwrites it and clears it before `releasePage`); the
    /// owner's own otherwise, for example to find itself again when a page
    /// that outlived its pool comes home through `PageOwnerKind.freePage`.
    @_spi(PagePoolProvider)
    @inlinable
    public var ownerObject: UnsafeMutableRawPointer? {
        get { descriptor.pointee.ownerObject }
        nonmutating set { descriptor.pointee.ownerObject = newValue }
    }

    /// `page->private`: the owner's word while it holds the page.
    @_spi(PagePoolProvider)
    @inlinable
    public var privateWord: UInt {
        get { descriptor.pointee.privateWord }
        nonmutating set { descriptor.pointee.privateWord = newValue }
    }
}
