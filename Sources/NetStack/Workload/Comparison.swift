import DMAPools

/// How `Experiment.comparison` runs its rounds.
public struct ComparisonPlan: Sendable, Hashable {
    /// Rounds run in any case, each `durationSeconds / rounds` per design.
    public var rounds: Int
    /// The design every other design's figures are divided by, round by round.
    /// Plans compare it by name.
    public var baseline: any TransmitDesignKind
    /// With a cap, rounds of the same length are added after `rounds`, up to
    /// the cap in all, until every design's ratio to the baseline has its
    /// interquartile range within +-`stableQuartileFraction` of its median.
    public var untilStableCap: Int?

    /// +-5%: the interquartile range `--until-stable` waits for.
    public static let stableQuartileFraction = 0.05

    public init(rounds: Int, baseline: any TransmitDesignKind = .bounce, untilStableCap: Int? = nil) {
        self.rounds = rounds
        self.baseline = baseline
        self.untilStableCap = untilStableCap
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.rounds == b.rounds && a.baseline.name == b.baseline.name && a.untilStableCap == b.untilStableCap
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(rounds)
        hasher.combine(baseline.name)
        hasher.combine(untilStableCap)
    }
}

/// The conversion cost at which a converting design would have matched the
/// baseline's throughput in one round, computed from that round's figures.
///
/// The model: the design's wall time per GB of payload is its measured work
/// plus the modelled time spun per GB, spread over the queues that transmit
/// at once (conversions run in the serialised transmit and completion
/// routine, so they lie on the run's critical path). Taking the modelled time
/// out of the design's wall time per GB leaves its measured work; the
/// baseline's wall time per GB less that is the budget conversions may use.
/// At the run's own cost the model gives back the measured ratio exactly.
/// (Wall time, not CPU time: a spin is timed by the clock, so on a loaded
/// machine it can outlast the CPU time it gets.)
public struct BreakEven: Sendable, Hashable {
    /// The budget for conversions, in wall seconds per GB of payload
    /// (negative: even free conversions would leave the design slower).
    public var budgetSecondsPerGB: Double
    /// Break-even cost per call with no per-page cost, in ns (0: no budget).
    public var perCallNanoseconds: Double = 0
    /// Break-even cost per page with no per-call cost, in ns (0: no budget).
    public var perPageNanoseconds: Double = 0
    /// The factor by which the run's own per-call and per-page costs could
    /// both be scaled (0: no budget).
    public var scaleOfModelledCost: Double = 0

    /// The break-even of `design` against `baseline` from one round each.
    public static func of(_ design: TransmitResult, against baseline: TransmitResult) -> BreakEven? {
        guard design.conversionCalls > 0, design.payloadBytes > 0, design.gbps > 0, baseline.gbps > 0 else { return nil }
        let gigabytes = Double(design.payloadBytes) / 1e9
        let parallel = Double(max(1, min(design.workload.queues, design.workload.senders)))
        let modelledPerGB = design.conversionModelledSeconds / gigabytes
        let spunWallPerGB = design.modelledTimeSpun ? modelledPerGB / parallel : 0
        let budget = 8 / baseline.gbps - (8 / design.gbps - spunWallPerGB)
        guard budget > 0 else { return BreakEven(budgetSecondsPerGB: budget) }
        let callsPerGB = Double(design.conversionCalls) / gigabytes
        let pagesPerGB = Double(design.conversionPages) / gigabytes
        return BreakEven(budgetSecondsPerGB: budget,
                         perCallNanoseconds: budget * parallel / callsPerGB * 1e9,
                         perPageNanoseconds: pagesPerGB > 0 ? budget * parallel / pagesPerGB * 1e9 : 0,
                         scaleOfModelledCost: modelledPerGB > 0 ? budget * parallel / modelledPerGB : 0)
    }
}

/// How far apart the two CPUs a run used were, as the hand-off probes before
/// and after it read them (`MachineCopyRate.handoffNanosecondsPerByte`).
///
/// On this shared VM the host moves the two vCPUs between placements that
/// the probe tells apart: about 0.02 ns/B (likely one core's two threads),
/// 0.10-0.16 (a shared last-level cache) and 0.45-0.6 (none shared). The
/// far placement makes every line one CPU hands the other several times
/// dearer, which moves bounce at two senders on one queue into its per-frame
/// regime and the ratios with it (Design/netstack.md, "The host's placement
/// of the two vCPUs"), so ratios are also given per distance.
public enum CPUDistance: String, Sendable, Hashable, CaseIterable {
    case near
    case far

    /// The hand-off cost from which the CPUs count as far: between this VM's
    /// shared-cache level (0.10-0.16 ns/B) and its unshared one (0.45-0.6).
    public static let farHandoffNanosecondsPerByte = 0.3

