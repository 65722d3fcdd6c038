extension DecryptedAllocator {
    /// The allocator's counters, kept under its lock.
    struct Counters: Sendable {
        var allocations = [Int](repeating: 0, count: DecryptedAllocator.orders.count)
        var frees = [Int](repeating: 0, count: DecryptedAllocator.orders.count)
        var livePages = 0
        var peakLivePages = 0
        var chunksConverted = 0
        var chunksReleased = 0
        var chunksHeld = 0
        var peakChunksHeld = 0
        var spareChunks = 0
        var conversions = 0
        var conversionFailures = 0
        var failures = 0
    }

    /// A snapshot of the allocator's counters.
    public struct Statistics: Sendable, Hashable {
        /// Runs handed out and returned, indexed by order (0...3).
        public var allocations: [Int]
        public var frees: [Int]
        /// 4 KiB pages handed out and not yet returned.
        public var livePages: Int
        /// Chunks taken from the general allocator and converted to shared.
        public var chunksConverted: Int
        /// Chunks converted back to private and returned to the general allocator.
        public var chunksReleased: Int
        /// Shared chunks held now (with live pages or spare).
        public var chunksHeld: Int
        /// Fully free chunks held now.
        public var spareChunks: Int
        /// Modelled conversion hypercalls this allocator made (both directions,
        /// failed ones included): one per chunk each way, never per page.
        public var conversions: Int
        /// Conversions that failed.
        public var conversionFailures: Int
        /// Allocations that failed (invalid order, no chunk, conversion failure).
        public var failures: Int
        /// Bytes of shared memory held now.
        public var bytesShared: Int
        /// The most pages out of the buddy lists at once (handed out or on
        /// CPUs' lists), and the most chunks held at once, since the
        /// allocator was made.
        public var peakLivePages: Int = 0
        public var peakChunksHeld: Int = 0
        /// Pages in free runs on CPUs' lists now (`Configuration.perCPURuns`).
        public var pagesOnCPULists: Int = 0
    }

    /// The counters so far.
    public var statistics: Statistics {
        let chunkBytes = PageGeometry.bytes(order: configuration.chunkOrder)
        // The buddy lists count runs moved onto and off CPUs' lists; correct
        // them to runs handed out and freed.
        let lists = cpuListAdjustments()
        return state.withLock { c in
            Statistics(
                allocations: zip(c.allocations, lists.allocations).map { $0 + $1 },
                frees: zip(c.frees, lists.frees).map { $0 + $1 }, livePages: c.livePages - lists.pagesHeld,
                chunksConverted: c.chunksConverted, chunksReleased: c.chunksReleased,
                chunksHeld: c.chunksHeld, spareChunks: c.spareChunks,
                conversions: c.conversions, conversionFailures: c.conversionFailures,
                failures: c.failures, bytesShared: c.chunksHeld * chunkBytes,
                peakLivePages: c.peakLivePages, peakChunksHeld: c.peakChunksHeld, pagesOnCPULists: lists.pagesHeld)
        }
    }
}
