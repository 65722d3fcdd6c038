import DMAPools
import DMAPoolsTestSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// In-process page_pool micro-measurements for `txsim microbench --json`, the
/// analogs of the kernel's `bench_page_pool_simple`. Each figure is the median
/// over several batches of nanoseconds per operation, timed with the monotonic
/// clock. The fast, ring and fragment paths use `PagePoolTestProvider` (no other
/// subsystem involved: they never reach the provider); the slow path is
/// measured through each real provider over a real `GuestMemory`,
/// `GeneralAllocator`, `SWIOTLB` and `DMAAPI` (conversions modelled as free:
/// `HypercallCostModel.free`). The ordo-one benchmarks in `Benchmarks/` measure
/// the same loops with malloc counting.
public enum PagePoolMicrobench {
    /// The JSON keys and their values:
    /// - `pool_fast_ns`, `pool_ring_ns`, `pool_frag_ns`: test provider;
    ///   every loop writes a byte into each page it gets and sinks a checksum
    ///   of the pages (`Measure.consume`);
    /// - `pool_fast_64_ns`, `pool_fast_1024_ns`: the fast path with 64 and 1024
    ///   pages held outside the pool between operations (each operation
    ///   allocates one and recycles the oldest), so the descriptors and pages
    ///   touched are a working set rather than one page in L1;
    /// - `pool_fast_order3_ns`: the fast path of an order-3 pool (32 KiB
    ///   pages), like for like with `jemalloc_order3_ns`;
    /// - `pool_bulk32_ns_per_page`: `allocatePages(into:)` of 32 pages and one
    ///   `put(contentsOf:)` of them, per page, writing nothing into the pages
    ///   (like for like with DPDK's `rte_mempool` get/put bulk, which moves
    ///   object pointers only; the checksum sinks the descriptors);
    ///   `pool_bulk32_touched_ns_per_page`: the same with a byte written into
    ///   each page, as the other loops do;
    /// - `cache_line_handover_ns`: one cache line handed between two threads
    ///   (each waits for the other's write, then writes), per one-way hand-over:
    ///   the floor under every cross-CPU figure here;
    /// - `pool_ring_remote_ns`: the owner allocates while a second thread puts
    ///   every page back (through the ring, as a remote CPU's free does):
    ///   the cross-CPU shape of the kernel's ptr_ring figure;
    /// - `pool_slow_ns`: the slow path through `SystemPageProvider` (jemalloc +
    ///   `dma_map` with a bounce copy + `dma_unmap` + free);
    /// - `pool_slow_test_provider_ns`: the same loop over `PagePoolTestProvider`
    ///   (the pool's own slow-path cost, a free list behind it);
    /// - `pool_slow_swiotlb_ns`, `pool_slow_decrypted_ns`: through
    ///   `SWIOTLBPageProvider` and `DecryptedPageProvider`;
    /// - `pool_fast_sync_system_ns`, `pool_fast_sync_swiotlb_ns`: the fast path
    ///   with `PP_FLAG_DMA_SYNC_DEV` syncing a whole 4 KiB page on every recycle,
    ///   over system pages (a 4 KiB copy into the bounce slot) and over swiotlb
    ///   pages (nothing to copy).
    public static func run(iterations: Int = 1 << 20, batches: Int = 7) throws -> [String: Double] {
        let slowIterations = max(1, iterations / 8)
        return [
            "pool_fast_ns": try fastPathNanoseconds(iterations: iterations, batches: batches),
            "pool_fast_64_ns": try fastPathNanoseconds(iterations: iterations, batches: batches, outstanding: 64),
            "pool_fast_1024_ns": try fastPathNanoseconds(iterations: iterations, batches: batches, outstanding: 1024),
            "pool_fast_order3_ns": try fastPathNanoseconds(iterations: iterations, batches: batches, order: 3),
            "pool_bulk32_ns_per_page": try bulkNanosecondsPerPage(iterations: iterations, batches: batches),
            "pool_bulk32_touched_ns_per_page": try bulkNanosecondsPerPage(iterations: iterations, batches: batches, touching: true),
            "cache_line_handover_ns": cacheLineHandOverNanoseconds(handOvers: max(1000, iterations / 16), batches: batches),
            "pool_ring_ns": try ringPathNanoseconds(iterations: iterations, batches: batches),
            "pool_ring_remote_ns": try ringRemoteNanoseconds(iterations: iterations, batches: batches),
            "pool_slow_ns": try slowPathNanoseconds(iterations: slowIterations, batches: batches, provider: .system),
            "pool_slow_test_provider_ns": try slowPathNanoseconds(iterations: slowIterations, batches: batches, provider: .test),
            "pool_slow_swiotlb_ns": try slowPathNanoseconds(iterations: slowIterations, batches: batches, provider: .swiotlb),
            "pool_slow_decrypted_ns": try slowPathNanoseconds(iterations: slowIterations, batches: batches, provider: .decrypted),
            "pool_frag_ns": try fragmentNanoseconds(iterations: iterations, batches: batches),
            "pool_fast_sync_system_ns": try fastPathWithSyncNanoseconds(iterations: slowIterations, batches: batches, provider: .system),
            "pool_fast_sync_swiotlb_ns": try fastPathWithSyncNanoseconds(iterations: slowIterations, batches: batches, provider: .swiotlb),
        ]
    }

