/// A guest: its memory, devices, swiotlb, DMA API and page allocators, wired
/// the way the kernel wires them at boot. By default a confidential VM (every
/// device bounces through swiotlb); on `.iommu` a guest without memory
/// encryption whose devices sit behind an IOMMU (nothing bounces).
///
/// Every TX design runs on a guest of its own built from the same
/// configuration, so designs are compared on equal terms and one design's
/// leftovers can never flatter or hurt another.
public final class Guest: @unchecked Sendable {
    /// How the page allocator's free path treats swiotlb zero-copy pages.
    public enum FreePath: Sendable, Hashable {
        /// The kernel as it is: a zero-copy swiotlb page reaching the free path
        /// is a bug (a diagnosed trap).
        case plain
        /// The seed patch: `__free_frozen_pages` first asks swiotlb whether the
        /// page is one of its zero-copy runs, on every free (counted).
        case swiotlbHook
    }

    /// What the guest runs on: a confidential VM, or devices behind an IOMMU
    /// and memory that is not encrypted.
    public enum Platform: Sendable, Hashable {
        /// A confidential VM (TDX, SEV-SNP, pKVM, CCA): memory is private
        /// (encrypted), every device bounces through swiotlb (today's default).
        case confidential
        /// No memory encryption; devices behind an IOMMU: `dma_map` allocates
        /// an IOVA and writes page-table entries, nothing bounces.
        case iommu(IOMMUConfiguration)

        /// The name `txsim --platform` takes.
        public var name: String {
            switch self {
            case .confidential: "coco"
            case .iommu: "iommu"
            }
        }

        /// The IOMMU's configuration, on `.iommu`.
        public var iommu: IOMMUConfiguration? {
            if case .iommu(let c) = self { return c }
            return nil
        }
    }

    public let memory: GuestMemory
    public let platform: Platform
    /// The IOMMU the devices sit behind (`.iommu` only).
    public let iommu: IOMMU?
    public let devices: DeviceRegistry
    public let swiotlb: SWIOTLB
    public let dma: DMAAPI
    /// The general allocator (jemalloc over private memory): `alloc_pages`.
    public let allocator: GeneralAllocator
    /// The generic pre-decrypted allocator the review asked for.
    public let decrypted: DecryptedAllocator
    public let freePath: FreePath
    /// Spare pre-decrypted chunks a guest keeps by default.
    public static let defaultDecryptedSpareChunks = 8

    /// Boots a guest.
    /// - Parameters:
    ///   - swiotlbAreas: swiotlb area count (default: CPUs rounded up to a power of two).
    ///   - zeroCopyPercent: `swiotlb.zerocopy_tx_percent` (0 disables; at most 90).
    ///   - decryptedSpareChunks: fully free pre-decrypted chunks the decrypted
    ///     allocator keeps shared instead of converting back (each conversion is
    ///     a modelled hypercall; spares stop chunks churning under load: with
    ///     none, an alloc+free pair measured about 520 µs, two conversions).
    public init(_ configuration: GuestMemoryConfiguration = .init(), swiotlbAreas: Int? = nil,
                zeroCopyPercent: Int = 0, freePath: FreePath = .plain,
                decryptedSpareChunks: Int = Guest.defaultDecryptedSpareChunks, platform: Platform = .confidential) throws {
        let memory = try GuestMemory(configuration)
        let swiotlb = try SWIOTLB(memory: memory, areaCount: swiotlbAreas)
        try swiotlb.setZeroCopyPercent(zeroCopyPercent)
        self.memory = memory
        self.swiotlb = swiotlb
        self.platform = platform
        switch platform {
        case .confidential:
            iommu = nil
            devices = DeviceRegistry(forceBounce: true)
        case .iommu(let c):
            let iommu = try IOMMU(memory: memory, configuration: c)
            self.iommu = iommu
            devices = DeviceRegistry(forceBounce: false, iommu: iommu)
        }
        self.dma = DMAAPI(memory: memory, swiotlb: swiotlb)
        self.freePath = freePath
        switch freePath {
        case .plain:
            allocator = try GeneralAllocator(memory: memory)
        case .swiotlbHook:
            allocator = try GeneralAllocator(memory: memory, freeHook: Guest.swiotlbFreeHook(swiotlb))
        }
        decrypted = try DecryptedAllocator(general: allocator, configuration: .init(spareChunks: decryptedSpareChunks))
    }

