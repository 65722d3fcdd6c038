import CJemalloc
import Logging
import Synchronization

/// The guest's general page allocator: a jemalloc arena whose extents are carved
/// from the private (encrypted) part of guest memory, handing out naturally
/// aligned runs of `1 << order` pages (`alloc_pages` / `__free_pages`).
///
/// Every run it returns lies in `memory.privatePages`, so each page has a
/// descriptor; the head is prepared as a compound page with reference count 1.
///
/// ## Thread caches
/// Allocation and free pass `MALLOCX_TCACHE_NONE`. jemalloc's thread caches are
/// bins per size class, not per arena: a region freed through a tcache can be
/// returned by a later `mallocx` naming a *different* arena (a tcache hit never
/// looks at `MALLOCX_ARENA`). With the automatic tcache, this allocator could hand
/// out another guest's memory, and another arena could hand out ours after it is
/// destroyed. `GeneralAllocatorTests.sharedTCacheCrossesArenas` demonstrates it.
/// A tcache created with `tcache.create` and used only with this arena is safe,
/// and about 8x faster for order 0: see `LocalCache`, a per-context handle.
///
/// ## Free-path hook
/// `freeHook`, fixed at initialisation, runs first in every `freePages` call and
/// may take the page (return `true`), the way the seed patch diverts swiotlb
/// zero-copy pages in the page allocator's free path. Every call is counted in
/// `Statistics.hookChecks` (interceptions plus frees: no counter of its own on
/// the free path) so the cost that design adds to *every* free can be set
/// beside its count; `txsim microbench` times it (`general_free_hooked_ns`
/// against `general_free_ns`). Without a hook the check is one load and a branch.
///
/// ## Lifetime
/// The allocator keeps its `GuestMemory` alive. `deinit` destroys the arena
/// (`arena.<i>.destroy`); pages still live at that point are lost with it: they
/// are counted in `GeneralAllocator.pagesLostAtArenaDestroy` and logged.
public final class GeneralAllocator: @unchecked Sendable {
    /// A check run first in every `freePages`. Return `true` if the hook took the
    /// page (the allocator then does nothing more), `false` to free it normally.
    /// It must not allocate from or free to this allocator.
    public typealias FreeHook = @Sendable (Page) -> Bool

    /// Orders this allocator hands out: 4 KiB ... 2 MiB.
    public static let orders: ClosedRange<Int> = 0...PageGeometry.maxOrder

    /// The guest memory the arena carves from.
    public let memory: GuestMemory
    /// jemalloc's index of this allocator's arena.
    public let arenaIndex: UInt32
    /// The free-path hook, if any (see the type's documentation).
    public let freeHook: FreeHook?

    /// `freeHook` unwrapped once, so a call borrows it instead of copying the
    /// optional (binding an optional closure retains and releases its context).
    @usableFromInline let hookFunction: FreeHook
    @usableFromInline let hasFreeHook: Bool
    /// `MALLOCX_ARENA(arenaIndex) | MALLOCX_TCACHE_NONE`.
    @usableFromInline let arenaFlags: Int32
    /// `memory.base`, as an integer.
    @usableFromInline let regionBase: UInt
    /// `memory.descriptors`.
    @usableFromInline let descriptors: UnsafeMutablePointer<PageDescriptor>
    /// `memory.privatePages`, for validating frees.
    @usableFromInline let privatePages: Range<Int>
    /// Event counters striped by CPU (see `Counter`): allocations per order,
    /// and frees per order with the failures and hook interceptions. Shared
    /// atomics, as these were, put two senders' every page allocation and
    /// free on one cache line.
    @usableFromInline let allocationCounters: PerCPUCounters
    @usableFromInline let freeCounters: PerCPUCounters
    /// The arena's hooks and carve state (freed after the arena).
    let hooks: UnsafeMutablePointer<extent_hooks_t>

    /// Pages (4 KiB) still live when an allocator's arena was destroyed, process-wide.
    public static var pagesLostAtArenaDestroy: Int { lostPages.load(ordering: .relaxed) }
    private static let lostPages = Atomic<Int>(0)

