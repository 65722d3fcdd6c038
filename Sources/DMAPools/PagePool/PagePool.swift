import Logging
import Synchronization
import CThread

#if canImport(Glibc)
import Glibc
#endif

/// A page_pool (`net/core/page_pool.c`): a per-queue recycler of DMA-mapped
/// pages with a lockless alloc cache for its owning context, a bounded
/// multi-producer recycle ring for everyone else, and a memory provider behind
/// both.
///
///     allocatePage()                          put(_:)
///       | alloc cache (128, owner only) <------- owner thread (direct recycle)
///       | refill 64 <--- recycle ring (ringSize) <--- any other thread
///       | slow path: provider bulk (64 order-0 / 1 high order)
///       v                                           ring full / refcount != 1
///     provider.allocatePages                  ---> provider.releasePage
///
/// Owning context: the thread that created the pool (or called
/// `bindToCurrentThread()`), the analog of the pool's NAPI/softirq CPU. Only it
/// may allocate; `put` recycles directly into the cache only there, and through
/// the ring everywhere else.
///
/// Inflight: `holdCount - releaseCount`, every page taken from the provider and
/// not yet given back (pages in the cache and ring count until teardown
/// returns them, as in the kernel).
public final class PagePool: @unchecked Sendable, CustomStringConvertible {
    /// `PP_ALLOC_CACHE_SIZE`.
    public static let allocCacheSize = 128
    /// `PP_ALLOC_CACHE_REFILL`: ring-to-cache refill and slow-path bulk size.
    public static let allocCacheRefill = 64
    /// `BIAS_MAX`: the fragment reference bias (`LONG_MAX >> 1`).
    public static let fragmentBias = Int.max >> 1
    /// `PP_SIGNATURE`-like magic in the low half of every pool signature; the pool
    /// id is in the high half.
    public static let signatureMagic: UInt64 = 0x0000_0000_dead_0040

    /// The parameters the pool was created with (validated).
    public let parameters: PagePoolParameters
    /// The memory provider behind the pool.
    public let provider: any PagePoolMemoryProvider
    /// A process-wide unique id (`pool->user.id`).
    public let id: UInt32
    /// The value every page of this pool carries in `poolSignature` (`pp_magic`).
    public let signature: UInt64
    /// Whether the pool maps pages (`PP_FLAG_DMA_MAP`).
    public let mapsDMA: Bool
    /// The device pages are mapped for.
    public let device: Device?
    /// `dma_dir`.
    public let dmaDirection: DMADirection
    /// Whether the pool keeps its `dma_mapped` record: a mapping pool whose
    /// provider has something to unmap at destroy.
    @usableFromInline let tracksMappedPages: Bool

    /// What every put reads and only binding writes: the owning thread, the
    /// signature, the sync settings (the kernel's read-mostly head of
    /// `struct page_pool`: `p`, `cpuid`). On lines of its own, apart from
    /// `hot`, so that a put on another CPU does not pull in the line the owner
    /// writes on every allocation.
    @usableFromInline let readMostly: UnsafeMutablePointer<_PagePoolReadMostlyState>
    /// Owner-context state: the alloc cache's count and its counters (the
    /// kernel's `____cacheline_aligned_in_smp` `alloc`). Lives in unsafe
    /// storage so the fast path has no exclusivity checks and no ARC.
    @usableFromInline let hot: UnsafeMutablePointer<_PagePoolHotState>
    /// The one block behind `readMostly` and `hot`, each on whole
    /// `_PagePoolHotState.lineBytes` lines of its own.
    private let stateAllocation: AlignedAllocation
    /// `parameters.preemptRT`, read on every put.
    @usableFromInline let preemptRT: Bool
    /// The alloc cache's pages (`pool->alloc.cache`).
    @usableFromInline let cache: UnsafeMutablePointer<Page>
    /// The recycle ring (`pool->ring`); frees its storage when the pool goes.
    @usableFromInline let ring: _RecycleRing
    /// Counters and state written from any thread.
    @usableFromInline let shared: _PagePoolSharedState
    /// Teardown state (destroy, retries, completion).
    let teardown = Lock(_PagePoolTeardownState())

    private static let nextID = Atomic<UInt32>(1)