    /// The distance `handoff` ns/B shows; nil when it was not measured (0: a
    /// machine with one CPU, or a lone run).
    public init?(handoffNanosecondsPerByte handoff: Double) {
        guard handoff > 0, handoff.isFinite else { return nil }
        self = handoff >= Self.farHandoffNanosecondsPerByte ? .far : .near
    }

    /// The distance every probe around `runs` read (each run's samples: the
    /// probes just before and after it); nil when they disagree (the host
    /// moved the vCPUs while these runs ran) or a run was not probed.
    public init?(runs: [TransmitResult]) {
        guard !runs.isEmpty, runs.allSatisfy({ !$0.handoffSamples.isEmpty }) else { return nil }
        let distances = Set(runs.flatMap(\.handoffSamples).map { CPUDistance(handoffNanosecondsPerByte: $0) })
        guard distances.count == 1, let only = distances.first, let distance = only else { return nil }
        self = distance
    }
}

/// One run of a round: the design and what it did.
public struct RoundRun: Sendable {
    public let kind: any TransmitDesignKind
    public let result: TransmitResult

    public init(kind: any TransmitDesignKind, result: TransmitResult) {
        self.kind = kind
        self.result = result
    }
}

/// Designs compared round by round, every figure paired within its round.
///
/// In each round the baseline runs before, between and after the other
/// designs (`schedule`), whose order rotates one place per round; each
/// design's figure is divided by the geometric mean of the baseline's runs
/// just before and just after it. A machine whose speed drifts during the
/// round (other tenants come and go) therefore changes a ratio only as much
/// as it changed within one run's neighbourhood, and a steady (exponential)
/// drift cancels exactly.
public struct Comparison: Sendable {
    public let kinds: [any TransmitDesignKind]
    public let plan: ComparisonPlan
    /// Every round's runs, in the order they ran.
    public let rounds: [[RoundRun]]
    /// The machine's copy rate before the first round and after the last.
    public let copyRateBefore: MachineCopyRate
    public let copyRateAfter: MachineCopyRate
    /// Whether every ratio's interquartile range ended within +-5% of its median.
    public let stable: Bool
    /// One aggregate per design, in `kinds` order, with its paired ratios.
    public let results: [TransmitResult]

    /// The order the designs ran in, per round.
    public var orders: [[any TransmitDesignKind]] { rounds.map { $0.map(\.kind) } }

    /// The others (`kinds` without the baseline) rotated left by `round`.
    public static func order(_ kinds: [any TransmitDesignKind], round: Int) -> [any TransmitDesignKind] {
        guard !kinds.isEmpty else { return [] }
        let shift = round % kinds.count
        return Array(kinds[shift...] + kinds[..<shift])
    }

    /// The runs of round `round`: the baseline, then each other design in
    /// rotated order, each followed by the baseline again. Designs are told
    /// apart by name.
    public static func schedule(_ kinds: [any TransmitDesignKind], baseline: any TransmitDesignKind,
                                round: Int) -> [any TransmitDesignKind] {
        var runs = [baseline]
        for kind in order(kinds.filter { $0.name != baseline.name }, round: round) { runs += [kind, baseline] }
        return runs
    }

    /// One round's ratio per design (in `kinds` order): its `figure` over the
    /// geometric mean of the baseline's runs nearest before and after it
    /// (the one there is, at an end); 1 for the baseline itself; NaN where a
    /// design did not run or the baseline's figure is 0.
    public static func pairedRatios(_ runs: [RoundRun], kinds: [any TransmitDesignKind], baseline: any TransmitDesignKind,
                                    of figure: (TransmitResult) -> Double = { $0.gbps }) -> [Double] {
        kinds.map { kind in
            guard let position = runs.firstIndex(where: { $0.kind.name == kind.name }) else { return .nan }
            if kind.name == baseline.name { return figure(runs[position].result) > 0 ? 1 : .nan }
            let before = runs[..<position].last { $0.kind.name == baseline.name }.map { figure($0.result) }
            let after = runs[(position + 1)...].first { $0.kind.name == baseline.name }.map { figure($0.result) }
            let neighbours = [before, after].compactMap { $0 }
            guard !neighbours.isEmpty, neighbours.allSatisfy({ $0 > 0 }) else { return .nan }
            let mean = neighbours.count == 2 ? (neighbours[0] * neighbours[1]).squareRoot() : neighbours[0]
            return figure(runs[position].result) / mean
        }
    }

