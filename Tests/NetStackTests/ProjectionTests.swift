import FoundationEssentials
import Testing
@testable import NetStack

/// The projection model's rules, on the illustrative profile (made-up costs):
/// no timing is asserted and no design runs.
@Suite struct ProjectionModelTests {
    let profile = CalibrationProfile.illustrative()

    func project(_ design: String, senders: Int, queues: Int, flows: Int? = nil, swiotlbMiB: Int = 64,
                 rtt: Int = 50, machine: MachineParameters = .init()) throws -> Projection {
        try ProjectionModel.project(design, at: ProjectionPoint(senders: senders, queues: queues, flows: flows ?? senders,
                                                                roundTripMicroseconds: rtt, swiotlbBytes: swiotlbMiB << 20),
                                    profile: profile, machine: machine)
    }

    @Test func copyTwoSlowsWhenTheBytesWaitingForItOutgrowTheCache() throws {
        let machine = MachineParameters(memoryBandwidthGBps: 10_000)
        // One queue binds, so every 4 MiB send buffer fills: 8 flows (32 MiB)
        // fit the illustrative 32 MiB cache, 64 flows (256 MiB) do not.
        let fits = try project("bounce", senders: 8, queues: 1, flows: 8, machine: machine)
        let spills = try project("bounce", senders: 8, queues: 1, flows: 64, machine: machine)
        #expect(fits.bound == .queueCPU && spills.bound == .queueCPU)
        #expect(abs(spills.queueSecondsPerGB - fits.queueSecondsPerGB - (1 - 32.0 / 256) * (0.03 + (0.12 - 0.03) / 2 - (0.03 / 8 + 0.05 * 7 / 8))) < 1e-9)
        #expect(spills.senderSecondsPerGB > fits.senderSecondsPerGB, "copy 1's source (64 x 2 MiB user buffers) is cold too")
    }

    @Test func copyOneIsChargedOnlyTheColdPagesBeyondTheCalibrationsOwn() throws {
        // Calibrated at the point's own workload (32 flows, 2 ms): the
        // socket pages its one sender held (about 18 MB at its rate) outgrow
        // an 8 MiB cache as much as the point's do, and that is inside the
        // calibrated cost, so nothing is added to it.
        var atWorkload = profile
        atWorkload.method.flows = 32
        atWorkload.method.roundTripMicroseconds = 2000
        let machine = MachineParameters(memoryBandwidthGBps: 10_000, lastLevelCacheBytes: 8 << 20)
        let point = ProjectionPoint(senders: 1, queues: 1, flows: 32, roundTripMicroseconds: 2000)
        let same = try ProjectionModel.project("decrypted-pool", at: point, profile: atWorkload, machine: machine)
        let d = try #require(profile.costs(of: "decrypted-pool"))
        let fpb = ProjectionModel.framesPerByte(messageBytes: 65536)
        #expect(abs(same.senderSecondsPerGB - (d.senderNsPerByte.value + d.senderNsPerFrame.value * fpb)) < 1e-9)
        // Calibrated with immediate ACKs (pages warm), the same point pays for them.
        var immediate = atWorkload
        immediate.method.roundTripMicroseconds = 0
        let warm = try ProjectionModel.project("decrypted-pool", at: point, profile: immediate, machine: machine)
        #expect(warm.senderSecondsPerGB > same.senderSecondsPerGB + 1e-6)
    }

    @Test func theLineRateCapsEveryDesign() throws {
        let machine = MachineParameters(memoryBandwidthGBps: 10_000, lineRateGbps: 200)
        let p = try project("decrypted-pool", senders: 64, queues: 8, machine: machine)
        #expect(abs(p.gbps - 200) < 1e-9)
        #expect(p.bound == .lineRate)
        for design in profile.designs.map(\.design) {
            #expect(try project(design, senders: 64, queues: 8, machine: machine).gbps <= 200 + 1e-9)
        }
    }

