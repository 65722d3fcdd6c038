import DMAPools

/// The review's question about inline decryption ("really slow compared to
/// the memcpy in bouncing even for massive pages"), asked of the modelled
/// conversion cost instead of assumed: a sweep of the per-call and per-page
/// hypercall costs, each point a paired comparison of inline-decrypt and the
/// pre-decrypted pool against bounce, and the cost at which inline-decrypt
/// matches bounce.
///
/// The conversion cost is modelled (`HypercallCostModel`): each point sets it,
/// spun (`charge: .spin`) so that it is inside the measured throughput; the
/// copies, maps and frees are real. Nothing is fitted: the crossing is
/// interpolated between two measured points.
public enum BreakEvenSweep {
    /// Which cost a sweep varies; the other is held at 0.
    public enum Axis: String, Sendable, Hashable, CaseIterable {
        /// Nanoseconds per conversion call (`--hypercall-ns`), per page 0.
        case perCall = "per-call"
        /// Nanoseconds per page converted (`--hypercall-page-ns`), per call 0.
        case perPage = "per-page"
    }

    /// One point: the cost, and what the three designs did at it.
    public struct Point: Sendable {
        public var axis: Axis
        /// The swept cost in nanoseconds (per call or per page).
        public var nanoseconds: Int
        /// inline-decrypt's and decrypted-pool's paired ratios to bounce, per round.
        public var inlineRatio: Spread?
        public var pooledRatio: Spread?
        /// Median Gbps of the three.
        public var bounceGbps: Double
        public var inlineGbps: Double
        public var pooledGbps: Double
        /// Conversion calls per GB of payload: inline-decrypt converts every
        /// page it maps, the pool one 2 MiB chunk at a time.
        public var inlineCallsPerGB: Double
        public var pooledCallsPerGB: Double
        /// The share of inline-decrypt's CPU time that was the modelled cost.
        public var inlineModelledShare: Double
        /// Whether every design kept every promise at this point.
        public var passed: Bool
    }

    /// The designs a point runs, bounce first (the baseline).
    public static var kinds: [any TransmitDesignKind] { [.bounce, .inlineDecrypt, .decryptedPool] }

    /// The sweep's default costs (ns): per call, and per page (the 10, 50, 100, 500).
    public static let defaultPerCall = [0, 1000, 4000]
    public static let defaultPerPage = [0, 10, 50, 100, 500]

    /// Runs one paired comparison per cost on `axis`, in the order given.
    public static func run(axis: Axis, costs: [Int], workload: Workload, plan: ComparisonPlan,
                           configuration: ExperimentConfiguration,
                           progress: (@Sendable (_ axis: Axis, _ nanoseconds: Int, _ design: any TransmitDesignKind, _ round: Int) -> Void)? = nil) throws -> [Point] {
        try costs.map { cost in
            var c = configuration
            var h = c.memory.hypercall
            h.perCallNanoseconds = axis == .perCall ? cost : 0
            h.perPageNanoseconds = axis == .perPage ? cost : 0
            h.charge = .spin
            c.memory.hypercall = h
            let comparison = try Experiment.comparison(kinds, workload: workload, plan: plan, configuration: c) { kind, round in
                progress?(axis, cost, kind, round)
            }
            func result(_ kind: any TransmitDesignKind) -> TransmitResult? {
                comparison.results.first { $0.design == kind.name }
            }
            guard let bounce = result(.bounce), let inline = result(.inlineDecrypt), let pooled = result(.decryptedPool) else {
                preconditionFailure("a comparison of \(kinds.map(\.name)) returned \(comparison.results.map(\.design))")
            }
            func callsPerGB(_ r: TransmitResult) -> Double {
                r.payloadBytes > 0 ? Double(r.conversionCalls) / (Double(r.payloadBytes) / 1e9) : 0
            }
            return Point(axis: axis, nanoseconds: cost, inlineRatio: inline.ratioSpread, pooledRatio: pooled.ratioSpread,
                         bounceGbps: bounce.gbps, inlineGbps: inline.gbps, pooledGbps: pooled.gbps,
                         inlineCallsPerGB: callsPerGB(inline), pooledCallsPerGB: callsPerGB(pooled),
                         inlineModelledShare: inline.modelledShareOfCPU,
                         passed: bounce.passed && inline.passed && pooled.passed)
        }
    }

    /// The cost at which inline-decrypt's median paired ratio crosses 1,
    /// interpolated linearly between the two measured points either side of
    /// it (the first such pair, costs taken in increasing order); nil when the
    /// ratio does not cross 1 inside the sweep.
    public static func crossing(_ points: [Point]) -> Double? {
        let sorted = points.compactMap { p in p.inlineRatio.map { (Double(p.nanoseconds), $0.median) } }.sorted { $0.0 < $1.0 }
        for (a, b) in zip(sorted, sorted.dropFirst()) where (a.1 - 1) * (b.1 - 1) <= 0 && a.1 != b.1 {
            return a.0 + (1 - a.1) * (b.0 - a.0) / (b.1 - a.1)
        }
        return nil
    }
}
