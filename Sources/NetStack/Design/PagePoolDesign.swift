import DMAPools
import Synchronization

/// `page-pool`: what the review asked for. Each sender (CPU) has a TX
/// page_pool for the NIC's device over a provider whose pages are already
/// device-visible (swiotlb runs, or pre-decrypted pages), with their DMA address
/// stored in the page. Socket pages come from the sender's pool; frames are
/// marked `pp_recycle`, so the frame free path gives pages back to their pool
/// (directly when the sender frees them, through the pool's ring when the queue
/// does) and the page allocator's free path needs no hook. When the pool cannot
/// supply a page, the socket falls back to general pages, which bounce.
///
/// Why per-CPU pools: a page_pool's alloc cache is lockless and belongs to one
/// context. Sockets allocate in the sender's context, and the last reference
/// to a frame's data is almost always dropped there too (the ACK frees the
/// retransmit-queue frame long after the completion freed the driver's clone),
/// so per-sender pools allocate and recycle on the fast path. A per-queue pool
/// would be allocated from by senders that do not own it — outside the
/// page_pool contract — and would recycle ACKed pages through its ring.
///
/// Open: a design that keeps these pools and this page handling over a
/// provider of its own subclasses it, passing its provider to `init`, and
/// overrides `name`, `shutdown` (calling `super.shutdown()` first, which
/// destroys the pools and waits for their pages) and `reportFigures`
/// (Examples/CustomDesign does).
open class PagePoolDesign: GuestDesign, @unchecked Sendable {
    open override var name: String { "page-pool" }
    open override var marksFramesForRecycle: Bool { true }

    public let pools: [PagePool]
    public let provider: PagePoolMemoryProvider
    private let fallbacks = Atomic<Int>(0)

    /// - Parameters:
    ///   - senders: one pool per sender.
    ///   - ringSize: each pool's `pool_size` (its recycle ring).
    ///   - preemptRT: the kernel is `CONFIG_PREEMPT_RT` (`PagePoolParameters.preemptRT`).
    public init(guest: Guest, device: Device, senders: Int, provider: PagePoolMemoryProvider,
                ringSize: Int = 1024, preemptRT: Bool = false) throws {
        self.provider = provider
        var pools: [PagePool] = []
        for sender in 0..<senders {
            var parameters = PagePoolParameters()
            parameters.order = PageGeometry.socketFragOrder
            parameters.poolSize = ringSize
            parameters.flags = [.dmaMap, .transmit]
            parameters.dmaDirection = .toDevice
            parameters.device = device
            parameters.cpu = sender
            parameters.name = "tx-pp\(sender)"
            parameters.preemptRT = preemptRT
            pools.append(try PagePool(parameters, provider: provider))
        }
        self.pools = pools
        super.init(guest: guest, device: device)
    }

    open override func senderStarted(_ sender: Int) {
        pools[sender].bindToCurrentThread()
    }

    open override func allocateSocketPage(order: Int, for socket: Socket) -> Page? {
        // A removed device's pools are being torn down (the driver's unregister
        // path): sockets stop taking pages from them.
        if order == PageGeometry.socketFragOrder && !device.isRemoved {
            if let page = try? pools[socket.sender].allocatePage() { return page }
            fallbacks.wrappingAdd(1, ordering: .relaxed)
        }
        return try? guest.allocator.allocatePages(order: order)
    }

    open override func isSoleReference(_ page: Page) -> Bool {
        if let pool = PagePool.owning(page) { return pool.fragmentReferenceCount(of: page.head) == 1 }
        return super.isSoleReference(page)
    }

    open override func retainFragment(_ page: Page) {
        if let pool = PagePool.owning(page) { pool.retainFragment(page.head) } else { super.retainFragment(page) }
    }

    open override func releaseSocketPage(_ page: Page) {
        if let pool = PagePool.owning(page) { pool.put(page.head) } else { super.releaseSocketPage(page) }
    }

    /// `skb_frag_unref` -> `napi_pp_put_page` for pool pages of a pp_recycle frame.
    open override func releaseFragment(_ page: Page, ppRecycle: Bool) {
        if ppRecycle, let pool = PagePool.owning(page) { pool.put(page.head) } else { super.releaseFragment(page, ppRecycle: ppRecycle) }
    }

