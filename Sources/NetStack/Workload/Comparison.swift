import DMAPools

/// How `Experiment.comparison` runs its rounds.
public struct ComparisonPlan: Sendable, Hashable {
    /// Rounds run in any case, each `durationSeconds / rounds` per design.
    public var rounds: Int
    /// The design every other design's figures are divided by, round by round.
    public var baseline: DesignKind
    /// With a cap, rounds of the same length are added after `rounds`, up to
    /// the cap in all, until every design's ratio to the baseline has its
    /// interquartile range within +-`stableQuartileFraction` of its median.
    public var untilStableCap: Int?

    /// +-5%: the interquartile range `--until-stable` waits for.
    public static let stableQuartileFraction = 0.05

    public init(rounds: Int, baseline: DesignKind = .bounce, untilStableCap: Int? = nil) {
        self.rounds = rounds
        self.baseline = baseline
        self.untilStableCap = untilStableCap
    }
}

/// The conversion cost at which a converting design would have matched the
/// baseline's throughput in one round, computed from that round's figures.
///
/// The model: the modelled time spun per payload byte lies on the run's
/// critical path, spread over the queues that transmit at once (conversions
/// happen in the serialised transmit and completion routine), and throughput
/// is inversely proportional to wall time per byte. Taking the modelled time
/// out of the design's wall time per GB leaves what its real work costs; the
/// baseline's wall time per GB less that is the budget conversions may use.
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
        let modelledWallPerGB = design.modelledTimeSpun ? design.conversionModelledSeconds / gigabytes / parallel : 0
        let designWallPerGB = 8 / design.gbps, baselineWallPerGB = 8 / baseline.gbps
        let budget = baselineWallPerGB - (designWallPerGB - modelledWallPerGB)
        let callsPerGB = Double(design.conversionCalls) / gigabytes
        let pagesPerGB = Double(design.conversionPages) / gigabytes
        guard budget > 0 else { return BreakEven(budgetSecondsPerGB: budget) }
        let modelledPerGB = design.conversionModelledSeconds / gigabytes
        return BreakEven(budgetSecondsPerGB: budget,
                         perCallNanoseconds: budget * parallel / callsPerGB * 1e9,
                         perPageNanoseconds: pagesPerGB > 0 ? budget * parallel / pagesPerGB * 1e9 : 0,
                         scaleOfModelledCost: modelledPerGB > 0 ? budget * parallel / modelledPerGB : 0)
    }
}

/// Designs compared round by round, every figure paired within its round.
public struct Comparison: Sendable {
    public let kinds: [DesignKind]
    public let plan: ComparisonPlan
    /// `rounds[r][i]`: `kinds[i]` in round `r`.
    public let rounds: [[TransmitResult]]
    /// The order the designs ran in, per round (rotated one place each round,
    /// so no design always runs first or always follows the same one).
    public let orders: [[DesignKind]]
    /// The machine's copy rate before the first round and after the last.
    public let copyRateBefore: MachineCopyRate
    public let copyRateAfter: MachineCopyRate
    /// Whether every ratio's interquartile range ended within +-5% of its median.
    public let stable: Bool
    /// One aggregate per design, in `kinds` order, with its paired ratios.
    public let results: [TransmitResult]

    /// The order of round `round`: `kinds` rotated left by `round`.
    public static func order(_ kinds: [DesignKind], round: Int) -> [DesignKind] {
        guard !kinds.isEmpty else { return [] }
        let shift = round % kinds.count
        return Array(kinds[shift...] + kinds[..<shift])
    }

    /// Per design, each round's Gbps divided by the baseline's in that round.
    public static func pairedRatios(_ rounds: [[TransmitResult]], baselineIndex: Int) -> [[Double]] {
        guard let width = rounds.first?.count else { return [] }
        return (0..<width).map { i in
            rounds.map { round in round[baselineIndex].gbps > 0 ? round[i].gbps / round[baselineIndex].gbps : .nan }
        }
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
                        twoThreadsGigabytesPerSecond: (a.twoThreadsGigabytesPerSecond + b.twoThreadsGigabytesPerSecond) / 2)
    }

    /// Aggregates rounds per design and attaches the paired figures.
    public static func results(_ kinds: [DesignKind], rounds: [[TransmitResult]], baseline: DesignKind,
                               copyRate: MachineCopyRate?) -> [TransmitResult] {
        guard let b = kinds.firstIndex(of: baseline), !rounds.isEmpty else { return [] }
        let ratios = pairedRatios(rounds, baselineIndex: b)
        return kinds.indices.map { i in
            var total = TransmitResult.aggregate(rounds.map { $0[i] })
            total.baselineDesign = baseline.rawValue
            total.roundRatios = ratios[i]
            total.roundBreakEven = i == b ? [] : rounds.compactMap { BreakEven.of($0[i], against: $0[b]) }
            total.copyRate = copyRate
            return total
        }
    }
}
