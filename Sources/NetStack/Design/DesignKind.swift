import DMAPools

/// What a TX design, or a page_pool memory provider, needs of the guest it
/// runs on. `Experiment` reads it twice, both times before the clock starts:
/// `Experiment.check` to refuse a workload that cannot fit, and
/// `Experiment.prepare` to boot the guest the design gets.
public struct GuestRequirements: Sendable, Hashable {
    /// The design takes zero-copy runs out of swiotlb (the seed patch's
    /// allocation mode): its guest gets the configuration's
    /// `zerocopy_tx_percent`. Without it the guest's cap is 0 and the mode is off.
    public var swiotlbZeroCopyRuns: Bool
    /// How the guest's page allocator frees pages: `.swiotlbHook` for a design
    /// whose zero-copy runs come home through the page allocator (frag-refill).
    public var freePath: Guest.FreePath
    /// The design uses the guest's pre-decrypted allocator: the fit check
    /// reserves its spare chunks and a chunk per sender in private memory.
    public var decryptedAllocator: Bool
    /// Private memory the design holds beyond each flow's user buffer, send
    /// buffer and socket pages: pool caches over private pages, a provider's
    /// own region. The fit check adds it to what the flows need.
    public var privateReserveBytes: Int
    /// Fragments, or the general pages a design falls back to, may bounce
    /// through swiotlb: the fit check asks the swiotlb to hold a full transmit
    /// batch for every queue that can run at once.
    public var bounces: Bool

    /// - Parameters: see the properties. The default asks for nothing beyond
    ///   a plain guest whose fragments may bounce (today's kernel).
    public init(swiotlbZeroCopyRuns: Bool = false, freePath: Guest.FreePath = .plain,
                decryptedAllocator: Bool = false, privateReserveBytes: Int = 0, bounces: Bool = true) {
        self.swiotlbZeroCopyRuns = swiotlbZeroCopyRuns
        self.freePath = freePath
        self.decryptedAllocator = decryptedAllocator
        self.privateReserveBytes = privateReserveBytes
        self.bounces = bounces
    }

    /// What a design and the parts it is built from (its provider) need
    /// together: either one's needs, the reserves added up.
    public func union(_ other: GuestRequirements) -> GuestRequirements {
        GuestRequirements(swiotlbZeroCopyRuns: swiotlbZeroCopyRuns || other.swiotlbZeroCopyRuns,
                          freePath: freePath == .swiotlbHook || other.freePath == .swiotlbHook ? .swiotlbHook : .plain,
                          decryptedAllocator: decryptedAllocator || other.decryptedAllocator,
                          privateReserveBytes: privateReserveBytes + other.privateReserveBytes,
                          bounces: bounces || other.bounces)
    }
}

/// What a design kind's factory builds a design from: a guest booted to the
/// kind's `GuestRequirements`, the NIC's device on it, and the workload and
/// configuration of the run. Built by `Experiment.prepare`, before the clock
/// starts.
public struct DesignContext: Sendable {
    public let guest: Guest
    /// The NIC's device (`nic0`, 64-bit DMA mask).
    public let device: Device
    public let workload: Workload
    public let configuration: ExperimentConfiguration

    public init(guest: Guest, device: Device, workload: Workload, configuration: ExperimentConfiguration) {
        self.guest = guest
        self.device = device
        self.workload = workload
        self.configuration = configuration
    }

    /// The page_pool memory provider the configuration names
    /// (`ExperimentConfiguration.poolProvider`, `txsim --provider`), built for
    /// this guest and device.
    public func makePoolProvider() throws -> any PagePoolMemoryProvider {
        try configuration.poolProvider.makeProvider(in: self)
    }
}