    @Test func bounceFlattensOnceItsQueueSaturatesWhileCopyOnceDesignsKeepScaling() throws {
        // A cache that holds everything: only the queue's saturation is at play.
        let machine = MachineParameters(memoryBandwidthGBps: 10_000, lastLevelCacheBytes: 1 << 40)
        let bounce = try [4, 8, 16, 64].map { try project("bounce", senders: $0, queues: 1, machine: machine) }
        #expect(bounce.dropFirst().allSatisfy { $0.bound == .queueCPU })
        // Flat once the queue binds: only copy 2's share of other cores' bytes
        // still grows (7/8 -> 63/64).
        #expect(bounce[3].gbps <= bounce[1].gbps && bounce[3].gbps > 0.97 * bounce[1].gbps, "flat once the queue binds")
        let pool = try [4, 8, 16].map { try project("decrypted-pool", senders: $0, queues: 1, machine: machine) }
        #expect(pool[1].gbps > pool[0].gbps && pool[2].gbps > pool[1].gbps || pool[2].bound == .queueCPU)
        #expect(pool[2].gbps > 3 * bounce[3].gbps)
        // One queue per sender: bounce scales again.
        #expect(try project("bounce", senders: 16, queues: 16, machine: machine).gbps > 4 * bounce[3].gbps)
    }

    @Test func copyTwoReadsAnotherCoresBytesWhenSendersShareAQueue() throws {
        let machine = MachineParameters(memoryBandwidthGBps: 10_000, lastLevelCacheBytes: 1 << 40)
        let alone = try project("bounce", senders: 1, queues: 1, machine: machine)
        let shared = try project("bounce", senders: 4, queues: 1, machine: machine)
        // 4 senders per queue: 3/4 of copy 2 at the other-core cost.
        let extra = 0.75 * (0.05 - 0.03)
        #expect(abs(shared.queueSecondsPerGB - alone.queueSecondsPerGB - extra) < 1e-9)
    }

    @Test func sharingAQueueCostsWhatTheCalibrationMeasuredInProportionToTheFramesAnotherCPUBuilt() throws {
        // page-pool bounces nothing: the calibrated costs apply whole.
        var shared = profile
        let index = shared.designs.firstIndex { $0.design == "page-pool" }!
        shared.designs[index].sharedQueueSenderNsPerFrame = .given(300, "test")
        shared.designs[index].sharedQueueQueueNsPerFrame = .given(200, "test")
        let machine = MachineParameters(memoryBandwidthGBps: 10_000, lastLevelCacheBytes: 1 << 40)
        func pool(_ senders: Int, _ queues: Int, _ p: CalibrationProfile) throws -> Projection {
            try ProjectionModel.project("page-pool", at: ProjectionPoint(senders: senders, queues: queues, flows: senders),
                                        profile: p, machine: machine)
        }
        let fpb = ProjectionModel.framesPerByte(messageBytes: 65536)
        // 2 senders on 1 queue: the calibrated point (half the frames from the other CPU).
        #expect(abs(try pool(2, 1, shared).senderSecondsPerGB - pool(2, 1, profile).senderSecondsPerGB - 300 * fpb) < 1e-9)
        #expect(abs(try pool(2, 1, shared).queueSecondsPerGB - pool(2, 1, profile).queueSecondsPerGB - 200 * fpb) < 1e-9)
        // 8 senders on 1 queue: 7/8 of the frames, (7/8) / (1/2) of the cost.
        #expect(abs(try pool(8, 1, shared).queueSecondsPerGB - pool(8, 1, profile).queueSecondsPerGB - 1.75 * 200 * fpb) < 1e-9)
        // A queue each, or one sender: nothing is shared.
        #expect(try pool(2, 2, shared).senderSecondsPerGB == pool(2, 2, profile).senderSecondsPerGB)
        #expect(try pool(1, 1, shared).queueSecondsPerGB == pool(1, 1, profile).queueSecondsPerGB)
    }

