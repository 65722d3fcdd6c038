/// A configuration to project: the workload and guest of one point of a sweep.
public struct ProjectionPoint: Sendable, Hashable, Codable {
    public var senders: Int
    public var queues: Int
    public var flows: Int
    public var messageBytes: Int = 65536
    public var roundTripMicroseconds: Int = 50
    public var sendBufferBytes: Int = Socket.defaultSendBufferBytes
    /// The bounce pool (swiotlb) size.
    public var swiotlbBytes: Int = 64 << 20
    public var zeroCopyPercent: Int = 90
    /// Each TX pool's ptr_ring (`pool_size`); a remote free finding it full
    /// goes back to the page allocator (counted at the ring's cost).
    public var poolRingSize: Int = 1024

    public init(senders: Int, queues: Int, flows: Int, messageBytes: Int = 65536, roundTripMicroseconds: Int = 50,
                sendBufferBytes: Int = Socket.defaultSendBufferBytes, swiotlbBytes: Int = 64 << 20,
                zeroCopyPercent: Int = 90, poolRingSize: Int = 1024) {
        self.senders = senders; self.queues = queues; self.flows = flows; self.messageBytes = messageBytes
        self.roundTripMicroseconds = roundTripMicroseconds; self.sendBufferBytes = sendBufferBytes
        self.swiotlbBytes = swiotlbBytes; self.zeroCopyPercent = zeroCopyPercent; self.poolRingSize = poolRingSize
    }

    /// The ranges `check()` enforces (the workload's and the guest's where
    /// they exist; flows may be fewer than senders: idle senders stay idle).
    public static let flowRange = 1...Workload.maximumFlows
    public static let swiotlbRange = (1 << 20)...(64 << 30)

    /// Refuses a point out of range, naming the `txsim project` option.
    public func check() throws(ParameterError) {
        func check(_ ok: Bool, _ name: String, _ why: String) throws(ParameterError) {
            if !ok { throw ParameterError.invalid(parameter: name, reason: why) }
        }
        try check(Workload.senderRange.contains(senders), "senders", "\(senders) must be in \(Workload.senderRange)")
        try check(Workload.queueRange.contains(queues), "queues", "\(queues) must be in \(Workload.queueRange)")
        try check(Self.flowRange.contains(flows), "flows", "\(flows) must be in \(Self.flowRange)")
        try check(Workload.sendBufferRange.contains(sendBufferBytes), "send-buffer",
                  "\(sendBufferBytes) bytes must be in 4096...1073741824 (4 KiB...1 GiB)")
        try check(messageBytes >= 1 && messageBytes <= sendBufferBytes, "message",
                  "\(messageBytes) bytes must be in 1...send buffer (\(sendBufferBytes))")
        try check(Workload.roundTripRange.contains(roundTripMicroseconds), "rtt-us",
                  "\(roundTripMicroseconds) must be in \(Workload.roundTripRange) microseconds")
        try check(Self.swiotlbRange.contains(swiotlbBytes), "swiotlb-mib",
                  "\(swiotlbBytes >> 20) MiB must be in 1...65536 MiB")
        try check(ExperimentConfiguration.zeroCopyPercentRange.contains(zeroCopyPercent), "zerocopy-percent",
                  "\(zeroCopyPercent) must be in 1...90 (90 is the patch's maximum)")
        try check(ExperimentConfiguration.poolRingRange.contains(poolRingSize), "pool-ring",
                  "\(poolRingSize) must be in \(ExperimentConfiguration.poolRingRange)")
    }
}

