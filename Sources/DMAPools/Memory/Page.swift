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

    /// Who holds the page.
    @inlinable
    public var owner: PageOwner {
        get { descriptor.pointee.owner }
        nonmutating set { descriptor.pointee.owner = newValue }
    }

    /// The stored DMA address (meaningful while a pool or a zero-copy run holds it).
    @inlinable
    public var dmaAddress: DMAAddress {
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
    @inlinable
    public func setReferenceCount(_ count: Int) {
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
