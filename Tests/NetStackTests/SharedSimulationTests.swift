import DMAPools
import Testing
@testable import NetStack

/// `txsim shared`: network TX, block I/O and slab users at once on one guest.
/// With pre-decrypted buffers all three draw on the guest's one
/// pre-decrypted allocator and nothing bounces; with general buffers
/// everything bounces, and frag-refill's free-path hook sees the block and
/// slab users' frees. Nothing is lost either way.
@Suite struct SharedSimulationTests {
    func workload() -> SharedSimulation.Workload {
        var w = SharedSimulation.Workload()
        w.transmit = Small.workload(seconds: 0.15)
        w.transmit.headerBytes = SharedSimulation.defaultHeaderBytes
        // One request size, half reads: reads and writes come in equal numbers
        // (a queue-depth round of 8 alternates them), so general buffers copy
        // exactly 1.5 bytes per byte.
        w.block.requestSizes = [16 << 10]
        w.block.queueDepth = 8
        return w
    }

    @Test func onePreDecryptedAllocatorServesAllThreeUsersWithoutABounceAndHoldsNothingAfterwards() throws {
        let r = try SharedSimulation.run(.decryptedPool, buffers: .predecrypted, workload: workload(), configuration: Small.configuration)
        #expect(r.passed, "\(r.problem ?? "")")
        #expect(r.transmit.bytesMappedDirect > 0 && r.transmitCopiesPerByte == 1)
        #expect(r.transmit.headBytes > 0 && r.transmit.headBytesBounced == 0)
        #expect(r.block.requests > 0 && r.block.bytesBounced == 0 && r.block.verifiedBytes == r.block.bytes)
        #expect(r.slab.objects > 0 && r.slab.bytesBounced == 0 && r.slab.verifiedBytes == r.slab.bytes)
        // Every user's runs came from the one allocator: its count covers theirs.
        #expect(r.block.allocations > 0 && r.slab.pagesReturned > 0 && r.transmit.headSlabPeakPages > 0)
        #expect(r.allocatorAllocations >= r.block.allocations + r.slab.pagesReturned + r.transmit.headSlabPeakPages + 1)
        // Memory held: converted and held while they ran, none once they are done.
        #expect(r.chunksConverted > 0 && r.peakChunksHeld > 0 && r.peakLivePages > 0)
        #expect(r.chunksHeldAtEnd == 0 && r.livePagesAtEnd == 0)
        #expect(r.lostPages == 0 && r.slab.objectsLost == 0 && r.transmit.headObjectsLost == 0)
        #expect(!r.hookInstalled && r.hookChecks == 0)
    }

    @Test func generalBuffersBounceAndTheSeedPatchsHookChecksTheOtherSubsystemsFrees() throws {
        let r = try SharedSimulation.run(.fragRefill, buffers: .general, workload: workload(), configuration: Small.configuration)
        #expect(r.passed, "\(r.problem ?? "")")
        #expect(r.block.copiesPerByte == 1.5, "writes bounce once, reads twice: \(r.block.copiesPerByte)")
        #expect(r.slab.copiesPerByte == 1 && r.transmit.headCopiesPerByte == 1)
        #expect(r.hookInstalled)
        #expect(r.block.frees == r.block.allocations && r.block.frees > r.block.requests / 2)
        #expect(r.hookChecksUnrelated == r.block.frees + r.slab.pagesReturned)
        #expect(r.hookChecks >= r.hookChecksUnrelated)
        #expect(r.lostPages == 0 && r.slab.objectsLost == 0 && r.livePagesAtEnd == 0)
    }

    @Test func withoutTheHookNoCheckIsCounted() throws {
        let r = try SharedSimulation.run(.bounce, buffers: .general, workload: workload(), configuration: Small.configuration)
        #expect(r.passed, "\(r.problem ?? "")")
        #expect(!r.hookInstalled && r.hookChecks == 0 && r.hookChecksUnrelated == 0)
    }

    @Test func badSlabParametersAreRefusedByName() {
        var w = SharedSimulation.Workload()
        w.slab.batch = 0
        #expect(throws: ParameterError.invalid(parameter: "slab-batch", reason: "0 must be in 1...1024")) { try w.validate() }
        w = SharedSimulation.Workload()
        w.slab.objectSizes = [4096]
        do { try w.validate(); Issue.record("4096-byte slab objects accepted") } catch { #expect(error.parameter == "slab-sizes") }
    }
}