    /// Creates a pool (`page_pool_create`) owned by the calling thread.
    ///
    /// - Throws: `PagePoolError.invalidParameter` naming the parameter at fault,
    ///   or whatever the provider's `attach` throws.
    public init(_ parameters: PagePoolParameters, provider: any PagePoolMemoryProvider) throws(PagePoolError) {
        try parameters.validate()
        self.parameters = parameters
        self.provider = provider
        // Relaxed: ids only need to be unique.
        self.id = PagePool.nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        self.signature = PagePool.signatureMagic | (UInt64(id) << 32)
        self.mapsDMA = parameters.flags.contains(.dmaMap)
        self.device = parameters.device
        self.dmaDirection = parameters.dmaDirection
        self.tracksMappedPages = parameters.flags.contains(.dmaMap) && provider.unmapsInflightPages
        self.preemptRT = parameters.preemptRT
        let lineBytes = _PagePoolHotState.lineBytes
        let hotOffset = (MemoryLayout<_PagePoolReadMostlyState>.size + lineBytes - 1) / lineBytes * lineBytes
        let hotBytes = (MemoryLayout<_PagePoolHotState>.size + lineBytes - 1) / lineBytes * lineBytes
        self.stateAllocation = AlignedAllocation(byteCount: hotOffset + hotBytes, alignment: lineBytes)
        self.readMostly = stateAllocation.pointer.bindMemory(to: _PagePoolReadMostlyState.self, capacity: 1)
        readMostly.initialize(to: _PagePoolReadMostlyState(
            owner: pthread_self(),
            dmaSync: parameters.flags.contains(.dmaSyncForDevice),
            syncOffset: parameters.offset,
            maxLength: parameters.maxLength,
            signature: signature))
        self.hot = (stateAllocation.pointer + hotOffset).bindMemory(to: _PagePoolHotState.self, capacity: 1)
        hot.initialize(to: _PagePoolHotState())
        hot.pointee.preferredNode = max(parameters.node, 0)
        self.cache = .allocate(capacity: PagePool.allocCacheSize)
        self.ring = _RecycleRing(capacity: parameters.ringSize, cacheLineBytes: parameters.architecture.cacheLineBytes)
        self.shared = _PagePoolSharedState()
        // Nothing is allocated yet; if attach throws, deinit frees the storage.
        try provider.attach(to: self)
    }

    deinit {
        // A pool must be destroyed (`page_pool_destroy`) and drained before it
        // goes away; otherwise the pages it still holds never reach the provider.
        if teardown.withLock({ $0.phase }) != .complete {
            let held = hot.pointee.cacheCount + ring.count
            parameters.logger.error("\(description) deallocated without destroy(): \(held) idle pages never returned to \(provider.name)")
        }
        hot.deinitialize(count: 1)
        readMostly.deinitialize(count: 1)
        stateAllocation.deallocate()
        cache.deallocate()
    }

    /// The pool's name for diagnostics: `page_pool "name" id N`.
    public var description: String { "page_pool \"\(parameters.name)\" id \(id)" }

    /// The pool as stored in `PageDescriptor.ownerObject` (`page->pp`).
    @inlinable
    public var ownerObject: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    // MARK: Owning context

    /// Makes the calling thread the owning context
    /// (`page_pool_enable_direct_recycling`). The caller guarantees the
    /// previous owner no longer allocates.
    public func bindToCurrentThread() {
        precondition(!isDestroyed, "\(self) is destroyed: it cannot be bound to a thread")
        readMostly.pointee.owner = pthread_self()
    }

    /// `page_pool_update_nid`: the pool now prefers `node` (-1: the owner's
    /// node); the alloc cache goes back to the provider, since refills check
    /// the node and the cache does not. Owning context only.
    public func updateNode(_ node: Int) {
        precondition(node >= PagePoolParameters.noNode, "\(self): node \(node) must be -1 (NUMA_NO_NODE) or a node number")
        hot.pointee.preferredNode = max(node, 0)
        _returnAllocCache()
    }

    /// The NUMA node refills keep (`pref_nid`).
    public var preferredNode: Int { hot.pointee.preferredNode }

    /// Stops direct recycling (`page_pool_disable_direct_recycling`): every put
    /// goes through the ring. Allocation stays allowed for a caller that
    /// serializes it (the kernel does not check either).
    public func disableDirectRecycling() {
        readMostly.pointee.owner = _PagePoolReadMostlyState.noOwner
    }

    /// Whether the calling thread owns the pool.
    @inlinable
    public var isOwnedByCurrentThread: Bool {
        let owner = readMostly.pointee.owner
        return owner != _PagePoolReadMostlyState.noOwner && _isCurrentThread(owner)
    }

    /// `page_pool_napi_local`: whether a put that does not vouch for direct
    /// recycling may still recycle into the cache because it runs in the
    /// owning context. Never under `CONFIG_PREEMPT_RT` (`parameters.preemptRT`).
    @inlinable
    public var isNAPILocal: Bool {
        !preemptRT && isOwnedByCurrentThread
    }

