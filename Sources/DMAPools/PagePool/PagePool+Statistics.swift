import Synchronization
/// `struct page_pool_stats`: every kernel counter, plus the hold/release
/// accounting and the model's one extra counter.
public struct PagePoolStatistics: Sendable, Hashable, CustomStringConvertible {
    /// `struct page_pool_alloc_stats`.
    public struct Allocation: Sendable, Hashable {
        /// Pages popped from the alloc cache.
        public var fast = 0
        /// Order-0 slow-path calls (each bulk-allocates up to 64 pages from the provider).
        public var slow = 0
        /// High-order slow-path calls (one page each).
        public var slowHighOrder = 0
        /// Refill attempts that found the ring empty.
        public var empty = 0
        /// Refills from the ring that returned a page.
        public var refill = 0
        /// Pages released during refill for a NUMA mismatch (always 0: the model has one node).
        public var waive = 0
        public init() {}
    }

    /// `struct page_pool_recycle_stats`.
    public struct Recycling: Sendable, Hashable {
        /// Pages recycled into the alloc cache.
        public var cached = 0
        /// Direct recycles that found the cache full (the page went on to the ring).
        public var cacheFull = 0
        /// Pages recycled into the ring.
        public var ring = 0
        /// Pages released to the provider because the ring was full.
        public var ringFull = 0
        /// Pages released because their reference count was not 1 (`released_refcnt`).
        public var releasedRefcount = 0
        public init() {}
    }

    public var allocation = Allocation()
    public var recycling = Recycling()
    /// `pages_state_hold_cnt`: pages taken from the provider.
    public var holdCount = 0
    /// `pages_state_release_cnt`: pages given back to the provider.
    public var releaseCount = 0
    /// **Not a kernel counter.** Pages put after `destroy()` that went straight
    /// to the provider (the kernel lets them land in the ring for the next retry).
    public var releasedAfterDestroy = 0

    public init() {}

    /// `page_pool_inflight`: pages taken from the provider and not given back.
    public var inflight: Int { holdCount - releaseCount }

    /// Pages handed to users: every successful allocation bumps exactly one of
    /// `fast`, `slow`, `slowHighOrder`, `refill`.
    public var pagesAllocated: Int {
        allocation.fast + allocation.slow + allocation.slowHighOrder + allocation.refill
    }

    /// Pages that came back: every last put ends in exactly one of these, with
    /// one exception taken from the kernel: a bulk put that finds the ring full
    /// counts `ring_full` once for the run and releases the rest of the run.
    public var pagesReturned: Int {
        recycling.cached + recycling.ring + recycling.ringFull + recycling.releasedRefcount + releasedAfterDestroy
    }

    /// The ethtool names (`rx_pp_*`) and values, in the kernel's order.
    public var ethtoolStatistics: [(name: String, value: Int)] {
        [
            ("rx_pp_alloc_fast", allocation.fast),
            ("rx_pp_alloc_slow", allocation.slow),
            ("rx_pp_alloc_slow_ho", allocation.slowHighOrder),
            ("rx_pp_alloc_empty", allocation.empty),
            ("rx_pp_alloc_refill", allocation.refill),
            ("rx_pp_alloc_waive", allocation.waive),
            ("rx_pp_recycle_cached", recycling.cached),
            ("rx_pp_recycle_cache_full", recycling.cacheFull),
            ("rx_pp_recycle_ring", recycling.ring),
            ("rx_pp_recycle_ring_full", recycling.ringFull),
            ("rx_pp_recycle_released_ref", recycling.releasedRefcount),
        ]
    }

    public var description: String {
        var lines = ethtoolStatistics.map { "\($0.name): \($0.value)" }
        lines.append("hold_cnt: \(holdCount)")
        lines.append("release_cnt: \(releaseCount)")
        lines.append("inflight: \(inflight)")
        lines.append("released_after_destroy: \(releasedAfterDestroy)")
        return lines.joined(separator: "\n")
    }
}

extension PagePool {
    /// `page_pool_get_stats`. The allocation counters and `cached`/`cacheFull`
    /// belong to the owning context (plain counters, as the kernel's
    /// `alloc_stats`): exact when read there or after the owner has
    /// synchronized with the reader; the others are atomic.
    public var statistics: PagePoolStatistics {
        var stats = PagePoolStatistics()
        let hot = self.hot.pointee
        stats.allocation.fast = hot.allocFast
        stats.allocation.slow = hot.allocSlow
        stats.allocation.slowHighOrder = hot.allocSlowHighOrder
        stats.allocation.empty = hot.allocEmpty
        stats.allocation.refill = hot.allocRefill
        stats.allocation.waive = hot.allocWaive
        stats.recycling.cached = hot.recycleCached
        stats.recycling.cacheFull = hot.recycleCacheFull
        stats.recycling.ring = ring.producedCount
        stats.recycling.ringFull = shared.ringFull.load(ordering: .relaxed)
        stats.recycling.releasedRefcount = shared.releasedRefcount.load(ordering: .relaxed)
        stats.releasedAfterDestroy = shared.releasedAfterDestroy.load(ordering: .relaxed)
        // Release before hold, so a racing reader never sees negative inflight.
        stats.releaseCount = shared.releaseCount.load(ordering: .acquiring)
        stats.holdCount = shared.holdCount.load(ordering: .acquiring)
        return stats
    }

    /// `page_pool_inflight`.
    public var inflight: Int {
        let released = shared.releaseCount.load(ordering: .acquiring)
        return shared.holdCount.load(ordering: .acquiring) - released
    }

    /// Pages idle in the alloc cache (owning context).
    public var cachedPageCount: Int { hot.pointee.cacheCount }

    /// Pages waiting in the recycle ring (approximate while producers run).
    public var ringPageCount: Int { ring.count }

    /// Ring slots the producer sees occupied: the pages in the ring plus the
    /// consumed slots the consumer has not cleared yet (its batch). Quiescent
    /// pool only (tests and the fuzzer).
    package var ringOccupiedSlotCount: Int { ring.occupiedSlotCount }

    /// The ring's consumer batch (`ring->batch`).
    public var ringBatch: Int { ring.batch }

    /// The recycle ring's capacity.
    public var ringCapacity: Int { ring.capacity }
}