    @Test func aBouncedDesignsSharedQueueCostLeavesOutWhatCopyTwosLocalityPricesAlready() throws {
        var shared = profile
        let index = shared.designs.firstIndex { $0.design == "bounce" }!
        shared.designs[index].sharedQueueQueueNsPerFrame = .given(5000, "test")
        let machine = MachineParameters(memoryBandwidthGBps: 10_000, lastLevelCacheBytes: 1 << 40)
        func bounce(_ p: CalibrationProfile) throws -> Projection {
            try ProjectionModel.project("bounce", at: ProjectionPoint(senders: 2, queues: 1, flows: 2), profile: p, machine: machine)
        }
        // Half of copy 2 from the other core, at 0.05 against 0.03 ns/byte
        // (the illustrative hot-destination copies): 0.01 ns/byte of the
        // calibrated 5000 ns per frame was copy 2's.
        let fpb = ProjectionModel.framesPerByte(messageBytes: 65536)
        let expected = 5000 * fpb - 0.5 * (0.05 - 0.03)
        #expect(abs(try bounce(shared).queueSecondsPerGB - bounce(profile).queueSecondsPerGB - expected) < 1e-9)
    }

    @Test func copyTwoIsPricedInItsOwnShapeWhenTheProfileHasIt() throws {
        // Copies into bounce slots: 0.09 ns/byte from this core, 0.10 from the other.
        var shaped = profile
        shaped.machineCosts.copyToBounceSameCoreNsPerByte = .given(0.09, "test")
        shaped.machineCosts.copyToBounceOtherCoreNsPerByte = .given(0.10, "test")
        let machine = MachineParameters(memoryBandwidthGBps: 10_000, lastLevelCacheBytes: 1 << 40)
        func bounce(_ senders: Int) throws -> Projection {
            try ProjectionModel.project("bounce", at: ProjectionPoint(senders: senders, queues: 1, flows: senders),
                                        profile: shaped, machine: machine)
        }
        // 4 senders per queue: 3/4 of copy 2 at the other core's bounce-slot cost,
        // not the hot-destination copies' (0.05 - 0.03).
        #expect(abs(try bounce(4).queueSecondsPerGB - bounce(1).queueSecondsPerGB - 0.75 * (0.10 - 0.09)) < 1e-9)
        // A cold source makes both sides cold: the cold copy's cost.
        #expect(abs(ProjectionModel.copyTwoCost(shaped.machineCosts, otherCore: 0.5, cold: 1) - 0.12) < 1e-12)
    }

    @Test func zeroCopyFractionFallsWhenFlowsTimesSendBuffersOutgrowThePool() throws {
        let machine = MachineParameters(memoryBandwidthGBps: 10_000, lineRateGbps: 200)
        // Line-rate bound: senders outrun the NIC and every 4 MiB send buffer fills.
        let few = try project("page-pool", senders: 64, queues: 8, flows: 8, machine: machine)
        #expect(few.zeroCopyFraction == 1)
        #expect(abs(few.copiesPerByte - 1) < 1e-9)
        let many = try project("page-pool", senders: 64, queues: 8, flows: 256, machine: machine)
        #expect(many.zeroCopyFraction < 0.1)
        #expect(many.copiesPerByte > 1.9)
        let capacity = 64.0 * 1048576 * 0.9
        #expect(abs(many.zeroCopyFraction - capacity / (256 * 4 * 1048576)) < 1e-3)
        // A bigger pool holds more flows.
        let big = try project("page-pool", senders: 64, queues: 8, flows: 256, swiotlbMiB: 1024, machine: machine)
        #expect(big.zeroCopyFraction > many.zeroCopyFraction)
        // The uncapped pre-decrypted pool never falls back.
        #expect(try project("decrypted-pool", senders: 64, queues: 8, flows: 1024, machine: machine).zeroCopyFraction == 1)
        // bounce never has zero-copy pages.
        #expect(try project("bounce", senders: 64, queues: 8, flows: 8, machine: machine).zeroCopyFraction == 0)
    }

