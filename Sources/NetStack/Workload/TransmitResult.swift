import DMAPools

/// What one design did on one workload: every figure counted during the run.
public struct TransmitResult: Sendable {
    public var design: String
    public var workload: Workload
    /// The guest the design ran on (memory, swiotlb, cap, hypercall model).
    public var guestDescription: String = ""
    /// Wall-clock seconds from the first send to the last acknowledgement.
    public var seconds: Double
    /// Payload bytes the NIC consumed: the bytes delivered.
    public var payloadBytes: Int
    /// Payload bytes the senders wrote (`sendmsg` accepted). At the end of a run
    /// every one is delivered, discarded because the NIC was removed, or
    /// abandoned (a failure): `bytesWritten == payloadBytes + bytesDiscardedDeviceGone`.
    public var bytesWritten: Int = 0
    /// Throughput of each round, when the result aggregates interleaved rounds.
    public var roundGbps: [Double] = []
    /// Payload Gbps: the median round when there were rounds, else bytes over time.
    public var gbps: Double {
        if !roundGbps.isEmpty {
            let sorted = roundGbps.sorted()
            let mid = sorted.count / 2
            return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
        }
        return seconds > 0 ? Double(payloadBytes) * 8 / seconds / 1e9 : 0
    }
    /// Frames the TX queues transmitted and the completion batches they took
    /// them in (a queue run takes one to `TXQueue.quota` batches of at most
    /// `TXQueue.budget` frames each).
    public var queueFrames: Int = 0
    public var queueBatches: Int = 0
    /// Frames per completion batch of each round (see `roundGbps`).
    public var roundFramesPerBatch: [Double] = []
    /// Frames per completion batch: how much of a backlog the CPU holding a
    /// queue found. About 1 when each sender transmits its own frame as it
    /// enqueues it; near `TXQueue.budget` when one CPU drains what every
    /// sender queued. The median round when there were rounds.
    public var framesPerBatch: Double {
        if !roundFramesPerBatch.isEmpty { return Spread(roundFramesPerBatch)?.median ?? 0 }
        return queueBatches > 0 ? Double(queueFrames) / Double(queueBatches) : 0
    }
    /// The smallest and largest round's frames per batch.
    public var framesPerBatchRange: ClosedRange<Double> {
        guard let low = roundFramesPerBatch.min(), let high = roundFramesPerBatch.max() else { return framesPerBatch...framesPerBatch }
        return low...high
    }
    /// The machine's hand-off cost (`MachineCopyRate.handoffNanosecondsPerByte`)
    /// measured just before and just after each run this result adds up,
    /// outside the timed window (`Experiment.comparison` measures it; empty
    /// for a lone run).
    public var handoffSamples: [Double] = []
    /// Each run's frames per queue batch and Gbps, in the order of
    /// `handoffSamples` (two samples per run), when `Experiment.comparison`
    /// probed them: a round of the baseline has several runs, and each can
    /// fall in its own regime and at its own distance.
    public var runFramesPerBatch: [Double] = []
    public var runGbps: [Double] = []
    /// Per run, the distance both probes around it read (nil: they disagreed).
    public var runDistances: [CPUDistance?] {
        stride(from: 0, to: handoffSamples.count - 1, by: 2).map { j in
            let d = [handoffSamples[j], handoffSamples[j + 1]].map { CPUDistance(handoffNanosecondsPerByte: $0) }
            return d[0] == d[1] ? d[0] : nil
        }
    }
    /// The hand-off cost of each round (the median of its runs' samples).
    public var roundHandoff: [Double] = []
    /// The median round's hand-off cost in ns per byte (0: not measured): the
    /// machine's state when the design ran, which on this VM moves with
    /// where the host places the two vCPUs (Design/netstack.md).
    public var handoffNanosecondsPerByte: Double {
        Spread(roundHandoff.isEmpty ? handoffSamples : roundHandoff)?.median ?? 0
    }
    /// Copy 1 split by where its destination was last bounced, when the run
    /// timed it (`--copy-timing`); nil otherwise.
    public var copyTiming: CopyTimingFigures?
    /// The slowest and fastest round (equal to `gbps` for a single run).
    public var gbpsRange: ClosedRange<Double> {
        guard let low = roundGbps.min(), let high = roundGbps.max() else { return gbps...gbps }
        return low...high
    }
    /// Bytes copied by the CPU, by site (each counted where the copy happens).
    public var bytesCopiedBySender: Int      // copy 1: user -> socket page
    public var bytesCopiedByDMALayer: Int    // copy 2: swiotlb bounces (map and sync)
    public var bytesCopied: Int { bytesCopiedBySender + bytesCopiedByDMALayer }
    public var copiesPerByte: Double { payloadBytes > 0 ? Double(bytesCopied) / Double(payloadBytes) : 0 }
    /// Payload bytes mapped without a bounce copy, over all payload bytes mapped.
    public var bytesMappedDirect: Int
    public var bytesMappedBounced: Int
    public var bytesConvertedInPlace: Int
    public var zeroCopyFraction: Double {
        let total = bytesMappedDirect + bytesMappedBounced + bytesConvertedInPlace
        return total > 0 ? Double(bytesMappedDirect + bytesConvertedInPlace) / Double(total) : 0
    }
    /// CPU time by role, in seconds.
    public var senderCPUSeconds: Double
    public var queueCPUSeconds: Double
    public var senderCPUSecondsPerGB: Double { payloadBytes > 0 ? senderCPUSeconds / (Double(payloadBytes) / 1e9) : 0 }
    public var queueCPUSecondsPerGB: Double { payloadBytes > 0 ? queueCPUSeconds / (Double(payloadBytes) / 1e9) : 0 }
    /// swiotlb slots: total and the high-water mark during the run.
    public var swiotlbSlots: Int
    public var swiotlbPeakSlots: Int
    /// Modelled conversion hypercalls: calls and the time they stand for.
    public var conversionCalls: Int
    public var conversionModelledSeconds: Double
    public var dmaFaults: Int
    public var verifiedBytes: Int
    public var corruptBytes: Int
    public var framesDropped: Int
    public var requeues: Int
    /// Pages not back with their owner after teardown (must be 0).
    public var lostPages: Int
    /// Socket refills that found no page at any order.
    public var refillFailures: Int
    /// The first problem seen, if any.
    public var firstProblem: String?
    /// Design-specific figures (pool counters, fallbacks, hook checks...),
    /// typed: a name, a unit, a counter or a label.
    public var designFigures: [DesignFigure]
    /// Frames sent again by their socket after a TX queue dropped them, and
    /// frames (and bytes) the sockets gave up on after `Socket.maxRetransmits`
    /// (must be 0).
    public var framesRetransmitted: Int = 0
    public var framesGivenUp: Int = 0
    public var bytesGivenUp: Int = 0
    /// Unmaps that failed (must be 0).
    public var unmapFailures: Int = 0
    /// Frames (and bytes) discarded because the NIC was removed (fault runs only).
    public var framesDiscardedDeviceGone: Int = 0
    public var bytesDiscardedDeviceGone: Int = 0
    /// Frames still queued at the drain limit (`Workload.drainLimitSeconds`
    /// after the duration), abandoned rather than drained, and their bytes:
    /// not payload, never on the wire; their pages came home.
    public var framesAbandoned: Int = 0
    public var bytesAbandoned: Int = 0
    /// The `zerocopy_tx_percent` this design's guest ran with (0: the design
    /// takes no zero-copy runs from swiotlb, so the cap does not apply).
    public var zeroCopyPercent: Int = 0
    /// DMA operations (map, unmap, sync) on the NIC's device after its removal (must be 0).
    public var staleDeviceAccesses: Int = 0
    /// Requests for new memory for the NIC's device after its removal, refused
    /// before they reached it: at most one per socket (`removedDeviceRule`).
    public var refusedDeviceAllocations: Int = 0
    /// Connections closed and their sockets freed during the run (`--connection-bytes`).
    public var connectionsClosed: Int = 0
    /// Transmit sections preempted by another task of their CPU: modelled
    /// PREEMPT_RT events (`RTScheduling`), not a cost spent.
    public var preemptions: Int = 0
    /// Transmit sections that set the seed patch's per-CPU
    /// `current_tx_socket` (0 for a design that does not use it).
    public var currentTXSocketSets: Int = 0
    /// Learnings through `current_tx_socket` that went to another live socket
    /// than the one whose frame was mapped (socket A learned through socket
    /// B's map).
    public var misattributedLearnings: Int = 0
    /// Reads of `current_tx_socket` that found a socket freed since it was
    /// stored: a use after free in the kernel (a failure of the design).
    public var socketUseAfterFree: Int = 0
    /// Maps whose `current_tx_socket` read found NULL: their socket learned nothing.
    public var missedLearnings: Int = 0
    /// Seconds spent setting the run up before the clock started (booting the
    /// guest, the design kind's factory: pools, a provider's region), summed
    /// over rounds. Not part of `seconds` or Gbps.
    public var setupSeconds: Double = 0
    /// The block device's mappings, when it ran (fault runs only).
    public var blockDevice: BlockDeviceStatistics?
    /// Pages the modelled conversions changed (both ways).
    public var conversionPages: Int = 0
    /// Whether the modelled conversion time was spun on the calling thread
    /// (`--hypercall-charge spin`), so that it is inside the CPU and wall
    /// figures, or only counted (`account-only`).
    public var modelledTimeSpun: Bool = true
    /// Minor and major page faults of the whole process in the timed window
    /// (first send to last acknowledgement): first touches of memory a real
    /// guest would have resident show up here.
    public var timedWindowPageFaults: Int = 0
    /// The platform the design ran on (`Guest.Platform.name`: coco, iommu).
    public var platform: String = "coco"
    /// What the IOMMU did in the timed window (all zero off `--platform iommu`).
    public var iommu = IOMMUStatistics()
    /// Whether the modelled IOMMU time was spun (`--iommu-charge spin`).
    public var iommuTimeSpun: Bool = true
    /// Modelled IOMMU seconds in the timed window.
    public var iommuModelledSeconds: Double { Double(iommu.modelledNanoseconds) / 1e9 }
    /// Modelled IOMMU time as a share of the CPU time the run's threads used
    /// (0 when only accounted).
    public var iommuModelledShareOfCPU: Double {
        let cpu = senderCPUSeconds + queueCPUSeconds
        guard iommuTimeSpun, cpu > 0 else { return 0 }
        return min(1, iommuModelledSeconds / cpu)
    }
    /// `count` per 10^9 payload bytes.
    public func perGB(_ count: Double) -> Double { payloadBytes > 0 ? count / (Double(payloadBytes) / 1e9) : 0 }
    /// CPU time the hypervisor took from this machine's vCPUs during the
    /// timed window (steal, all CPUs), in seconds: a round that stalls while
    /// its neighbours do not shows it here.
    public var stolenCPUSeconds: Double = 0
    /// Of `senderCPUSeconds`, the time senders spent waiting: the wall time
    /// of sending-loop iterations that found no acknowledgement, nothing to
    /// send or retransmit and no queue work, and yielded the CPU (round trips
    /// under 200 µs; a kernel sender would sleep, and this model's longer
    /// waits do). Wall time, so a yield that switched to another thread
    /// counts that thread's run too; at most `senderCPUSeconds`. The
    /// calibration takes it out of the shared-queue cost.
    public var senderIdleSeconds: Double = 0
    /// CPU time other processes of this machine took during the timed
    /// window (all CPUs' busy time in /proc/stat less this process's CPU
    /// time; clock-tick resolution), in seconds.
    public var othersCPUSeconds: Double = 0
    /// Linear heads (`Workload.headerBytes`; all 0 without heads). Header
    /// bytes the NIC read and checked, those that reached it through a bounce
    /// (a `kmalloc`'d head copied into a swiotlb slot at map: counted here, not
    /// in `bytesCopiedByDMALayer`, which stays the payload's) or directly (a
    /// pre-decrypted slab object).
    public var headBytes: Int = 0
    public var headVerifiedBytes: Int = 0
    public var headBytesBounced: Int = 0
    public var headBytesDirect: Int = 0
    /// Heads the senders could not allocate (must be 0), head objects still
    /// live in the head cache after teardown (must be 0), and the most slab
    /// pages the head cache held at once.
    public var headAllocationFailures: Int = 0
    public var headObjectsLost: Int = 0
    public var headSlabPeakPages: Int = 0
    /// Copies of each header byte on its way to the device (1 for a bounced
    /// head, 0 for a pre-decrypted one; the headers are written in place, not copied).
    public var headCopiesPerByte: Double { headBytes > 0 ? Double(headBytesBounced) / Double(headBytes) : 0 }

