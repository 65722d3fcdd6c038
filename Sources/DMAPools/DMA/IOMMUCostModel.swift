/// How `dma_unmap` on an IOMMU ends a mapping's IOTLB entries
/// (`iommu.strict=`, the domain's `IOMMU_DOMAIN_DMA` or `IOMMU_DOMAIN_DMA_FQ`).
public enum IOMMUMode: String, Sendable, Hashable, CaseIterable {
    /// Every unmap clears its page-table entries and invalidates the IOTLB
    /// before it returns; the IOVA is free for reuse at once.
    case strict
    /// Unmap clears the entries and queues the IOVA on the flush queue; one
    /// domain-wide IOTLB flush ends a batch of them, and only then are their
    /// IOVAs free for reuse (`iommu_dma_free_iova` through `queue_iova`).
    case lazy
}

/// The modelled cost of IOMMU operations: nothing here programs a real
/// IOMMU, so every page-table write and IOTLB invalidation a real one takes
/// is a named, configurable cost, counted (`IOMMUStatistics`) and charged as
/// the conversion hypercall's is (`HypercallCostModel.Charge`: spun on the
/// calling thread, or only accounted).
///
/// The defaults are assumptions, not measurements: the reference set has no
/// published per-operation figure (David Stevens' iommu-backed bounce buffer
/// series measured whole-workload effects: 2.8-4.7x fio throughput and 87-97%
/// less time in `iommu_dma_unmap_*` per GB under virtio-iommu, where each
/// operation exits to the VMM). They are chosen of the order of a cache-missing
/// page-table walk per entry and of an invalidation-queue round trip per
/// invalidation on bare-metal VT-d/SMMUv3 class hardware; vary them
/// (`txsim iommu-sweep`, `--iommu-*-ns`).
public struct IOMMUCostModel: Sendable, Hashable {
    /// Fixed cost of one `dma_map` call (IOVA allocation, `iommu_map` entry), in ns.
    public var mapNanoseconds: Int
    /// Cost of each page-table entry written (set at map, cleared at unmap), in ns.
    public var pteNanoseconds: Int
    /// Cost of one synchronous IOTLB invalidation (strict mode: one per unmap), in ns.
    public var invalidateNanoseconds: Int
    /// Cost of one flush-queue flush (lazy mode: one domain-wide IOTLB flush per batch), in ns.
    public var flushNanoseconds: Int
    /// How the cost is charged to the calling thread.
    public var charge: HypercallCostModel.Charge

    public static let `default` = IOMMUCostModel(mapNanoseconds: 150, pteNanoseconds: 25, invalidateNanoseconds: 1_000,
                                                 flushNanoseconds: 2_000, charge: .spin)
    /// A model that charges nothing (for tests that count, not time).
    public static let free = IOMMUCostModel(mapNanoseconds: 0, pteNanoseconds: 0, invalidateNanoseconds: 0,
                                            flushNanoseconds: 0, charge: .accountOnly)
    /// The largest cost any one operation may be given: 1 ms (a virtio-iommu
    /// round trip to the VMM is tens of microseconds; more models no machine).
    public static let maximumNanoseconds = 1_000_000

    public init(mapNanoseconds: Int, pteNanoseconds: Int, invalidateNanoseconds: Int, flushNanoseconds: Int,
                charge: HypercallCostModel.Charge) {
        self.mapNanoseconds = mapNanoseconds
        self.pteNanoseconds = pteNanoseconds
        self.invalidateNanoseconds = invalidateNanoseconds
        self.flushNanoseconds = flushNanoseconds
        self.charge = charge
    }

    /// The same costs, each multiplied by `scale` (a sweep's point).
    public func scaled(by scale: Double) -> IOMMUCostModel {
        func s(_ v: Int) -> Int { Int((Double(v) * scale).rounded()) }
        return IOMMUCostModel(mapNanoseconds: s(mapNanoseconds), pteNanoseconds: s(pteNanoseconds),
                              invalidateNanoseconds: s(invalidateNanoseconds), flushNanoseconds: s(flushNanoseconds),
                              charge: charge)
    }
}

