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

    /// Parses a comma-separated list of designs: at least one, each named once.
    public static func list(_ text: String) throws(ExperimentError) -> [DesignKind] {
        var kinds: [DesignKind] = []
        for name in text.split(separator: ",", omittingEmptySubsequences: false) {
            do { kinds.append(try named(String(name))) } catch {
                throw .invalid(.invalid(parameter: "designs", reason: name.isEmpty
                    ? "'\(text)' names no design: give one or more of \(allNames), separated by commas"
                    : error.description))
            }
        }
        try Experiment.checkDesigns(kinds)
        return kinds
    }

    static var allNames: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// Where the page-pool design's pool pages come from.
public enum PoolProviderKind: String, CaseIterable, Sendable, Codable {
    /// Runs taken from swiotlb (the seed patch's allocation mode, under the same cap).
    case swiotlb
    /// Pages of the pre-decrypted allocator (chunks converted once).
    case decrypted
}

/// Everything about the guest that stays the same across designs.
///
/// Every rule a configuration must keep is in `validate()`, which `txsim`
/// uses for its guest options; parameters are named by the `txsim` option that
/// sets them.
public struct ExperimentConfiguration: Sendable, Hashable {
    public var memory: GuestMemoryConfiguration
    /// `swiotlb.zerocopy_tx_percent` for the designs that take runs from swiotlb.
    public var zeroCopyPercent: Int
    public var poolProvider: PoolProviderKind
    /// Each TX page_pool's recycle ring (`pool_size`).
    public var poolRingSize: Int
    public var swiotlbAreas: Int?

    /// Guest memory: 64 MiB...64 GiB, in whole 2 MiB huge pages.
    public static let guestBytesRange = (64 << 20)...(64 << 30)
    /// The seed patch's `zerocopy_tx_percent` range (90 is its maximum).
    public static let zeroCopyPercentRange = 1...90
    /// `pool_size`: the kernel caps it at 16384, so a larger value is refused
    /// rather than silently capped.
    public static let poolRingRange = 1...PagePoolParameters.maximumRingSize

    /// The default configuration (valid): a 1 GiB guest, its confidential-VM
    /// swiotlb, `zerocopy_tx_percent` 90, pools over swiotlb with 1024-entry rings.
    public init() {
        self.memory = GuestMemoryConfiguration()
        self.zeroCopyPercent = 90
        self.poolProvider = .swiotlb
        self.poolRingSize = 1024
        self.swiotlbAreas = nil
    }

    /// A configuration, checked: the error names the parameter at fault and its range.
    public init(memory: GuestMemoryConfiguration = .init(), zeroCopyPercent: Int = 90,
                poolProvider: PoolProviderKind = .swiotlb, poolRingSize: Int = 1024,
                swiotlbAreas: Int? = nil) throws(ParameterError) {
        self.memory = memory
        self.zeroCopyPercent = zeroCopyPercent
        self.poolProvider = poolProvider
        self.poolRingSize = poolRingSize
        self.swiotlbAreas = swiotlbAreas
        try validate()
    }

    /// Checks every parameter; the error names the one that is wrong.
    public func validate() throws(ParameterError) {
        func check(_ ok: Bool, _ name: String, _ why: @autoclosure () -> String) throws(ParameterError) {
            if !ok { throw ParameterError.invalid(parameter: name, reason: why()) }
        }
        let guest = memory.guestBytes, swiotlb = memory.swiotlbBytes
        try check(guest % (2 << 20) == 0 && Self.guestBytesRange.contains(guest), "guest-mib",
                  "\(mebibytes(guest)) must be an even number of MiB in 64...65536")
        try check(swiotlb >= 1 << 20 && swiotlb % (256 << 10) == 0, "swiotlb-mib",
                  "\(mebibytes(swiotlb)) must be at least 1 MiB, in whole 256 KiB segments")
        let isDefault = swiotlb == GuestMemoryConfiguration.confidentialSWIOTLBBytes(guestBytes: guest)
        try check(swiotlb < guest, "swiotlb-mib",
                  "the swiotlb (\(mebibytes(swiotlb))\(isDefault ? ", the default: 6% of guest memory clamped to 64 MiB...1 GiB" : "")) "
                  + "must be smaller than guest memory (--guest-mib \(guest >> 20)): raise --guest-mib or give a smaller --swiotlb-mib")
        try check(Self.zeroCopyPercentRange.contains(zeroCopyPercent), "zerocopy-percent",
                  "\(zeroCopyPercent) must be in 1...90 (90 is the patch's maximum)")
        try check(Self.poolRingRange.contains(poolRingSize), "pool-ring",
                  "\(poolRingSize) must be in 1...\(PagePoolParameters.maximumRingSize) (the kernel caps pool_size at \(PagePoolParameters.maximumRingSize))")
        let h = memory.hypercall
        try check((0...HypercallCostModel.maximumPerCallNanoseconds).contains(h.perCallNanoseconds), "hypercall-ns",
                  "\(h.perCallNanoseconds) must be in 0...\(HypercallCostModel.maximumPerCallNanoseconds) ns (1 ms)")
        try check((0...HypercallCostModel.maximumPerPageNanoseconds).contains(h.perPageNanoseconds), "hypercall-page-ns",
                  "\(h.perPageNanoseconds) must be in 0...\(HypercallCostModel.maximumPerPageNanoseconds) ns (100 us)")
    }
}