    // Paired figures, set by `Experiment.comparison` (empty for a single run).

    /// The design every ratio is taken against, and this design's Gbps divided
    /// by the baseline's in the same round, one per round.
    public var baselineDesign: String?
    public var roundRatios: [Double] = []
    /// The ratio to the baseline: median over rounds, with its spread.
    public var ratioSpread: Spread? { Spread(roundRatios) }
    /// Per round, how far apart the CPUs were for this design's run and the
    /// baseline's runs next to it (nil: not measured, or the host moved the
    /// vCPUs during them).
    public var roundDistances: [CPUDistance?] = []
    /// The ratio to the baseline over the rounds whose runs all found the
    /// CPUs at `distance`; nil when no round did.
    public func ratioSpread(at distance: CPUDistance) -> Spread? {
        Spread(zip(roundRatios, roundDistances).filter { $0.1 == distance }.map(\.0))
    }
    /// The median Gbps over the rounds at `distance`; nil when no round was.
    public func gbpsSpread(at distance: CPUDistance) -> Spread? {
        Spread(zip(roundGbps, roundDistances).filter { $0.1 == distance }.map(\.0))
    }
    /// The baseline's CPU seconds per GB (all roles) over this design's, one
    /// per round: how many times less CPU this design spends per byte.
    public var roundCPURatios: [Double] = []
    public var cpuRatioSpread: Spread? { Spread(roundCPURatios) }
    /// Per round, the conversion cost at which this design would match the
    /// baseline's throughput (only for designs that convert).
    public var roundBreakEven: [BreakEven] = []
    /// The median over rounds of the break-even costs (0: no budget).
    public var breakEven: BreakEven? {
        guard !roundBreakEven.isEmpty else { return nil }
        func median(_ f: (BreakEven) -> Double) -> Double { Spread(roundBreakEven.map(f))?.median ?? 0 }
        return BreakEven(budgetSecondsPerGB: median(\.budgetSecondsPerGB), perCallNanoseconds: median(\.perCallNanoseconds),
                         perPageNanoseconds: median(\.perPageNanoseconds), scaleOfModelledCost: median(\.scaleOfModelledCost))
    }
    /// The machine's copy rate measured in the same invocation (GB/s).
    public var copyRate: MachineCopyRate?