    /// Pool pages carry their DMA address (`page_pool_get_dma_addr`): the driver
    /// uses it as is. Fallback pages go through the DMA API and bounce.
    open override func map(_ fragment: Fragment, socket: Socket, queue: TXQueue) throws(DMAError) -> FragmentMapping {
        guard fragment.page.head.owner == .pagePool else { return try mapThroughDMAAPI(fragment, queue: queue) }
        return try mapByStoredAddress(fragment, queue: queue)
    }

    open override func shutdown() throws {
        for pool in pools { pool.destroy() }
        for pool in pools where !pool.waitForShutdown(timeout: .seconds(5)) {
            throw DesignError.poolDidNotDrain(pool: "\(pool)", inflight: pool.inflight)
        }
    }

    open override func reportFigures() -> [DesignFigure] {
        var fast = 0, slow = 0, empty = 0, refill = 0, cached = 0, cacheFull = 0, ring = 0, ringFull = 0, refcnt = 0
        for pool in pools {
            let a = pool.statistics.allocation, r = pool.statistics.recycling
            fast += a.fast; slow += a.slow; empty += a.empty; refill += a.refill
            cached += r.cached; cacheFull += r.cacheFull; ring += r.ring
            ringFull += r.ringFull; refcnt += r.releasedRefcount
        }
        return [
            .text("provider", provider.name),
            .counts("alloc fast/slow/empty/refill", [fast, slow, empty, refill], unit: "allocations"),
            .counts("recycle cached/cache_full", [cached, cacheFull], unit: "pages"),
            .counts("recycle ring/ring_full", [ring, ringFull], unit: "pages"),
            .count("released_refcnt", refcnt, unit: "pages"),
            .count("fallbacks to general pages", fallbacks.load(ordering: .relaxed), unit: "refills"),
        ]
    }
}

/// The `page-pool` design kind: one TX page_pool per sender over the
/// provider the configuration names (`ExperimentConfiguration.poolProvider`),
/// each with the configuration's ring size; the guest is what the provider
/// needs. Pools are created before the clock starts.
public struct PagePoolDesignKind: TransmitDesignKind {
    public init() {}
    public var name: String { "page-pool" }
    public var summary: String { "per-CPU TX page_pools over a device-visible provider (--provider); frames marked pp_recycle" }
    public func requirements(workload: Workload, configuration: ExperimentConfiguration) -> GuestRequirements {
        // Fallback pages bounce; the rest is the provider's.
        GuestRequirements(bounces: true).union(
            configuration.poolProvider.requirements(pools: workload.senders, order: PageGeometry.socketFragOrder,
                                                    configuration: configuration))
    }
    public func check(workload: Workload, configuration: ExperimentConfiguration) throws(ExperimentError) {
        let provider = configuration.poolProvider
        if let why = provider.unsupportedReason(on: configuration.platform) {
            throw .invalid(.invalid(parameter: "provider", reason: "\(provider.name) does not apply to --platform \(configuration.platform.name): \(why)"))
        }
    }
    public func makeDesign(in context: DesignContext) throws -> any TransmitDesign {
        try PagePoolDesign(guest: context.guest, device: context.device, senders: context.workload.senders,
                           provider: try context.makePoolProvider(), ringSize: context.configuration.poolRingSize,
                           preemptRT: context.configuration.preemptRT)
    }
}

extension TransmitDesignKind where Self == PagePoolDesignKind {
    /// `page-pool`: per-CPU TX page_pools.
    public static var pagePool: PagePoolDesignKind { PagePoolDesignKind() }
}