    /// The memory provider behind a measurement.
    public enum Provider: String, Sendable, CaseIterable {
        /// `PagePoolTestProvider`: a free list per order, no other subsystem.
        case test
        /// `SystemPageProvider`: private pages, mapped (bounced) at allocation.
        case system
        /// `SWIOTLBPageProvider`: swiotlb zero-copy runs (`zerocopy_tx_percent` 90).
        case swiotlb
        /// `DecryptedPageProvider`: shared runs from 2 MiB chunks converted once.
        case decrypted
    }

    /// Alloc + direct recycle (`page_pool_alloc_pages` +
    /// `page_pool_recycle_direct`), with `outstanding` pages held outside the
    /// pool (1: each page is recycled at once) and a byte written into each
    /// page. Kernel, order 0, one outstanding: 19 cycles, 5.4 ns at 3.6 GHz.
    public static func fastPathNanoseconds(iterations: Int, batches: Int = 7, outstanding: Int = 1, order: Int = 0) throws -> Double {
        let fixture = try Fixture(order: order, outstanding: outstanding)
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            try fastPath(fixture, operations: n)
        }
    }

    /// 32 pages per call: `allocatePages(into:)` then `put(contentsOf:)`
    /// (`page_pool_put_netmem_bulk`) on the owning thread; per page. With
    /// `touching`, a byte is written into each page between the two.
    public static func bulkNanosecondsPerPage(iterations: Int, batches: Int = 7, touching: Bool = false) throws -> Double {
        let fixture = try Fixture(bulk: 32)
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            if touching { try bulkTouched(fixture, operations: n) } else { try bulk(fixture, operations: n) }
        }
    }

    /// One cache line handed back and forth between the calling thread and a
    /// second one: each side waits until the line holds the other's last
    /// value, then writes its own, so every write moves the line to the
    /// other CPU. Median nanoseconds per one-way hand-over over `batches`
    /// batches of `handOvers`. What a page_pool's cross-CPU put pays for each
    /// line both sides write (a page's descriptor: the owner marks it held,
    /// the putter marks it back in the pool).
    public static func cacheLineHandOverNanoseconds(handOvers: Int, batches: Int = 7) -> Double {
        let line = CacheLineHandOver()
        defer { line.stop() }
        let rounds = max(1, handOvers / 2)
        return Measure.nanosecondsPerOperation(batches: batches, operations: rounds, warmUpOperations: min(rounds, 1024)) { n in
            line.pingPong(rounds: n)
        } / 2
    }

    /// The owner allocates; a second thread puts each page back through the
    /// ring (handed over through a single-producer single-consumer queue of
    /// 256 pages); per page, as the owner sees it. Kernel ptr_ring: 15.1 ns
    /// (Xeon 3.6 GHz), 12.4 ns (EPYC).
    public static func ringRemoteNanoseconds(iterations: Int, batches: Int = 7) throws -> Double {
        let fixture = try Fixture(remotePutter: true)
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            try ringRemote(fixture, operations: n)
        }
    }

    /// Alloc + put through the recycle ring from a thread that does not own
    /// the pool (direct recycling disabled). Kernel: 54 cycles, 15.1 ns.
    public static func ringPathNanoseconds(iterations: Int, batches: Int = 7) throws -> Double {
        let fixture = try Fixture(directRecycling: false)
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            try ringPath(fixture.pool, operations: n)
        }
    }

    /// Alloc + release to the provider: every page leaves the pool, so every
    /// 64th allocation goes to the provider (bulk 64) and every page is released
    /// to it. Kernel: 238 cycles, 66 ns (the page allocator, no DMA).
    ///
    /// With `.system` the pool is a transmit pool (`DMA_TO_DEVICE`, `PP_FLAG_DMA_MAP`)
    /// and each page costs a jemalloc allocation, a bounce map (slot search and a
    /// 4 KiB copy), an unmap (slot release; no copy back for `DMA_TO_DEVICE`) and
    /// a jemalloc free.
    public static func slowPathNanoseconds(iterations: Int, batches: Int = 7, provider: Provider = .system) throws -> Double {
        let fixture = try Fixture(provider: provider)
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            try slowPath(fixture.pool, operations: n)
        }
    }

    /// Alloc + direct recycle with `PP_FLAG_DMA_SYNC_DEV` syncing the whole 4 KiB
    /// page (`max_len` 4096) for the device on every recycle.
    public static func fastPathWithSyncNanoseconds(iterations: Int, batches: Int = 7, provider: Provider) throws -> Double {
        let fixture = try Fixture(provider: provider, syncLength: PageGeometry.size)
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            try fastPath(fixture.pool, operations: n)
        }
    }

    /// A 2 KiB fragment alloc + free (`page_pool_alloc_frag` + put).
    public static func fragmentNanoseconds(iterations: Int, batches: Int = 7) throws -> Double {
        let fixture = try Fixture()
        return try median(batches: batches, iterations: iterations) { (n) throws(PagePoolError) in
            try fragments(fixture.pool, operations: n)
        }
    }

    // The loop bodies, once: the medians above, `txsim microbench`, the
    // runner and the ordo-one benchmarks in `Benchmarks/` all run these.

    /// `operations` order-0 allocations, each recycled directly (the fast path;
    /// with `PP_FLAG_DMA_SYNC_DEV` each recycle also syncs for the device).
    /// Call from the pool's owning thread.
    public static func fastPath(_ pool: PagePool, operations: Int) throws(PagePoolError) {
        var sum: UInt64 = 0
        for i in 0..<operations {
            let page = try pool.allocatePage()
            touch(page, i, &sum)
            pool.recycleDirect(page)
        }
        Measure.consume(sum)
    }

    /// What every loop does with a page it got: writes a byte into it (so the
    /// page is touched as a user would) and folds its address into the
    /// checksum the loop sinks.
    @inline(__always)
    static func touch(_ page: Page, _ i: Int, _ sum: inout UInt64) {
        page.bytes.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
        sum &+= UInt64(UInt(bitPattern: page.bytes))
    }

    /// The fast path of a fixture: with its held pages when it has them (each
    /// operation allocates a page, writes a byte into it, holds it, and
    /// recycles the oldest held page), else `fastPath(_:operations:)`.
    public static func fastPath(_ fixture: Fixture, operations: Int) throws(PagePoolError) {
        guard let held = fixture.held else { return try fastPath(fixture.pool, operations: operations) }
        let pool = fixture.pool
        let slots = held.slots
        let count = held.count
        var cursor = held.cursor
        var sum: UInt64 = 0
        for i in 0..<operations {
            let page = try pool.allocatePage()
            touch(page, i, &sum)
            slots[cursor] = page
            cursor += 1
            if cursor == count { cursor = 0 }
            pool.recycleDirect(slots[cursor])
        }
        held.cursor = cursor
        Measure.consume(sum)
    }

    /// `operations` pages (rounded up to whole bulks): bulks of the fixture's
    /// size allocated with `allocatePages(into:)` and put back with one
    /// `put(contentsOf:)`; nothing is written into the pages (their
    /// descriptors' addresses go into the sunk checksum).
    public static func bulk(_ fixture: Fixture, operations: Int) throws(PagePoolError) {
        try bulk(fixture, operations: operations) { page, _, sum in
            sum &+= UInt64(UInt(bitPattern: page.descriptor))
        }
    }

    /// `bulk(_:operations:)` with a byte written into each page (`touch`).
    public static func bulkTouched(_ fixture: Fixture, operations: Int) throws(PagePoolError) {
        try bulk(fixture, operations: operations) { page, i, sum in touch(page, i, &sum) }
    }

    @inline(__always)
    static func bulk(_ fixture: Fixture, operations: Int,
                     _ use: (Page, Int, inout UInt64) -> Void) throws(PagePoolError) {
        guard let pages = fixture.bulkPages else { preconditionFailure("the fixture was made without `bulk:`") }
        let pool = fixture.pool
        var done = 0
        var sum: UInt64 = 0
        while done < operations {
            let n = try pool.allocatePages(into: pages)
            for i in 0..<n { use(pages[i], i, &sum) }
            pool.put(contentsOf: UnsafeBufferPointer(rebasing: pages[0..<n]))
            done += n
        }
        Measure.consume(sum)
    }

    /// `operations` allocations on the owning thread, each page handed to the
    /// fixture's remote putter, which puts it back from its own thread
    /// (through the ring); returns once the putter has put them all.
    public static func ringRemote(_ fixture: Fixture, operations: Int) throws(PagePoolError) {
        guard let putter = fixture.putter else { preconditionFailure("the fixture was made without `remotePutter:`") }
        let pool = fixture.pool
        var sum: UInt64 = 0
        for i in 0..<operations {
            let page = try pool.allocatePage()
            touch(page, i, &sum)
            putter.push(page)
        }
        putter.drain()
        Measure.consume(sum)
    }

    /// `operations` allocations, each put back through the recycle ring (the
    /// pool's direct recycling disabled, as for a put from another thread).
    public static func ringPath(_ pool: PagePool, operations: Int) throws(PagePoolError) {
        var sum: UInt64 = 0
        for i in 0..<operations {
            let page = try pool.allocatePage()
            touch(page, i, &sum)
            pool.put(page)
        }
        Measure.consume(sum)
    }

    /// `operations` allocations, each released to the provider (the slow path
    /// on every 64th allocation, a provider release on every one).
    public static func slowPath(_ pool: PagePool, operations: Int) throws(PagePoolError) {
        var sum: UInt64 = 0
        for _ in 0..<operations {
            let page = try pool.allocatePage()
            sum &+= UInt64(UInt(bitPattern: page.bytes))
            pool.releaseToProvider(page)
        }
        Measure.consume(sum)
    }

    /// `operations` 2 KiB fragments, each put back at once.
    public static func fragments(_ pool: PagePool, operations: Int) throws(PagePoolError) {
        var sum: UInt64 = 0
        for i in 0..<operations {
            let fragment = try pool.allocateFragment(size: 2048)
            fragment.bytes.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
            sum &+= UInt64(UInt(bitPattern: fragment.bytes))
            pool.put(fragment)
        }
        Measure.consume(sum)
    }

    /// The pool loops over a fixture's pool, so that every loop has one shape
    /// for the runner and the ordo-one benchmarks.
    public static func ringPath(_ fixture: Fixture, operations: Int) throws(PagePoolError) {
        try ringPath(fixture.pool, operations: operations)
    }
    public static func slowPath(_ fixture: Fixture, operations: Int) throws(PagePoolError) {
        try slowPath(fixture.pool, operations: operations)
    }
    public static func fragments(_ fixture: Fixture, operations: Int) throws(PagePoolError) {
        try fragments(fixture.pool, operations: operations)
    }

    /// A transmit pool over a small guest (64 MiB, 8 MiB of swiotlb, free
    /// conversions) and the provider asked for; `syncLength` > 0 sets
    /// `PP_FLAG_DMA_SYNC_DEV` with that `max_len`. The pool is destroyed with
    /// the fixture.
    public final class Fixture: @unchecked Sendable {
        public let memory: GuestMemory
        let general: GeneralAllocator?
        let swiotlb: SWIOTLB?
        public let provider: any PagePoolMemoryProvider
        public let pool: PagePool
        /// The pages a fast-path loop holds between operations (`outstanding` > 1).
        public let held: HeldPages?
        /// The buffer a bulk loop fills (`bulk` > 0).
        public let bulkPages: UnsafeMutableBufferPointer<Page>?
        /// The second thread that puts pages back (`remotePutter`).
        public let putter: RemotePutter?

        /// - Parameters:
        ///   - outstanding: pages held outside the pool by `fastPath(_:operations:)`
        ///     (1: none between operations).
        ///   - bulk: pages per call of `bulk(_:operations:)` (0: no bulk buffer).
        ///   - remotePutter: start a second thread that puts pages back, for
        ///     `ringRemote(_:operations:)`.
        public init(provider kind: Provider = .test, order: Int = 0, syncLength: Int = 0, directRecycling: Bool = true,
                    outstanding: Int = 1, bulk: Int = 0, remotePutter: Bool = false) throws {
            precondition(outstanding >= 1 && bulk >= 0, "outstanding \(outstanding) must be >= 1 and bulk \(bulk) >= 0")
            memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free))
            let device = try DeviceRegistry(forceBounce: true).add(name: "microbench0")
            switch kind {
            case .test:
                general = nil
                swiotlb = nil
                provider = PagePoolTestProvider(memory: memory)
            case .system:
                let general = try GeneralAllocator(memory: memory)
                let swiotlb = try SWIOTLB(memory: memory)
                self.general = general
                self.swiotlb = swiotlb
                provider = SystemPageProvider(general: general, dma: DMAAPI(memory: memory, swiotlb: swiotlb), device: device)
            case .swiotlb:
                let swiotlb = try SWIOTLB(memory: memory)
                try swiotlb.setZeroCopyPercent(90)
                general = nil
                self.swiotlb = swiotlb
                provider = SWIOTLBPageProvider(swiotlb: swiotlb, device: device)
            case .decrypted:
                let general = try GeneralAllocator(memory: memory)
                self.general = general
                swiotlb = nil
                provider = DecryptedPageProvider(allocator: try DecryptedAllocator(general: general))
            }
            var flags: PagePoolFlags = [.dmaMap, .transmit]
            if syncLength > 0 { flags.insert(.dmaSyncForDevice) }
            pool = try PagePool(.init(order: order, flags: flags, dmaDirection: .toDevice, maxLength: syncLength,
                                      device: device, name: "microbench"), provider: provider)
            if !directRecycling { pool.disableDirectRecycling() }
            held = outstanding > 1 ? try HeldPages(pool: pool, count: outstanding) : nil
            bulkPages = bulk > 0 ? .allocate(capacity: bulk) : nil
            putter = remotePutter ? RemotePutter(pool: pool) : nil
        }

        deinit {
            putter?.stop()
            held?.release(to: pool)
            bulkPages?.deallocate()
            pool.destroy()
        }
    }

    /// Pages held outside the pool between fast-path operations: a ring of
    /// `count` slots of which `count - 1` hold a page; `cursor` is the free one.
    public final class HeldPages: @unchecked Sendable {
        let slots: UnsafeMutablePointer<Page>
        public let count: Int
        var cursor: Int

        init(pool: PagePool, count: Int) throws(PagePoolError) {
            self.count = count
            slots = .allocate(capacity: count)
            for i in 0..<(count - 1) { slots[i] = try pool.allocatePage() }
            cursor = count - 1
        }

        /// Gives every held page back (owning thread) and frees the slots.
        func release(to pool: PagePool) {
            for i in 0..<count where i != cursor { pool.put(slots[i]) }
            slots.deallocate()
        }
    }

    /// A thread that puts pages back into a pool from outside its owning
    /// context, fed through a single-producer single-consumer queue whose two
    /// indices sit on cache lines of their own; each side reads the other's
    /// index once per batch, not once per page, so the figure is the pool's
    /// cross-CPU cost (descriptor and ring lines moving), not the queue's.
    public final class RemotePutter: @unchecked Sendable {
        static let capacity = 256
        let pool: PagePool
        let slots: UnsafeMutablePointer<Page>
        let lines: AlignedAllocation
        var thread = pthread_t()
        /// The producer's next index (`lines` line 0), the consumer's (line 1),
        /// and the stop flag (line 2).
        var tail: UnsafePointer<Atomic<Int>> { UnsafePointer(lines.pointer.assumingMemoryBound(to: Atomic<Int>.self)) }
        var head: UnsafePointer<Atomic<Int>> { UnsafePointer((lines.pointer + 128).assumingMemoryBound(to: Atomic<Int>.self)) }
        var stopFlag: UnsafePointer<Atomic<Int>> { UnsafePointer((lines.pointer + 256).assumingMemoryBound(to: Atomic<Int>.self)) }

        init(pool: PagePool) {
            self.pool = pool
            slots = .allocate(capacity: Self.capacity)
            lines = AlignedAllocation(byteCount: 384, alignment: 128)
            for offset in [0, 128, 256] {
                (lines.pointer + offset).bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
            }
            let context = Unmanaged.passRetained(self).toOpaque()
            let status = pthread_create(&thread, nil, { context in
                let putter = Unmanaged<RemotePutter>.fromOpaque(context!).takeRetainedValue()
                putter.work()
                return nil
            }, context)
            precondition(status == 0, "pthread_create failed: \(status)")
        }

        /// The consumer's index as the owner last read it: the owner reloads
        /// it only when the queue looks full, so the consumer's line moves to
        /// the owner once per batch rather than once per page.
        var headSeen = 0

        /// Owner side: hands a page over (waits while the queue is full).
        @inline(__always)
        func push(_ page: Page) {
            let t = tail.pointee.load(ordering: .relaxed)
            if t - headSeen == Self.capacity {
                var spins = 0
                headSeen = head.pointee.load(ordering: .acquiring)
                while t - headSeen == Self.capacity {
                    spins += 1
                    if spins & 1023 == 0 { sched_yield() }
                    headSeen = head.pointee.load(ordering: .acquiring)
                }
            }
            slots[t & (Self.capacity - 1)] = page
            tail.pointee.store(t + 1, ordering: .releasing)
        }

        /// Owner side: waits until every page handed over has been put.
        func drain() {
            let t = tail.pointee.load(ordering: .relaxed)
            var spins = 0
            while head.pointee.load(ordering: .acquiring) != t {
                spins += 1
                if spins & 1023 == 0 { sched_yield() }
            }
        }

        func work() {
            var h = head.pointee.load(ordering: .relaxed)
            var idle = 0
            while stopFlag.pointee.load(ordering: .acquiring) == 0 {
                let t = tail.pointee.load(ordering: .acquiring)
                if h == t {
                    idle += 1
                    if idle & 1023 == 0 { sched_yield() }
                    continue
                }
                idle = 0
                // Everything published so far, then one store of the index:
                // the batch the producer's next reload sees.
                while h != t {
                    pool.put(slots[h & (Self.capacity - 1)])
                    h += 1
                }
                head.pointee.store(h, ordering: .releasing)
            }
        }

        /// Drains, stops the thread and waits for it.
        func stop() {
            drain()
            stopFlag.pointee.store(1, ordering: .releasing)
            pthread_join(thread, nil)
        }

        deinit {
            slots.deallocate()
            lines.deallocate()
        }
    }

    /// The second thread of `cacheLineHandOverNanoseconds`: one line (its
    /// own 128-byte block) that the two threads write in turn, the caller odd
    /// values, this thread even ones; a negative value stops it.
    final class CacheLineHandOver: @unchecked Sendable {
        let block: AlignedAllocation
        var thread = pthread_t()
        var value: UnsafePointer<Atomic<Int>> { UnsafePointer(block.pointer.assumingMemoryBound(to: Atomic<Int>.self)) }

        init() {
            block = AlignedAllocation(byteCount: 128, alignment: 128)
            block.pointer.bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
            let context = Unmanaged.passRetained(self).toOpaque()
            let status = pthread_create(&thread, nil, { context in
                let line = Unmanaged<CacheLineHandOver>.fromOpaque(context!).takeRetainedValue()
                line.answer()
                return nil
            }, context)
            precondition(status == 0, "pthread_create failed: \(status)")
        }

        /// The other side: turns every odd value into the next even one.
        func answer() {
            var spins = 0
            while true {
                let v = value.pointee.load(ordering: .acquiring)
                if v < 0 { return }
                if v & 1 == 1 {
                    value.pointee.store(v &+ 1, ordering: .releasing)
                    spins = 0
                } else {
                    spins &+= 1
                    if spins & 0xffff == 0 { sched_yield() }
                }
            }
        }

        /// `rounds` round trips (two hand-overs each) from the caller's side.
        func pingPong(rounds: Int) {
            var spins = 0
            for _ in 0..<rounds {
                let v = value.pointee.load(ordering: .acquiring)
                value.pointee.store(v &+ 1, ordering: .releasing)
                while value.pointee.load(ordering: .acquiring) == v &+ 1 {
                    spins &+= 1
                    if spins & 0xffff == 0 { sched_yield() }
                }
            }
        }

        func stop() {
            value.pointee.store(-1, ordering: .releasing)
            pthread_join(thread, nil)
        }

        deinit { block.deallocate() }
    }

    static func median(batches: Int, iterations: Int, _ body: (Int) throws(PagePoolError) -> Void) throws(PagePoolError) -> Double {
        // Warm-up: fill caches, fault pages in.
        try Measure.nanosecondsPerOperation(batches: batches, operations: iterations, warmUpOperations: min(iterations, 4096), body)
    }
}