/// Why an experiment was refused before anything ran (nothing was allocated).
public enum ExperimentError: Error, Hashable, CustomStringConvertible {
    /// A parameter of the workload, the configuration or the experiment itself
    /// (`designs`, `rounds`) is out of its range.
    case invalid(ParameterError)
    /// Each parameter is in range but the workload needs more than the guest
    /// has; the reason says what, and which options to change.
    case doesNotFit(String)

    public var description: String {
        switch self {
        case .invalid(let error): error.description
        case .doesNotFit(let reason): "the workload does not fit the guest: \(reason)"
        }
    }
}

/// `bytes` as MiB when whole, else as bytes.
func mebibytes(_ bytes: Int) -> String {
    bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : "\(bytes) bytes"
}

/// `bytes` in the largest unit that keeps it readable.
func readableBytes(_ bytes: Int) -> String {
    bytes >= 10 << 30 ? "\(bytes >> 30) GiB" : bytes >= 1 << 20 ? "\((bytes + (1 << 20) - 1) >> 20) MiB" : "\(bytes) bytes"
}

/// Builds a fresh guest for a design and runs a workload on it.
public enum Experiment {
    /// The guest, NIC device and design for `kind`.
    /// Rounds of `compare`.
    public static let roundsRange = 1...100

    /// Checks everything an experiment needs before anything is allocated:
    /// each parameter's range, the designs, the rounds (each at least
    /// `Workload.durationRange.lowerBound` long), and that the workload fits
    /// the guest. `compare`, `run` and `prepare` call it; so does `txsim`.
    public static func check(_ kinds: [DesignKind], workload: Workload, rounds: Int = 1,
                             configuration: ExperimentConfiguration) throws(ExperimentError) {
        try check(kinds, workload: workload, plan: ComparisonPlan(rounds: rounds, baseline: kinds.first ?? .bounce),
                  configuration: configuration)
    }

    /// The same checks for a paired comparison, plus the plan's: the baseline
    /// must be one of the designs run, and an `--until-stable` cap must be in
    /// rounds...`roundsRange.upperBound` (every added round is as long as the
    /// others).
    public static func check(_ kinds: [DesignKind], workload: Workload, plan: ComparisonPlan,
                             configuration: ExperimentConfiguration) throws(ExperimentError) {
        let rounds = plan.rounds
        do { try workload.validate() } catch { throw .invalid(error) }
        do { try configuration.validate() } catch { throw .invalid(error) }
        try checkDesigns(kinds)
        guard roundsRange.contains(rounds) else {
            throw .invalid(.invalid(parameter: "rounds", reason: "\(rounds) must be in \(roundsRange)"))
        }
        let perRound = workload.durationSeconds / Double(rounds)
        let minimum = Workload.durationRange.lowerBound
        guard perRound >= minimum else {
            throw .invalid(.invalid(parameter: "rounds", reason: "\(rounds) rounds of --duration \(workload.durationSeconds) s leave "
                           + "\(perRound) s per round, less than the \(minimum) s a round needs to measure anything: "
                           + "lower --rounds or raise --duration to at least \(minimum * Double(rounds))"))
        }
        if !kinds.isEmpty && !kinds.contains(plan.baseline) {
            throw .invalid(.invalid(parameter: "baseline", reason: "\(plan.baseline.rawValue) is not among the designs run "
                           + "(\(kinds.map(\.rawValue).joined(separator: ", "))): name one of them, or add it to --designs"))
        }
        if let cap = plan.untilStableCap, !(rounds...roundsRange.upperBound).contains(cap) {
            throw .invalid(.invalid(parameter: "until-stable", reason: "\(cap) must be in --rounds (\(rounds))...\(roundsRange.upperBound): "
                           + "the most rounds to run in all"))
        }
        try checkFits(kinds, workload: workload, configuration: configuration)
    }

