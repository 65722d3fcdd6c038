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
        #expect(r.dmaFaults == 0)
        #expect(r.corruptBytes == 0)
        #expect(r.lostPages == 0, "\(kind): pages must come home after the device is gone")
        #expect(r.payloadBytes > 0)
        if kind is FragRefillDesignKind {
            // The serial is a cache hint: a refill that read it just before the
            // removal may try the removed device once per socket (the patch holds
            // a device reference for exactly this); never more.
            #expect(r.staleDeviceAccesses <= r.workload.flows)
        } else {
            #expect(r.staleDeviceAccesses == 0, "\(kind) touched the removed device")
        }
    }

    @Test func fragRefillDropsItsCachedDeviceWhenAnyDeviceGoes() throws {
        let r = try run(.fragRefill, faults: FaultPlan(removeOtherDeviceAfterBytes: 8 << 20))
        let figures = Dictionary(uniqueKeysWithValues: r.designFigures)
        #expect((Int(figures["cache invalidations"] ?? "") ?? 0) >= 1)
        #expect((Int(figures["devices learned"] ?? "") ?? 0) > r.workload.flows, "sockets learn their device again")
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
        var configuration = Small.configuration
        configuration.memory.swiotlbBytes = 64 << 20
        let r = try run(kind, workload: w, configuration: configuration, faults: FaultPlan(blockDeviceTraffic: true))
        let peak = Double(r.swiotlbPeakSlots) / Double(r.swiotlbSlots)
        #expect(peak > 0.85, "the zero-copy pages must actually fill the pool (peak \(peak))")
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
        let figures = Dictionary(uniqueKeysWithValues: r.designFigures)
        #expect((Int(figures["conversion failures"] ?? "") ?? 0) > 0)
        #expect(r.requeues > 0)
        #expect(r.corruptBytes == 0 && r.dmaFaults == 0 && r.lostPages == 0)
        #expect(r.verifiedBytes == r.payloadBytes && r.payloadBytes > 0)
    }
}
