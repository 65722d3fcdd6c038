import DMAPools
import Testing
@testable import NetStack

/// Faults injected on purpose into running traffic: each is survived with
/// nothing lost and no DMA fault.
@Suite(.serialized) struct DesignFaultTests {
    func run(_ kind: any TransmitDesignKind, workload: Workload = Small.workload(seconds: 0.4),
             configuration: ExperimentConfiguration = Small.configuration, faults: FaultPlan) throws -> TransmitResult {
        let (guest, device, design) = try Experiment.prepare(kind, workload: workload, configuration: configuration)
        return try TransmitSimulation(guest: guest, design: design, device: device, workload: workload).run(faults: faults)
    }

    @Test(arguments: DesignRegistry.shared.designs.map(\.name))
    func theNICRemovedDuringTrafficLosesNothing(_ name: String) throws {
        let kind = try DesignRegistry.shared.design(named: name)
        let r = try run(kind, faults: FaultPlan(removeNICAfterBytes: 8 << 20))
        #expect(r.framesDiscardedDeviceGone > 0, "traffic after the removal is discarded, not mapped")
        #expect(r.payloadBytes > 0)
        // The campaign's rule (`txsim reliability`), removed-device rule included:
        // no DMA operation on the removed device, at most one refused request
        // for memory per socket, every byte written delivered or discarded.
        #expect(r.problem(judged: .faultInjected) == nil, "\(name): \(r.problem(judged: .faultInjected) ?? "")")
    }

    @Test func theRemovedDeviceRuleAllowsOneRefusedRequestPerSocketAndNoDMA() throws {
        var r = try run(.fragRefill, faults: FaultPlan(removeNICAfterBytes: 8 << 20))
        #expect(r.removedDeviceProblem == nil)
        r.staleDeviceAccesses = 0
        r.refusedDeviceAllocations = r.workload.flows
        #expect(r.removedDeviceProblem == nil, "one refused request per socket is the race the patch allows")
        r.refusedDeviceAllocations = r.workload.flows + 1
        #expect(r.removedDeviceProblem?.contains("more than one per socket") == true)
        #expect(r.problem(judged: .plain) != nil && !r.passed)
        r.refusedDeviceAllocations = 0
        r.staleDeviceAccesses = 1
        #expect(r.removedDeviceProblem?.contains("DMA operations on the removed device") == true)
        #expect(!r.passed)
    }

    @Test func fragRefillDropsItsCachedDeviceWhenAnyDeviceGoes() throws {
        let r = try run(.fragRefill, faults: FaultPlan(removeOtherDeviceAfterBytes: 8 << 20))
        #expect((r.designFigures[named: "cache invalidations"]?.count ?? 0) >= 1)
        #expect((r.designFigures[named: "devices learned"]?.count ?? 0) > r.workload.flows, "sockets learn their device again")
        #expect(r.passed, "\(r.firstProblem ?? "")")
    }

    @Test(arguments: ["frag-refill", "page-pool"])
    func aBlockDeviceKeepsItsSlotsWhileZeroCopyPagesFillTheBouncePool(_ name: String) throws {
        let kind = try DesignRegistry.shared.design(named: name)
        // Many flows and a long RTT: retransmit queues hold far more than the
        // bounce pool, so zero-copy pages reach the cap. A block device doing its
        // own mappings must keep succeeding in the slots the cap leaves.
        // The pool is the smallest a confidential VM gets (64 MiB): the 10% the
        // cap leaves must hold the NIC's own fallback bounces (up to a batch of
        // 64 frames x 64 KiB = 4 MiB per queue) and the block device's 1 MiB.
        // In-flight bytes are the smaller of the send buffers (64 MiB here) and
        // rate x RTT, so the RTT is long enough for even a debug build to fill them.
        var w = Small.workload(flows: 16, seconds: 0.8)
        w.roundTripMicroseconds = 200_000
        w.sendBufferBytes = 4 << 20
        w.verify = false
        try expectBlockDeviceKeepsItsSlots(kind, workload: w, swiotlbBytes: 64 << 20)
    }

    /// The same at sanitizer size, so that it runs under ThreadSanitizer too
    /// (`scripts/tsan.sh`), where the full-size test cannot fill its pool: a
    /// 16 MiB pool with a 50% cap (8 MiB of zero-copy pages), 16 KiB messages
    /// (a fallback batch of 64 frames is 1 MiB, which with the block device's
    /// 1 MiB fits easily in the 8 MiB the cap leaves), and the longest RTT a
    /// workload may have (1 s), so that in-flight bytes are rate x 1 s: the
    /// pool reaches the cap as long as the senders write 8 MiB/s (a
    /// ThreadSanitizer build on this 2-core machine, loaded, wrote 18 MiB/s).
    @Test(arguments: ["frag-refill", "page-pool"])
    func aBlockDeviceKeepsItsSlotsAtTheCapOfASanitizerSizedPool(_ name: String) throws {
        let kind = try DesignRegistry.shared.design(named: name)
        var w = Small.workload(flows: 16, message: 16 << 10, seconds: 2)
        w.roundTripMicroseconds = Workload.roundTripRange.upperBound
        w.sendBufferBytes = 4 << 20
        w.verify = false
        try expectBlockDeviceKeepsItsSlots(kind, workload: w, swiotlbBytes: 16 << 20, zeroCopyPercent: 50)
    }

