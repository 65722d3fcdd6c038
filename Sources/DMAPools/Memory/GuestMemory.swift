import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How a confidential VM's guest memory is laid out.
public struct GuestMemoryConfiguration: Sendable, Hashable {
    /// Guest RAM modelled, in bytes (a multiple of 2 MiB). The region is reserved
    /// up front with `MAP_NORESERVE`; pages not made resident at boot (see
    /// `residentAtBoot`) are faulted in when first touched.
    public var guestBytes: Int
    /// The swiotlb bounce pool, in bytes (a multiple of a 256 KiB segment). It sits
    /// at the top of guest memory and is shared from boot.
    public var swiotlbBytes: Int
    /// Guest-physical address of the first page.
    public var physicalBase: UInt64
    /// The bit that marks shared memory in a DMA address (TDX: GPA width - 1).
    public var sharedBit: Int
    /// The modelled cost of private <-> shared conversions.
    public var hypercall: HypercallCostModel
    /// NUMA nodes the guest's memory is split into: equal contiguous ranges of
    /// pages, node 0 lowest (`page_to_nid`). 1 to 64.
    public var numaNodes: Int = 1
    /// Whether memory a real VM has resident is faulted in when the guest is
    /// built (`madvise(MADV_POPULATE_WRITE)`, else a write to each page), so
    /// that no measured run pays first-touch faults a VM never pays: the whole
    /// swiotlb pool (a VM's bounce pool is allocated and converted at boot)
    /// and the first `residentPrivateBytes` of private memory (the general
    /// allocator carves private memory front to back). Costs a fault per
    /// page at boot (about 10 ms for the 64 MiB default pool); a guest that
    /// is never measured may opt out with `false`.
    public var residentAtBoot: Bool = true
    /// Private memory, from its start, made resident at boot (rounded up to
    /// 2 MiB, at most the private part). `Experiment` sets the workload's
    /// working set; 0 by default.
    public var residentPrivateBytes: Int = 0
    /// Whether guest memory is backed by 2 MiB pages where the host allows
    /// (`madvise(MADV_HUGEPAGE)`, transparent huge pages), as the kernel's
    /// direct map is: a guest kernel reaches its pages through 2 MiB and
    /// 1 GiB mappings, so touching a thousand pages costs it no TLB misses
    /// that 4 KiB mappings would add. The region is still reserved with
    /// `MAP_NORESERVE`, so a first touch makes 2 MiB resident, not 4 KiB.
    /// Whether the host granted them is `GuestMemory.hugePagesAdvised`.
    public var directMapHugePages: Bool = true

    /// The confidential-VM swiotlb size rule (x86 `mem_encrypt_setup_arch`):
    /// 6% of guest memory clamped to [64 MiB, 1 GiB], rounded up to whole segments.
    public static func confidentialSWIOTLBBytes(guestBytes: Int) -> Int {
        let sixPercent = guestBytes / 100 * 6
        let clamped = min(max(sixPercent, 64 << 20), 1 << 30)
        let segment = 256 << 10
        return (clamped + segment - 1) / segment * segment
    }

    /// A guest of `guestBytes` with the confidential-VM swiotlb size.
    public init(
        guestBytes: Int = 1 << 30,
        swiotlbBytes: Int? = nil,
        physicalBase: UInt64 = 0x1_0000_0000,
        sharedBit: Int = 47,
        hypercall: HypercallCostModel = .default
    ) {
        self.guestBytes = guestBytes
        self.swiotlbBytes = swiotlbBytes ?? Self.confidentialSWIOTLBBytes(guestBytes: guestBytes)
        self.physicalBase = physicalBase
        self.sharedBit = sharedBit
        self.hypercall = hypercall
    }
}

/// Errors from guest memory.
public enum MemoryError: Error, Hashable, CustomStringConvertible {
    case invalidConfiguration(String)
    case reservationFailed(bytes: Int, errno: Int32)
    case addressOutsideGuestMemory(PhysicalAddress)
    case pointerOutsideGuestMemory(UInt)
    case conversionFailed(pages: Int, call: Int)
    case alreadyInDomain(PhysicalAddress, MemoryDomain)

