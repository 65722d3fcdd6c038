import Synchronization

/// The software I/O TLB (`kernel/dma/swiotlb.c`): the bounce-buffer pool every
/// streaming DMA of a confidential VM goes through.
///
/// The pool is `memory.swiotlbPages`, shared from boot. It is cut into 2 KiB
/// *slots* (`IO_TLB_SIZE`); 128 consecutive slots form a *segment*
/// (`IO_TLB_SEGSIZE`, 256 KiB) that no mapping crosses; whole segments are
/// grouped into *areas*, each with its own lock, `used` count and search `index`.
///
///     start                                                       start + nslabs * 2 KiB
///     | area 0: segment 0 | segment 1 | ... | area 1: segment k | ... |
///
/// Each slot records `orig_addr`, `alloc_size`, `list` (free slots from here to
/// the end of its segment, 0 when allocated) and `pad_slots`, in one array
/// allocated at init; mapping and unmapping allocate nothing.
///
/// Locking: an area's `Mutex` guards its `used`, `index` and per-area counters,
/// and the `list` (and the model-only `flags`) of the slots inside it. A live
/// mapping's `orig_addr`, `alloc_size` and `pad_slots` are written under the lock
/// when it is created and read by whoever holds the mapping. Total used slots and
/// the high-water mark are atomics, as in the kernel with `CONFIG_DEBUG_FS`.
///
/// Deviations from the kernel, all deliberate:
/// - One fixed pool, no dynamic or transient pools (`CONFIG_SWIOTLB_DYNAMIC` off).
/// - The segment boundary mask is `ULONG_MAX` (no device sets one), so
///   `iommu_is_span_boundary` never rejects a slot.
/// - The kernel rounds `nslabs` up to a power of two so areas hold whole
///   segments; the pool here has a fixed size, so the default area count is
///   instead lowered until areas hold whole segments.
/// - Unmap and sync validate their address (a model-only `flags` byte per slot
///   marks the head of each live mapping) and throw `.notMapped` instead of
///   corrupting the pool.
public final class SWIOTLB: @unchecked Sendable {
    // MARK: Geometry

    /// `IO_TLB_SHIFT`.
    public static let slotShift = 11
    /// `IO_TLB_SIZE`: 2 KiB.
    public static let slotSize = 1 << slotShift
    /// `IO_TLB_SEGSIZE`: slots per segment.
    public static let segmentSlots = 128
    /// Bytes per segment, and the largest allocation (256 KiB).
    public static let segmentBytes = slotSize * segmentSlots

    /// The confidential-VM swiotlb size for a guest of `guestBytes`
    /// (6% of memory clamped to [64 MiB, 1 GiB], whole segments).
    public static func defaultConfidentialBytes(guestBytes: Int) -> Int {
        GuestMemoryConfiguration.confidentialSWIOTLBBytes(guestBytes: guestBytes)
    }

    // MARK: Storage

    /// The guest memory the pool lives in.
    public let memory: GuestMemory
    /// Slots in the pool (`mem->nslabs`).
    public let nslabs: Int
    /// Areas (`mem->nareas`), a power of two.
    public let areaCount: Int
    /// Slots per area (`mem->area_nslabs`), whole segments.
    public let areaSlots: Int
    /// The pool's first guest-physical address (`mem->start`).
    public let start: PhysicalAddress

    @usableFromInline let startRaw: UInt64
    @usableFromInline let endRaw: UInt64
    /// `phys_to_dma_unencrypted(start)`: alignment checks use bus addresses.
    @usableFromInline let startDMARaw: UInt64
    /// The last bus address of the pool, for the DMA-mask check.
    @usableFromInline let lastDMARaw: UInt64
    /// `mem->vaddr`.
    @usableFromInline let startPointer: UnsafeMutableRawPointer
    /// Index of the pool's first page in `memory`.
    @usableFromInline let firstPageIndex: Int
    /// Guest memory's first and one-past-last guest-physical addresses and bytes,
    /// cached so copies need no trip through `memory`.
    let guestStartRaw: UInt64
    let guestEndRaw: UInt64
    let guestBase: UnsafeMutableRawPointer

    let slots: UnsafeMutablePointer<Slot>
    let areaStorage: UnsafeMutableRawPointer
    private let areaAllocation: AlignedAllocation
    /// Bytes between consecutive areas (two cache lines, against false sharing).
    static let areaStride = 128