/// The few machine parameters the model needs beside the profile, each with
/// its default and the default's source (`ProjectionModel.describe`).
public struct MachineParameters: Sendable, Hashable, Codable {
    /// CPUs senders run on (nil: one per sender, the seed's "senders" axis).
    public var cores: Int?
    /// Share of each CPU the model's threads get (1: dedicated CPUs; the
    /// validation uses the calibration's measured share on this machine).
    public var cpuShare: Double = 1
    /// Work the sender CPUs in use get done together, in units of one CPU
    /// alone (nil: as many as there are, the CPUs being dedicated physical
    /// cores; the validation gives this machine's measured
    /// `two_thread_speedup` for two senders).
    public var parallelSpeedup: Double?
    /// Whether the NIC's DMA reads of every payload byte count as DRAM
    /// traffic (a real NIC's do; this framework's NIC model reads nothing
    /// unless `--verify`, so the validation turns it off).
    public var nicReadsMemory: Bool = true
    /// DRAM bandwidth in GB/s of traffic (reads + writes); nil: the
    /// calibrated two-thread cold copy rate x 2 (a copy reads and writes),
    /// per two cores, times the cores in use.
    public var memoryBandwidthGBps: Double?
    /// Last-level cache (nil: the profile's machine's).
    public var lastLevelCacheBytes: Int?
    /// The NIC's line rate, all queues together, Gbit/s (nil: unlimited).
    public var lineRateGbps: Double?
    /// Share of pool pages freed on a CPU other than the pool's owner (nil:
    /// the calibration's measured ring fraction: in this framework the
    /// flow's sender processes its ACKs and owns the pool).
    public var remoteFreeFraction: Double?
    /// swiotlb areas (nil: the kernel's default, CPUs rounded up to a power
    /// of two, so that every CPU starts its search in an area of its own).
    public var swiotlbAreas: Int?

    public init(cores: Int? = nil, cpuShare: Double = 1, parallelSpeedup: Double? = nil, nicReadsMemory: Bool = true, memoryBandwidthGBps: Double? = nil, lastLevelCacheBytes: Int? = nil,
                lineRateGbps: Double? = nil, remoteFreeFraction: Double? = nil, swiotlbAreas: Int? = nil) {
        self.cores = cores; self.cpuShare = cpuShare; self.parallelSpeedup = parallelSpeedup; self.nicReadsMemory = nicReadsMemory
        self.memoryBandwidthGBps = memoryBandwidthGBps
        self.lastLevelCacheBytes = lastLevelCacheBytes; self.lineRateGbps = lineRateGbps
        self.remoteFreeFraction = remoteFreeFraction; self.swiotlbAreas = swiotlbAreas
    }

    public func check() throws(ParameterError) {
        func check(_ ok: Bool, _ name: String, _ why: String) throws(ParameterError) {
            if !ok { throw ParameterError.invalid(parameter: name, reason: why) }
        }
        if let cores { try check((1...4096).contains(cores), "cores", "\(cores) must be in 1...4096") }
        try check(cpuShare > 0 && cpuShare <= 1, "cpu-share", "\(cpuShare) must be in (0, 1]")
        if let p = parallelSpeedup { try check(p > 0 && p <= 4096, "parallel-speedup", "\(p) must be in (0, 4096]") }
        if let m = memoryBandwidthGBps {
            try check(m > 0 && m <= 100_000, "memory-bandwidth-gbytes", "\(m) must be in (0, 100000] GB/s")
        }
        if let l = lastLevelCacheBytes { try check(l >= 0 && l <= 1 << 40, "llc-mib", "\(l >> 20) MiB must be in 0...1048576") }
        if let r = lineRateGbps { try check(Workload.lineRateRange.contains(r), "line-rate-gbps", "\(r) must be in 0.001...10000 Gbps") }
        if let f = remoteFreeFraction { try check((0...1).contains(f), "remote-free-fraction", "\(f) must be in 0...1") }
        if let a = swiotlbAreas { try check((1...4096).contains(a), "swiotlb-areas", "\(a) must be in 1...4096") }
    }
}

/// The resource that sets a point's throughput.
public enum Bound: String, Sendable, Hashable, Codable, CaseIterable {
    case senderCPU = "sender CPU"
    case queueCPU = "queue CPU"
    case memoryBandwidth = "memory bandwidth"
    case lineRate = "line rate"
    case bouncePool = "bounce-pool capacity"
    case sendWindow = "send window"
}