/// An IOMMU as a guest platform has it: the mode, the costs, the flush
/// queue's size and the IOVA space.
public struct IOMMUConfiguration: Sendable, Hashable {
    public var mode: IOMMUMode
    public var costs: IOMMUCostModel
    /// IOVAs a lazy unmap queues before one flush frees them all
    /// (the kernel's `IOVA_FQ_SIZE`, 256 per CPU). The kernel also flushes on
    /// a 10 ms timer (`IOVA_FQ_TIMEOUT`); this model flushes only when the
    /// queue is full, at `flush()` and at teardown, so a run is deterministic.
    public var flushQueueSize: Int
    /// IOVA space in pages (0: twice the guest's pages, at least 64 Ki pages).
    public var iovaPages: Int

    public static let flushQueueRange = 1...65_536
    public static let iovaPagesRange = 1_024...(1 << 26)

    public init(mode: IOMMUMode = .strict, costs: IOMMUCostModel = .default, flushQueueSize: Int = 256, iovaPages: Int = 0) {
        self.mode = mode
        self.costs = costs
        self.flushQueueSize = flushQueueSize
        self.iovaPages = iovaPages
    }
}

/// What an IOMMU did: every modelled operation counted.
public struct IOMMUStatistics: Sendable, Hashable {
    /// `dma_map` calls that allocated an IOVA and wrote entries.
    public var maps = 0
    /// `dma_unmap` calls that cleared entries.
    public var unmaps = 0
    /// Page-table entries written: set at map.
    public var pteWrites = 0
    /// Page-table entries cleared at unmap (a write too, charged at the PTE cost).
    public var pteClears = 0
    /// Synchronous IOTLB invalidations (strict mode).
    public var invalidations = 0
    /// Flush-queue flushes (lazy mode), each ending a batch of unmaps.
    public var flushes = 0
    /// IOVAs queued for a flush (lazy mode).
    public var iovasQueued = 0
    /// Device reads refused because an entry was not present (DMA faults).
    public var translationFaults = 0
    /// Unmaps of an address that was not mapped (a programming error, refused).
    public var badUnmaps = 0
    /// Mappings torn down with their device's domain (device removed).
    public var mappingsTornDown = 0
    /// Maps refused because the IOVA space had no free range.
    public var iovaExhausted = 0
    /// Total modelled time, in nanoseconds (charged or not).
    public var modelledNanoseconds = 0
    /// Page-table entries present now.
    public var presentEntries = 0

    public init() {}
}

extension IOMMUStatistics {
    /// Two periods' (or two runs') counts added up; `presentEntries` is the
    /// second's (a level, not a count).
    public static func + (a: Self, b: Self) -> Self {
        var s = a
        s.maps += b.maps; s.unmaps += b.unmaps; s.pteWrites += b.pteWrites; s.pteClears += b.pteClears
        s.invalidations += b.invalidations; s.flushes += b.flushes; s.iovasQueued += b.iovasQueued
        s.translationFaults += b.translationFaults; s.badUnmaps += b.badUnmaps
        s.mappingsTornDown += b.mappingsTornDown; s.iovaExhausted += b.iovaExhausted
        s.modelledNanoseconds += b.modelledNanoseconds
        s.presentEntries = b.presentEntries
        return s
    }

    /// What happened between `earlier` and `self` (two snapshots of one IOMMU).
    public func since(_ earlier: Self) -> Self {
        var s = self
        s.maps -= earlier.maps; s.unmaps -= earlier.unmaps; s.pteWrites -= earlier.pteWrites; s.pteClears -= earlier.pteClears
        s.invalidations -= earlier.invalidations; s.flushes -= earlier.flushes; s.iovasQueued -= earlier.iovasQueued
        s.translationFaults -= earlier.translationFaults; s.badUnmaps -= earlier.badUnmaps
        s.mappingsTornDown -= earlier.mappingsTornDown; s.iovaExhausted -= earlier.iovaExhausted
        s.modelledNanoseconds -= earlier.modelledNanoseconds
        return s
    }

    /// IOMMU operations a design asks for: maps, unmaps, entries written and
    /// cleared, invalidations and flushes.
    public var operations: Int { maps + unmaps + pteWrites + pteClears + invalidations + flushes }
}