    public var description: String {
        switch self {
        case .invalidConfiguration(let why): "invalid guest memory configuration: \(why)"
        case .reservationFailed(let bytes, let err): "could not reserve \(bytes) bytes of guest memory (errno \(err))"
        case .addressOutsideGuestMemory(let a): "\(a) is outside guest memory"
        case .pointerOutsideGuestMemory(let p): "pointer 0x\(String(p, radix: 16)) is outside guest memory"
        case .conversionFailed(let pages, let call): "modelled conversion hypercall #\(call) failed (\(pages) pages)"
        case .alreadyInDomain(let a, let d): "\(a) is already \(d)"
        }
    }
}

/// Guest physical memory: one region reserved up front, 4 KiB pages, and a
/// descriptor per page (the `mem_map`). Pages are private (encrypted) unless
/// converted to shared; the swiotlb region at the top is shared from boot.
///
///     physicalBase                                     physicalBase + guestBytes
///     |<------------- private (general allocator) ------------>|<-- swiotlb -->|
///                       (pages may be converted to shared)        (shared)
public final class GuestMemory: @unchecked Sendable {
    public let configuration: GuestMemoryConfiguration
    /// The first byte of the region (2 MiB aligned, so virtual and physical
    /// alignment agree up to order 9).
    public let base: UnsafeMutableRawPointer
    /// Pages in the region.
    public let pageCount: Int
    /// The descriptor array: `descriptors[i]` describes page `i`.
    public let descriptors: UnsafeMutablePointer<PageDescriptor>
    /// Page indices of the private part (general allocator and conversions).
    public let privatePages: Range<Int>
    /// Page indices of the swiotlb bounce pool.
    public let swiotlbPages: Range<Int>
    /// The DMA-address bit that marks shared memory.
    public let sharedMask: UInt64

    /// Private bytes (from the start of private memory) faulted in at boot.
    public let residentPrivateBytes: Int
    /// Whether the host accepted `MADV_HUGEPAGE` for guest memory
    /// (`directMapHugePages`); false when not asked or when the host has
    /// transparent huge pages disabled.
    public let hugePagesAdvised: Bool

    private let mapping: UnsafeMutableRawPointer
    private let mappingBytes: Int
    private let descriptorBytes: Int
    private let conversions = Lock(ConversionStatistics())