    // MARK: The page allocator's free path

    /// The seed patch's check in `__free_frozen_pages`: is this page one of
    /// swiotlb's zero-copy runs? If so swiotlb takes it back
    /// (`swiotlb_free_pages`). Run on every free of a guest booted with
    /// `.swiotlbHook`; `txsim microbench` times frees with and without it
    /// (`general_free_hooked_ns` against `general_free_ns`).
    package static func swiotlbFreeHook(_ swiotlb: SWIOTLB) -> GeneralAllocator.FreeHook {
        { [swiotlb] page in
            guard page.head.owner == .swiotlbZeroCopy else { return false }
            swiotlb.freeZeroCopyPages(page.head)
            return true
        }
    }

    /// `put_page`: drops one reference; the last one frees the page to its
    /// allocator (`freePage`).
    @inlinable
    public func putPage(_ page: Page) {
        let head = page.head
        if head.release() { freePage(head) }
    }

    /// `__free_pages`: gives a page run whose last reference is gone back to the
    /// owner that handed it out, through the owner's kind (`PageOwnerKind.freePage`):
    /// pages of the general allocator (and, with the seed patch's hook, zero-copy
    /// swiotlb runs) go through jemalloc's free path, pre-decrypted pages to
    /// their allocator, a user's provider's pages to that provider; free pages,
    /// swiotlb slots and page_pool pages trap with their diagnosis.
    public func freePage(_ page: Page) {
        let head = page.head
        PageOwnerRegistry.shared.freePage(head, owner: head.owner.id, guest: self)
    }

    // MARK: Accounting

    /// Pages that are not back with their owner: after every user of the guest
    /// has released everything, this must be 0. It counts pages still held by an
    /// allocator, pool or provider (every owner whose kind `holdsPages`), swiotlb slots still in use (in pages), and pages
    /// outside swiotlb still shared (a conversion never undone), and IOMMU
    /// page-table entries still present (a mapping never unmapped pins its
    /// page). Spare chunks of the decrypted allocator are released first, and
    /// the IOMMU's lazy queue flushed: holding them is not a leak.
    public func lostPages() -> Int {
        decrypted.releaseSpareChunks(keeping: 0)
        iommu?.flush()
        var held = 0
        var sharedOutsideSWIOTLB = 0
        let registry = PageOwnerRegistry.shared
        for index in 0..<memory.pageCount {
            let page = memory.page(at: index)
            if registry.holdsPages(page.owner.id) { held += 1 }
            if page.domain == .shared && !memory.swiotlbPages.contains(index) { sharedOutsideSWIOTLB += 1 }
        }
        let slotsPerPage = PageGeometry.size / SWIOTLB.slotSize
        let swiotlbPages = (swiotlb.usedSlots + slotsPerPage - 1) / slotsPerPage
        return held + swiotlbPages + sharedOutsideSWIOTLB + (iommu?.statistics.presentEntries ?? 0)
    }
}

extension PagePool {
    /// The pool a page belongs to (`page->pp`), or nil for a page that is not a
    /// pool page. `ownerObject` is trusted only once the page carries a pool
    /// signature (`pp_magic`), and the pool found must carry the same one.
    @inlinable
    public static func owning(_ page: Page) -> PagePool? {
        let head = page.head
        let signature = head.descriptor.pointee.poolSignature
        guard head.owner == .pagePool, signature & 0xffff_ffff == PagePool.signatureMagic,
              let object = head.descriptor.pointee.ownerObject else { return nil }
        let pool = Unmanaged<PagePool>.fromOpaque(object).takeUnretainedValue()
        return pool.signature == signature ? pool : nil
    }
}