    /// Modelled conversion time as a share of the CPU time the run's threads
    /// used (0 when the time was only accounted, not spun: then it is in no
    /// measured figure).
    public var modelledShareOfCPU: Double {
        let cpu = senderCPUSeconds + queueCPUSeconds
        guard modelledTimeSpun, cpu > 0 else { return 0 }
        return min(1, conversionModelledSeconds / cpu)
    }

    /// CPU seconds per GB of a role expressed as copies of every payload byte
    /// at the machine's one-thread copy rate (seconds per GB times GB/s).
    public func copyEquivalents(cpuSecondsPerGB: Double) -> Double? {
        guard let rate = copyRate?.oneThreadGigabytesPerSecond, rate > 0 else { return nil }
        return cpuSecondsPerGB * rate
    }

    /// How each figure adds up over rounds: the one list `aggregate` is made
    /// from. Counters, bytes and seconds are summed, peaks are maxima, the
    /// first problem is kept, and design figures add figure by figure.
    static var aggregatedFields: [FieldRule<TransmitResult>] {
        [.sum(\.seconds), .sum(\.setupSeconds), .sum(\.payloadBytes), .sum(\.bytesWritten),
         .sum(\.bytesCopiedBySender), .sum(\.bytesCopiedByDMALayer),
         .sum(\.bytesMappedDirect), .sum(\.bytesMappedBounced), .sum(\.bytesConvertedInPlace),
         .sum(\.senderCPUSeconds), .sum(\.queueCPUSeconds), .sum(\.queueFrames), .sum(\.queueBatches),
         .combining(\.copyTiming, CopyTimingFigures.sum), .combining(\.handoffSamples) { $0 + $1 },
         .combining(\.runFramesPerBatch) { $0 + $1 }, .combining(\.runGbps) { $0 + $1 }, .maximum(\.swiotlbPeakSlots),
         .sum(\.conversionCalls), .sum(\.conversionModelledSeconds), .sum(\.conversionPages),
         .sum(\.dmaFaults), .sum(\.verifiedBytes), .sum(\.corruptBytes), .sum(\.framesDropped), .sum(\.requeues),
         .sum(\.lostPages), .sum(\.refillFailures),
         .sum(\.framesRetransmitted), .sum(\.framesGivenUp), .sum(\.bytesGivenUp), .sum(\.unmapFailures),
         .sum(\.framesDiscardedDeviceGone), .sum(\.bytesDiscardedDeviceGone), .sum(\.framesAbandoned), .sum(\.bytesAbandoned),
         .sum(\.staleDeviceAccesses), .sum(\.refusedDeviceAllocations),
         .sum(\.connectionsClosed), .sum(\.preemptions), .sum(\.currentTXSocketSets),
         .sum(\.misattributedLearnings), .sum(\.socketUseAfterFree), .sum(\.missedLearnings),
         .sum(\.timedWindowPageFaults), .sum(\.stolenCPUSeconds), .sum(\.senderIdleSeconds), .sum(\.othersCPUSeconds),
         .sum(\.headBytes), .sum(\.headVerifiedBytes), .sum(\.headBytesBounced), .sum(\.headBytesDirect),
         .sum(\.headAllocationFailures), .sum(\.headObjectsLost), .maximum(\.headSlabPeakPages),
         .combining(\.iommu) { $0 + $1 },
         .first(\.firstProblem),
         .combining(\.designFigures) { zip($0, $1).map(+) }]
    }