    @Test func theBouncePoolIsNamedWhenItsCapacityIsWhatBinds() throws {
        let machine = MachineParameters(memoryBandwidthGBps: 10_000, lineRateGbps: 400)
        let p = try project("page-pool", senders: 64, queues: 1, flows: 512, machine: machine)
        #expect(p.zeroCopyFraction < 0.1)
        #expect(p.bound == .bouncePool)
    }

    @Test func theSendWindowBindsAtLongRoundTrips() throws {
        let machine = MachineParameters(memoryBandwidthGBps: 10_000)
        let p = try project("decrypted-pool", senders: 8, queues: 8, flows: 8, rtt: 1_000_000, machine: machine)
        #expect(p.bound == .sendWindow)
        #expect(abs(p.gbps - 8.0 * 4 * 1048576 / 1e9 * 8) < 1e-6)   // 8 flows x 4 MiB per second
    }

    @Test func theProfileRoundTripsThroughJSON() throws {
        let data = try JSONEncoder().encode(profile)
        let back = try JSONDecoder().decode(CalibrationProfile.self, from: data)
        #expect(back == profile)
        let text = String(decoding: data, as: UTF8.self)
        for key in ["\"machine_costs\"", "\"sender_ns_per_byte\"", "\"copy_other_core_ns_per_byte\"", "\"page_source\":\"swiotlb-capped\""] {
            #expect(text.contains(key), "\(key) in \(text.prefix(200))")
        }
        #expect(profile.givenCosts.count == profile.machineCosts.all.count + profile.designs.count * 9)
        #expect(profile.calibratedCount == 0)
    }