    static func checkDesigns(_ kinds: [DesignKind]) throws(ExperimentError) {
        guard !kinds.isEmpty else {
            throw .invalid(.invalid(parameter: "designs", reason: "no design given: name one or more of \(DesignKind.allNames)"))
        }
        var seen = Set<DesignKind>()
        for kind in kinds where !seen.insert(kind).inserted {
            throw .invalid(.invalid(parameter: "designs", reason: "\(kind.rawValue) is named twice: each design runs once per round"))
        }
    }

    /// Private memory a run can hold at once: per flow (user buffer, send
    /// buffer, socket pages) and the allocators' and pools' reserve.
    static func privateNeeds(_ kinds: [DesignKind], workload w: Workload,
                             configuration: ExperimentConfiguration) -> (perFlow: Int, reserve: Int) {
        let userBuffer = PageGeometry.bytes(order: PageGeometry.maxOrder)
        let socketPage = PageGeometry.bytes(order: PageGeometry.socketFragOrder)
        let perFlow = userBuffer + w.sendBufferBytes + 2 * socketPage
        let decryptedPools = kinds.contains(.pagePool) && configuration.poolProvider == .decrypted
        let chunk = PageGeometry.bytes(order: DecryptedAllocator.Configuration().chunkOrder)
        var reserve = 8 << 20   // allocator slack, the block device's buffer in fault runs
        if kinds.contains(.decryptedPool) || decryptedPools {
            reserve += (Guest.defaultDecryptedSpareChunks + w.senders) * chunk
        }
        if decryptedPools {
            // Pool caches hold pages beyond those in flight (over swiotlb they are swiotlb's).
            reserve += w.senders * (PagePool.allocCacheSize + PagePool.allocCacheRefill) * socketPage
        }
        return (perFlow, reserve)
    }

    /// The private memory a run of `kinds` draws from (the fit check's
    /// estimate), which `prepare` makes resident at boot.
    public static func workingSetBytes(_ kinds: [DesignKind], workload: Workload,
                                       configuration: ExperimentConfiguration) -> Int {
        let (perFlow, reserve) = privateNeeds(kinds, workload: workload, configuration: configuration)
        return workload.flows * perFlow + reserve
    }

    /// What a run can hold at once, against what the guest has. Private memory
    /// holds each flow's user buffer (an order-9 run), up to its send buffer of
    /// socket pages (every design can fall back to general pages) and the page
    /// it is filling, plus the pre-decrypted allocator's spare chunks and pool
    /// caches. The bounce pool must take a full transmit batch from every
    /// queue that can run at once (one per sender), or the bounce fails.
    static func checkFits(_ kinds: [DesignKind], workload w: Workload,
                          configuration: ExperimentConfiguration) throws(ExperimentError) {
        let m = configuration.memory
        let privateBytes = m.guestBytes - m.swiotlbBytes
        let (perFlow, reserve) = privateNeeds(kinds, workload: w, configuration: configuration)
        let need = w.flows * perFlow + reserve
        if need > privateBytes {
            throw .doesNotFit("\(w.flows) flows need up to \(readableBytes(need)) of private guest memory "
                              + "(each flow \(readableBytes(perFlow)): a 2 MiB user buffer, its \(readableBytes(w.sendBufferBytes)) send buffer "
                              + "and 64 KiB of socket pages; \(readableBytes(reserve)) for allocators and pools) but the guest has "
                              + "\(readableBytes(privateBytes)) private (--guest-mib \(m.guestBytes >> 20) less the \(mebibytes(m.swiotlbBytes)) swiotlb): "
                              + "lower --flows or --send-buffer, raise --guest-mib, or give a smaller --swiotlb-mib")
        }
        let bounces = kinds.contains { $0 != .inlineDecrypt && $0 != .decryptedPool } || w.zeroCopy
        if bounces {
            let running = min(w.queues, w.senders)
            let flowsPerQueue = (w.flows + w.queues - 1) / w.queues
            let batch = min(TXQueue.budget * Socket.maxFrameBytes, flowsPerQueue * w.sendBufferBytes)
            let bounceNeed = running * batch
            if bounceNeed > m.swiotlbBytes {
                throw .doesNotFit("\(running) queue(s) transmitting at once each bounce a batch of up to \(readableBytes(batch)) "
                                  + "(64 frames of 64 KiB, or the queue's send buffers if smaller), \(readableBytes(bounceNeed)) in all, "
                                  + "but the swiotlb has \(mebibytes(m.swiotlbBytes)): raise --swiotlb-mib to at least "
                                  + "\((bounceNeed + (1 << 20) - 1) >> 20), or lower --queues, --senders or --send-buffer")
            }
        }
    }

