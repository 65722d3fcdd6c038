import Synchronization

/// The `struct page` analog: one per 4 KiB page of guest memory, in one array
/// reserved with the memory, so that address -> descriptor and descriptor ->
/// address are both O(1).
///
/// Ownership rule: the non-atomic fields are written only by whoever holds the
/// page exclusively (its allocator while handing it out, its owner while it holds
/// the only reference). Hand-offs between threads go through a lock, a ring with
/// release/acquire orderings, or the reference count's acquiring-and-releasing
/// decrement, so every writer happens-before the next reader.
///
/// Only the immutable addresses are public. The mutable fields are the
/// framework's (`package`); a memory provider sets what it must through the
/// provider SPI (`@_spi(PagePoolProvider) import DMAPools`: `Page.setDMAAddress`,
/// `Page.setReferenceCount`, `Page.ownerObject`, `Page.privateWord`,
/// `GuestMemory.prepareCompound` / `destroyCompound`).
///
/// Layout: exactly one 64-byte cache line (`struct page` is 64 bytes on
/// x86-64), and the table is page-aligned, so every descriptor's fields, the
/// fast path's included, are on one line. The words come first, then the
/// 4-byte reference count and frame number, then the bytes; the physical
/// address is stored as its 40-bit frame number (addresses below 2^52, the
/// architectural `MAXPHYADDR`). `PageDescriptorLayoutTests` checks the size.
public struct PageDescriptor: ~Copyable {
    /// Where the page's bytes are (`page_address`). Immutable.
    public let virtualAddress: UnsafeMutableRawPointer
    /// The DMA address stored by whoever mapped the page (`page_pool_get_dma_addr`).
    @usableFromInline package var dmaAddress: DMAAddress
    /// `pp_magic`: the pool signature of the page_pool that owns the page, else 0.
    @usableFromInline package var poolSignature: UInt64
    /// The owning pool or allocator, as an opaque pointer (`page->pp`).
    @usableFromInline package var ownerObject: UnsafeMutableRawPointer?
    /// `page->private`: owner-defined (for example the bounce device of a zero-copy run).
    @usableFromInline package var privateWord: UInt
    /// `pp_ref_count`: page_pool fragment references (see `PagePool+Fragments`).
    @usableFromInline let _fragmentReferenceCount: Atomic<Int>
    /// `_refcount`.
    @usableFromInline let _referenceCount: Atomic<Int32>
    /// The low 32 bits of the page frame number (physical address >> 12). Immutable.
    @usableFromInline let _frameNumberLow: UInt32
    /// Pages back to the compound head (0 for a head or a single page).
    @usableFromInline package var headOffset: UInt16
    /// The page's memory domain (`MemoryDomain.rawValue`), changed only by a conversion.
    @usableFromInline let _domain: Atomic<UInt8>
    /// Who holds the page (see `PageOwner`).
    @usableFromInline package var owner: PageOwner
    /// Compound order for a head page; 0 for order-0 and tail pages.
    @usableFromInline package var order: UInt8
    /// The NUMA node the page belongs to (`page_to_nid`). Immutable.
    @usableFromInline package let node: UInt8
    /// `page_is_pfmemalloc`: the page came from the reclaim reserves, handed
    /// out under memory pressure. page_pool never recycles such a page.
    @usableFromInline package var isPFMemalloc: Bool
    /// Bits 32...39 of the page frame number. Immutable.
    @usableFromInline let _frameNumberHigh: UInt8

    /// The largest physical address a descriptor can describe (exclusive): 2^52.
    public static let physicalAddressLimit: UInt64 = 1 << 52

    /// The page's guest-physical address. Immutable.
    @inlinable
    public var physicalAddress: PhysicalAddress {
        PhysicalAddress((UInt64(_frameNumberHigh) << 32 | UInt64(_frameNumberLow)) << PageGeometry.shift)
    }

    @usableFromInline
    init(virtualAddress: UnsafeMutableRawPointer, physicalAddress: PhysicalAddress, domain: MemoryDomain, node: UInt8 = 0) {
        precondition(physicalAddress.rawValue < Self.physicalAddressLimit, "physical address \(physicalAddress) beyond 2^52")
        let frame = physicalAddress.rawValue >> PageGeometry.shift
        self.virtualAddress = virtualAddress
        self.dmaAddress = .mappingError
        self.poolSignature = 0
        self.ownerObject = nil
        self.privateWord = 0
        self._fragmentReferenceCount = Atomic(0)
        self._referenceCount = Atomic(0)
        self._frameNumberLow = UInt32(truncatingIfNeeded: frame)
        self.headOffset = 0
        self._domain = Atomic(domain.rawValue)
        self.owner = .free
        self.order = 0
        self.node = node
        self.isPFMemalloc = false
        self._frameNumberHigh = UInt8(truncatingIfNeeded: frame >> 32)
    }
}