    @Test func badInputNamesTheOptionAndItsRange() throws {
        #expect(throws: ParameterError.invalid(parameter: "senders", reason: "0 must be in 1...64")) {
            try project("bounce", senders: 0, queues: 1, flows: 1)
        }
        #expect(throws: ParameterError.invalid(parameter: "cpu-share", reason: "2.0 must be in (0, 1]")) {
            try project("bounce", senders: 1, queues: 1, machine: MachineParameters(cpuShare: 2))
        }
        #expect(throws: ParameterError.invalid(parameter: "zerocopy-percent", reason: "95 must be in 1...90 (90 is the patch's maximum)")) {
            try ProjectionModel.project("bounce", at: ProjectionPoint(senders: 1, queues: 1, flows: 1, zeroCopyPercent: 95), profile: profile)
        }
        do {
            _ = try project("mine", senders: 1, queues: 1)
            Issue.record("an unknown design was projected")
        } catch let error as ParameterError {
            #expect(error.parameter == "designs")
            #expect(error.description.contains("mine is not in the profile"))
        }
        var broken = profile
        broken.designs[0].zeroCopyFraction.value = 2
        #expect(throws: ParameterError.self) { try broken.check() }
    }

    @Test func sendersPerQueueFollowsTheFlowMapping() {
        #expect(ProjectionModel.sendersPerQueue(senders: 2, queues: 1, flows: 2) == 2)
        #expect(ProjectionModel.sendersPerQueue(senders: 2, queues: 2, flows: 2) == 1)
        #expect(ProjectionModel.sendersPerQueue(senders: 64, queues: 8, flows: 64) == 8)
        #expect(ProjectionModel.sendersPerQueue(senders: 1, queues: 2, flows: 2) == 1)
    }

    @Test func perByteAndPerFrameCostsAreSolvedFromTwoMessageSizes() {
        // cost/byte = 0.1 + 3000 x frames/byte at both sizes, exactly.
        func run(_ messageBytes: Int) -> TransmitResult {
            let fpb = ProjectionModel.framesPerByte(messageBytes: messageBytes)
            let perByte = 0.1 + 3000 * fpb
            return TransmitResult(design: "x", workload: Workload(), seconds: 1, payloadBytes: 1_000_000_000,
                                  bytesCopiedBySender: 1_000_000_000, bytesCopiedByDMALayer: 0, bytesMappedDirect: 1, bytesMappedBounced: 0,
                                  bytesConvertedInPlace: 0, senderCPUSeconds: perByte, queueCPUSeconds: perByte / 2,
                                  swiotlbSlots: 0, swiotlbPeakSlots: 0, conversionCalls: 0, conversionModelledSeconds: 0,
                                  dmaFaults: 0, verifiedBytes: 0, corruptBytes: 0, framesDropped: 0, requeues: 0, lostPages: 0,
                                  refillFailures: 0, firstProblem: nil, designFigures: [])
        }
        let costs = Calibration.costs("x", runs: [[run(65536), run(16384)]], sizes: [65536, 16384])
        #expect(abs(costs.senderNsPerByte.value - 0.1) < 1e-9)
        #expect(abs(costs.senderNsPerFrame.value - 3000) < 1e-6)
        #expect(abs(costs.queueNsPerFrame.value - 1500) < 1e-6)
        #expect(costs.pageSource == .uncapped)
    }

    @Test func theSharedQueueCostIsTheDifferenceOfTwoConcurrentRunsLessTheSendersWaits() {
        func run(sender: Double, queue: Double, idle: Double = 0) -> TransmitResult {
            var r = TransmitResult(design: "x", workload: Workload(), seconds: 1, payloadBytes: 1_000_000_000,
                                   bytesCopiedBySender: 1_000_000_000, bytesCopiedByDMALayer: 0, bytesMappedDirect: 1, bytesMappedBounced: 0,
                                   bytesConvertedInPlace: 0, senderCPUSeconds: sender, queueCPUSeconds: queue,
                                   swiotlbSlots: 0, swiotlbPeakSlots: 0, conversionCalls: 0, conversionModelledSeconds: 0,
                                   dmaFaults: 0, verifiedBytes: 0, corruptBytes: 0, framesDropped: 0, requeues: 0, lostPages: 0,
                                   refillFailures: 0, firstProblem: nil, designFigures: [])
            r.senderIdleSeconds = idle
            return r
        }
        // One sender: 0.04 s/GB; two on a queue each: 0.05 (work per CPU
        // second 0.8); two on one queue: the queue 0.01 s/GB more, the
        // senders 0.02 more, all of it and 0.01 besides spent yielding (0.03
        // idle), so the senders' work is 0.01 less (the model takes a
        // negative cost as none).
        let shared = Calibration.sharedQueueCosts(single: [run(sender: 0.03, queue: 0.01)], ownQueues: [run(sender: 0.04, queue: 0.01)],
                                                  sharedQueue: [run(sender: 0.06, queue: 0.02, idle: 0.03)], messageBytes: 65536)
        let fpb = ProjectionModel.framesPerByte(messageBytes: 65536)
        #expect(abs(shared.sender.value - (0.03 - 0.04) * 0.8 / fpb) < 1e-6)
        #expect(abs(shared.queue.value - 0.01 * 0.8 / fpb) < 1e-6)
    }

    /// The two-sender runs (a queue each, and sharing one) keep the
    /// calibration's flows in all, not twice them (the model prices the
    /// working set from the flows itself), and differ only in their queues;
    /// on one queue both senders' frames go through it.
    @Test func theTwoSenderRunsKeepTheCalibrationsWorkingSet() throws {
        for calibrationFlows in [1, 2, 3, 32, Workload.maximumFlows] {
            let own = try Calibration.twoSenderWorkload(messageBytes: 65536, seconds: 0.1, flows: calibrationFlows)
            let shared = try Calibration.twoSenderWorkload(messageBytes: 65536, seconds: 0.1, flows: calibrationFlows, queues: 1)
            #expect(own.flows == min(max(2, calibrationFlows), Workload.maximumFlows))
            #expect(own.flows == Calibration.twoSenderFlows(calibrationFlows: calibrationFlows))
            #expect(own.senders == 2 && shared.senders == 2 && own.flows == shared.flows && own.queues == 2 && shared.queues == 1)
            #expect(ProjectionModel.sendersPerQueue(senders: 2, queues: 1, flows: shared.flows) == 2)
        }
    }
}