    /// One round's CPU distance per design (in `kinds` order): that of the
    /// design's run and the baseline's runs its ratio divides by
    /// (`CPUDistance(runs:)`: nil if the probes around them disagree); for
    /// the baseline, all of its runs.
    public static func pairedDistances(_ runs: [RoundRun], kinds: [any TransmitDesignKind],
                                       baseline: any TransmitDesignKind) -> [CPUDistance?] {
        kinds.map { kind in
            if kind.name == baseline.name { return CPUDistance(runs: runs.filter { $0.kind.name == kind.name }.map(\.result)) }
            guard let position = runs.firstIndex(where: { $0.kind.name == kind.name }) else { return nil }
            let before = runs[..<position].last { $0.kind.name == baseline.name }
            let after = runs[(position + 1)...].first { $0.kind.name == baseline.name }
            return CPUDistance(runs: ([before, runs[position], after].compactMap { $0 }).map(\.result))
        }
    }

    /// Per design (in `kinds` order), its ratio in each round.
    public static func pairedRatios(_ rounds: [[RoundRun]], kinds: [any TransmitDesignKind], baseline: any TransmitDesignKind,
                                    of figure: (TransmitResult) -> Double = { $0.gbps }) -> [[Double]] {
        let perRound = rounds.map { pairedRatios($0, kinds: kinds, baseline: baseline, of: figure) }
        return kinds.indices.map { i in perRound.map { $0[i] } }
    }

    /// CPU seconds per GB of all roles together: the figure whose inverse
    /// the CPU ratio compares (time the threads ran, not wall time).
    public static func cpuSecondsPerGB(_ r: TransmitResult) -> Double {
        r.senderCPUSecondsPerGB + r.queueCPUSecondsPerGB
    }

    /// Whether every design's ratio has its quartiles within +-5% of its median.
    public static func isStable(_ ratios: [[Double]]) -> Bool {
        ratios.allSatisfy { Spread($0)?.quartilesWithin(ComparisonPlan.stableQuartileFraction) ?? false }
    }

    /// The average of the two copy-rate measurements, which each design's CPU
    /// per GB is set against.
    public static func averaged(_ a: MachineCopyRate, _ b: MachineCopyRate) -> MachineCopyRate {
        MachineCopyRate(copyBytes: a.copyBytes,
                        oneThreadGigabytesPerSecond: (a.oneThreadGigabytesPerSecond + b.oneThreadGigabytesPerSecond) / 2,
                        twoThreadsGigabytesPerSecond: (a.twoThreadsGigabytesPerSecond + b.twoThreadsGigabytesPerSecond) / 2,
                        workingSetBytes: a.workingSetBytes,
                        workingSetGigabytesPerSecond: (a.workingSetGigabytesPerSecond + b.workingSetGigabytesPerSecond) / 2,
                        handoffNanosecondsPerByte: (a.handoffNanosecondsPerByte + b.handoffNanosecondsPerByte) / 2,
                        ownRewriteNanosecondsPerByte: (a.ownRewriteNanosecondsPerByte + b.ownRewriteNanosecondsPerByte) / 2)
    }

    /// Aggregates rounds per design and attaches the paired figures. A
    /// design's runs in one round (the baseline has several) are added up
    /// first, so its Gbps per round is the median of its runs in that round.
    public static func results(_ kinds: [any TransmitDesignKind], rounds: [[RoundRun]], baseline: any TransmitDesignKind,
                               copyRate: MachineCopyRate?) -> [TransmitResult] {
        guard let b = kinds.firstIndex(where: { $0.name == baseline.name }), !rounds.isEmpty else { return [] }
        let ratios = pairedRatios(rounds, kinds: kinds, baseline: baseline)
        // The baseline's CPU per GB over the design's: higher is better, as for Gbps.
        let cpuRatios = pairedRatios(rounds, kinds: kinds, baseline: baseline) { r in
            let cpu = cpuSecondsPerGB(r)
            return cpu > 0 ? 1 / cpu : 0
        }
        // perRound[r][i]: kinds[i]'s runs of round r added up.
        let perRound = rounds.map { runs in
            kinds.map { kind in TransmitResult.aggregate(runs.filter { $0.kind.name == kind.name }.map(\.result)) }
        }
        return kinds.indices.map { i in
            var total = TransmitResult.aggregate(perRound.map { $0[i] })
            total.baselineDesign = baseline.name
            total.roundRatios = ratios[i]
            total.roundCPURatios = cpuRatios[i]
            total.roundDistances = rounds.map { pairedDistances($0, kinds: kinds, baseline: baseline)[i] }
            // The break-even model holds for a design that converts per
            // mapping, in the transmit path (the kind says so).
            total.roundBreakEven = i == b || !kinds[i].convertsPerMapping ? [] : perRound.compactMap { BreakEven.of($0[i], against: $0[b]) }
            total.copyRate = copyRate
            return total
        }
    }
}