    let cpu: CPUIdentity
    /// `mem->total_used`.
    let totalUsed = Atomic<Int>(0)
    /// `mem->used_hiwater`.
    let usedHighWater = Atomic<Int>(0)
    /// Requests that found no free run.
    let exhaustionFailures = Atomic<Int>(0)
    /// `zerocopy_tx_percent` (0 disables).
    let zeroCopyPercentStorage = Atomic<Int>(0)
    /// Zero-copy runs, pages and slots handed out and not yet freed.
    let zeroCopyRuns = Atomic<Int>(0)
    let zeroCopyPagesInUse = Atomic<Int>(0)
    let zeroCopySlotsInUse = Atomic<Int>(0)
    let zeroCopyAllocationFailures = Atomic<Int>(0)
    /// Sync copies (counted outside any area lock).
    let syncCounters: PerCPUCounters

    /// Creates the pool over `memory.swiotlbPages`.
    ///
    /// - Parameter areaCount: the number of areas, a power of two such that every
    ///   area holds whole segments. `nil` picks the kernel's default: the online
    ///   CPU count rounded up to a power of two, limited so that each area holds
    ///   at least one segment (`limit_nareas`) and a whole number of them.
    /// - Throws: `DMAError.invalidArgument` naming a bad area count.
    public init(memory: GuestMemory, areaCount: Int? = nil) throws(DMAError) {
        let bytes = memory.swiotlbPages.count << PageGeometry.shift
        let nslabs = bytes >> Self.slotShift
        let segments = nslabs / Self.segmentSlots
        precondition(segments > 0 && nslabs % Self.segmentSlots == 0,
                     "swiotlb of \(bytes) bytes is not whole segments")
        let nareas: Int
        if let areaCount {
            guard areaCount > 0, areaCount & (areaCount - 1) == 0 else {
                throw .invalidArgument("swiotlb areaCount \(areaCount) must be a power of two >= 1")
            }
            guard areaCount <= segments, segments % areaCount == 0 else {
                throw .invalidArgument(
                    "swiotlb areaCount \(areaCount) is too many for \(segments) segments: every area needs whole segments")
            }
            nareas = areaCount
        } else {
            // limit_nareas (at least a segment each), then whole segments each.
            var n = roundUpToPowerOfTwo(CPUIdentity.onlineCount())
            while n > 1 && (n > segments || segments % n != 0) { n >>= 1 }
            nareas = n
        }
        precondition(nareas & (nareas - 1) == 0)

        self.memory = memory
        self.nslabs = nslabs
        self.areaCount = nareas
        self.areaSlots = nslabs / nareas
        self.firstPageIndex = memory.swiotlbPages.lowerBound
        self.guestStartRaw = memory.configuration.physicalBase
        self.guestEndRaw = memory.configuration.physicalBase + UInt64(memory.configuration.guestBytes)
        self.guestBase = memory.base
        let first = memory.page(at: memory.swiotlbPages.lowerBound)
        self.start = first.physicalAddress
        self.startRaw = first.physicalAddress.rawValue
        self.endRaw = first.physicalAddress.rawValue + UInt64(bytes)
        self.startDMARaw = memory.unencryptedDMAAddress(of: first.physicalAddress).rawValue
        self.lastDMARaw = startDMARaw + UInt64(bytes - 1)
        self.startPointer = first.bytes
        self.cpu = CPUIdentity.shared
        self.syncCounters = PerCPUCounters(counters: SyncCounter.allCases.count)

        // swiotlb_init_io_tlb_pool
        slots = .allocate(capacity: nslabs)
        for i in 0..<nslabs {
            let list = min(Self.segmentSlots - (i & (Self.segmentSlots - 1)), nslabs - i)
            (slots + i).initialize(to: Slot(list: UInt16(list)))
        }
        areaAllocation = AlignedAllocation(byteCount: nareas * Self.areaStride, alignment: Self.areaStride)
        areaStorage = areaAllocation.pointer
        for a in 0..<nareas {
            (areaStorage + a * Self.areaStride)
                .bindMemory(to: Lock<AreaState>.self, capacity: 1)
                .initialize(to: Lock(AreaState()))
        }
    }

    deinit {
        for a in 0..<areaCount { area(a).deinitialize(count: 1) }
        areaAllocation.deallocate()
        slots.deinitialize(count: nslabs)
        slots.deallocate()
    }

    /// Area `index`'s lock and state.
    @inline(__always)
    func area(_ index: Int) -> UnsafeMutablePointer<Lock<AreaState>> {
        // index < areaCount, so the product is at most the allocation size.
        (areaStorage + index &* Self.areaStride).assumingMemoryBound(to: Lock<AreaState>.self)
    }

    // MARK: Addresses

    /// Whether `address` lies in the pool (`is_swiotlb_buffer`).
    @inlinable
    public func contains(_ address: PhysicalAddress) -> Bool {
        address.rawValue >= startRaw && address.rawValue < endRaw
    }

    /// The bus address of a bounce address (`phys_to_dma_unencrypted`).
    @inlinable
    public func dmaAddress(of tlbAddress: PhysicalAddress) -> DMAAddress {
        memory.unencryptedDMAAddress(of: tlbAddress)
    }

