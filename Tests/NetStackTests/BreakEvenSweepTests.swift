import Testing
@testable import NetStack

/// The break-even crossing is read off measured points, never fitted.
@Suite struct BreakEvenSweepTests {
    func point(_ ns: Int, ratio: Double) -> BreakEvenSweep.Point {
        BreakEvenSweep.Point(axis: .perPage, nanoseconds: ns, inlineRatio: Spread([ratio]), pooledRatio: Spread([3]),
                             bounceGbps: 10, inlineGbps: 10 * ratio, pooledGbps: 30, inlineCallsPerGB: 1,
                             pooledCallsPerGB: 0.01, inlineModelledShare: 0, passed: true)
    }

    @Test func theCrossingIsInterpolatedBetweenThePointsEitherSide() {
        // 2.0 at 0 ns, 1.5 at 100, 0.5 at 300: crosses 1 halfway between 100 and 300.
        let points = [point(300, ratio: 0.5), point(0, ratio: 2.0), point(100, ratio: 1.5)]
        #expect(BreakEvenSweep.crossing(points) == 200)
    }

    @Test func noCrossingInsideTheSweepIsSaid() {
        #expect(BreakEvenSweep.crossing([point(0, ratio: 3), point(50, ratio: 2)]) == nil)
        #expect(BreakEvenSweep.crossing([point(0, ratio: 0.9)]) == nil)
        #expect(BreakEvenSweep.crossing([]) == nil)
    }

    @Test func aShortSweepRunsEveryDesignAndKeepsEveryPromise() throws {
        var w = Small.workload(seconds: 0.2)
        w.verify = true
        let points = try BreakEvenSweep.run(axis: .perCall, costs: [0, 5000], workload: w,
                                            plan: ComparisonPlan(rounds: 1, baseline: .bounce), configuration: Small.configuration)
        #expect(points.map(\.nanoseconds) == [0, 5000])
        #expect(points.allSatisfy { $0.passed })
        #expect(points.allSatisfy { $0.inlineCallsPerGB > $0.pooledCallsPerGB }, "the pool converts a chunk at a time")
        #expect(points[1].inlineModelledShare > points[0].inlineModelledShare)
    }
}
