import DMAPools

/// The TX designs the framework compares.
public enum DesignKind: String, CaseIterable, Sendable, Codable {
    /// Today's kernel: general pages, swiotlb bounce at map.
    case bounce
    /// The seed patch: socket pages from swiotlb within zerocopy_tx_percent.
    case fragRefill = "frag-refill"
    /// The review's design: per-CPU TX page_pools over a device-visible provider.
    case pagePool = "page-pool"
    /// Socket pages from the generic pre-decrypted allocator.
    case decryptedPool = "decrypted-pool"
    /// Convert each page to shared at map time and back at completion.
    case inlineDecrypt = "inline-decrypt"

    /// Parses a design name, with an error that lists the valid ones.
    public static func named(_ name: String) throws(DesignError) -> DesignKind {
        guard let kind = DesignKind(rawValue: name) else { throw .unknownDesign(name) }
        return kind
    }
}

/// Where the page-pool design's pool pages come from.
public enum PoolProviderKind: String, CaseIterable, Sendable, Codable {
    /// Runs taken from swiotlb (the seed patch's allocation mode, under the same cap).
    case swiotlb
    /// Pages of the pre-decrypted allocator (chunks converted once).
    case decrypted
}

/// Everything about the guest that stays the same across designs.
public struct ExperimentConfiguration: Sendable, Hashable {
    public var memory: GuestMemoryConfiguration
    /// `swiotlb.zerocopy_tx_percent` for the designs that take runs from swiotlb.
    public var zeroCopyPercent: Int
    public var poolProvider: PoolProviderKind
    /// Each TX page_pool's recycle ring (`pool_size`).
    public var poolRingSize: Int
    public var swiotlbAreas: Int?

    public init(memory: GuestMemoryConfiguration = .init(), zeroCopyPercent: Int = 90,
                poolProvider: PoolProviderKind = .swiotlb, poolRingSize: Int = 1024, swiotlbAreas: Int? = nil) {
        self.memory = memory
        self.zeroCopyPercent = zeroCopyPercent
        self.poolProvider = poolProvider
        self.poolRingSize = poolRingSize
        self.swiotlbAreas = swiotlbAreas
    }
}

/// Builds a fresh guest for a design and runs a workload on it.
public enum Experiment {
    /// The guest, NIC device and design for `kind`.
    public static func prepare(_ kind: DesignKind, workload: Workload,
                               configuration: ExperimentConfiguration) throws -> (Guest, Device, TransmitDesign) {
        let usesSWIOTLBRuns = kind == .fragRefill || (kind == .pagePool && configuration.poolProvider == .swiotlb)
        let guest = try Guest(configuration.memory, swiotlbAreas: configuration.swiotlbAreas,
                              zeroCopyPercent: usesSWIOTLBRuns ? configuration.zeroCopyPercent : 0,
                              freePath: kind == .fragRefill ? .swiotlbHook : .plain)
        let device = try guest.devices.add(name: "nic0", dmaMaskBits: 64)
        let design: TransmitDesign
        switch kind {
        case .bounce: design = BounceDesign(guest: guest, device: device)
        case .fragRefill: design = FragRefillDesign(guest: guest, device: device, flows: workload.flows)
        case .pagePool:
            let provider = try makeProvider(configuration.poolProvider, guest: guest, device: device)
            design = try PagePoolDesign(guest: guest, device: device, senders: workload.senders,
                                        provider: provider, ringSize: configuration.poolRingSize)
        case .decryptedPool: design = DecryptedPoolDesign(guest: guest, device: device)
        case .inlineDecrypt: design = InlineDecryptDesign(guest: guest, device: device)
        }
        return (guest, device, design)
    }

    /// Runs every design in `kinds` on the same workload, interleaved: `rounds`
    /// rounds, each running every design for `workload.durationSeconds / rounds`
    /// on a fresh guest, so a burst of load on a shared machine falls on all
    /// designs alike. Returns one aggregate per design, in `kinds` order.
    public static func compare(_ kinds: [DesignKind], workload: Workload, rounds: Int = 1,
                               configuration: ExperimentConfiguration = .init(),
                               progress: (@Sendable (_ design: DesignKind, _ round: Int) -> Void)? = nil) throws -> [TransmitResult] {
        precondition(rounds >= 1, "rounds must be at least 1")
        var slice = workload
        slice.durationSeconds = workload.durationSeconds / Double(rounds)
        var perDesign = [[TransmitResult]](repeating: [], count: kinds.count)
        for round in 0..<rounds {
            for (i, kind) in kinds.enumerated() {
                progress?(kind, round)
                var result = try run(kind, workload: slice, configuration: configuration)
                result.workload = workload
                perDesign[i].append(result)
            }
        }
        return perDesign.map(TransmitResult.aggregate)
    }

    /// Runs `workload` through `kind` on a fresh guest.
    public static func run(_ kind: DesignKind, workload: Workload, configuration: ExperimentConfiguration = .init(),
                           progress: (@Sendable (Double) -> Void)? = nil) throws -> TransmitResult {
        let (guest, device, design) = try prepare(kind, workload: workload, configuration: configuration)
        let simulation = try TransmitSimulation(guest: guest, design: design, device: device, workload: workload)
        return try simulation.run(progress: progress)
    }
}

/// The page-pool design's provider.
func makeProvider(_ kind: PoolProviderKind, guest: Guest, device: Device) throws -> PagePoolMemoryProvider {
    switch kind {
    case .swiotlb: SWIOTLBPageProvider(swiotlb: guest.swiotlb, device: device)
    case .decrypted: DecryptedPageProvider(allocator: guest.decrypted)
    }
}