    /// The largest mapping a device can ask for (`swiotlb_max_mapping_size`):
    /// 256 KiB less its `min_align_mask` rounded up to a slot.
    @inlinable
    public func maxMappingSize(for device: Device) -> Int {
        let minAlign = device.minAlignMask == 0 ? 0
            : (Int(device.minAlignMask) + Self.slotSize - 1) & ~(Self.slotSize - 1)
        return Self.segmentBytes - minAlign
    }

    /// `slot_addr(mem->start, index)`.
    @inline(__always)
    func slotAddress(_ index: Int) -> UInt64 {
        // index < nslabs: the pool lies inside guest memory, far below 2^63.
        startRaw &+ UInt64(truncatingIfNeeded: index &<< Self.slotShift)
    }

    /// The slot containing a pool address (the caller checked `contains`).
    @inline(__always)
    func slotIndex(of address: UInt64) -> Int {
        Int(truncatingIfNeeded: (address &- startRaw) >> UInt64(Self.slotShift))   // address >= startRaw
    }

    /// The bytes at a pool address (the caller checked `contains`).
    @inline(__always)
    func pointer(toPool address: UInt64) -> UnsafeMutableRawPointer {
        startPointer + Int(truncatingIfNeeded: address &- startRaw)   // address >= startRaw
    }

    /// The bytes at a guest-physical address already known to be in guest memory
    /// (validated at map time): `phys_to_virt` without the checks.
    @inline(__always)
    func guestPointer(_ address: UInt64) -> UnsafeMutableRawPointer {
        guestBase + Int(truncatingIfNeeded: address &- guestStartRaw)   // address >= guestStartRaw
    }

    /// `io_tlb_offset`: a slot's position inside its segment.
    @inline(__always)
    static func segmentOffset(_ index: Int) -> Int { index & (segmentSlots - 1) }

    /// `nr_slots`: slots covering `bytes`.
    @inline(__always)
    static func slotCount(_ bytes: Int) -> Int {
        // bytes <= 256 KiB plus an alignment below 256 KiB: no overflow.
        (bytes &+ slotSize &- 1) &>> slotShift
    }

    /// `swiotlb_align_offset(dev, align_mask, addr)`: the offset from the start of
    /// an allocation that keeps the device's `min_align_mask` bits of `address`.
    @inline(__always)
    static func alignOffset(minAlignMask: UInt64, allocAlignMask: UInt64, address: UInt64) -> Int {
        Int(truncatingIfNeeded: address & minAlignMask & (allocAlignMask | UInt64(slotSize - 1)))
    }
}

/// One slot (`struct io_tlb_slot`) plus a model-only flags byte.
struct Slot {
    /// `INVALID_PHYS_ADDR`.
    static let invalidAddress = UInt64.max

    /// `orig_addr`: the original buffer byte this slot shadows.
    var originalAddress: UInt64 = Slot.invalidAddress
    /// `alloc_size`: bytes from this slot to the end of the allocation, less the
    /// mapping's sub-slot offset. Signed: with a min_align_mask offset the last
    /// slot's value can go below zero (the kernel's `size_t` wraps the same way),
    /// and `swiotlb_bounce`'s arithmetic still comes out right.
    var allocSize: Int32 = 0
    /// `list`: free slots from here to the end of the segment; 0 when allocated.
    var list: UInt16
    /// `pad_slots`: padding slots before the first mapped slot (on that slot).
    var padSlots: UInt8 = 0
    /// Model-only state, kept so the invariants and address validation do not
    /// depend on the `list` field they check.
    var flags: Flags = []

    init(list: UInt16) { self.list = list }

    struct Flags: OptionSet {
        var rawValue: UInt8
        /// The slot belongs to an allocation (mapping, its padding, or a zero-copy run).
        static let allocated = Flags(rawValue: 1 << 0)
        /// The first non-padding slot of a live bounce mapping.
        static let mappingHead = Flags(rawValue: 1 << 1)
        /// The first slot of a live zero-copy run.
        static let zeroCopyHead = Flags(rawValue: 1 << 2)
    }
}

/// What an area's lock guards (`struct io_tlb_area`) plus per-area counters that
/// are cheapest to keep under that same lock.
struct AreaState {
    /// `area->used`: allocated slots.
    var used = 0
    /// `area->index`: where the next search starts, relative to the area.
    var index = 0
    /// Live bounce mappings.
    var liveMappings = 0
    /// Bytes copied to bounce slots at map time.
    var bytesBouncedToDevice = 0
    /// Bytes copied back at unmap time.
    var bytesBouncedToCPU = 0
}

/// Counters of `SWIOTLB.syncCounters`.
enum SyncCounter: Int, CaseIterable {
    case bytesToDevice = 0
    case bytesToCPU = 1
}
