import Synchronization

extension GeneralAllocator {
    /// Indices of the allocator's relaxed event counters.
    @usableFromInline
    enum Counter {
        /// In `allocationCounters`.
        @inlinable static func allocations(_ order: Int) -> Int { order }
        static let allocationCount = PageGeometry.maxOrder + 1
        /// In `freeCounters`.
        @inlinable static func frees(_ order: Int) -> Int { order }
        @usableFromInline static let failures = PageGeometry.maxOrder + 1
        @usableFromInline static let hookInterceptions = failures + 1
        static let freeCount = failures + 2
    }

    /// A snapshot of the allocator's counters.
    ///
    /// Counters are read one by one with relaxed loads: under concurrent use the
    /// snapshot is not atomic as a whole (a free may be seen without its alloc).
    public struct Statistics: Sendable, Hashable {
        /// Runs allocated, indexed by order (0...9).
        public var allocations: [Int]
        /// Runs freed, indexed by order (0...9).
        public var frees: [Int]
        /// Bytes of the private range carved by the arena (its high-water mark:
        /// extents are never returned), metadata and alignment padding included.
        public var bytesCarved: Int
        /// Alignment padding skipped while carving.
        public var paddingBytes: Int
        /// Successful and refused extent-alloc hook calls.
        public var carveCalls: Int
        public var carveRefusals: Int
        /// Allocations that failed (invalid order or out of memory).
        public var failures: Int
        /// Free-hook calls (one per `freePages` when a hook is installed).
        public var hookChecks: Int
        /// Frees the hook took.
        public var hookInterceptions: Int

        /// Runs allocated and not yet freed.
        public var liveRuns: Int { zip(allocations, frees).reduce(0) { $0 + $1.0 - $1.1 } }

        /// 4 KiB pages in live runs.
        public var livePages: Int {
            allocations.indices.reduce(0) { $0 + (allocations[$1] - frees[$1]) << $1 }
        }
    }

    /// The counters so far.
    public var statistics: Statistics {
        let carve = carveSnapshot()
        let orders = GeneralAllocator.orders
        let frees = orders.map { freeCounters.sum(Counter.frees($0)) }
        let interceptions = freeCounters.sum(Counter.hookInterceptions)
        return Statistics(
            allocations: orders.map { allocationCounters.sum(Counter.allocations($0)) },
            frees: frees,
            bytesCarved: carve.carvedBytes,
            paddingBytes: carve.paddingBytes,
            carveCalls: carve.carves,
            carveRefusals: carve.refusals,
            failures: freeCounters.sum(Counter.failures),
            // Every freePages call runs the hook first and then either is
            // intercepted or frees (and counts) the run, so the checks need no
            // counter of their own on the free path.
            hookChecks: hasFreeHook ? interceptions + frees.reduce(0, +) : 0,
            hookInterceptions: interceptions)
    }
}
