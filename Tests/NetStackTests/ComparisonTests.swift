import DMAPools
import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import NetStack

/// The paired-ratio arithmetic, on made-up figures: no timing is asserted.
@Suite struct ComparisonTests {
    /// A result whose Gbps is exactly `gbps` (1 s of wall time), from a real
    /// run's shape so every counter has a value.
    static func result(_ design: any TransmitDesignKind, gbps: Double, template: TransmitResult) -> TransmitResult {
        var r = template
        r.design = design.name
        r.seconds = 1
        r.payloadBytes = Int(gbps * 1e9 / 8)
        r.roundGbps = []
        return r
    }

    static let template: TransmitResult = {
        try! Experiment.run(.bounce, workload: Small.workload(seconds: 0.05), configuration: Small.configuration)
    }()

    @Test func spreadTakesMedianQuartilesAndExtremesWhateverTheOrder() throws {
        let odd = try #require(Spread([5, 1, 3, 2, 4]))
        #expect(odd.median == 3 && odd.minimum == 1 && odd.maximum == 5)
        #expect(odd.lowerQuartile == 2 && odd.upperQuartile == 4)
        #expect(Spread([1, 2, 3, 4, 5]) == odd)
        let even = try #require(Spread([4, 1, 3, 2]))
        #expect(even.median == 2.5 && even.lowerQuartile == 1.75 && even.upperQuartile == 3.25)
        let one = try #require(Spread([7]))
        #expect(one.median == 7 && one.lowerQuartile == 7 && one.upperQuartile == 7 && one.quartileDeviation == 0)
        #expect(Spread([]) == nil)
        #expect(Spread([.nan, .infinity]) == nil)
        #expect(Spread([1, .nan, 3])?.median == 2, "non-finite values are left out")
    }

    @Test func stabilityIsTheInterquartileRangeWithinFivePercent() {
        // Median 1.0, quartiles 0.99 and 1.01: within +-5%.
        #expect(Spread([0.98, 0.99, 1.0, 1.01, 1.02])!.quartilesWithin(0.05))
        // Median 1.0, quartiles 0.9 and 1.1: outside.
        #expect(!Spread([0.8, 0.9, 1.0, 1.1, 1.2])!.quartilesWithin(0.05))
        // The larger side counts: quartiles 0.99 and 1.06 about 1.0.
        #expect(!Spread([0.98, 0.99, 1.0, 1.06, 1.07])!.quartilesWithin(0.05))
        #expect(Comparison.isStable([[1, 1, 1], [2, 2.01, 1.99]]))
        #expect(!Comparison.isStable([[1, 1, 1], [1, 2, 3]]))
        #expect(!Comparison.isStable([[]]), "no rounds is not stable")
    }

    /// The names of a schedule: designs are told apart by name.
    static func names(_ kinds: [any TransmitDesignKind]) -> [String] { kinds.map(\.name) }

