/// A snapshot of swiotlb's counters (the debugfs `io_tlb_nslabs`, `io_tlb_used`,
/// `io_tlb_used_hiwater`, plus the model's copy and zero-copy counters).
///
/// Per-area values are read under each area's lock in turn, so the snapshot is
/// exact only when no operation is in flight.
public struct SWIOTLBStatistics: Sendable, Hashable {
    /// Slots in the pool.
    public var nslabs: Int
    /// Slots in use (bounce mappings with their padding, and zero-copy runs).
    public var used: Int
    /// The most slots ever in use at once.
    public var usedHighWater: Int
    /// Slots in use in each area.
    public var areaUsed: [Int]
    /// Live bounce mappings.
    public var liveMappings: Int
    /// Bytes copied original -> bounce (map and sync for device).
    public var bytesBouncedToDevice: Int
    /// Bytes copied bounce -> original (unmap and sync for CPU).
    public var bytesBouncedToCPU: Int
    /// Bounce mappings refused because no area had a fitting run.
    public var exhaustionFailures: Int
    /// Live zero-copy runs, and the pages and slots they hold.
    public var zeroCopyRuns: Int
    public var zeroCopyPages: Int
    public var zeroCopySlots: Int
    /// Zero-copy allocations refused for lack of a free aligned run (not counting
    /// refusals by the cap).
    public var zeroCopyAllocationFailures: Int
}

extension SWIOTLB {
    /// The counters now.
    public var statistics: SWIOTLBStatistics {
        var areaUsed: [Int] = []
        areaUsed.reserveCapacity(areaCount)
        var live = 0, toDevice = 0, toCPU = 0
        for a in 0..<areaCount {
            let state = area(a).pointee.withLock { $0 }
            areaUsed.append(state.used)
            live += state.liveMappings
            toDevice += state.bytesBouncedToDevice
            toCPU += state.bytesBouncedToCPU
        }
        return SWIOTLBStatistics(
            nslabs: nslabs,
            used: totalUsed.load(ordering: .relaxed),
            usedHighWater: usedHighWater.load(ordering: .relaxed),
            areaUsed: areaUsed,
            liveMappings: live,
            bytesBouncedToDevice: toDevice + syncCounters.sum(SyncCounter.bytesToDevice.rawValue),
            bytesBouncedToCPU: toCPU + syncCounters.sum(SyncCounter.bytesToCPU.rawValue),
            exhaustionFailures: exhaustionFailures.load(ordering: .relaxed),
            zeroCopyRuns: zeroCopyRuns.load(ordering: .relaxed),
            zeroCopyPages: zeroCopyPagesInUse.load(ordering: .relaxed),
            zeroCopySlots: zeroCopySlotsInUse.load(ordering: .relaxed),
            zeroCopyAllocationFailures: zeroCopyAllocationFailures.load(ordering: .relaxed))
    }

    /// Slots in use (`mem_used`).
    public var usedSlots: Int { totalUsed.load(ordering: .relaxed) }
}
