import Testing
@testable import NetStack

/// Each record's list of field rules names every stored field, so a counter
/// added to a record is summed (or said to be kept) rather than silently dropped.
@Suite struct FieldRuleTests {
    static func storedFields(_ value: Any) -> Set<String> {
        Set(Mirror(reflecting: value).children.compactMap(\.label))
    }

    @Test func statisticsOperatorsCoverEveryField() {
        #expect(Set(TXQueueStatistics.fields.map(\.name)) == Self.storedFields(TXQueueStatistics()))
        #expect(Set(NICStatistics.fields.map(\.name)) == Self.storedFields(NICStatistics()))
        #expect(Set(SocketStatistics.fields.map(\.name)) == Self.storedFields(SocketStatistics()))
        #expect(Set(FrameCacheStatistics.fields.map(\.name)) == Self.storedFields(FrameCacheStatistics()))
    }

    @Test func aggregateCoversEveryField() throws {
        let r = try Experiment.run(.bounce, workload: Small.workload(seconds: 0.05), configuration: Small.configuration)
        let named = TransmitResult.aggregatedFields.map(\.name)
            + TransmitResult.firstRoundFields.map { FieldRule<TransmitResult>.name(of: $0) }
        #expect(named.count == Set(named).count, "a field is named twice")
        #expect(Set(named) == Self.storedFields(r))
    }

    @Test func operatorsSumCountersAndKeepTheFirstProblem() {
        var a = NICStatistics(), b = NICStatistics()
        a.bytes = 3; b.bytes = 4; b.dmaFaults = 1
        a.firstProblem = nil; b.firstProblem = "b"
        let sum = a + b
        #expect(sum.bytes == 7 && sum.dmaFaults == 1 && sum.firstProblem == "b")
        var q = TXQueueStatistics()
        q.frames = 2; q.firstMapError = "first"
        var r = TXQueueStatistics()
        r.frames = 5; r.firstMapError = "second"
        #expect((q + r).frames == 7 && (q + r).firstMapError == "first")
    }

    @Test func aggregateSumsCountersAndTakesPeaks() throws {
        var a = try Experiment.run(.bounce, workload: Small.workload(seconds: 0.05), configuration: Small.configuration)
        a.swiotlbPeakSlots = 10
        var b = a
        b.swiotlbPeakSlots = 30
        b.firstProblem = "later"
        let total = TransmitResult.aggregate([a, b])
        #expect(total.payloadBytes == 2 * a.payloadBytes && total.seconds == 2 * a.seconds)
        #expect(total.swiotlbPeakSlots == 30)
        #expect(total.firstProblem == a.firstProblem ?? "later")
        #expect(total.roundGbps.count == 2)
        // Frames per batch: counted by the queues, kept per round.
        #expect(a.queueFrames > 0 && a.queueBatches > 0 && a.queueBatches <= a.queueFrames)
        #expect(total.queueFrames == 2 * a.queueFrames && total.roundFramesPerBatch.count == 2)
        #expect(total.framesPerBatch == a.framesPerBatch && a.framesPerBatch >= 1)
    }
}

@Suite struct CopyTimingTests {
    /// With copy timing on, every byte copy 1 wrote is filed under one
    /// destination, and bounce's copy 2 tags pages so that some are found
    /// bounced; page-pool bounces nothing, so nothing is. Off, there is no split.
    @Test func copyTimingFilesEveryCopiedByte() throws {
        var configuration = Small.configuration
        configuration.copyTiming = true
        let bounce = try Experiment.run(.bounce, workload: Small.workload(seconds: 0.1), configuration: configuration)
        let split = try #require(bounce.copyTiming)
        #expect(split.bytes.reduce(0, +) == bounce.bytesCopiedBySender)
        #expect(split.bytes[CopyTimingFigures.Destination.bouncedHere.rawValue]
                + split.bytes[CopyTimingFigures.Destination.bouncedElsewhere.rawValue] > 0)
        let pool = try Experiment.run(.pagePool, workload: Small.workload(seconds: 0.1), configuration: configuration)
        let poolSplit = try #require(pool.copyTiming)
        #expect(poolSplit.bytes[CopyTimingFigures.Destination.notBounced.rawValue] == pool.bytesCopiedBySender)
        let plain = try Experiment.run(.bounce, workload: Small.workload(seconds: 0.1), configuration: Small.configuration)
        #expect(plain.copyTiming == nil)
    }
}