    public static func prepare(_ kind: DesignKind, workload: Workload,
                               configuration: ExperimentConfiguration) throws -> (Guest, Device, TransmitDesign) {
        try check([kind], workload: workload, configuration: configuration)
        let usesSWIOTLBRuns = kind == .fragRefill || (kind == .pagePool && configuration.poolProvider == .swiotlb)
        // Twice the working set: jemalloc carves beyond what is live at once
        // (extent growth, dirty pages kept for reuse). Under
        // `--flows 32 --rtt-us 2000` bounce took 28576 faults in its timed
        // windows with the estimate alone resident (about 314 MiB touched
        // against an estimate of 202 MiB); twice covers it.
        var memory = configuration.memory
        memory.residentPrivateBytes = max(memory.residentPrivateBytes,
                                          2 * workingSetBytes([kind], workload: workload, configuration: configuration))
        let guest = try Guest(memory, swiotlbAreas: configuration.swiotlbAreas,
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
    /// designs alike. Returns one aggregate per design, in `kinds` order, with
    /// ratios paired against bounce (or the first design when bounce is not run).
    public static func compare(_ kinds: [DesignKind], workload: Workload, rounds: Int = 1,
                               configuration: ExperimentConfiguration = .init(),
                               progress: (@Sendable (_ design: DesignKind, _ round: Int) -> Void)? = nil) throws -> [TransmitResult] {
        let baseline = kinds.contains(.bounce) ? DesignKind.bounce : kinds.first ?? .bounce
        return try comparison(kinds, workload: workload, plan: ComparisonPlan(rounds: rounds, baseline: baseline),
                              configuration: configuration, progress: progress).results
    }

    /// A paired comparison: the machine's copy rate for the workload's copy
    /// size, then `plan.rounds` rounds (more with `plan.untilStableCap`), each
    /// running every design for `workload.durationSeconds / plan.rounds` on a
    /// fresh guest, the baseline before, between and after the others (whose
    /// order rotates one place per round: `Comparison.schedule`); then the
    /// copy rate again. Every design's Gbps is divided by the baseline's runs
    /// next to it in the same round.
    public static func comparison(_ kinds: [DesignKind], workload: Workload, plan: ComparisonPlan,
                                  configuration: ExperimentConfiguration = .init(),
                                  progress: (@Sendable (_ design: DesignKind, _ round: Int) -> Void)? = nil) throws -> Comparison {
        try check(kinds, workload: workload, plan: plan, configuration: configuration)
        let copyBytes = MachineCopyRate.copyBytes(for: workload)
        let before = MachineCopyRate.measure(copyBytes: copyBytes)
        var slice = workload
        slice.durationSeconds = workload.durationSeconds / Double(plan.rounds)
        var rounds: [[RoundRun]] = []
        func stable() -> Bool {
            Comparison.isStable(Comparison.pairedRatios(rounds, kinds: kinds, baseline: plan.baseline).enumerated()
                .filter { kinds[$0.offset] != plan.baseline }.map(\.element))
        }
        while rounds.count < plan.rounds || (plan.untilStableCap.map { rounds.count < $0 } ?? false && !stable()) {
            let round = rounds.count
            var runs: [RoundRun] = []
            for kind in Comparison.schedule(kinds, baseline: plan.baseline, round: round) {
                progress?(kind, round)
                var result = try run(kind, workload: slice, configuration: configuration)
                result.workload = workload
                runs.append(RoundRun(kind: kind, result: result))
            }
            rounds.append(runs)
        }
        let after = MachineCopyRate.measure(copyBytes: copyBytes)
        let results = Comparison.results(kinds, rounds: rounds, baseline: plan.baseline,
                                         copyRate: Comparison.averaged(before, after))
        return Comparison(kinds: kinds, plan: plan, rounds: rounds, copyRateBefore: before,
                          copyRateAfter: after, stable: stable(), results: results)
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
