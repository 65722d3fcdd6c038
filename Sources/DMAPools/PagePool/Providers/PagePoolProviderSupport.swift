import Logging
import Synchronization

/// What a memory provider did, counted by the provider itself (the pool's own
/// counters are in `PagePoolStatistics`). Every provider in `Providers/` keeps
/// the same counters, so their costs can be put side by side.
///
/// Counters are relaxed and striped by CPU: a snapshot is exact only when no
/// pool is calling the provider.
public struct PagePoolProviderStatistics: Sendable, Hashable, CustomStringConvertible {
    /// `attach` / `detach` calls (`mp_ops->init` / `mp_ops->destroy`).
    public var attaches = 0
    public var detaches = 0
    /// `allocatePages` calls (`mp_ops->alloc_netmems`), successful or not.
    public var allocateCalls = 0
    /// Pool pages (runs of the pool's order) handed to pools.
    public var pagesAllocated = 0
    /// Pool pages the provider tried and failed to supply (each failed attempt
    /// ends a bulk fill; the pool sees an error only if it got nothing).
    public var allocationFailures = 0
    /// `releasePage` calls (`mp_ops->release_netmem`): pool pages taken back.
    public var releases = 0
    /// Releases that returned the page to the backing allocator (the pool held
    /// the last reference).
    public var pagesFreed = 0
    /// Releases that only dropped the pool's reference because someone else
    /// still held the page (`released_refcnt`); that holder frees it.
    public var releasedWithOtherReferences = 0
    /// `syncForDevice` calls (`dma_sync_single_for_device` on recycle).
    public var syncs = 0
    /// Bytes copied private -> bounce when a page was mapped (`dma_map_page`).
    public var bytesCopiedAtMap = 0
    /// Bytes copied private -> bounce by syncs for the device.
    public var bytesCopiedAtSync = 0
    /// Bytes copied bounce -> private when a page was unmapped
    /// (`DMA_FROM_DEVICE` / `DMA_BIDIRECTIONAL` only).
    public var bytesCopiedAtUnmap = 0
    /// Pages still in flight that a destroyed pool had unmapped at once
    /// (`page_pool_scrub`); they come home unmapped.
    public var unmappedAtDestroy = 0
    /// DMA calls (sync, unmap) that failed, for instance on a removed device.
    /// Each is also logged. A correct driver keeps this at 0.
    public var dmaFailures = 0

    public init() {}

    /// Every byte the provider made the DMA layer copy.
    public var bytesCopied: Int { bytesCopiedAtMap + bytesCopiedAtSync + bytesCopiedAtUnmap }

    /// Pool pages handed out and not yet taken back.
    public var outstandingPages: Int { pagesAllocated - releases }

    public var description: String {
        "allocate calls \(allocateCalls), pages \(pagesAllocated) (failed \(allocationFailures)), "
            + "released \(releases) (freed \(pagesFreed), other refs \(releasedWithOtherReferences)), "
            + "syncs \(syncs), bytes copied map/sync/unmap \(bytesCopiedAtMap)/\(bytesCopiedAtSync)/\(bytesCopiedAtUnmap), "
            + "unmapped at destroy \(unmappedAtDestroy), DMA failures \(dmaFailures)"
    }
}

/// Counter slots of `_ProviderAccounting.counters`.
@usableFromInline
enum _ProviderCounter: Int, CaseIterable {
    case attaches, detaches, allocateCalls, pagesAllocated, allocationFailures
    case releases, pagesFreed, releasedWithOtherReferences, syncs
    case bytesCopiedAtMap, bytesCopiedAtSync, bytesCopiedAtUnmap, dmaFailures, unmappedAtDestroy
}

/// The bookkeeping every provider shares: per-CPU relaxed counters (no lock and
/// no shared cache line on the per-page paths, which the pool may run on any
/// thread), the last failure's text for diagnostics, and a logger.
@usableFromInline
final class _ProviderAccounting: Sendable {
    @usableFromInline let counters: PerCPUCounters
    let lastFailureText = Lock<String?>(nil)
    let logger: Logger

    init(label: String) {
        counters = PerCPUCounters(counters: _ProviderCounter.allCases.count)
        logger = Logger(label: label)
    }


    /// Adds `amount` to `counter` (relaxed: counters order nothing).
    @inlinable
    func count(_ counter: _ProviderCounter, _ amount: Int = 1) {
        counters.add(counter.rawValue, amount)
    }

