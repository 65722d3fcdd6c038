@_spi(DMAPoolsSupport) import DMAPools
import Synchronization

/// The socket's learned bounce device (`struct sk_swiotlb_info`).
struct BounceDeviceCache {
    var device: Device?
    var serial: UInt32 = 0
    var learnedAt: UInt64 = 0
}

/// One socket's `sk_swiotlb`, behind its own lock (the patch uses xchg/cmpxchg).
final class SocketBounceState: Sendable {
    let cache = Lock(BounceDeviceCache())
}

/// `frag-refill`: the seed patch. A socket's page-frag refill takes naturally
/// aligned runs straight from swiotlb (within `zerocopy_tx_percent`), so copy 1
/// writes into bounce memory and `dma_map` returns the run's own address (no
/// copy 2). The bounce device is learned per socket from the transmit path and
/// invalidated by the device-removal serial; when the cap or the pool is
/// reached the refill falls back to general pages. Freed pages find their way
/// home through a hook in the page allocator's free path, checked on every free.
public final class FragRefillDesign: GuestDesign, @unchecked Sendable {
    public override var name: String { "frag-refill" }
    /// Rate limit for changing a socket's learned device (the patch: 1 s).
    public static let relearnIntervalNanoseconds: UInt64 = 1_000_000_000

    private let caches: [SocketBounceState]
    private let zeroCopyRuns = Atomic<Int>(0)
    private let fallbacks = Atomic<Int>(0)
    private let invalidations = Atomic<Int>(0)
    private let learned = Atomic<Int>(0)

    /// - Precondition: `guest.freePath == .swiotlbHook`.
    public init(guest: Guest, device: Device, flows: Int) {
        precondition(guest.freePath == .swiotlbHook, "frag-refill needs the page allocator's free-path hook")
        caches = (0..<flows).map { _ in SocketBounceState() }
        super.init(guest: guest, device: device)
    }

    /// `alloc_any_pg`: a zero-copy swiotlb run when the socket knows its bounce
    /// device and the cap allows; otherwise `alloc_pages`.
    public override func allocateSocketPage(order: Int, for socket: Socket) -> Page? {
        let swiotlb = guest.swiotlb
        if swiotlb.zeroCopyPercent > 0 && !socket.zeroCopy {
            let current = guest.devices.removalSerial
            let device: Device? = caches[socket.flow].cache.withLock { cache in
                guard let device = cache.device else { return nil }
                if cache.serial != current {
                    // A device went away since we learned ours: drop the cache
                    // without touching the (possibly removed) device.
                    cache.device = nil
                    invalidations.wrappingAdd(1, ordering: .relaxed)
                    return nil
                }
                return device
            }
            if let device {
                // The serial is only a cache hint: a refill that read it just
                // before a removal still asks for the removed device (the socket's
                // reference keeps it alive). swiotlb refuses that request without
                // touching the device; the cache is dropped so the socket asks
                // once at most.
                do throws(DMAError) {
                    let page = try swiotlb.allocateZeroCopyPages(order: order, device: device)
                    zeroCopyRuns.wrappingAdd(1, ordering: .relaxed)
                    return page
                } catch .deviceRemoved {
                    forget(device, for: socket)
                } catch {
                    // On failure, fall back to alloc_pages().
                }
                fallbacks.wrappingAdd(1, ordering: .relaxed)
            }
        }
        return try? guest.allocator.allocatePages(order: order)
    }

    /// The patch sets the per-CPU `current_tx_socket` in `netdev_start_xmit`.
    public override var setsCurrentTXSocket: Bool { true }

    /// `swiotlb_map` with `dma_learn_bounce_device`: the socket the per-CPU
    /// `current_tx_socket` points to learns which device bounces for it. That
    /// is the frame's own socket unless the task was preempted inside its
    /// transmit section (PREEMPT_RT): then it may be another task's socket, or
    /// one that has been freed, whose place the flow's next connection took;
    /// the queue counts both, and the learning happens as in the kernel.
    public override func map(_ fragment: Fragment, socket: Socket, queue: TXQueue) throws(DMAError) -> FragmentMapping {
        let mapping = try mapThroughDMAAPI(fragment, queue: queue)
        if let learner = queue.currentTXSocket(mapping: socket), !learner.zeroCopy { learn(queue.device, for: learner) }
        return mapping
    }

    /// The socket is freed: the next connection on the flow starts with an
    /// empty `sk_swiotlb`.
    public override func socketClosed(_ socket: Socket) {
        caches[socket.flow].cache.withLock { $0 = BounceDeviceCache() }
    }