/// What the model gives for one design at one point.
public struct Projection: Sendable, Hashable {
    public var design: String
    public var point: ProjectionPoint
    public var gbps: Double
    public var bound: Bound
    public var copiesPerByte: Double
    public var zeroCopyFraction: Double
    /// CPU seconds per GB of payload, by role.
    public var senderSecondsPerGB: Double
    public var queueSecondsPerGB: Double
    /// Each resource's ceiling at the solution, Gbps.
    public var limits: [Bound: Double]
    /// Bytes the design holds in bounce-pool pages (capped designs), and the cap.
    public var zeroCopyDemandBytes: Double
    public var zeroCopyCapacityBytes: Double
}

/// The projection model: an analytic bottleneck model of S sender CPUs, Q
/// queues and F flows, driven by a `CalibrationProfile` and
/// `MachineParameters` only. Every rule is in `project` and written down in
/// Design/projection.md; nothing here is fitted to a run.
public enum ProjectionModel {
    public static let frameBytes = Socket.maxFrameBytes
    public static let socketPageBytes = 32 << 10
    public static let batchFrames = TXQueue.budget

    /// Frames per payload byte for `messageBytes`-byte sends (a frame is a
    /// send cut at 64 KiB).
    public static func framesPerByte(messageBytes: Int) -> Double {
        let frames = (messageBytes + frameBytes - 1) / frameBytes
        return Double(frames) / Double(messageBytes)
    }

    /// Senders whose frames a queue carries, averaged over the queues that
    /// carry any: flow f is sent by sender f % S on queue f % Q.
    public static func sendersPerQueue(senders: Int, queues: Int, flows: Int) -> Double {
        var perQueue = [Set<Int>](repeating: [], count: queues)
        for f in 0..<min(flows, senders * queues * 4) { perQueue[f % queues].insert(f % senders) }
        let used = perQueue.filter { !$0.isEmpty }
        return used.isEmpty ? 1 : Double(used.reduce(0) { $0 + $1.count }) / Double(used.count)
    }

    /// Senders that have a flow, and queues that carry one.
    static func activeSenders(_ p: ProjectionPoint) -> Int { min(p.senders, p.flows) }
    static func activeQueues(_ p: ProjectionPoint) -> Int { min(p.queues, p.flows) }

    /// The cost of copy 2's read side at a point, ns/byte: from the same core
    /// (1 sender per queue), from another core (the running-bit holder
    /// transmits everyone's frames), or cold (the bytes waiting between copy
    /// 1 and copy 2 exceed the last-level cache).
    static func copyTwoCost(_ m: MachineCosts, otherCore: Double, cold: Double) -> Double {
        let warm = 1 - cold
        // Measured as copy 2 runs (its destination a bounce slot, cold):
        // a cold source makes both sides cold, the cold copy.
        if let same = m.copyToBounceSameCoreNsPerByte?.value, let other = m.copyToBounceOtherCoreNsPerByte?.value {
            return warm * ((1 - otherCore) * same + otherCore * other) + cold * m.copyColdNsPerByte.value
        }
        let hot = m.copySameCoreHotNsPerByte.value
        // A cold source is one side of the copy: half the cold copy's extra cost.
        return warm * ((1 - otherCore) * hot + otherCore * m.copyOtherCoreNsPerByte.value)
            + cold * (hot + (m.copyColdNsPerByte.value - hot) / 2)
    }

    /// Bytes held in socket pages while the senders are what binds: what is
    /// in flight for one round trip (at most the send buffers), a page per
    /// flow being filled, and a batch per queue being transmitted. `rate` in
    /// bytes per ns, `roundTrip` in ns.
    static func heldBytes(sendBuffers: Double, rate: Double, roundTrip: Double, flows: Double, queues: Double) -> Double {
        min(sendBuffers, rate * roundTrip) + flows * Double(socketPageBytes) + queues * Double(batchFrames * frameBytes)
    }

    static func coldFraction(waitingBytes: Double, cache: Double) -> Double {
        waitingBytes > cache && waitingBytes > 0 ? 1 - cache / waitingBytes : 0
    }

    /// Whether the resource sits downstream of the senders, so that they
    /// outrun it and every send buffer fills.
    static func isDownstream(_ bound: Bound) -> Bool { bound == .queueCPU || bound == .lineRate }