    /// What `aggregate` keeps from the first round: what describes the run
    /// rather than counts it (the design, its workload and guest), and the
    /// paired figures `Experiment.comparison` sets afterwards. With
    /// `aggregatedFields` it names every stored field (checked by a test).
    static var firstRoundFields: [PartialKeyPath<TransmitResult>] {
        [\.design, \.workload, \.guestDescription, \.roundGbps, \.roundFramesPerBatch, \.roundHandoff, \.swiotlbSlots, \.zeroCopyPercent, \.blockDevice,
         \.modelledTimeSpun, \.platform, \.iommuTimeSpun, \.baselineDesign, \.roundRatios, \.roundDistances, \.roundCPURatios, \.roundBreakEven, \.copyRate]
    }

    /// Adds up rounds of one design by `aggregatedFields`: counters are
    /// summed, peaks are maxima, and each round's throughput is kept so the
    /// median and the spread can be shown.
    public static func aggregate(_ rounds: [TransmitResult]) -> TransmitResult {
        precondition(!rounds.isEmpty, "aggregate of no rounds")
        let fields = aggregatedFields
        var total = rounds.dropFirst().reduce(rounds[0]) { fields.combine($0, $1) }
        total.roundGbps = rounds.map(\.gbps)
        total.roundFramesPerBatch = rounds.map(\.framesPerBatch)
        total.roundHandoff = rounds.map(\.handoffNanosecondsPerByte)
        return total
    }

