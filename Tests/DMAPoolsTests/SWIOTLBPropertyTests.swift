import Testing
@testable import DMAPools
import DMAPoolsTestSupport

/// swiotlb's search and release against `SWIOTLBReferenceModel` on long random
/// sequences of map / sync / unmap with random sizes, alignments, devices and
/// start areas; invariants (the per-segment `list` encoding) after every step.
/// The driver is `SWIOTLBFuzzer`, the same code `txsim fuzz` runs.
@Suite struct SWIOTLBPropertyTests {
    static let seeds: [UInt64] = [1, 2, 0x5EED, 0xDEAD_BEEF, UInt64.random(in: 0...UInt64.max)]

    @Test(arguments: seeds)
    func randomMapUnmapSyncMatchesTheReferenceModel(seed: UInt64) throws {
        var source = FuzzSource(seed: seed)
        let report = try SWIOTLBFuzzer.run(&source, steps: 2500)
        #expect(report.passed, "\(report)")
        #expect(report.operations >= 2500)
        #expect(report.bytesVerified > 0)
    }

    /// The checker can fail: a model whose search starts one area late must
    /// disagree with the pool (given more than one area).
    @Test func aModelThatDisagreesIsCaught() throws {
        var caught = 0
        for seed in UInt64(1)...8 {
            var source = FuzzSource(seed: seed)
            let report = try SWIOTLBFuzzer.run(&source, steps: 400, modelFault: .searchStartsOneAreaLate)
            if report.problem != nil { caught += 1 }
            #expect(report.lostPages == 0, "teardown still unmaps everything: \(report)")
        }
        #expect(caught > 0)
    }

    /// Bytes from a coverage-guided fuzzer drive the same checks and stop when
    /// the input runs out.
    @Test func anInputsBytesDriveARunThatEndsWithThem() throws {
        var source = FuzzSource(bytes: (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) })
        let report = try SWIOTLBFuzzer.run(&source, steps: 100_000)
        #expect(source.isExhausted)
        #expect(report.operations > 10 && report.operations < 100_000)
        #expect(report.passed, "\(report)")
    }
}

@Suite struct PagePoolFuzzTests {
    @Test(arguments: [1, 2, 3, 0xC0FFEE, UInt64.random(in: 0...UInt64.max)] as [UInt64])
    func randomAllocPutSequencesMatchTheExactModel(seed: UInt64) throws {
        var source = FuzzSource(seed: seed)
        let report = try PagePoolFuzzer.run(&source, steps: 6000)
        #expect(report.passed, "\(report)")
        #expect(report.bytesVerified > 0)
    }

    /// The checker can fail: a model whose cache holds 127 pages must disagree
    /// once the cache fills.
    @Test func aModelThatDisagreesIsCaught() throws {
        var caught = 0
        for seed in UInt64(1)...6 {
            var source = FuzzSource(seed: seed)
            let report = try PagePoolFuzzer.run(&source, steps: 6000, modelFault: .cacheHoldsOneLess)
            if report.problem != nil { caught += 1 }
            #expect(report.lostPages == 0, "teardown still brings every page home: \(report)")
        }
        #expect(caught > 0)
    }
}
