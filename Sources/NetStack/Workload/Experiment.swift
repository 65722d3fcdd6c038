import DMAPools

/// Everything about the guest that stays the same across designs.
///
/// Every rule a configuration must keep is in `validate()`, which `txsim`
/// uses for its guest options; parameters are named by the `txsim` option that
/// sets them.
public struct ExperimentConfiguration: Sendable, Hashable {
    public var memory: GuestMemoryConfiguration
    /// `swiotlb.zerocopy_tx_percent` for the designs that take runs from swiotlb.
    public var zeroCopyPercent: Int
    /// The page_pool memory provider of the page-pool design (and of any
    /// design that builds pools over `DesignContext.makePoolProvider`):
    /// `.swiotlb`, `.decrypted`, or a user's kind. Configurations compare by
    /// its name.
    public var poolProvider: any PagePoolProviderKind
    /// Each TX page_pool's recycle ring (`pool_size`).
    public var poolRingSize: Int
    public var swiotlbAreas: Int?
    /// The guest kernel is built with `CONFIG_PREEMPT_RT` (`--preempt-rt`).
    /// Modelled: page_pool's `page_pool_napi_local` is false, so every TX
    /// pool's recycle goes through its ring (`PagePoolParameters.preemptRT`).
    /// Also modelled: the transmit path runs in preemptible tasks,
    /// `rtScheduling.tasksPerCPU` of them sharing each modelled CPU's per-CPU
    /// state, preempted inside their transmit sections (`TransmitScheduler`).
    public var preemptRT: Bool = false
    /// What the guests run on (`--platform`): a confidential VM (the
    /// default), or devices behind an IOMMU without memory encryption.
    public var platform: Guest.Platform = .confidential
    /// How the RT tasks are interleaved (used only with `preemptRT`).
    public var rtScheduling = RTScheduling()
    /// Time copy 1 by where its destination was last bounced
    /// (`--copy-timing`, `CopyTimingFigures`): a diagnostic; its clock reads
    /// cost throughput, so its Gbps are not the default run's.
    public var copyTiming: Bool = false

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
                poolProvider: any PagePoolProviderKind = .swiotlb, poolRingSize: Int = 1024,
                swiotlbAreas: Int? = nil) throws(ParameterError) {
        self.memory = memory
        self.zeroCopyPercent = zeroCopyPercent
        self.poolProvider = poolProvider
        self.poolRingSize = poolRingSize
        self.swiotlbAreas = swiotlbAreas
        try validate()
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.memory == b.memory && a.zeroCopyPercent == b.zeroCopyPercent && a.poolProvider.name == b.poolProvider.name
            && a.poolRingSize == b.poolRingSize && a.swiotlbAreas == b.swiotlbAreas && a.preemptRT == b.preemptRT
            && a.platform == b.platform
            && a.rtScheduling == b.rtScheduling
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(memory)
        hasher.combine(zeroCopyPercent)
        hasher.combine(poolProvider.name)
        hasher.combine(poolRingSize)
        hasher.combine(swiotlbAreas)
        hasher.combine(preemptRT)
        hasher.combine(platform)
        hasher.combine(rtScheduling)
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
        if preemptRT {
            let rt = rtScheduling
            try check(RTScheduling.tasksPerCPURange.contains(rt.tasksPerCPU), "rt-tasks-per-cpu",
                      "\(rt.tasksPerCPU) must be in \(RTScheduling.tasksPerCPURange) (tasks sharing one modelled CPU)")
            try check(RTScheduling.preemptEveryRange.contains(rt.preemptEvery), "preempt-every",
                      "\(rt.preemptEvery) must be in \(RTScheduling.preemptEveryRange) (preemption points per preemption, on average)")
        }
        let h = memory.hypercall
        try check((0...HypercallCostModel.maximumPerCallNanoseconds).contains(h.perCallNanoseconds), "hypercall-ns",
                  "\(h.perCallNanoseconds) must be in 0...\(HypercallCostModel.maximumPerCallNanoseconds) ns (1 ms)")
        try check((0...HypercallCostModel.maximumPerPageNanoseconds).contains(h.perPageNanoseconds), "hypercall-page-ns",
                  "\(h.perPageNanoseconds) must be in 0...\(HypercallCostModel.maximumPerPageNanoseconds) ns (100 us)")
        if let iommu = platform.iommu {
            let c = iommu.costs, range = 0...IOMMUCostModel.maximumNanoseconds
            for (value, name) in [(c.mapNanoseconds, "iommu-map-ns"), (c.pteNanoseconds, "iommu-pte-ns"),
                                  (c.invalidateNanoseconds, "iommu-invalidate-ns"), (c.flushNanoseconds, "iommu-flush-ns")] {
                try check(range.contains(value), name, "\(value) must be in 0...\(IOMMUCostModel.maximumNanoseconds) ns (1 ms)")
            }
            try check(IOMMUConfiguration.flushQueueRange.contains(iommu.flushQueueSize), "iommu-flush-queue",
                      "\(iommu.flushQueueSize) must be in \(IOMMUConfiguration.flushQueueRange) (the kernel's IOVA_FQ_SIZE is 256)")
        }
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
///
/// Designs are given as kinds (`TransmitDesignKind`): the built-in ones
/// (`.bounce`, `.fragRefill`, `.pagePool`, `.decryptedPool`, `.inlineDecrypt`),
/// a user's own, or any kind `DesignRegistry` resolves by name. Everything a
/// kind sets up (the guest it asks for, its pools, a provider's region) is
/// built before the clock starts and is not part of the timed window: a
/// result's `seconds` and Gbps cover sending and draining only, and its
/// `setupSeconds` says how long the set-up took.
public enum Experiment {
    /// Rounds of `compare`.
    public static let roundsRange = 1...100

    /// Seconds each design runs per round when `duration` is split into
    /// `rounds`, to the nanosecond the runs are timed in: so that 0.15 s in
    /// 3 rounds is 0.05 s a round, not the 0.049999999999999996 binary
    /// floating point makes of 0.15 / 3.
    public static func roundSeconds(duration: Double, rounds: Int) -> Double {
        (duration * 1e9 / Double(rounds)).rounded() / 1e9
    }

    /// Checks everything an experiment needs before anything is allocated:
    /// each parameter's range, the designs (each named once, each kind's own
    /// `check`), the rounds (each at least `Workload.durationRange.lowerBound`
    /// long), and that the workload fits the guest each kind asks for.
    /// `compare`, `run` and `prepare` call it; so does `txsim`.
    public static func check(_ kinds: [any TransmitDesignKind], workload: Workload, rounds: Int = 1,
                             configuration: ExperimentConfiguration) throws(ExperimentError) {
        try check(kinds, workload: workload, plan: ComparisonPlan(rounds: rounds, baseline: defaultBaseline(kinds)),
                  configuration: configuration)
    }

    /// The same checks for a paired comparison, plus the plan's: the baseline
    /// must be one of the designs run, and an `--until-stable` cap must be in
    /// rounds...`roundsRange.upperBound` (every added round is as long as the
    /// others).
    public static func check(_ kinds: [any TransmitDesignKind], workload: Workload, plan: ComparisonPlan,
                             configuration: ExperimentConfiguration) throws(ExperimentError) {
        let rounds = plan.rounds
        do { try workload.validate() } catch { throw .invalid(error) }
        do { try configuration.validate() } catch { throw .invalid(error) }
        try checkDesigns(kinds)
        guard roundsRange.contains(rounds) else {
            throw .invalid(.invalid(parameter: "rounds", reason: "\(rounds) must be in \(roundsRange)"))
        }
        let perRound = roundSeconds(duration: workload.durationSeconds, rounds: rounds)
        let minimum = Workload.durationRange.lowerBound
        guard perRound >= minimum else {
            throw .invalid(.invalid(parameter: "rounds", reason: "\(rounds) rounds of --duration \(workload.durationSeconds) s leave "
                           + "\(perRound) s per round, less than the \(minimum) s a round needs to measure anything: "
                           + "lower --rounds or raise --duration to at least \((minimum * Double(rounds) * 1e9).rounded() / 1e9)"))
        }
        if !kinds.isEmpty && !kinds.contains(where: { $0.name == plan.baseline.name }) {
            throw .invalid(.invalid(parameter: "baseline", reason: "\(plan.baseline.name) is not among the designs run "
                           + "(\(kinds.map(\.name).joined(separator: ", "))): name one of them, or add it to --designs"))
        }
        if let cap = plan.untilStableCap, !(rounds...roundsRange.upperBound).contains(cap) {
            throw .invalid(.invalid(parameter: "until-stable", reason: "\(cap) must be in --rounds (\(rounds))...\(roundsRange.upperBound): "
                           + "the most rounds to run in all"))
        }
        for kind in kinds {
            if let why = kind.unsupportedReason(on: configuration.platform) {
                throw .invalid(.invalid(parameter: "designs", reason: "\(kind.name) does not apply to --platform \(configuration.platform.name): \(why)"))
            }
        }
        for kind in kinds { try kind.check(workload: workload, configuration: configuration) }
        try checkFits(kinds, workload: workload, configuration: configuration)
    }

    /// At least one design, each named once (names are what reports tell apart).
    static func checkDesigns(_ kinds: [any TransmitDesignKind], registry: DesignRegistry = .shared) throws(ExperimentError) {
        guard !kinds.isEmpty else {
            throw .invalid(.invalid(parameter: "designs", reason: "no design given: name one or more of \(registry.designNames)"))
        }
        var seen = Set<String>()
        for kind in kinds where !seen.insert(kind.name).inserted {
            throw .invalid(.invalid(parameter: "designs", reason: "\(kind.name) is named twice: each design runs once per round"))
        }
    }

    /// Private memory a run of one design can hold at once: per flow (user
    /// buffer, send buffer, socket pages) and what the design reserves
    /// (allocator slack; `GuestRequirements`: the pre-decrypted allocator's
    /// spare chunks, pool caches, a provider's region).
    static func privateNeeds(_ requirements: GuestRequirements, workload w: Workload) -> (perFlow: Int, reserve: Int) {
        let userBuffer = PageGeometry.bytes(order: PageGeometry.maxOrder)
        let socketPage = PageGeometry.bytes(order: PageGeometry.socketFragOrder)
        let perFlow = userBuffer + w.sendBufferBytes + 2 * socketPage
        let chunk = PageGeometry.bytes(order: DecryptedAllocator.Configuration().chunkOrder)
        var reserve = 8 << 20   // allocator slack, the block device's buffer in fault runs
        reserve += requirements.privateReserveBytes
        if requirements.decryptedAllocator {
            reserve += (Guest.defaultDecryptedSpareChunks + w.senders) * chunk
        }
        return (perFlow, reserve)
    }

    /// The private memory a run of the neediest of `kinds` draws from (the
    /// fit check's estimate), which `prepare` makes resident at boot.
    public static func workingSetBytes(_ kinds: [any TransmitDesignKind], workload: Workload,
                                       configuration: ExperimentConfiguration) -> Int {
        kinds.map { kind in
            let (perFlow, reserve) = privateNeeds(kind.requirements(workload: workload, configuration: configuration),
                                                  workload: workload)
            return workload.flows * perFlow + reserve
        }.max() ?? 0
    }

    /// What a run can hold at once, against what the guest has. Private memory
    /// holds each flow's user buffer (an order-9 run), up to its send buffer of
    /// socket pages (every design can fall back to general pages) and the page
    /// it is filling, plus what the design reserves (`GuestRequirements`: the
    /// pre-decrypted allocator's spare chunks, pool caches, a provider's
    /// region). Each design runs on a guest of its own, so the design needing
    /// most is the one checked. The bounce pool must take a full transmit
    /// batch from every queue that can run at once (one per sender) when any
    /// design may bounce, or the bounce fails.
    static func checkFits(_ kinds: [any TransmitDesignKind], workload w: Workload,
                          configuration: ExperimentConfiguration) throws(ExperimentError) {
        let m = configuration.memory
        let privateBytes = m.guestBytes - m.swiotlbBytes
        let requirements = kinds.map { $0.requirements(workload: w, configuration: configuration) }
        // Each flow needs the same whatever the design; the reserve is the neediest design's.
        let perFlow = privateNeeds(GuestRequirements(), workload: w).perFlow
        let reserve = requirements.map { privateNeeds($0, workload: w).reserve }.max() ?? privateNeeds(GuestRequirements(), workload: w).reserve
        let need = w.flows * perFlow + reserve
        if need > privateBytes {
            throw .doesNotFit("\(w.flows) flows need up to \(readableBytes(need)) of private guest memory "
                              + "(each flow \(readableBytes(perFlow)): a 2 MiB user buffer, its \(readableBytes(w.sendBufferBytes)) send buffer "
                              + "and 64 KiB of socket pages; \(readableBytes(reserve)) for allocators and pools) but the guest has "
                              + "\(readableBytes(privateBytes)) private (--guest-mib \(m.guestBytes >> 20) less the \(mebibytes(m.swiotlbBytes)) swiotlb): "
                              + "lower --flows or --send-buffer, raise --guest-mib, or give a smaller --swiotlb-mib")
        }
        // Behind an IOMMU nothing bounces.
        if configuration.platform.iommu == nil && (requirements.contains(where: \.bounces) || w.zeroCopyFraction > 0) {
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

    /// Checks the experiment, boots a fresh guest to what `kind` requires
    /// (`zerocopy_tx_percent` for swiotlb runs, the free-path hook), adds the
    /// NIC's device (`nic0`) and builds the design with the kind's factory.
    /// Nothing here is timed.
    public static func prepare(_ kind: any TransmitDesignKind, workload: Workload,
                               configuration: ExperimentConfiguration) throws -> (Guest, Device, any TransmitDesign) {
        try check([kind], workload: workload, configuration: configuration)
        let needs = kind.requirements(workload: workload, configuration: configuration)
        // Twice the working set: jemalloc carves beyond what is live at once
        // (extent growth, dirty pages kept for reuse). Under
        // `--flows 32 --rtt-us 2000` bounce took 28576 faults in its timed
        // windows with the estimate alone resident (about 314 MiB touched
        // against an estimate of 202 MiB); twice covers it.
        var memory = configuration.memory
        memory.residentPrivateBytes = max(memory.residentPrivateBytes,
                                          2 * workingSetBytes([kind], workload: workload, configuration: configuration))
        let guest = try Guest(memory, swiotlbAreas: configuration.swiotlbAreas,
                              zeroCopyPercent: needs.swiotlbZeroCopyRuns ? configuration.zeroCopyPercent : 0,
                              freePath: needs.freePath, platform: configuration.platform)
        let device = try guest.devices.add(name: "nic0", dmaMaskBits: 64)
        let design = try kind.makeDesign(in: DesignContext(guest: guest, device: device, workload: workload,
                                                           configuration: configuration))
        return (guest, device, design)
    }

    /// Runs every design in `kinds` on the same workload, interleaved: `rounds`
    /// rounds, each running every design for `workload.durationSeconds / rounds`
    /// on a fresh guest, so a burst of load on a shared machine falls on all
    /// designs alike. Returns one aggregate per design, in `kinds` order, with
    /// ratios paired against bounce (or the first design when bounce is not run).
    public static func compare(_ kinds: [any TransmitDesignKind], workload: Workload, rounds: Int = 1,
                               configuration: ExperimentConfiguration = .init(),
                               progress: (@Sendable (_ design: any TransmitDesignKind, _ round: Int) -> Void)? = nil) throws -> [TransmitResult] {
        try comparison(kinds, workload: workload, plan: ComparisonPlan(rounds: rounds, baseline: defaultBaseline(kinds)),
                       configuration: configuration, progress: progress).results
    }

    /// The baseline a comparison of `kinds` pairs against unless told
    /// otherwise: bounce when it runs, else the first design.
    public static func defaultBaseline(_ kinds: [any TransmitDesignKind]) -> any TransmitDesignKind {
        kinds.first { $0.name == BounceDesignKind().name } ?? kinds.first ?? BounceDesignKind()
    }

    /// A paired comparison: the machine's copy rate for the workload's copy
    /// size, then `plan.rounds` rounds (more with `plan.untilStableCap`), each
    /// running every design for `workload.durationSeconds / plan.rounds` on a
    /// fresh guest, the baseline before, between and after the others (whose
    /// order rotates one place per round: `Comparison.schedule`); then the
    /// copy rate again. Every design's Gbps is divided by the baseline's runs
    /// next to it in the same round. Designs are told apart by name.
    public static func comparison(_ kinds: [any TransmitDesignKind], workload: Workload, plan: ComparisonPlan,
                                  configuration: ExperimentConfiguration = .init(),
                                  progress: (@Sendable (_ design: any TransmitDesignKind, _ round: Int) -> Void)? = nil) throws -> Comparison {
        try check(kinds, workload: workload, plan: plan, configuration: configuration)
        let copyBytes = MachineCopyRate.copyBytes(for: workload)
        let workingSet = MachineCopyRate.workingSetBytes(for: workload)
        let before = MachineCopyRate.measure(copyBytes: copyBytes, workingSetBytes: workingSet)
        var slice = workload
        slice.durationSeconds = roundSeconds(duration: workload.durationSeconds, rounds: plan.rounds)
        var rounds: [[RoundRun]] = []
        func stable() -> Bool {
            Comparison.isStable(Comparison.pairedRatios(rounds, kinds: kinds, baseline: plan.baseline).enumerated()
                .filter { kinds[$0.offset].name != plan.baseline.name }.map(\.element))
        }
        while rounds.count < plan.rounds || (plan.untilStableCap.map { rounds.count < $0 } ?? false && !stable()) {
            let round = rounds.count
            var runs: [RoundRun] = []
            // The machine's state around every run (the host may move the
            // vCPUs at any time): a probe of a few milliseconds before each
            // run and after the last, outside the timed windows. A run's
            // samples are the probes just before and just after it.
            var probe = CacheHandoff.probe(bytes: copyBytes)
            var probes: [Double] = []
            for kind in Comparison.schedule(kinds, baseline: plan.baseline, round: round) {
                progress?(kind, round)
                probes.append(probe)
                var result = try run(kind, workload: slice, configuration: configuration)
                result.workload = workload
                runs.append(RoundRun(kind: kind, result: result))
                probe = CacheHandoff.probe(bytes: copyBytes)
            }
            probes.append(probe)
            rounds.append(runs.enumerated().map { j, run in
                var result = run.result
                let samples = [probes[j], probes[j + 1]]
                if samples.allSatisfy({ $0 > 0 }) {
                    result.handoffSamples = samples
                    result.runFramesPerBatch = [result.framesPerBatch]
                    result.runGbps = [result.gbps]
                }
                return RoundRun(kind: run.kind, result: result)
            })
        }
        let after = MachineCopyRate.measure(copyBytes: copyBytes, workingSetBytes: workingSet)
        let results = Comparison.results(kinds, rounds: rounds, baseline: plan.baseline,
                                         copyRate: Comparison.averaged(before, after))
        return Comparison(kinds: kinds, plan: plan, rounds: rounds, copyRateBefore: before,
                          copyRateAfter: after, stable: stable(), results: results)
    }

    /// Runs `workload` through `kind` on a fresh guest. The set-up (`prepare`
    /// and the simulation's sockets and user buffers) happens before the
    /// clock starts; its time is the result's `setupSeconds`.
    public static func run(_ kind: any TransmitDesignKind, workload: Workload, configuration: ExperimentConfiguration = .init(),
                           progress: (@Sendable (Double) -> Void)? = nil) throws -> TransmitResult {
        let start = ContinuousClock.now
        let (guest, device, design) = try prepare(kind, workload: workload, configuration: configuration)
        let simulation = try TransmitSimulation(guest: guest, design: design, device: device, workload: workload,
                                                rtScheduling: configuration.preemptRT ? configuration.rtScheduling : nil,
                                                copyTiming: configuration.copyTiming)
        let setup = ContinuousClock.now - start
        var result = try simulation.run(progress: progress)
        result.setupSeconds = Double(setup.components.seconds) + Double(setup.components.attoseconds) / 1e18
        return result
    }
}