    /// Whether the run kept every promise (`problem(judged: .plain)` is nil).
    public var passed: Bool { problem(judged: .plain) == nil }

    /// How strictly a run is judged.
    public enum Judgement: Sendable, Hashable {
        /// A run without injected faults: its figures (no DMA fault, nothing
        /// corrupt, lost, dropped or undelivered).
        case plain
        /// A run with a fault that the designs must survive without a fallback:
        /// its figures, and no recorded problem either.
        case faultInjected
        /// A run with a fault that makes the design fall back and retry (failing
        /// conversions): its figures, except that frames may be dropped and sent
        /// again, and recorded problems are the retried failures.
        case fallbacksExpected
        /// A preemption storm on PREEMPT_RT: judged as `faultInjected`, except
        /// that a design that sets the per-CPU `current_tx_socket` is expected
        /// to show its race (misattributed learnings, uses after free), which
        /// are reported, not failed; a design that never set it must show none.
        case raceExpected
    }

    /// What went wrong in this run, or nil: the one rule by which `txsim`, the
    /// reliability campaign and the tests judge a run.
    ///
    /// Every byte the senders wrote must be delivered (and, in verify mode,
    /// verified), discarded because the NIC was removed, or abandoned at the
    /// drain limit (counted and shown): a dropped frame is retransmitted, and
    /// one given up on is a failure.
    public func problem(judged judgement: Judgement) -> String? {
        if dmaFaults > 0 { return "\(dmaFaults) DMA faults: \(firstProblem ?? "")" }
        if corruptBytes > 0 { return "\(corruptBytes) corrupt bytes" }
        if lostPages > 0 { return "\(lostPages) pages lost" }
        if headObjectsLost > 0 { return "\(headObjectsLost) linear-head slab objects still live after teardown" }
        if headAllocationFailures > 0 { return "\(headAllocationFailures) frames went without a linear head (no slab object)" }
        if let b = blockDevice, b.failures > 0 { return "block device: \(b.firstFailure ?? "\(b.failures) failures")" }
        if unmapFailures > 0 { return "\(unmapFailures) unmaps failed" }
        if let removed = removedDeviceProblem { return removed }
        if judgement != .raceExpected && socketUseAfterFree > 0 {
            return "\(socketUseAfterFree) uses of a freed socket through the per-CPU current_tx_socket"
        }
        if currentTXSocketSets == 0 && misattributedLearnings + socketUseAfterFree > 0 {
            return "\(misattributedLearnings) misattributed learnings and \(socketUseAfterFree) uses after free without any current_tx_socket set"
        }
        if payloadBytes == 0 { return "no payload delivered: a run that moves nothing proves nothing" }
        if framesGivenUp > 0 {
            return "\(bytesGivenUp) bytes in \(framesGivenUp) frames never delivered (dropped \(Socket.maxRetransmits + 1) times)"
        }
        if bytesWritten != payloadBytes + bytesDiscardedDeviceGone + bytesAbandoned {
            return "bytes written \(bytesWritten) != bytes delivered \(payloadBytes) + discarded with the removed NIC \(bytesDiscardedDeviceGone) + abandoned at the drain limit \(bytesAbandoned)"
        }
        if workload.verify && verifiedBytes != payloadBytes { return "\(payloadBytes - verifiedBytes) bytes delivered but not verified" }
        if workload.verify && headVerifiedBytes != headBytes { return "\(headBytes - headVerifiedBytes) header bytes read but not verified" }
        switch judgement {
        case .plain:
            if framesDropped > 0 { return "\(framesDropped) frames dropped" }
        case .faultInjected, .raceExpected:
            if framesDropped > 0 { return "\(framesDropped) frames dropped" }
            if let firstProblem { return firstProblem }
        case .fallbacksExpected:
            break
        }
        return nil
    }

    /// The removed-device rule. No DMA operation may reach a removed device (the
    /// driver quiesces its queues first). A socket's cached device is a hint that
    /// a refill may read just before the removal (the seed patch holds a device
    /// reference for exactly this): such a refill may *ask* swiotlb for memory
    /// for the removed device, which refuses before anything reaches the device,
    /// and the socket then drops its cache. So at most one refused request per
    /// socket, however the threads interleave.
    public var removedDeviceProblem: String? {
        if staleDeviceAccesses > 0 { return "\(staleDeviceAccesses) DMA operations on the removed device" }
        if refusedDeviceAllocations > workload.flows {
            return "\(refusedDeviceAllocations) requests for memory for the removed device: more than one per socket (\(workload.flows) sockets)"
        }
        return nil
    }
}