    /// DRAM traffic (reads + writes) one core streams, GB/s: twice the cold
    /// copy rate (a copy reads and writes each byte), the better of one
    /// thread's and half of two threads' (a loaded machine can starve either).
    public static func perCoreTrafficGBps(_ m: MachineCosts) -> Double {
        2 * max(m.copyBandwidthOneThreadGBps.value, m.copyBandwidthTwoThreadsGBps.value / 2)
    }

    /// Projects `design` at `point`. Throws when the profile has no such design.
    public static func project(_ design: String, at point: ProjectionPoint, profile: CalibrationProfile,
                               machine: MachineParameters = .init()) throws(ParameterError) -> Projection {
        try point.check()
        try machine.check()
        guard let d = profile.costs(of: design) else {
            throw .invalid(parameter: "designs", reason: "\(design) is not in the profile (it has \(profile.designs.map(\.design).joined(separator: ", ")))")
        }
        // Fallback pages of a capped design are general pages: they cost
        // what bounce's cost, when the profile has bounce.
        let fallback = profile.costs(of: "bounce") ?? d
        let m = profile.machineCosts
        let method = profile.method
        let p = point
        let cores = Double(machine.cores ?? p.senders)
        let threads = min(Double(activeSenders(p)), cores)
        // CPU seconds (at one dedicated CPU's speed) the senders get per second, and each one's.
        let cpus = min(machine.parallelSpeedup ?? threads, threads) * machine.cpuShare
        let perThread = cpus / max(threads, 1)
        let queuesActive = Double(activeQueues(p))
        let cache = Double(machine.lastLevelCacheBytes ?? profile.machine.lastLevelCacheBytes)
        let coresForBandwidth = max(1, min(Double(activeSenders(p)), cores))
        let bandwidth = machine.memoryBandwidthGBps ?? perCoreTrafficGBps(m) * coresForBandwidth
        let fpb = framesPerByte(messageBytes: p.messageBytes)
        let rtt = Double(p.roundTripMicroseconds) * 1000   // ns
        let flows = Double(p.flows)
        let sendBuffers = flows * Double(p.sendBufferBytes)

        func perByte(_ c: DesignCosts) -> (sender: Double, queue: Double) {
            (max(0, c.senderNsPerByte.value + c.senderNsPerFrame.value * fpb),
             max(0, c.queueNsPerByte.value + c.queueNsPerFrame.value * fpb))
        }
        let own = perByte(d), back = perByte(fallback)
        // The bounced share of the design's own pages (general: all; the
        // others: what the calibration measured, usually none).
        let ownBounced = d.pageSource == .general ? 1 : 1 - d.zeroCopyFraction.value
        let backBounced = 1 - fallback.zeroCopyFraction.value
        let copyOne = max(0, d.copiesPerByte.value - ownBounced)
        // The calibration point's copy-2 locality: its cost is inside the
        // calibrated queue cost, so a point's correction is the difference.
        let calibrationPoint = ProjectionPoint(senders: method.senders, queues: method.queues, flows: method.flows,
                                               roundTripMicroseconds: method.roundTripMicroseconds)
        let calibrationOther = 1 - 1 / sendersPerQueue(senders: method.senders, queues: method.queues, flows: method.flows)
        let calibrationCold = coldFraction(waitingBytes: min(Double(method.flows * calibrationPoint.sendBufferBytes),
                                                             Double(method.queues * batchFrames * frameBytes)), cache: cache)
        let calibrationCopyTwo = copyTwoCost(m, otherCore: calibrationOther, cold: calibrationCold)
        let other = 1 - 1 / sendersPerQueue(senders: p.senders, queues: p.queues, flows: p.flows)
        // Sharing a queue: calibrated with two senders on one queue, where a
        // share `sharedOther` of the queue's frames were built on the other
        // CPU; at the point, in proportion to its share (an assumption: the
        // frames' and the queue's lines move once per frame another CPU
        // built; lock waits growing with more contenders are not measured).
        // The copy-2 part of it is priced under copy 2's locality already,
        // so it is taken out of the calibrated queue cost.
        let sharedFlows = Calibration.twoSenderFlows(calibrationFlows: method.flows)
        let sharedOther = 1 - 1 / sendersPerQueue(senders: 2, queues: 1, flows: sharedFlows)
        let sharedScale = sharedOther > 0 ? other / sharedOther : 0
        let calibrationFPB = framesPerByte(messageBytes: method.messageBytes.first ?? p.messageBytes)
        let sharedCopyTwo = copyTwoCost(m, otherCore: sharedOther, cold: calibrationCold) - copyTwoCost(m, otherCore: 0, cold: calibrationCold)
        func sharedQueuePerByte(_ c: DesignCosts, bounced: Double) -> (sender: Double, queue: Double) {
            let sender = max(0, (c.sharedQueueSenderNsPerFrame?.value ?? 0) * fpb)
            let queueFrame = (c.sharedQueueQueueNsPerFrame?.value ?? 0) - bounced * sharedCopyTwo / calibrationFPB
            return (sharedScale * sender, sharedScale * max(0, queueFrame * fpb))
        }
        // Pool recycles through the ring beyond what the calibration saw.
        let remote = machine.remoteFreeFraction ?? d.poolRingFraction.value
        let ringExtra = max(0, m.poolRingRecycleContendedNs.value - m.poolCacheRecycleNs.value)
            * d.poolRecyclesPerByte.value * (remote - d.poolRingFraction.value)
        // swiotlb area contention: with fewer areas than CPUs mapping, a
        // mapping finds its area's lock taken with probability 1 - areas/CPUs.
        let mappers = max(cpus, 1)
        let areas = Double(machine.swiotlbAreas ?? Int(mappers.rounded(.up)))
        let contention = max(0, 1 - areas / mappers)
        let lockExtra = contention * max(0, m.swiotlbMapUnmapContendedNs.value - m.swiotlbMapUnmapNs.value) / Double(socketPageBytes)
        let ownShared = sharedQueuePerByte(d, bounced: ownBounced), backShared = sharedQueuePerByte(fallback, bounced: backBounced)
        let capacity = d.pageSource == .swiotlbCapped ? Double(p.swiotlbBytes) * Double(p.zeroCopyPercent) / 100 : .infinity

        struct State { var rate: Double; var bound: Bound; var limits: [Bound: Double]; var s: Double; var q: Double
                       var copies: Double; var z: Double; var demand: Double }

        // One evaluation of every ceiling for a zero-copy fraction z of the
        // design's capped pages (1 for uncapped designs).
        // Copy 1's locality: its source (the flows' 2 MiB user buffers) or
        // its destination (the socket pages in use) beyond the cache is
        // cold; the correction is copy 1's share at (cold - hot) for the
        // cold fraction beyond the calibration's own (none with its default
        // two flows and immediate ACKs).
        let userCold = coldFraction(waitingBytes: flows * 2 * 1048576, cache: cache)
        let calibrationUserCold = coldFraction(waitingBytes: Double(method.flows * 2 * 1048576), cache: cache)
        // The socket pages the calibration's own run held (`heldBytes`, as
        // `demand` below) at the rate its one sender reached (its CPU
        // share over its cost per byte at the first message size): with a
        // round trip (the validation calibrates the pressure workload at
        // 2 ms) they can outgrow the cache, and what that cost is inside the
        // calibrated costs already, so only the excess is charged.
        let calibrationCost = d.senderNsPerByte.value + d.queueNsPerByte.value
            + (d.senderNsPerFrame.value + d.queueNsPerFrame.value) * calibrationFPB
        let calibrationRate = calibrationCost > 0 ? d.cpuShare.value / calibrationCost : 0   // bytes per ns
        let calibrationRTT = Double(method.roundTripMicroseconds) * 1000
        let calibrationHeld = heldBytes(sendBuffers: Double(method.flows * calibrationPoint.sendBufferBytes), rate: calibrationRate,
                                        roundTrip: calibrationRTT, flows: Double(method.flows), queues: Double(method.queues))
        let calibrationPagesCold = coldFraction(waitingBytes: calibrationHeld, cache: cache)
        var heldGuess = 0.0
        func evaluate(z capped: Double, downstreamGuess: Bool) -> State {
            let zc = d.pageSource == .swiotlbCapped ? capped : 1
            let ownShare = zc, backShare = 1 - zc
            let bounced = ownShare * ownBounced + backShare * backBounced
            let waiting = downstreamGuess ? max(0, sendBuffers) : min(sendBuffers, queuesActive * Double(batchFrames * frameBytes))
            let cold = coldFraction(waitingBytes: waiting, cache: cache)
            let copyTwoDelta = copyTwoCost(m, otherCore: other, cold: cold) - calibrationCopyTwo
            // Each side of a copy (source, destination) carries half of the
            // cold copy's extra cost over a hot one (the cold figure has both cold).
            let pagesCold = coldFraction(waitingBytes: heldGuess, cache: cache)
            let copyOneDelta = copyOne * max(0, userCold + pagesCold - calibrationUserCold - calibrationPagesCold) / 2
                * (m.copyColdNsPerByte.value - m.copySameCoreHotNsPerByte.value)
            let s = ownShare * (own.sender + ownShared.sender) + backShare * (back.sender + backShared.sender)
                + ringExtra + bounced * lockExtra + copyOneDelta
            let q = max(0, ownShare * (own.queue + ownShared.queue) + backShare * (back.queue + backShared.queue) + bounced * copyTwoDelta)
            let copies = copyOne + bounced
            // DRAM traffic per payload byte: the NIC's read, copy 1's source
            // when user buffers exceed the cache, copy 1's destination and
            // copy 2's source when the waiting bytes do, and every bounce
            // slot written (the pool is walked end to end).
            let traffic = (machine.nicReadsMemory ? 1 : 0) + userCold * copyOne + cold * copyOne + bounced * (cold + 1)
            var limits: [Bound: Double] = [:]
            limits[.senderCPU] = (s + q) > 0 ? cpus / (s + q) : .infinity
            limits[.queueCPU] = q > 0 ? min(queuesActive, threads) * perThread / q : .infinity
            limits[.memoryBandwidth] = traffic > 0 ? bandwidth / traffic : .infinity
            if let line = machine.lineRateGbps { limits[.lineRate] = line / 8 }
            if rtt > 0 { limits[.sendWindow] = sendBuffers / rtt }
            let (bound, rate) = limits.min { a, b in a.value < b.value || (a.value == b.value && a.key.rawValue < b.key.rawValue) }!
            // Bytes held in socket pages: when the path downstream of the
            // senders binds, senders outrun it and every send buffer fills;
            // otherwise what is in flight for one RTT, a page per flow being
            // filled, and a batch per queue being transmitted.
            let downstream = bound == .queueCPU || bound == .lineRate
            let demand = downstream ? sendBuffers
                : heldBytes(sendBuffers: sendBuffers, rate: rate, roundTrip: rtt, flows: flows, queues: queuesActive)
            return State(rate: rate, bound: bound, limits: limits.mapValues { $0 * 8 }, s: s, q: q, copies: copies, z: zc, demand: demand)
        }

        // Solve for the zero-copy fraction: z = min(1, capacity / demand(z)).
        // Damped fixed-point iteration; demand only grows as z falls.
        var z = 1.0
        var state = evaluate(z: z, downstreamGuess: false)
        for _ in 0..<4 {   // the pages in use set copy 1's locality, which sets the rate
            heldGuess = state.demand
            state = evaluate(z: z, downstreamGuess: isDownstream(state.bound))
        }
        if d.pageSource == .swiotlbCapped {
            for _ in 0..<200 {
                let next = min(1, capacity / max(state.demand, 1))
                if abs(next - z) < 1e-9 { break }
                z = 0.5 * z + 0.5 * next
                heldGuess = state.demand
                let guess = evaluate(z: z, downstreamGuess: isDownstream(state.bound))
                state = evaluate(z: z, downstreamGuess: isDownstream(guess.bound))
            }
        }
        var bound = state.bound
        if d.pageSource == .swiotlbCapped && z < 0.999 {
            let uncapped = evaluate(z: 1, downstreamGuess: true)
            if uncapped.rate > state.rate * 1.01 { bound = .bouncePool }
        }
        let zeroCopy = d.pageSource == .swiotlbCapped ? z * (1 - ownBounced) + 0 : 1 - ownBounced
        return Projection(design: design, point: p, gbps: state.rate * 8, bound: bound, copiesPerByte: state.copies,
                          zeroCopyFraction: max(0, min(1, zeroCopy)), senderSecondsPerGB: state.s, queueSecondsPerGB: state.q,
                          limits: state.limits, zeroCopyDemandBytes: d.pageSource == .swiotlbCapped ? state.demand : 0,
                          zeroCopyCapacityBytes: capacity.isFinite ? capacity : 0)
    }