    public init(_ configuration: GuestMemoryConfiguration = .init()) throws(MemoryError) {
        let twoMiB = 2 << 20
        guard configuration.guestBytes > 0, configuration.guestBytes % twoMiB == 0 else {
            throw .invalidConfiguration("guestBytes \(configuration.guestBytes) must be a positive multiple of 2 MiB")
        }
        guard configuration.swiotlbBytes > 0, configuration.swiotlbBytes % (256 << 10) == 0 else {
            throw .invalidConfiguration("swiotlbBytes \(configuration.swiotlbBytes) must be a positive multiple of 256 KiB")
        }
        guard configuration.swiotlbBytes < configuration.guestBytes else {
            throw .invalidConfiguration("swiotlbBytes \(configuration.swiotlbBytes) must be less than guestBytes \(configuration.guestBytes)")
        }
        guard configuration.physicalBase % UInt64(1 << 30) == 0 else {
            throw .invalidConfiguration("physicalBase must be 1 GiB aligned")
        }
        guard configuration.physicalBase + UInt64(configuration.guestBytes) <= PageDescriptor.physicalAddressLimit else {
            throw .invalidConfiguration("physicalBase + guestBytes must be at most 2^52 (MAXPHYADDR)")
        }
        guard (32...62).contains(configuration.sharedBit),
              configuration.physicalBase + UInt64(configuration.guestBytes) <= (UInt64(1) << configuration.sharedBit) else {
            throw .invalidConfiguration("sharedBit \(configuration.sharedBit) must be in 32...62 and above every guest address")
        }
        guard (1...64).contains(configuration.numaNodes) else {
            throw .invalidConfiguration("numaNodes \(configuration.numaNodes) must be in 1...64")
        }
        self.configuration = configuration
        self.mappingBytes = configuration.guestBytes + twoMiB
        guard let raw = mmap(nil, mappingBytes, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              raw != MAP_FAILED else {
            throw .reservationFailed(bytes: configuration.guestBytes, errno: errno)
        }
        self.mapping = raw
        let misalignment = Int(bitPattern: raw) & (twoMiB - 1)
        self.base = raw + (misalignment == 0 ? 0 : twoMiB - misalignment)
        self.pageCount = configuration.guestBytes >> PageGeometry.shift
        let swiotlbCount = configuration.swiotlbBytes >> PageGeometry.shift
        self.hugePagesAdvised = configuration.directMapHugePages
            && madvise(base, configuration.guestBytes, 14 /* MADV_HUGEPAGE */) == 0
        self.privatePages = 0..<(pageCount - swiotlbCount)
        self.swiotlbPages = (pageCount - swiotlbCount)..<pageCount
        self.sharedMask = UInt64(1) << configuration.sharedBit
        if configuration.residentAtBoot {
            let privateBytes = configuration.guestBytes - configuration.swiotlbBytes
            let wanted = (max(0, configuration.residentPrivateBytes) + twoMiB - 1) / twoMiB * twoMiB
            self.residentPrivateBytes = min(privateBytes, wanted)
            Self.makeResident(base, bytes: residentPrivateBytes)
            Self.makeResident(base + privateBytes, bytes: configuration.swiotlbBytes)
        } else {
            self.residentPrivateBytes = 0
        }
        // The descriptor table (the kernel's memmap) is page-granular memory of
        // its own, like the region it describes, not a heap block: a malloc
        // interposer's `free` probes the bytes before a page-aligned block it
        // did not tag, which faulted here in the benchmark suite.
        self.descriptorBytes = (pageCount * MemoryLayout<PageDescriptor>.stride + PageGeometry.size - 1) & ~(PageGeometry.size - 1)
        guard let table = mmap(nil, descriptorBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              table != MAP_FAILED else {
            munmap(raw, mappingBytes)
            throw .reservationFailed(bytes: descriptorBytes, errno: errno)
        }
        self.descriptors = table.bindMemory(to: PageDescriptor.self, capacity: pageCount)
        for index in 0..<pageCount {
            let shared = index >= pageCount - swiotlbCount
            (descriptors + index).initialize(to: PageDescriptor(
                virtualAddress: base + (index << PageGeometry.shift),
                physicalAddress: PhysicalAddress(configuration.physicalBase + UInt64(index << PageGeometry.shift)),
                domain: shared ? .shared : .private,
                node: UInt8(index * configuration.numaNodes / pageCount)))
            if shared { descriptors[index].owner = .swiotlbSlots }
        }
    }

    /// Faults `bytes` at `start` in for writing, so later touches take no
    /// fault: one `madvise(MADV_POPULATE_WRITE)` (Linux 5.14), or on older
    /// kernels a write of zero to each page (the mapping is fresh, so its
    /// contents are zero already).
    private static func makeResident(_ start: UnsafeMutableRawPointer, bytes: Int) {
        guard bytes > 0 else { return }
        if madvise(start, bytes, 23 /* MADV_POPULATE_WRITE */) == 0 { return }
        for offset in stride(from: 0, to: bytes, by: PageGeometry.size) {
            start.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self)
        }
    }

    /// How many of the pages in `pages` are resident in this process's
    /// memory now (`mincore`): for tests and reports, not hot paths.
    public func residentPageCount(_ pages: Range<Int>) -> Int {
        precondition(pages.lowerBound >= 0 && pages.upperBound <= pageCount, "pages \(pages) outside guest memory")
        guard !pages.isEmpty else { return 0 }
        let systemPage = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = base + (pages.lowerBound << PageGeometry.shift)
        let bytes = pages.count << PageGeometry.shift
        var vector = [UInt8](repeating: 0, count: (bytes + systemPage - 1) / systemPage)
        guard mincore(start, bytes, &vector) == 0 else { return 0 }
        let perPage = max(1, PageGeometry.size / systemPage)
        var resident = 0
        for page in 0..<pages.count {
            var all = true
            for i in 0..<perPage where vector[page * perPage + i] & 1 == 0 { all = false }
            if all { resident += 1 }
        }
        return resident
    }

    deinit {
        descriptors.deinitialize(count: pageCount)
        munmap(descriptors, descriptorBytes)
        munmap(mapping, mappingBytes)
    }

    // MARK: Address <-> descriptor, O(1) both ways

    /// The page at index `index` of the region.
    @inlinable
    public func page(at index: Int) -> Page {
        precondition(index >= 0 && index < pageCount, "page index \(index) outside guest memory (\(pageCount) pages)")
        return Page(descriptor: descriptors + index)
    }

    /// The index of `page` in the region.
    @inlinable
    public func index(of page: Page) -> Int { page.descriptor - descriptors }

    /// The page containing a guest-physical address (`pfn_to_page(PHYS_PFN(a))`).
    public func page(containing address: PhysicalAddress) throws(MemoryError) -> Page {
        let offset = address.rawValue &- configuration.physicalBase
        guard address.rawValue >= configuration.physicalBase, offset < UInt64(configuration.guestBytes) else {
            throw .addressOutsideGuestMemory(address)
        }
        return Page(descriptor: descriptors + Int(offset >> UInt64(PageGeometry.shift)))
    }

    /// The page containing a byte of the region (`virt_to_page`).
    public func page(containing pointer: UnsafeRawPointer) throws(MemoryError) -> Page {
        let offset = UInt(bitPattern: pointer - UnsafeRawPointer(base))
        guard pointer >= UnsafeRawPointer(base), offset < UInt(configuration.guestBytes) else {
            throw .pointerOutsideGuestMemory(UInt(bitPattern: pointer))
        }
        return Page(descriptor: descriptors + Int(offset >> UInt(PageGeometry.shift)))
    }

    /// Whether a pointer lies inside the region.
    @inlinable
    public func contains(_ pointer: UnsafeRawPointer) -> Bool {
        pointer >= UnsafeRawPointer(base) && pointer < UnsafeRawPointer(base) + configuration.guestBytes
    }

    /// The guest-physical address of a byte of the region (`virt_to_phys`).
    public func physicalAddress(of pointer: UnsafeRawPointer) throws(MemoryError) -> PhysicalAddress {
        guard contains(pointer) else { throw .pointerOutsideGuestMemory(UInt(bitPattern: pointer)) }
        return PhysicalAddress(configuration.physicalBase + UInt64(pointer - UnsafeRawPointer(base)))
    }

    /// The byte at a guest-physical address (`phys_to_virt`).
    public func pointer(to address: PhysicalAddress) throws(MemoryError) -> UnsafeMutableRawPointer {
        let offset = address.rawValue &- configuration.physicalBase
        guard address.rawValue >= configuration.physicalBase, offset < UInt64(configuration.guestBytes) else {
            throw .addressOutsideGuestMemory(address)
        }
        return base + Int(offset)
    }

    /// The device-visible address of shared memory (`phys_to_dma_unencrypted`).
    @inlinable
    public func unencryptedDMAAddress(of address: PhysicalAddress) -> DMAAddress {
        DMAAddress(address.rawValue | sharedMask)
    }

    /// The guest-physical address behind a DMA address, if it carries the shared
    /// bit; `nil` for an address that cannot name shared memory.
    @inlinable
    public func physicalAddress(ofShared address: DMAAddress) -> PhysicalAddress? {
        guard address.rawValue & sharedMask != 0 else { return nil }
        return PhysicalAddress(address.rawValue & ~sharedMask)
    }

    // MARK: Compound runs

    /// Makes `head` the head of an order-`order` run (`prep_compound_page`).
    /// The caller holds all `1 << order` pages exclusively.
    /// Provider SPI: `prepareCompoundRun`, for pages a provider hands out.
    @_spi(PagePoolProvider)
    public func prepareCompound(_ head: Page, order: Int, owner: PageOwner) {
        prepareCompoundRun(head, order: order, owner: owner)
    }

    @usableFromInline
    func prepareCompoundRun(_ head: Page, order: Int, owner: PageOwner) {
        precondition((0...PageGeometry.maxPageOrder).contains(order), "page order \(order) outside 0...\(PageGeometry.maxPageOrder) (MAX_PAGE_ORDER)")
        let count = 1 << order
        precondition(index(of: head) % count == 0, "order-\(order) run at \(head.physicalAddress) is not naturally aligned")
        head.descriptor.pointee.order = UInt8(order)
        head.descriptor.pointee.headOffset = 0
        head.descriptor.pointee.owner = owner
        for tail in 1..<max(count, 1) {
            head.descriptor[tail].headOffset = UInt16(tail)
            head.descriptor[tail].order = 0
            head.descriptor[tail].owner = owner
        }
    }

    /// Dissolves a compound run back into single pages owned by `owner`.
    /// Provider SPI: `destroyCompoundRun`, for pages a provider takes back.
    @_spi(PagePoolProvider)
    public func destroyCompound(_ head: Page, owner: PageOwner) {
        destroyCompoundRun(head, owner: owner)
    }

    @usableFromInline
    func destroyCompoundRun(_ head: Page, owner: PageOwner) {
        let count = 1 << Int(head.descriptor.pointee.order)
        for i in 0..<count {
            head.descriptor[i].order = 0
            head.descriptor[i].headOffset = 0
            head.descriptor[i].owner = owner
            head.descriptor[i].dmaAddress = .mappingError
            head.descriptor[i].poolSignature = 0
            head.descriptor[i].ownerObject = nil
            head.descriptor[i].privateWord = 0
            head.descriptor[i].isPFMemalloc = false
        }
    }

    // MARK: Domains (modelled hypercalls)

    /// Converts `count` pages starting at `first` to `domain` in one modelled
    /// hypercall (`set_memory_decrypted` / `set_memory_encrypted`). The caller
    /// holds the pages exclusively. Returns the modelled nanoseconds charged.
    @discardableResult
    public func convert(_ first: Page, count: Int, to domain: MemoryDomain) throws(MemoryError) -> Int {
        let start = index(of: first)
        precondition(count > 0 && start + count <= pageCount, "conversion of \(count) pages at index \(start) exceeds guest memory")
        for i in start..<(start + count) where descriptors[i]._domain.load(ordering: .relaxed) == domain.rawValue {
            throw .alreadyInDomain(descriptors[i].physicalAddress, domain)
        }
        let model = configuration.hypercall
        let cost = model.nanoseconds(pages: count)
        let call = conversions.withLock { stats in
            stats.calls += 1
            stats.modelledNanoseconds += cost
            return stats.calls
        }
        if model.failEveryNthCall > 0, call % model.failEveryNthCall == 0 {
            conversions.withLock { $0.failures += 1 }
            if model.charge == .spin { spin(nanoseconds: model.perCallNanoseconds) }
            throw .conversionFailed(pages: count, call: call)
        }
        if model.charge == .spin { spin(nanoseconds: cost) }
        for i in start..<(start + count) {
            descriptors[i]._domain.store(domain.rawValue, ordering: .releasing)
        }
        conversions.withLock { stats in
            if domain == .shared { stats.pagesDecrypted += count } else { stats.pagesEncrypted += count }
        }
        return cost
    }

    /// The conversion counters so far.
    public var conversionStatistics: ConversionStatistics { conversions.withLock { $0 } }

    // MARK: Accounting

    /// Pages currently in each owner state (tail pages counted with their run).
    /// O(pages): for reports and tests, not hot paths.
    public func census() -> [PageOwner: Int] {
        var counts: [PageOwner: Int] = [:]
        for i in 0..<pageCount { counts[descriptors[i].owner, default: 0] += 1 }
        return counts
    }

    /// Pages of the region currently in the shared domain.
    public func sharedPageCount() -> Int {
        var n = 0
        for i in 0..<pageCount where descriptors[i]._domain.load(ordering: .relaxed) == MemoryDomain.shared.rawValue { n += 1 }
        return n
    }
}
