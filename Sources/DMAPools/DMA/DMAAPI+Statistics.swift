/// Counters of the DMA API (summed over CPUs; exact when no call is in flight).
public struct DMAStatistics: Sendable, Hashable {
    /// Successful maps: `bouncedMaps + zeroCopyMaps + directMaps`.
    public var maps: Int { bouncedMaps + zeroCopyMaps + directMaps }
    /// Successful unmaps: `bouncedUnmaps + zeroCopyUnmaps + directUnmaps`.
    public var unmaps: Int { bouncedUnmaps + zeroCopyUnmaps + directUnmaps }
    /// Maps that bounced through swiotlb (one copy each).
    public var bouncedMaps: Int
    /// Maps of zero-copy runs (no copy).
    public var zeroCopyMaps: Int
    /// Maps of shared memory by devices that do not bounce (no copy).
    public var directMaps: Int
    public var bouncedUnmaps: Int
    /// Unmaps of zero-copy addresses (which leave the run allocated).
    public var zeroCopyUnmaps: Int
    public var directUnmaps: Int
    /// Syncs of bounce mappings.
    public var syncs: Int
    /// Bytes the DMA layer copied between original and bounce buffers
    /// (map, unmap copy-back, and syncs).
    public var bytesCopied: Int
}

/// Counter slots of `DMAAPI.counters`.
enum DMACounter: Int, CaseIterable {
    case bouncedMaps, zeroCopyMaps, directMaps
    case bouncedUnmaps, zeroCopyUnmaps, directUnmaps
    case syncs, bytesCopied
}

extension DMAAPI {
    /// The counters now.
    public var statistics: DMAStatistics {
        DMAStatistics(
            bouncedMaps: counters.sum(DMACounter.bouncedMaps.rawValue),
            zeroCopyMaps: counters.sum(DMACounter.zeroCopyMaps.rawValue),
            directMaps: counters.sum(DMACounter.directMaps.rawValue),
            bouncedUnmaps: counters.sum(DMACounter.bouncedUnmaps.rawValue),
            zeroCopyUnmaps: counters.sum(DMACounter.zeroCopyUnmaps.rawValue),
            directUnmaps: counters.sum(DMACounter.directUnmaps.rawValue),
            syncs: counters.sum(DMACounter.syncs.rawValue),
            bytesCopied: counters.sum(DMACounter.bytesCopied.rawValue))
    }
}