/// A kind of TX design: what `Experiment.compare`, `Experiment.run` and
/// `txsim --designs` take. The built-in kinds (`.bounce`, `.fragRefill`,
/// `.pagePool`, `.decryptedPool`, `.inlineDecrypt`) are ordinary conformances,
/// registered in `DesignRegistry.shared` through the same `register` a
/// user's package calls.
///
/// Everything a kind does happens before the clock starts: `check` and
/// `requirements` when the experiment is checked, `makeDesign` when a fresh
/// guest has been booted for a run. Their cost (pools created, regions
/// converted, caches filled) is not part of the timed window;
/// `TransmitResult.setupSeconds` says how long it took. Only the design the
/// factory returns is called per frame, through `TransmitDesign`.
public protocol TransmitDesignKind: Sendable {
    /// The name reports print and `txsim --designs` takes: lower case, no
    /// spaces or commas, unique in a registry. The design the factory builds
    /// reports the same name (`TransmitDesign.name`).
    var name: String { get }

    /// One line saying what the design does, for listings and help.
    var summary: String { get }

    /// What the design needs of its guest for `workload` under `configuration`.
    func requirements(workload: Workload, configuration: ExperimentConfiguration) -> GuestRequirements

    /// Refuses, before anything is allocated, a workload or configuration the
    /// design cannot run; the error names the parameter at fault. The default
    /// accepts everything `Workload` and `ExperimentConfiguration` accept.
    func check(workload: Workload, configuration: ExperimentConfiguration) throws(ExperimentError)

    /// Builds the design on a fresh guest booted to `requirements`.
    func makeDesign(in context: DesignContext) throws -> any TransmitDesign

    /// Whether the design converts memory in its transmit path, per mapping
    /// (as inline decryption does): then the comparison reports, per round,
    /// the conversion cost at which it would match the baseline
    /// (`TransmitResult.breakEven`). Default false: a design that converts
    /// once at set-up or per chunk has no per-mapping cost to break even on.
    var convertsPerMapping: Bool { get }

    /// Why the design has no meaning on `platform`, or nil when it runs there.
    /// `Experiment.check` refuses a design that does not apply (naming
    /// `designs`); `txsim compare` leaves such designs out of its default
    /// list and says so. The default: every platform.
    func unsupportedReason(on platform: Guest.Platform) -> String?
}

extension TransmitDesignKind {
    public func check(workload: Workload, configuration: ExperimentConfiguration) throws(ExperimentError) {}
    public var convertsPerMapping: Bool { false }
    public func unsupportedReason(on platform: Guest.Platform) -> String? { nil }
}

/// A kind of page_pool memory provider: what `ExperimentConfiguration.poolProvider`
/// holds and `txsim --provider` names. The page-pool design builds its pools
/// over the provider its configuration names; a user's design may do the same
/// (`DesignContext.makePoolProvider`). The built-in kinds (`.swiotlb`,
/// `.decrypted`) are registered in `DesignRegistry.shared` as a user's would be.
public protocol PagePoolProviderKind: Sendable {
    /// The name `txsim --provider` takes: lower case, no spaces or commas,
    /// unique in a registry.
    var name: String { get }

    /// One line saying where the pages come from.
    var summary: String { get }

    /// What the provider needs of the guest when `pools` pools of order-`order`
    /// pages draw from it, each holding up to `PagePool.allocCacheSize +
    /// PagePool.allocCacheRefill` pages beyond those in flight.
    func requirements(pools: Int, order: Int, configuration: ExperimentConfiguration) -> GuestRequirements

    /// Builds the provider for the context's guest and device.
    func makeProvider(in context: DesignContext) throws -> any PagePoolMemoryProvider

    /// Why the provider has no meaning on `platform`, or nil when it serves
    /// there (default: every platform). The page-pool design refuses a
    /// provider that does not apply, naming `provider`.
    func unsupportedReason(on platform: Guest.Platform) -> String?
}

extension PagePoolProviderKind {
    public func unsupportedReason(on platform: Guest.Platform) -> String? { nil }
}

extension PagePoolProviderKind {
    /// Bytes `pools` pool caches of order-`order` pages can hold beyond the
    /// pages in flight: the private reserve of a provider whose pages are
    /// private memory.
    public static func cachedBytes(pools: Int, order: Int) -> Int {
        pools * (PagePool.allocCacheSize + PagePool.allocCacheRefill) * PageGeometry.bytes(order: order)
    }
}