    static func fixed1(_ v: Double) -> String { String(Double(Int(v * 10 + 0.5)) / 10) }

    /// Every machine parameter with the value a projection uses and its source.
    public static func describe(_ machine: MachineParameters, profile: CalibrationProfile) -> [(String, String, String)] {
        let m = profile.machineCosts
        let perCore = perCoreTrafficGBps(m)
        return [
            ("cores", machine.cores.map(String.init) ?? "one per sender",
             machine.cores == nil ? "default: every sender on its own CPU (the seed's senders axis)" : "given (--cores)"),
            ("cpu share", String(machine.cpuShare), machine.cpuShare == 1 ? "default: dedicated CPUs" : "given (--cpu-share)"),
            ("memory bandwidth GB/s", machine.memoryBandwidthGBps.map { String($0) } ?? "\(fixed1(perCore)) x cores in use",
             machine.memoryBandwidthGBps == nil
                ? "default: per core, 2 x the calibrated cold copy rate (read + write; the better of 1 thread and half of 2 threads), times the cores in use (an assumption: linear in cores)"
                : "given (--memory-bandwidth-gbytes)"),
            ("last-level cache", "\((machine.lastLevelCacheBytes ?? profile.machine.lastLevelCacheBytes) >> 20) MiB",
             machine.lastLevelCacheBytes == nil ? "default: the calibrated machine's (sysfs cpu0/cache/index3/size)" : "given (--llc-mib)"),
            ("line rate Gbps (NIC, all queues)", machine.lineRateGbps.map { String($0) } ?? "unlimited",
             machine.lineRateGbps == nil ? "default: none" : "given (--line-rate-gbps)"),
            ("remote-free fraction", machine.remoteFreeFraction.map { String($0) } ?? "as calibrated",
             machine.remoteFreeFraction == nil ? "default: the calibration's ring share (ACKs processed by the flow's sender, which owns the pool)" : "given"),
            ("swiotlb areas", machine.swiotlbAreas.map(String.init) ?? "CPUs, rounded up to a power of two",
             machine.swiotlbAreas == nil ? "default: the kernel's (kernel-facts.md: area count = CPUs rounded up)" : "given (--swiotlb-areas)"),
        ]
    }
}

extension ProjectionModel {
    /// The benchmark's workload (`txsim microbench`'s `projection_*` keys and
    /// Benchmarks/ProjectionBenchmarks): every design of `profile` at 1, 2,
    /// 4, ..., 64 senders on 1, 2, 4 and 8 queues at a 200 Gbps line rate
    /// (the last point is 64 senders on 8 queues). Returns the projections
    /// made.
    public static func benchmarkSweep(_ profile: CalibrationProfile = .illustrative()) throws(ParameterError) -> [Projection] {
        let machine = MachineParameters(lineRateGbps: 200)
        var out: [Projection] = []
        for queues in [1, 2, 4, 8] {
            for senders in [1, 2, 4, 8, 16, 32, 64] {
                let point = ProjectionPoint(senders: senders, queues: queues, flows: senders)
                for d in profile.designs { out.append(try project(d.design, at: point, profile: profile, machine: machine)) }
            }
        }
        return out
    }
}