    /// Whether `destroy()` has been called.
    public var isDestroyed: Bool { shared.destroyed.load(ordering: .acquiring) }

    /// `page_pool_get_dma_addr`: the DMA address stored for a pool page.
    @inlinable
    public func dmaAddress(of page: Page) -> DMAAddress { page.head.dmaAddress }
}

/// Whether `thread` is the calling thread. glibc's `pthread_t` is the thread's
/// descriptor address and `pthread_equal` is `==`, so compare inline, reading
/// the calling thread's `pthread_t` without a call (`dmapools_current_thread`).
@inlinable
func _isCurrentThread(_ thread: pthread_t) -> Bool {
    #if os(Linux)
    return thread == dmapools_current_thread()
    #else
    return pthread_equal(thread, pthread_self()) != 0
    #endif
}

/// The read-mostly half of a pool: what a put on any CPU reads. Written only
/// when the owning context changes (`bindToCurrentThread`,
/// `disableDirectRecycling`), as the kernel writes `pool->cpuid`.
@usableFromInline
struct _PagePoolReadMostlyState {
    /// No owning thread: direct recycling disabled.
    @usableFromInline static let noOwner: pthread_t = 0

    @usableFromInline var owner: pthread_t
    @usableFromInline let dmaSync: Bool
    @usableFromInline let syncOffset: Int
    @usableFromInline let maxLength: Int
    @usableFromInline let signature: UInt64

    @usableFromInline
    init(owner: pthread_t, dmaSync: Bool, syncOffset: Int, maxLength: Int, signature: UInt64) {
        self.owner = owner
        self.dmaSync = dmaSync
        self.syncOffset = syncOffset
        self.maxLength = maxLength
        self.signature = signature
    }
}

/// The owner-context half of a pool (`pool->alloc` and `pool->alloc_stats`,
/// plus the frag state and the recycle counters only the owner bumps).
@usableFromInline
struct _PagePoolHotState {
    /// The granule the two halves are kept apart by: two 64-byte lines, as the
    /// recycle ring's lines, since x86's adjacent-line prefetcher fetches
    /// lines in pairs.
    static let lineBytes = 128

    @usableFromInline var cacheCount: Int = 0

    // alloc_stats (owner only, like the kernel's non-atomic alloc_stats).
    @usableFromInline var allocFast = 0
    @usableFromInline var allocSlow = 0
    @usableFromInline var allocSlowHighOrder = 0
    @usableFromInline var allocEmpty = 0
    @usableFromInline var allocRefill = 0
    @usableFromInline var allocWaive = 0
    /// The node refills keep (`pref_nid`): the pool's `nid`, or the owner's node.
    @usableFromInline var preferredNode = 0
    // recycle stats that only the owner context can produce.
    @usableFromInline var recycleCached = 0
    @usableFromInline var recycleCacheFull = 0

    // frag state (`frag_page`, `frag_offset`, `frag_users`).
    @usableFromInline var fragmentPage: Page? = nil
    @usableFromInline var fragmentOffset = 0
    @usableFromInline var fragmentUsers = 0

    @usableFromInline
    init() {}
}

/// Counters and flags any thread may touch. Every update is a relaxed atomic:
/// they are counters, read for reports, and order nothing.
@usableFromInline
final class _PagePoolSharedState: Sendable {
    /// `pages_state_hold_cnt`: pages taken from the provider. Written by the
    /// owner only, atomic so other threads can read it.
    @usableFromInline let holdCount = Atomic<Int>(0)
    /// `pages_state_release_cnt`: pages given back to the provider.
    @usableFromInline let releaseCount = Atomic<Int>(0)
    @usableFromInline let ringFull = Atomic<Int>(0)
    @usableFromInline let releasedRefcount = Atomic<Int>(0)
    /// Pages that came home after `destroy()` and went straight to the provider.
    @usableFromInline let releasedAfterDestroy = Atomic<Int>(0)
    /// Set by `destroy()`; read (acquiring) by puts that miss the cache.
    @usableFromInline let destroyed = Atomic<Bool>(false)
    /// Puts syncing a page for the device right now: destroy waits for them
    /// before it unmaps (the kernel's `synchronize_net()` in `page_pool_scrub`).
    @usableFromInline let syncsInProgress = Atomic<Int>(0)
    /// `pool->dma_mapped`: the pages this pool mapped and has not released, so
    /// that destroy can unmap those still in flight (`page_pool_scrub`). Kept
    /// only by a mapping pool; touched on the slow paths (taking a page from the
    /// provider, giving one back), never on the fast path.
    let dmaMapped = Lock<Set<Page>>([])

    init() {}
}