    func expectBlockDeviceKeepsItsSlots(_ kind: any TransmitDesignKind, workload w: Workload, swiotlbBytes: Int,
                                        zeroCopyPercent: Int = 90) throws {
        var configuration = Small.configuration
        configuration.memory.swiotlbBytes = swiotlbBytes
        configuration.zeroCopyPercent = zeroCopyPercent
        let r = try run(kind, workload: w, configuration: configuration, faults: FaultPlan(blockDeviceTraffic: true))
        let peak = Double(r.swiotlbPeakSlots) / Double(r.swiotlbSlots)
        let cap = Double(zeroCopyPercent) / 100
        #expect(peak > cap - 0.05, "the zero-copy pages must actually fill the pool to the cap \(cap) (peak \(peak))")
        #expect((r.blockDevice?.mappings ?? 0) > 100)
        #expect(r.blockDevice?.failures == 0, "\(r.blockDevice?.firstFailure ?? "")")
        #expect(r.passed, "\(r.firstProblem ?? "")")
    }

    @Test func aFailingConversionFallsBackAndLosesNothing() throws {
        // Every 3rd modelled conversion fails: inline decryption requeues the frame
        // and tries again; nothing is lost and no byte is corrupt.
        var configuration = Small.configuration
        configuration.memory.hypercall = HypercallCostModel(perCallNanoseconds: 0, perPageNanoseconds: 0,
                                                            charge: .accountOnly, failEveryNthCall: 3)
        let r = try Experiment.run(.inlineDecrypt, workload: Small.workload(seconds: 0.3), configuration: configuration)
        #expect((r.designFigures[named: "conversion failures"]?.count ?? 0) > 0)
        #expect(r.requeues > 0)
        #expect(r.corruptBytes == 0 && r.dmaFaults == 0 && r.lostPages == 0)
        #expect(r.verifiedBytes == r.payloadBytes && r.payloadBytes > 0)
        #expect(r.framesRetransmitted == r.framesDropped, "every dropped frame is sent again")
        #expect(r.problem(judged: .fallbacksExpected) == nil, "\(r.problem(judged: .fallbacksExpected) ?? "")")
    }

    @Test func aDroppedFrameIsRetransmittedAndDelivered() throws {
        // One frame's first fragment fails to map 9 times in a row: the queue
        // drops it after 8 requeues, its socket sends it again, and it arrives.
        let guest = try Guest(Small.configuration.memory)
        let device = try guest.devices.add(name: "nic0")
        let design = FailingDesign(guest: guest, device: device, failuresOfOneFrame: TXQueue.maxRequeues + 1)
        let r = try TransmitSimulation(guest: guest, design: design, device: device, workload: Small.workload()).run()
        #expect(r.framesDropped == 1)
        #expect(r.framesRetransmitted == 1)
        #expect(r.framesGivenUp == 0)
        #expect(r.bytesWritten == r.payloadBytes && r.verifiedBytes == r.payloadBytes && r.payloadBytes > 0)
        #expect(r.problem(judged: .fallbacksExpected) == nil, "\(r.problem(judged: .fallbacksExpected) ?? "")")
        #expect(r.problem(judged: .plain) == "1 frames dropped", "a run without faults may drop nothing")
    }

    @Test func aFrameThatNeverMapsIsGivenUpAndFailsTheRun() throws {
        // Every map of one frame fails (9 tries per transmission, 16
        // transmissions): it is dropped and sent again `Socket.maxRetransmits`
        // times, then given up on: the bytes written were not delivered, and the
        // verdict says so.
        let guest = try Guest(Small.configuration.memory)
        let device = try guest.devices.add(name: "nic0")
        let tries = (TXQueue.maxRequeues + 1) * (Socket.maxRetransmits + 1)
        let design = FailingDesign(guest: guest, device: device, failuresOfOneFrame: tries)
        let r = try TransmitSimulation(guest: guest, design: design, device: device, workload: Small.workload()).run()
        #expect(r.framesGivenUp == 1)
        #expect(r.framesRetransmitted == Socket.maxRetransmits)
        #expect(r.framesDropped == Socket.maxRetransmits + 1)
        #expect(r.bytesWritten == r.payloadBytes + r.bytesGivenUp && r.bytesGivenUp > 0)
        #expect(r.problem(judged: .fallbacksExpected)?.contains("never delivered") == true)
        #expect(r.lostPages == 0)
    }
}

/// A design whose maps of one frame fail: the first fragment it is asked to map
/// (a page and offset) fails `failuresOfOneFrame` times; every other map works.
/// Maps run on the one queue's thread only.
final class FailingDesign: GuestDesign, @unchecked Sendable {
    override var name: String { "failing" }
    private var target: (Page, Int)?
    private var failuresLeft: Int

    init(guest: Guest, device: Device, failuresOfOneFrame: Int) {
        failuresLeft = failuresOfOneFrame
        super.init(guest: guest, device: device)
    }

    override func map(_ fragment: Fragment, socket: Socket, queue: TXQueue) throws(DMAError) -> FragmentMapping {
        if target == nil { target = (fragment.page, fragment.offset) }
        if failuresLeft > 0, let (page, offset) = target, page == fragment.page && offset == fragment.offset {
            failuresLeft -= 1
            throw .conversionFailed("planted failure")
        }
        return try mapThroughDMAAPI(fragment, queue: queue)
    }
}