    /// Creates an arena over the private part of `memory`.
    ///
    /// jemalloc allocates the arena's own metadata (at least one 2 MiB block)
    /// through the same hooks, so it too lives at the bottom of the private range.
    /// - Parameter freeHook: a check to run first in every `freePages` call.
    public init(memory: GuestMemory, freeHook: FreeHook? = nil) throws(AllocatorError) {
        guard !memory.privatePages.isEmpty else {
            throw .invalidConfiguration("guest memory has no private pages to carve")
        }
        let base = UInt(bitPattern: memory.base)
        let start = base + UInt(memory.privatePages.lowerBound << PageGeometry.shift)
        let limit = base + UInt(memory.privatePages.upperBound << PageGeometry.shift)
        let hooks = ExtentHookBlock.create(start: start, limit: limit)
        let index: UInt32
        do {
            index = try Jemalloc.exchange("arenas.create", writing: hooks, reading: UInt32.self)
        } catch {
            // The arena does not exist, so nothing can call the hooks any more.
            let carved = ExtentHookBlock.state(hooks).pointee.withLock { $0.carvedBytes }
            ExtentHookBlock.destroy(hooks)
            if carved < 4 << 20 {
                throw .outOfMemory(requestedBytes: 2 << 20, carvedBytes: carved,
                                   privateBytes: memory.privatePages.count << PageGeometry.shift)
            }
            throw error
        }
        do {
            // Never purge: the purge hooks refuse anyway, so decay would only move
            // extents between jemalloc's caches. Freed runs stay dirty and are
            // reused first, as a page allocator's free lists would be.
            try Jemalloc.write("arena.\(index).dirty_decay_ms", -1 as Int)
            try Jemalloc.write("arena.\(index).muzzy_decay_ms", -1 as Int)
            // Grow 2 MiB at a time (jemalloc otherwise grows geometrically), so the
            // last megabytes of a small guest are usable.
            try Jemalloc.write("arena.\(index).retain_grow_limit", 2 << 20 as Int)
        } catch {
            try? Jemalloc.run("arena.\(index).destroy")
            ExtentHookBlock.destroy(hooks)
            throw error
        }
        self.memory = memory
        self.arenaIndex = index
        self.freeHook = freeHook
        self.hookFunction = freeHook ?? { _ in false }
        self.hasFreeHook = freeHook != nil
        self.arenaFlags = Jemalloc.arena(index) | Jemalloc.tcacheNone
        self.regionBase = base
        self.descriptors = memory.descriptors
        self.privatePages = memory.privatePages
        self.hooks = hooks
        self.allocationCounters = PerCPUCounters(counters: Counter.allocationCount)
        self.freeCounters = PerCPUCounters(counters: Counter.freeCount)
    }

    deinit {
        let live = statistics.livePages
        if live > 0 {
            Self.lostPages.wrappingAdd(live, ordering: .relaxed)
            Logger(label: "dma-pools.general-allocator").warning(
                "destroying arena \(arenaIndex) with \(live) pages still live: they are lost with the arena")
        }
        do {
            try Jemalloc.run("arena.\(arenaIndex).destroy")
            ExtentHookBlock.destroy(hooks)
        } catch {
            // The arena still exists and may call its hooks: leak the block.
            Logger(label: "dma-pools.general-allocator").error(
                "could not destroy jemalloc arena \(arenaIndex): \(error)")
        }
    }

    // MARK: Allocation

    /// Allocates a naturally aligned run of `1 << order` private pages
    /// (`alloc_pages(GFP_KERNEL, order)`).
    ///
    /// The head is a compound head of `order` owned by `owner`, reference count 1,
    /// in the private domain.
    /// - Parameters:
    ///   - order: 0...9 (`PageGeometry.socketFragOrder` = 3 is the 32 KiB socket frag).
    ///   - owner: `.generalAllocator`, or `.user` for pinned user pages.
    /// - Throws: `invalidOrder` for an order outside 0...9; `outOfMemory` when the
    ///   private range cannot supply the run.
    @inlinable
    public func allocatePages(order: Int, owner: PageOwner = .generalAllocator) throws(AllocatorError) -> Page {
        try allocatePages(order: order, owner: owner, flags: arenaFlags)
    }

    /// `allocatePages` with the given arena and tcache flags (the alignment is added).
    @inlinable
    func allocatePages(order: Int, owner: PageOwner, flags: Int32) throws(AllocatorError) -> Page {
        guard UInt(bitPattern: order) <= UInt(PageGeometry.maxOrder) else { throw invalidOrder(order) }
        precondition(owner == .generalAllocator || owner == .user,
                     "GeneralAllocator hands out pages owned by general-allocator or user, not \(owner)")
        // order <= 9: the shift and the sum below are small.
        let bytes = PageGeometry.size &<< order
        guard let run = mallocx(bytes, flags | Jemalloc.lgAlign(PageGeometry.shift &+ order)) else {
            throw outOfMemory(order: order)
        }
        let head = page(containing: run)
        #if DMAPOOLS_INVARIANTS
        checkFreshRun(head, order: order)
        #endif
        memory.prepareCompoundRun(head, order: order, owner: owner)
        head.storeReferenceCount(1)
        allocationCounters.add(Counter.allocations(order))
        return head
    }