/// The `swiotlb` provider kind: zero-copy runs of the guest's swiotlb for the
/// NIC's device (`SWIOTLBPageProvider`), under the configuration's
/// `zerocopy_tx_percent`.
public struct SWIOTLBProviderKind: PagePoolProviderKind {
    public init() {}
    public var name: String { "swiotlb" }
    public func unsupportedReason(on platform: Guest.Platform) -> String? {
        platform.iommu == nil ? nil : "zero-copy swiotlb runs exist only where devices bounce; behind an IOMMU use --provider system"
    }
    public var summary: String { "zero-copy runs taken from swiotlb, under zerocopy_tx_percent (shared from boot)" }
    public func requirements(pools: Int, order: Int, configuration: ExperimentConfiguration) -> GuestRequirements {
        // Cached pages are swiotlb's, not private memory.
        GuestRequirements(swiotlbZeroCopyRuns: true, bounces: false)
    }
    public func makeProvider(in context: DesignContext) throws -> any PagePoolMemoryProvider {
        SWIOTLBPageProvider(swiotlb: context.guest.swiotlb, device: context.device)
    }
}

/// The `decrypted` provider kind: runs of the guest's pre-decrypted allocator
/// (`DecryptedPageProvider`); the pools' caches are private memory converted
/// to shared, reserved by the fit check.
public struct DecryptedProviderKind: PagePoolProviderKind {
    public init() {}
    public var name: String { "decrypted" }
    public func unsupportedReason(on platform: Guest.Platform) -> String? {
        platform.iommu == nil ? nil : "pre-decrypted pages need encrypted memory; behind an IOMMU use --provider system"
    }
    public var summary: String { "runs of the pre-decrypted allocator (private chunks converted to shared once)" }
    public func requirements(pools: Int, order: Int, configuration: ExperimentConfiguration) -> GuestRequirements {
        GuestRequirements(decryptedAllocator: true, privateReserveBytes: Self.cachedBytes(pools: pools, order: order), bounces: false)
    }
    public func makeProvider(in context: DesignContext) throws -> any PagePoolMemoryProvider {
        DecryptedPageProvider(allocator: context.guest.decrypted)
    }
}

/// The `system` provider kind: the kernel's default page_pool backing,
/// general pages (`alloc_pages`) mapped through the DMA API when they enter
/// the pool and unmapped when they leave it (`SystemPageProvider`). Behind an
/// IOMMU that is one IOVA and its entries per pooled page, kept while the page
/// recycles. Not in a confidential VM: there the mapping is a bounce slot that
/// needs a sync copy after every write, which the page-pool design, mapping by
/// the stored address, does not make.
public struct SystemProviderKind: PagePoolProviderKind {
    public init() {}
    public var name: String { "system" }
    public var summary: String { "general pages mapped once through the DMA API when they enter the pool (behind an IOMMU: one IOVA per pooled page)" }
    public func unsupportedReason(on platform: Guest.Platform) -> String? {
        platform.iommu != nil ? nil
            : "in a confidential VM a system page's mapping is a bounce slot needing a copy at every sync; use swiotlb or decrypted"
    }
    public func requirements(pools: Int, order: Int, configuration: ExperimentConfiguration) -> GuestRequirements {
        GuestRequirements(privateReserveBytes: Self.cachedBytes(pools: pools, order: order), bounces: false)
    }
    public func makeProvider(in context: DesignContext) throws -> any PagePoolMemoryProvider {
        SystemPageProvider(general: context.guest.allocator, dma: context.guest.dma, device: context.device)
    }
}

extension PagePoolProviderKind where Self == SystemProviderKind {
    /// `system`: general pages mapped when they enter the pool.
    public static var system: SystemProviderKind { SystemProviderKind() }
}

extension PagePoolProviderKind where Self == SWIOTLBProviderKind {
    /// `swiotlb`: zero-copy swiotlb runs.
    public static var swiotlb: SWIOTLBProviderKind { SWIOTLBProviderKind() }
}

extension PagePoolProviderKind where Self == DecryptedProviderKind {
    /// `decrypted`: pre-decrypted pages.
    public static var decrypted: DecryptedProviderKind { DecryptedProviderKind() }
}

/// Errors from a design's own machinery.
public enum DesignError: Error, CustomStringConvertible {
    case poolDidNotDrain(pool: String, inflight: Int)

    public var description: String {
        switch self {
        case .poolDidNotDrain(let pool, let inflight): "\(pool) still has \(inflight) pages in flight after teardown"
        }
    }
}
