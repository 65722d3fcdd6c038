import Testing
import NetStack

/// Design figures are typed: counters add over rounds as integers, labels keep
/// the first round's, and the table's text is derived, never parsed back.
@Suite struct DesignFigureTests {
    @Test func countersAddAndLabelsKeepTheFirstRound() {
        let a: [DesignFigure] = [.text("provider", "swiotlb-pages"), .count("released_refcnt", 2, unit: "pages"),
                                 .counts("alloc fast/slow/empty/refill", [10, 1, 0, 3], unit: "allocations")]
        let b: [DesignFigure] = [.text("provider", "other"), .count("released_refcnt", 5, unit: "pages"),
                                 .counts("alloc fast/slow/empty/refill", [20, 2, 1, 4], unit: "allocations")]
        let sum = zip(a, b).map(+)
        #expect(sum[named: "provider"]?.text == "swiotlb-pages")
        #expect(sum[named: "released_refcnt"]?.count == 7)
        #expect(sum[named: "alloc fast/slow/empty/refill"]?.counts == [30, 3, 1, 7])
        #expect(sum[named: "alloc fast/slow/empty/refill"]?.text == "30/3/1/7")
        #expect(sum[named: "alloc fast/slow/empty/refill"]?.unit == "allocations")
        #expect(sum[named: "missing"] == nil)
    }

    @Test func figuresOfDifferentNamesOrShapesKeepTheFirst() {
        let a = DesignFigure.counts("x/y", [1, 2], unit: "pages")
        #expect(a + .count("other", 5, unit: "pages") == a)
        #expect(a + .counts("x/y", [1, 2, 3], unit: "pages") == a)
    }

    @Test func aggregateAddsTheDesignsFiguresOverRounds() throws {
        let one = try Experiment.run(.pagePool, workload: Small.workload(seconds: 0.1), configuration: Small.configuration)
        let two = TransmitResult.aggregate([one, one])
        let fast = try #require(one.designFigures[named: "alloc fast/slow/empty/refill"]?.counts)
        #expect(two.designFigures[named: "alloc fast/slow/empty/refill"]?.counts == fast.map { 2 * $0 })
        #expect(two.designFigures[named: "provider"]?.text == one.designFigures[named: "provider"]?.text)
    }
}
