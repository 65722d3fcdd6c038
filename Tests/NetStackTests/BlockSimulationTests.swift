import DMAPools
import Testing
@testable import NetStack

/// Block I/O through the DMA API: general buffers bounce (a write at map, a
/// read at map and unmap, as swiotlb always bounces the original at map),
/// pre-decrypted ones do not; every byte is checked by the device (writes)
/// or the CPU (reads), and every page comes home.
@Suite struct BlockSimulationTests {
    var memory: GuestMemoryConfiguration { GuestMemoryConfiguration(guestBytes: 256 << 20, swiotlbBytes: 32 << 20, hypercall: .free) }

    func workload(reads: Double) -> BlockSimulation.Workload {
        var w = BlockSimulation.Workload()
        w.durationSeconds = 0.05
        w.readFraction = reads
        w.requestSizes = [4 << 10, 128 << 10]
        return w
    }

    @Test func generalBuffersBounceWritesOnceAndReadsTwice() throws {
        let writes = try BlockSimulation.run(source: .general, workload: workload(reads: 0), memory: memory)
        #expect(writes.passed, "\(writes.firstProblem ?? "")")
        #expect(abs(writes.copiesPerByte - 1) < 1e-9 && writes.writes > 0 && writes.reads == 0)
        let reads = try BlockSimulation.run(source: .general, workload: workload(reads: 1), memory: memory)
        #expect(reads.passed, "\(reads.firstProblem ?? "")")
        #expect(abs(reads.copiesPerByte - 2) < 1e-9 && reads.reads > 0 && reads.verifiedBytes == reads.bytes)
    }

    @Test func preDecryptedBuffersCopyNothingAndLoseNothing() throws {
        let r = try BlockSimulation.run(source: .predecrypted, workload: workload(reads: 0.5), memory: memory)
        #expect(r.passed, "\(r.firstProblem ?? "")")
        #expect(r.bytesBounced == 0 && r.reads > 0 && r.writes > 0)
        #expect(r.verifiedBytes == r.bytes && r.lostPages == 0)
    }

    @Test(arguments: BlockSimulation.BufferSource.allCases)
    func buffersPerRequestComeAndGoWithEachRequestAndTheBouncesCountedAtMapAndUnmapAreSwiotlbs(_ source: BlockSimulation.BufferSource) throws {
        var w = workload(reads: 0.5)
        w.buffersPerRequest = true
        let r = try BlockSimulation.run(source: source, workload: w, memory: memory)
        #expect(r.passed, "\(r.firstProblem ?? "")")
        #expect(r.bounceCountMismatch == 0)
        #expect(r.allocations == r.frees && r.allocations >= r.requests)
        #expect(r.lostPages == 0)
    }

    @Test func badParametersAreRefusedByName() {
        var w = BlockSimulation.Workload()
        w.queueDepth = 0
        #expect(throws: ParameterError.invalid(parameter: "queue-depth", reason: "0 must be in 1...64")) { try w.validate() }
        w = BlockSimulation.Workload()
        w.requestSizes = [256 << 10]
        #expect(throws: ParameterError.self) { try w.validate() }
    }
}