    @Test func theBaselineRunsAroundEveryOtherDesignWhoseOrderRotates() {
        let kinds: [any TransmitDesignKind] = [.bounce, .fragRefill, .pagePool, .inlineDecrypt]
        #expect(Self.names(Comparison.schedule(kinds, baseline: .bounce, round: 0))
                == ["bounce", "frag-refill", "bounce", "page-pool", "bounce", "inline-decrypt", "bounce"])
        #expect(Self.names(Comparison.schedule(kinds, baseline: .bounce, round: 1))
                == ["bounce", "page-pool", "bounce", "inline-decrypt", "bounce", "frag-refill", "bounce"])
        #expect(Self.names(Comparison.schedule(kinds, baseline: .pagePool, round: 0))
                == ["page-pool", "bounce", "page-pool", "frag-refill", "page-pool", "inline-decrypt", "page-pool"])
        #expect(Self.names(Comparison.schedule(kinds, baseline: .bounce, round: 3))
                == Self.names(Comparison.schedule(kinds, baseline: .bounce, round: 0)))
        // Over as many rounds as there are other designs, each runs first once.
        #expect(Set((0..<3).map { Comparison.schedule(kinds, baseline: .bounce, round: $0)[1].name })
                == ["frag-refill", "page-pool", "inline-decrypt"])
        #expect(Self.names(Comparison.schedule([.pagePool], baseline: .pagePool, round: 5)) == ["page-pool"])
        // A design is its name: another value of the same kind is the same design.
        #expect(Self.names(Comparison.schedule([BounceDesignKind(), .pagePool], baseline: .bounce, round: 0))
                == ["bounce", "page-pool", "bounce"])
    }

    static func runs(_ figures: [(any TransmitDesignKind, Double)]) -> [RoundRun] {
        figures.map { RoundRun(kind: $0.0, result: result($0.0, gbps: $0.1, template: template)) }
    }

    @Test func eachRatioIsOverTheBaselineRunsJustBeforeAndAfterIt() {
        // The machine slows down through the round: bounce 16, 8, 4 Gbps. page-pool
        // ran between 16 and 8 and frag-refill between 8 and 4, each at twice
        // the speed bounce would have had at that moment (geometric mean).
        let round = Self.runs([(.bounce, 16), (.pagePool, 2 * (16.0 * 8).squareRoot()), (.bounce, 8),
                               (.fragRefill, 2 * (8.0 * 4).squareRoot()), (.bounce, 4)])
        let kinds: [any TransmitDesignKind] = [.bounce, .fragRefill, .pagePool]
        let ratios = Comparison.pairedRatios(round, kinds: kinds, baseline: .bounce)
        #expect(ratios[0] == 1)
        #expect(abs(ratios[1] - 2) < 1e-6 && abs(ratios[2] - 2) < 1e-6)
        // A design at an end of the round is paired with its one neighbour;
        // a design that did not run has no ratio.
        let ends = Comparison.pairedRatios(Self.runs([(.pagePool, 30), (.bounce, 10)]), kinds: kinds, baseline: .bounce)
        #expect(ends[0] == 1 && ends[1].isNaN && abs(ends[2] - 3) < 1e-6)
    }

    @Test func ratiosArePairedWithinEachRoundNotBetweenMedians() throws {
        // The machine changes speed from round to round; page-pool is twice
        // bounce in two rounds and three times in one. The median of the
        // per-round ratios is 2; the ratio of the medians (12 / 5) is not.
        let rounds = [Self.runs([(.bounce, 10), (.pagePool, 20), (.bounce, 10)]),
                      Self.runs([(.bounce, 5), (.pagePool, 10), (.bounce, 5)]),
                      Self.runs([(.bounce, 4), (.pagePool, 12), (.bounce, 4)])]
        let ratios = Comparison.pairedRatios(rounds, kinds: [.bounce, .pagePool], baseline: .bounce)
        #expect(ratios[0] == [1, 1, 1])
        #expect(ratios[1].map { ($0 * 1e6).rounded() / 1e6 } == [2, 2, 3])
        let results = Comparison.results([.bounce, .pagePool], rounds: rounds, baseline: .bounce, copyRate: nil)
        #expect(results.map(\.baselineDesign) == ["bounce", "bounce"])
        let spread = try #require(results[1].ratioSpread)
        #expect(abs(spread.median - 2) < 1e-6 && abs(spread.minimum - 2) < 1e-6 && abs(spread.maximum - 3) < 1e-6)
        #expect(abs(results[1].gbps / results[0].gbps - 2.4) < 1e-3, "the ratio of medians differs: that is why rounds are paired")
        // The baseline's runs of a round are added up: one Gbps per round.
        #expect(results[0].roundGbps.count == 3 && results[1].roundGbps.count == 3)
        #expect(results[0].payloadBytes == 2 * (rounds.map { $0[0].result.payloadBytes }.reduce(0, +)))
    }

    /// Runs as `runs(_:)`, each with the hand-off probe's figure before it.
    static func probedRuns(_ figures: [(any TransmitDesignKind, Double, Double)]) -> [RoundRun] {
        figures.map { kind, gbps, handoff in
            var r = result(kind, gbps: gbps, template: template)
            r.handoffSamples = [handoff]
            return RoundRun(kind: kind, result: r)
        }
    }

    @Test func aPairHasADistanceOnlyWhenEveryProbeAroundItAgrees() throws {
        #expect(CPUDistance(handoffNanosecondsPerByte: 0.12) == .near)
        #expect(CPUDistance(handoffNanosecondsPerByte: CPUDistance.farHandoffNanosecondsPerByte) == .far)
        #expect(CPUDistance(handoffNanosecondsPerByte: 0) == nil, "0: not measured (one CPU)")
        // Round 1: the CPUs moved apart before the last bounce run, so
        // frag-refill's pair and bounce's round have no distance, and
        // page-pool's pair is near; round 2 all near; round 3 all far.
        let rounds = [Self.probedRuns([(.bounce, 10, 0.1), (.pagePool, 40, 0.1), (.bounce, 10, 0.1), (.fragRefill, 20, 0.1), (.bounce, 10, 0.5)]),
                      Self.probedRuns([(.bounce, 10, 0.1), (.pagePool, 30, 0.1), (.bounce, 10, 0.1), (.fragRefill, 15, 0.1), (.bounce, 10, 0.1)]),
                      Self.probedRuns([(.bounce, 5, 0.5), (.pagePool, 25, 0.5), (.bounce, 5, 0.5), (.fragRefill, 10, 0.5), (.bounce, 5, 0.5)])]
        let kinds: [any TransmitDesignKind] = [.bounce, .pagePool, .fragRefill]
        #expect(Comparison.pairedDistances(rounds[0], kinds: kinds, baseline: .bounce) == [nil, .near, nil])
        let results = Comparison.results(kinds, rounds: rounds, baseline: .bounce, copyRate: nil)
        #expect(results[0].roundDistances == [nil, .near, .far])
        #expect(results[1].roundDistances == [.near, .near, .far])
        #expect(results[2].roundDistances == [nil, .near, .far])
        let near = try #require(results[1].ratioSpread(at: .near))
        #expect(near.count == 2 && abs(near.minimum - 3) < 1e-6 && abs(near.maximum - 4) < 1e-6)
        #expect(abs(try #require(results[1].ratioSpread(at: .far)).median - 5) < 1e-6)
        #expect(results[2].ratioSpread(at: .near)?.count == 1 && results[2].ratioSpread(at: .far)?.count == 1)
        // A run's samples are the probes before and after it: one of each
        // side of the threshold is a move, whatever the other runs read.
        var moved = rounds[1]
        var straddling = moved[1].result
        straddling.handoffSamples = [0.1, 0.5]
        moved[1] = RoundRun(kind: .pagePool, result: straddling)
        #expect(Comparison.pairedDistances(moved, kinds: kinds, baseline: .bounce) == [.near, nil, .near])
        // The hand-off of each round is the median of its runs' samples.
        #expect(results[0].roundHandoff == [0.1, 0.1, 0.5])
        // A run without a probe leaves its pairs unclassified.
        var unprobed = rounds[1]
        unprobed[2] = RoundRun(kind: .bounce, result: Self.result(.bounce, gbps: 10, template: Self.template))
        #expect(Comparison.pairedDistances(unprobed, kinds: kinds, baseline: .bounce) == [nil, nil, nil])
    }

    @Test func breakEvenIsTheBaselinesTimeLessTheDesignsMeasuredWork() throws {
        let t = Self.template
        // Baseline 8 Gbps: 1 s per GB. The design: 4 Gbps (2 s per GB), of
        // which 1.5 s per GB was modelled and spun on one queue: its measured
        // work takes 0.5 s per GB, leaving a budget of 0.5 s per GB.
        let baseline = Self.result(.bounce, gbps: 8, template: t)
        var design = Self.result(.inlineDecrypt, gbps: 4, template: t)
        design.workload.queues = 1
        let gigabytes = Double(design.payloadBytes) / 1e9
        design.conversionModelledSeconds = 1.5 * gigabytes
        design.conversionCalls = Int(1e6 * gigabytes)      // 10^6 calls per GB
        design.conversionPages = Int(4e6 * gigabytes)      // 4 x 10^6 pages per GB
        design.modelledTimeSpun = true
        let b = try #require(BreakEven.of(design, against: baseline))
        #expect(abs(b.budgetSecondsPerGB - 0.5) < 1e-6)
        #expect(abs(b.perCallNanoseconds - 500) < 1e-2, "0.5 s over 10^6 calls")
        #expect(abs(b.perPageNanoseconds - 125) < 1e-2, "0.5 s over 4 x 10^6 pages")
        #expect(abs(b.scaleOfModelledCost - 1.0 / 3) < 1e-6)
        // At the break-even scale the model gives the baseline's wall time:
        // 2 s per GB - 1.5 + 1.5 / 3 = 1 s per GB.
        #expect(abs(2 - 1.5 + 1.5 * b.scaleOfModelledCost - 1) < 1e-6)
        // Two queues spread the modelled time: 0.75 s per GB of wall time, so
        // the measured work is 1.25 s per GB, more than the baseline's pace.
        design.workload.queues = 2
        design.workload.senders = 2
        let spread = try #require(BreakEven.of(design, against: baseline))
        #expect(abs(spread.budgetSecondsPerGB + 0.25) < 1e-6 && spread.perCallNanoseconds == 0)
        // Only accounted, the modelled time is in no wall time: nothing to take out.
        design.workload.queues = 1
        design.modelledTimeSpun = false
        let none = try #require(BreakEven.of(design, against: baseline))
        #expect(abs(none.budgetSecondsPerGB + 1) < 1e-6 && none.perCallNanoseconds == 0 && none.perPageNanoseconds == 0)
        // A design that converts nothing has no break-even.
        #expect(BreakEven.of(baseline, against: baseline) == nil)
    }

    @Test func modelledShareIsModelledTimeOverCPUTimeWhenSpun() {
        var r = Self.template
        r.senderCPUSeconds = 1
        r.queueCPUSeconds = 3
        r.conversionModelledSeconds = 1
        r.modelledTimeSpun = true
        #expect(r.modelledShareOfCPU == 0.25)
        r.modelledTimeSpun = false
        #expect(r.modelledShareOfCPU == 0, "accounted time is in no measured figure")
        r.copyRate = MachineCopyRate(copyBytes: 32768, oneThreadGigabytesPerSecond: 10, twoThreadsGigabytesPerSecond: 18)
        #expect(r.copyEquivalents(cpuSecondsPerGB: 0.2) == 2, "0.2 s per GB at 10 GB/s is two copies' worth")
    }

    @Test func stealTimeIsReadAndNeverGoesBack() throws {
        let first = try #require(MachineTime.ticks(), "/proc/stat's cpu line has a steal field on Linux")
        let second = try #require(MachineTime.ticks())
        #expect(first.steal >= 0 && second.steal >= first.steal)
        #expect(first.busy >= 0 && second.busy >= first.busy)
        #expect(MachineTime.ticksPerSecond > 0)
    }

    @Test func theBaselineAndTheStabilityCapAreChecked() throws {
        let c = ExperimentConfiguration()
        let w = Workload()
        func refused(_ parameter: String, _ message: String, _ plan: ComparisonPlan, _ kinds: [any TransmitDesignKind]) {
            #expect {
                try Experiment.check(kinds, workload: w, plan: plan, configuration: c)
            } throws: { error in
                guard case ExperimentError.invalid(let e) = error else { return false }
                return e.parameter == parameter && "\(error)".contains(message)
            }
        }
        refused("baseline", "invalid --baseline: bounce is not among the designs run (page-pool, frag-refill)",
                ComparisonPlan(rounds: 4, baseline: .bounce), [.pagePool, .fragRefill])
        refused("until-stable", "invalid --until-stable: 3 must be in --rounds (4)...100",
                ComparisonPlan(rounds: 4, baseline: .bounce, untilStableCap: 3), [.bounce])
        refused("until-stable", "invalid --until-stable: 101 must be in --rounds (4)...100",
                ComparisonPlan(rounds: 4, baseline: .bounce, untilStableCap: 101), [.bounce])
        #expect(throws: Never.self) {
            try Experiment.check([.bounce, .pagePool], workload: w, plan: ComparisonPlan(rounds: 4, baseline: .pagePool, untilStableCap: 100),
                                 configuration: c)
        }
    }

    @Test func aComparisonPairsItsRoundsAndMeasuresTheCopyRate() throws {
        let plan = ComparisonPlan(rounds: 2, baseline: .bounce)
        let c = try Experiment.comparison([.bounce, .pagePool], workload: Small.workload(seconds: 0.2), plan: plan,
                                          configuration: Small.configuration)
        #expect(c.rounds.count == 2)
        #expect(c.orders.map(Self.names) == [["bounce", "page-pool", "bounce"], ["bounce", "page-pool", "bounce"]])
        #expect(c.rounds.allSatisfy { $0.map(\.result.design) == ["bounce", "page-pool", "bounce"] })
        #expect(c.results.map(\.design) == ["bounce", "page-pool"], "results are in design order")
        #expect(c.results[0].roundRatios == [1, 1])
        #expect(c.results[1].roundRatios.count == 2)
        #expect(c.copyRateBefore.copyBytes == 32768 && c.copyRateBefore.oneThreadGigabytesPerSecond > 0)
        #expect(c.results.allSatisfy { $0.copyRate != nil })
        // The hand-off probe runs where there are two CPUs and measures both
        // overwrites (their sizes are the machine's, not checked here).
        if sysconf(Int32(_SC_NPROCESSORS_ONLN)) >= 2 {
            #expect(c.copyRateBefore.handoffNanosecondsPerByte > 0 && c.copyRateBefore.ownRewriteNanosecondsPerByte > 0)
        }
    }
}