    /// The patch's `cmpxchg(&sk->sk_swiotlb.dev, dev, NULL)`: drops the cache if
    /// it still holds `device`.
    private func forget(_ device: Device, for socket: Socket) {
        caches[socket.flow].cache.withLock { cache in
            guard cache.device === device else { return }
            cache.device = nil
            invalidations.wrappingAdd(1, ordering: .relaxed)
        }
    }

    /// `sk_set_bounce_device`.
    private func learn(_ device: Device, for socket: Socket) {
        let serial = guest.devices.removalSerial
        caches[socket.flow].cache.withLock { cache in
            if cache.device === device && cache.serial == serial { return }
            let now = monotonicNanoseconds()
            if cache.device != nil && now < cache.learnedAt &+ Self.relearnIntervalNanoseconds { return }
            cache.device = device
            cache.serial = serial
            cache.learnedAt = now
            learned.wrappingAdd(1, ordering: .relaxed)
        }
    }

    public override func reportFigures() -> [DesignFigure] {
        let stats = guest.allocator.statistics
        return [
            .count("zero-copy runs", zeroCopyRuns.load(ordering: .relaxed), unit: "runs"),
            .count("fallbacks to general pages", fallbacks.load(ordering: .relaxed), unit: "refills"),
            .count("devices learned", learned.load(ordering: .relaxed), unit: "lookups"),
            .count("cache invalidations", invalidations.load(ordering: .relaxed), unit: "invalidations"),
            .count("free-path hook checks", stats.hookChecks, unit: "frees"),
            .count("free-path hook interceptions", stats.hookInterceptions, unit: "frees"),
            .count("free-path hook time, estimated", Int((Double(stats.hookChecks) * hookNanosecondsPerCheck() / 1000).rounded()),
                   unit: "us (checks x the hook's cost per call on an ordinary page, timed after the run)"),
        ]
    }

    /// What the free-path hook costs one check, in ns (`FreePathHookCost`).
    func hookNanosecondsPerCheck() -> Double { FreePathHookCost.nanosecondsPerCheck(guest) }
}

/// What the page allocator's free-path hook (the seed patch's check,
/// `Guest.swiotlbFreeHook`) costs one free of a page that is not swiotlb's
/// (the common case: every free in the guest pays it).
public enum FreePathHookCost {
    /// ns per check: the guest's hook called on an ordinary page 65536
    /// times, after a run, outside its timed window; 0 for a guest without the
    /// hook. `txsim microbench` measures the same against whole frees
    /// (`general_free_hooked_ns`, `general_free_ns`).
    public static func nanosecondsPerCheck(_ guest: Guest) -> Double {
        guard let hook = guest.allocator.freeHook, let page = try? guest.allocator.allocatePages(order: 0) else { return 0 }
        defer { guest.allocator.freePages(page) }
        let calls = 65536
        var taken = 0
        let start = monotonicNanoseconds()
        for _ in 0..<calls where hook(page) { taken += 1 }
        let elapsed = monotonicNanoseconds() - start
        precondition(taken == 0, "the free-path hook took an ordinary page")
        return Double(elapsed) / Double(calls)
    }
}

/// The `frag-refill` design kind: a guest with swiotlb's zero-copy mode at
/// the configuration's `zerocopy_tx_percent` and the page allocator's
/// free-path hook; one bounce-device cache per flow.
public struct FragRefillDesignKind: TransmitDesignKind {
    public init() {}
    public var name: String { "frag-refill" }
    public func unsupportedReason(on platform: Guest.Platform) -> String? {
        platform.iommu == nil ? nil : "its socket pages are swiotlb zero-copy runs, and nothing bounces through swiotlb behind an IOMMU without encryption (not applicable)"
    }
    public var summary: String { "the seed patch: socket pages are swiotlb runs within zerocopy_tx_percent, freed through a hook in the page allocator" }
    public func requirements(workload: Workload, configuration: ExperimentConfiguration) -> GuestRequirements {
        GuestRequirements(swiotlbZeroCopyRuns: true, freePath: .swiotlbHook)
    }
    public func makeDesign(in context: DesignContext) throws -> any TransmitDesign {
        FragRefillDesign(guest: context.guest, device: context.device, flows: context.workload.flows)
    }
}

extension TransmitDesignKind where Self == FragRefillDesignKind {
    /// `frag-refill`: the seed patch.
    public static var fragRefill: FragRefillDesignKind { FragRefillDesignKind() }
}