    /// Frees a run this allocator handed out (`__free_pages`).
    ///
    /// `page` must be the head of a live run from this allocator, owned by
    /// `.generalAllocator` or `.user`, in the private domain, with reference count
    /// **0 or 1**: 1 when the caller holds the only reference and frees directly
    /// (the allocate/free pair), 0 when the last reference was already dropped with
    /// `Page.release()` (the put_page -> free path). Any other count, a double free
    /// or a foreign page traps with a message naming the page.
    ///
    /// The free hook, if any, runs first and may take the page instead.
    @inlinable
    public func freePages(_ page: Page) {
        freePages(page, flags: arenaFlags)
    }

    /// `freePages` with the given arena and tcache flags (the alignment is added).
    @inlinable
    func freePages(_ page: Page, flags: Int32) {
        if hasFreeHook {
            if hookFunction(page) {
                freeCounters.add(Counter.hookInterceptions)
                return
            }
        }
        let order = checkedOrder(ofFreed: page)
        memory.destroyCompoundRun(page, owner: .free)
        page.storeReferenceCount(0)
        // checkedOrder returned 0...9: the shift and the sum are small.
        sdallocx(page.bytes, PageGeometry.size &<< order, flags | Jemalloc.lgAlign(PageGeometry.shift &+ order))
        freeCounters.add(Counter.frees(order))
    }

    /// Whether `page` lies in the private range this allocator carves from.
    @inlinable
    public func contains(_ page: Page) -> Bool {
        privatePages.contains(page.descriptor - descriptors)
    }

    // MARK: Helpers

    /// The descriptor of the first page of a run jemalloc returned. The arena
    /// carves only from the private range, so the run is inside the region.
    @inlinable
    func page(containing run: UnsafeMutableRawPointer) -> Page {
        Page(descriptor: descriptors + Int(bitPattern: (UInt(bitPattern: run) &- regionBase) >> UInt(PageGeometry.shift)))
    }

    /// Validates a page passed to `freePages` and returns its order; traps with a
    /// message naming the page if it is not a live head of this allocator.
    @inlinable
    func checkedOrder(ofFreed page: Page) -> Int {
        let index = page.descriptor - descriptors
        guard privatePages.contains(index) else { invalidFree(page, reason: "a page outside this allocator's private range") }
        let descriptor = page.descriptor
        let owner = descriptor.pointee.owner
        guard owner == .generalAllocator || owner == .user else { invalidFree(page, reason: "not a live run of this allocator") }
        let order = Int(descriptor.pointee.order)
        guard descriptor.pointee.headOffset == 0, order <= PageGeometry.maxOrder, index & ((1 &<< order) &- 1) == 0 else {
            invalidFree(page, reason: "not the head of a run")
        }
        let references = descriptor.pointee._referenceCount.load(ordering: .acquiring)
        guard references == 0 || references == 1 else { invalidFree(page, reason: "still referenced (\(references) references)") }
        guard descriptor.pointee._domain.load(ordering: .relaxed) == MemoryDomain.private.rawValue else {
            invalidFree(page, reason: "shared memory (convert it back to private before freeing it)")
        }
        return order
    }

    @inline(never)
    @usableFromInline
    func invalidFree(_ page: Page, reason: String) -> Never {
        let what = page.owner == .free && contains(page) ? "double free" : "invalid free"
        fatalError("GeneralAllocator.freePages: \(what) of \(page): \(reason)")
    }

    @inline(never)
    @usableFromInline
    func invalidOrder(_ order: Int) -> AllocatorError {
        freeCounters.add(Counter.failures)
        return .invalidOrder(order, allowed: Self.orders)
    }

    @inline(never)
    @usableFromInline
    func outOfMemory(order: Int) -> AllocatorError {
        freeCounters.add(Counter.failures)
        return .outOfMemory(requestedBytes: PageGeometry.bytes(order: order),
                            carvedBytes: carveSnapshot().carvedBytes,
                            privateBytes: privatePages.count << PageGeometry.shift)
    }

    /// Debug check: every page of a run jemalloc just returned is free and private.
    @inline(never)
    @usableFromInline
    func checkFreshRun(_ head: Page, order: Int) {
        let index = head.descriptor - descriptors
        precondition(privatePages.contains(index) && index & ((1 << order) - 1) == 0,
                     "jemalloc returned a run outside the private range or misaligned: \(head)")
        for i in 0..<(1 << order) {
            let page = Page(descriptor: head.descriptor + i)
            precondition(page.owner == .free && page.domain == .private,
                         "jemalloc returned an order-\(order) run at \(head.physicalAddress) overlapping \(page)")
        }
    }

    func carveSnapshot() -> CarveState {
        ExtentHookBlock.state(hooks).pointee.withLock { $0 }
    }
}