    var statistics: PagePoolProviderStatistics {
        func sum(_ c: _ProviderCounter) -> Int { counters.sum(c.rawValue) }
        var s = PagePoolProviderStatistics()
        s.attaches = sum(.attaches)
        s.detaches = sum(.detaches)
        s.allocateCalls = sum(.allocateCalls)
        s.pagesAllocated = sum(.pagesAllocated)
        s.allocationFailures = sum(.allocationFailures)
        s.releases = sum(.releases)
        s.pagesFreed = sum(.pagesFreed)
        s.releasedWithOtherReferences = sum(.releasedWithOtherReferences)
        s.syncs = sum(.syncs)
        s.bytesCopiedAtMap = sum(.bytesCopiedAtMap)
        s.bytesCopiedAtSync = sum(.bytesCopiedAtSync)
        s.bytesCopiedAtUnmap = sum(.bytesCopiedAtUnmap)
        s.dmaFailures = sum(.dmaFailures)
        s.unmappedAtDestroy = sum(.unmappedAtDestroy)
        return s
    }

    /// Records an allocation failure (slow path only).
    @inline(never)
    /// The providers' bulk contract (`mp_ops->alloc_netmems`): fills `pages`
    /// with `take()` until it fails, counts what was filled, and throws the
    /// failure only when nothing was.
    func fill(_ pages: UnsafeMutableBufferPointer<Page>,
              _ take: () throws(PagePoolError) -> Page) throws(PagePoolError) -> Int {
        count(.allocateCalls)
        var filled = 0
        var failure: PagePoolError? = nil
        while filled < pages.count {
            do {
                pages[filled] = try take()
            } catch {
                failure = error
                break
            }
            filled &+= 1                                    // <= pages.count
        }
        if filled > 0 { count(.pagesAllocated, filled) }
        if let failure {
            noteAllocationFailure(failure.description)
            if filled == 0 { throw failure }
        }
        return filled
    }

    func noteAllocationFailure(_ text: String) {
        count(.allocationFailures)
        lastFailureText.withLock { $0 = text }
    }

    /// Records and logs a failed DMA call on a release or sync path, which
    /// cannot throw (`dma_unmap` / `dma_sync` do not fail in the kernel; here a
    /// removed device makes them fail).
    @inline(never)
    func noteDMAFailure(_ what: String, _ error: DMAError, provider: String) {
        count(.dmaFailures)
        let text = "\(provider): \(what) failed: \(error)"
        lastFailureText.withLock { $0 = text }
        logger.error("\(text)")
    }

    var lastFailure: String? { lastFailureText.withLock { $0 } }
}

/// The checks every provider runs in `attach`: each failure names the pool
/// parameter at fault (`PagePoolError.invalidParameter`) or the provider state.
enum _ProviderAttachChecks {
    /// The pool's order is one the provider hands out.
    static func order(_ pool: PagePool, supported: ClosedRange<Int>, provider: String, why: String) throws(PagePoolError) {
        let order = pool.parameters.order
        guard supported.contains(order) else {
            throw .invalidParameter("order", "\(order) is not supported by memory provider \(provider): it hands out orders \(supported.lowerBound)...\(supported.upperBound) (\(why))")
        }
    }

    /// The device the pool maps for, if any, is `device`.
    static func sameDevice(_ pool: PagePool, _ device: Device, provider: String) throws(PagePoolError) {
        if let poolDevice = pool.device, poolDevice !== device {
            throw .invalidParameter("device", "the pool maps for \(poolDevice.name) but memory provider \(provider) serves \(device.name)")
        }
    }

    /// `device` has not been removed.
    static func present(_ device: Device, provider: String) throws(PagePoolError) {
        guard !device.isRemoved else {
            throw .invalidParameter("device", "\(device.name) has been removed: memory provider \(provider) cannot hand out pages for it")
        }
    }

    /// `device` is present and its DMA mask reaches `[first, last]`, the bus
    /// addresses the provider's pages can have.
    static func reachable(_ device: Device, first: DMAAddress, last: DMAAddress, what: String,
                          provider: String) throws(PagePoolError) {
        try present(device, provider: provider)
        // last >= first: both name the same region with the shared bit.
        guard device.canAddress(first, size: Int(truncatingIfNeeded: last.rawValue &- first.rawValue) &+ 1) else {
            throw .invalidParameter("device", "\(device.name) (DMA mask 0x\(String(device.dmaMask, radix: 16))) cannot reach \(what) at \(first)...\(last), where memory provider \(provider)'s pages are DMA-addressed")
        }
    }
}

extension PagePoolError {
    /// A provider's view of an allocator error: running out is `providerExhausted`
    /// (with the allocator's own text as the reason), anything else `providerFailed`.
    static func from(_ error: AllocatorError, provider: String, order: Int) -> PagePoolError {
        switch error {
        case .outOfMemory:
            .providerExhausted(provider: provider, order: order, reason: error.description)
        default:
            .providerFailed(provider: provider, reason: error.description)
        }
    }

    /// A provider's view of a DMA error: a full swiotlb or a reached zero-copy
    /// cap is `providerExhausted`, anything else `providerFailed`.
    static func from(_ error: DMAError, provider: String, order: Int) -> PagePoolError {
        switch error {
        case .swiotlbExhausted, .zeroCopyCapReached:
            .providerExhausted(provider: provider, order: order, reason: error.description)
        default:
            .providerFailed(provider: provider, reason: error.description)
        }
    }
}
