/// What `txsim calibrate` measured (or a person wrote down): the costs the
/// projection model (`ProjectionModel`) runs on, and nothing else.
///
/// The file is JSON (`txsim calibrate --profile FILE` writes it, `txsim
/// project --profile FILE` reads it). Every cost carries its value, its
/// spread over repetitions when it was measured, and where it came from
/// (`source`): `"calibrated"` for a cost measured on the machine named in
/// `machine`, anything else (for instance `"perf in a TDX guest, 2026-12"`)
/// for a cost a person gave. `txsim project` lists which costs were given.
/// Hand-edited profiles are allowed: change `value` and `source` together.
///
/// Units: ns per payload byte (`*_ns_per_byte`, numerically CPU seconds per
/// GB), ns per frame (a frame is one `sendmsg` cut at 64 KiB), ns per
/// operation, GB/s (10^9 bytes per second).
public struct CalibrationProfile: Sendable, Hashable, Codable {
    /// Bumped when a field changes meaning; `project` refuses other formats.
    public static let currentFormat = 1
    public var format: Int = CalibrationProfile.currentFormat
    /// The machine the calibrated costs were measured on.
    public var machine: CalibrationMachine
    /// How the per-design runs were made (the model corrects every cost
    /// from this point to the projected one).
    public var method: CalibrationMethod
    /// Costs of the machine itself: copies by locality, contended locks, bandwidth.
    public var machineCosts: MachineCosts
    /// One entry per design, by name.
    public var designs: [DesignCosts]

    public init(machine: CalibrationMachine, method: CalibrationMethod, machineCosts: MachineCosts, designs: [DesignCosts]) {
        self.machine = machine
        self.method = method
        self.machineCosts = machineCosts
        self.designs = designs
    }

    enum CodingKeys: String, CodingKey { case format, machine, method, machineCosts = "machine_costs", designs }

    public func costs(of design: String) -> DesignCosts? { designs.first { $0.design == design } }

    /// Every cost whose source is not `"calibrated"`, as "path: source".
    public var givenCosts: [String] {
        var given: [String] = []
        for (name, cost) in machineCosts.all where !cost.isCalibrated { given.append("machine_costs.\(name): \(cost.source)") }
        for d in designs {
            for (name, cost) in d.all where !cost.isCalibrated { given.append("\(d.design).\(name): \(cost.source)") }
        }
        return given
    }

    /// Every cost that was calibrated, counted.
    public var calibratedCount: Int {
        machineCosts.all.filter { $0.1.isCalibrated }.count + designs.reduce(0) { $0 + $1.all.filter { $0.1.isCalibrated }.count }
    }

    /// Refuses a profile the model cannot use, naming the field.
    public func check() throws(ParameterError) {
        func fail(_ why: String) -> ParameterError { .invalid(parameter: "profile", reason: why) }
        guard format == Self.currentFormat else { throw fail("format \(format) is not \(Self.currentFormat)") }
        guard !designs.isEmpty else { throw fail("it names no design") }
        for (name, cost) in machineCosts.all where !(cost.value.isFinite && cost.value >= 0) {
            throw fail("machine_costs.\(name) is \(cost.value): it must be a finite number >= 0")
        }
        for d in designs {
            for (name, cost) in d.all where !cost.value.isFinite {
                throw fail("\(d.design).\(name) is \(cost.value): it must be a finite number")
            }
            guard (0...1).contains(d.zeroCopyFraction.value) else {
                throw fail("\(d.design).zero_copy_fraction is \(d.zeroCopyFraction.value): it must be in 0...1")
            }
        }
        guard machineCosts.copyBandwidthTwoThreadsGBps.value > 0 else {
            throw fail("machine_costs.copy_bandwidth_2_threads_gbytes_per_s must be > 0")
        }
    }
}

/// One cost: the value the model uses (the median when measured), its spread
/// and where it came from.
public struct Cost: Sendable, Hashable, Codable {
    public var value: Double
    public var minimum: Double?
    public var maximum: Double?
    /// Repetitions the median was taken over (nil: given, not measured).
    public var repetitions: Int?
    /// `"calibrated"` (measured by `txsim calibrate` on `machine`) or a note
    /// saying where a given value comes from.
    public var source: String

    public static let calibratedSource = "calibrated"
    public var isCalibrated: Bool { source == Self.calibratedSource }

    public init(value: Double, minimum: Double? = nil, maximum: Double? = nil, repetitions: Int? = nil, source: String) {
        self.value = value
        self.minimum = minimum
        self.maximum = maximum
        self.repetitions = repetitions
        self.source = source
    }

    /// The median of `samples`, with their extremes, as a calibrated cost.
    public static func measured(_ samples: [Double]) -> Cost {
        let spread = Spread(samples)
        return Cost(value: spread?.median ?? 0, minimum: spread?.minimum, maximum: spread?.maximum,
                    repetitions: spread?.count ?? 0, source: calibratedSource)
    }

    public static func given(_ value: Double, _ source: String) -> Cost { Cost(value: value, source: source) }

    enum CodingKeys: String, CodingKey { case value, minimum, maximum, repetitions, source }
}

public struct CalibrationMachine: Sendable, Hashable, Codable {
    /// CPUs online when calibrating.
    public var cores: Int
    /// Last-level cache in bytes (sysfs `cpu0/cache/index3/size`; 0 when unknown).
    public var lastLevelCacheBytes: Int
    /// When (UTC, from the system clock) and what ran.
    public var date: String
    public var note: String

    public init(cores: Int, lastLevelCacheBytes: Int, date: String, note: String) {
        self.cores = cores
        self.lastLevelCacheBytes = lastLevelCacheBytes
        self.date = date
        self.note = note
    }

    enum CodingKeys: String, CodingKey {
        case cores, lastLevelCacheBytes = "last_level_cache_bytes", date, note
    }
}

/// The workload each design was calibrated on.
public struct CalibrationMethod: Sendable, Hashable, Codable {
    public var senders: Int
    public var queues: Int
    public var flows: Int
    public var roundTripMicroseconds: Int
    /// The two message sizes: per-byte and per-frame costs are separated by
    /// solving cost/byte = per_byte + per_frame x frames/byte at both.
    public var messageBytes: [Int]
    public var secondsPerRun: Double
    public var repetitions: Int

    public init(senders: Int, queues: Int, flows: Int, roundTripMicroseconds: Int, messageBytes: [Int],
                secondsPerRun: Double, repetitions: Int) {
        self.senders = senders; self.queues = queues; self.flows = flows
        self.roundTripMicroseconds = roundTripMicroseconds; self.messageBytes = messageBytes
        self.secondsPerRun = secondsPerRun; self.repetitions = repetitions
    }

    enum CodingKeys: String, CodingKey {
        case senders, queues, flows, roundTripMicroseconds = "rtt_us", messageBytes = "message_bytes"
        case secondsPerRun = "seconds_per_run", repetitions
    }
}

/// The machine's own costs, measured with 2 threads on 2 cores at most.
public struct MachineCosts: Sendable, Hashable, Codable {
    /// 32 KiB copy whose source this core wrote just before (hot in its caches), ns/byte.
    public var copySameCoreHotNsPerByte: Cost
    /// 32 KiB copy whose source the other core wrote just before, ns/byte.
    public var copyOtherCoreNsPerByte: Cost
    /// 32 KiB copies walking buffers four times the last-level cache, ns/byte.
    public var copyColdNsPerByte: Cost
    /// swiotlb map + unmap of 32 KiB (bounce copy included), one area, alone, ns.
    public var swiotlbMapUnmapNs: Cost
    /// The same with the other core mapping and unmapping on the same area.
    public var swiotlbMapUnmapContendedNs: Cost
    /// page_pool alloc + direct recycle into its cache, one CPU, ns per page.
    public var poolCacheRecycleNs: Cost
    /// page_pool alloc on the owner + put through the ptr_ring by the other
    /// core, both CPUs' time together, ns per page.
    public var poolRingRecycleContendedNs: Cost
    /// Cold copy bandwidth (beyond the last-level cache), GB/s copied.
    public var copyBandwidthOneThreadGBps: Cost
    public var copyBandwidthTwoThreadsGBps: Cost
    /// Work two threads get done per wall second over what one thread alone
    /// gets done (a hot 32 KiB copy loop on each): 2 on two idle physical
    /// cores, less on hyperthread siblings or a machine shared with other
    /// tenants. Optional (older and hand-written profiles may omit it).
    public var twoThreadSpeedup: Cost?
    /// Work per CPU second of a thread while another runs, over one running
    /// alone (below 1 on hyperthread siblings). Optional.
    public var twoThreadWorkPerCPUSecond: Cost?
    /// Copy 2 as it runs: 32 KiB copies into bounce slots walking a pool
    /// beyond the last-level cache, source written just before by this core,
    /// ns/byte. Optional (older and hand-written profiles may omit it; the
    /// model then uses the hot and other-core copies).
    public var copyToBounceSameCoreNsPerByte: Cost?
    /// The same with the source written by the other core. Optional.
    public var copyToBounceOtherCoreNsPerByte: Cost?

    public init(copySameCoreHotNsPerByte: Cost, copyOtherCoreNsPerByte: Cost, copyColdNsPerByte: Cost,
                swiotlbMapUnmapNs: Cost, swiotlbMapUnmapContendedNs: Cost, poolCacheRecycleNs: Cost,
                poolRingRecycleContendedNs: Cost, copyBandwidthOneThreadGBps: Cost, copyBandwidthTwoThreadsGBps: Cost,
                twoThreadSpeedup: Cost? = nil, twoThreadWorkPerCPUSecond: Cost? = nil,
                copyToBounceSameCoreNsPerByte: Cost? = nil, copyToBounceOtherCoreNsPerByte: Cost? = nil) {
        self.copySameCoreHotNsPerByte = copySameCoreHotNsPerByte
        self.copyOtherCoreNsPerByte = copyOtherCoreNsPerByte
        self.copyColdNsPerByte = copyColdNsPerByte
        self.swiotlbMapUnmapNs = swiotlbMapUnmapNs
        self.swiotlbMapUnmapContendedNs = swiotlbMapUnmapContendedNs
        self.poolCacheRecycleNs = poolCacheRecycleNs
        self.poolRingRecycleContendedNs = poolRingRecycleContendedNs
        self.copyBandwidthOneThreadGBps = copyBandwidthOneThreadGBps
        self.copyBandwidthTwoThreadsGBps = copyBandwidthTwoThreadsGBps
        self.twoThreadSpeedup = twoThreadSpeedup
        self.twoThreadWorkPerCPUSecond = twoThreadWorkPerCPUSecond
        self.copyToBounceSameCoreNsPerByte = copyToBounceSameCoreNsPerByte
        self.copyToBounceOtherCoreNsPerByte = copyToBounceOtherCoreNsPerByte
    }

    enum CodingKeys: String, CodingKey {
        case copySameCoreHotNsPerByte = "copy_same_core_hot_ns_per_byte"
        case copyOtherCoreNsPerByte = "copy_other_core_ns_per_byte"
        case copyColdNsPerByte = "copy_cold_ns_per_byte"
        case swiotlbMapUnmapNs = "swiotlb_map_unmap_32k_ns"
        case swiotlbMapUnmapContendedNs = "swiotlb_map_unmap_32k_contended_ns"
        case poolCacheRecycleNs = "pool_cache_recycle_ns"
        case poolRingRecycleContendedNs = "pool_ring_recycle_contended_ns"
        case copyBandwidthOneThreadGBps = "copy_bandwidth_1_thread_gbytes_per_s"
        case copyBandwidthTwoThreadsGBps = "copy_bandwidth_2_threads_gbytes_per_s"
        case twoThreadSpeedup = "two_thread_speedup"
        case twoThreadWorkPerCPUSecond = "two_thread_work_per_cpu_second"
        case copyToBounceSameCoreNsPerByte = "copy_to_bounce_same_core_ns_per_byte"
        case copyToBounceOtherCoreNsPerByte = "copy_to_bounce_other_core_ns_per_byte"
    }

    var all: [(String, Cost)] {
        [("copy_same_core_hot_ns_per_byte", copySameCoreHotNsPerByte), ("copy_other_core_ns_per_byte", copyOtherCoreNsPerByte),
         ("copy_cold_ns_per_byte", copyColdNsPerByte), ("swiotlb_map_unmap_32k_ns", swiotlbMapUnmapNs),
         ("swiotlb_map_unmap_32k_contended_ns", swiotlbMapUnmapContendedNs), ("pool_cache_recycle_ns", poolCacheRecycleNs),
         ("pool_ring_recycle_contended_ns", poolRingRecycleContendedNs),
         ("copy_bandwidth_1_thread_gbytes_per_s", copyBandwidthOneThreadGBps),
         ("copy_bandwidth_2_threads_gbytes_per_s", copyBandwidthTwoThreadsGBps)]
            + (twoThreadSpeedup.map { [("two_thread_speedup", $0)] } ?? [])
            + (twoThreadWorkPerCPUSecond.map { [("two_thread_work_per_cpu_second", $0)] } ?? [])
            + (copyToBounceSameCoreNsPerByte.map { [("copy_to_bounce_same_core_ns_per_byte", $0)] } ?? [])
            + (copyToBounceOtherCoreNsPerByte.map { [("copy_to_bounce_other_core_ns_per_byte", $0)] } ?? [])
    }
}

/// Where a design's socket pages come from, as far as the model cares.
public enum PageSource: String, Sendable, Hashable, Codable, CaseIterable {
    /// Private pages: every byte bounces at map (copy 2).
    case general
    /// Runs taken from swiotlb under `zerocopy_tx_percent`: zero-copy while
    /// the cap holds, general pages (bounced) beyond it.
    case swiotlbCapped = "swiotlb-capped"
    /// Device-visible pages with no cap (pre-decrypted, converted in place).
    case uncapped
}

/// One design's TX path, by role, per byte and per frame.
public struct DesignCosts: Sendable, Hashable, Codable {
    public var design: String
    /// Sender (process context): refill, copy 1, fragments, ACKs and the frees they trigger.
    public var senderNsPerByte: Cost
    public var senderNsPerFrame: Cost
    /// Queue (serialised): qdisc, map (bounce copy or stored address), NIC, completion, unmap.
    public var queueNsPerByte: Cost
    public var queueNsPerFrame: Cost
    /// Bytes copied per payload byte and zero-copy fraction in the calibration runs.
    public var copiesPerByte: Cost
    public var zeroCopyFraction: Cost
    /// Page-pool recycles per payload byte in the calibration runs (0 for
    /// designs without a pool), and the share of them that went through the ring.
    public var poolRecyclesPerByte: Cost
    public var poolRingFraction: Cost
    /// CPU time the calibration's threads got per wall second (1 sender, so
    /// at most 1): how much of a core other tenants left.
    public var cpuShare: Cost
    /// Inferred from the calibration runs (zero-copy fraction and whether
    /// the guest ran with a `zerocopy_tx_percent` cap), or given.
    public var pageSource: PageSource
    /// The design's CPU per GB with one sender over that with two senders
    /// of it running at once, each on its own queue: what a CPU second buys
    /// when the other core runs the same design (`txsim project --validate`
    /// uses it for its 2-sender points). Optional (older and hand-written
    /// profiles may omit it).
    public var twoSenderWorkPerCPUSecond: Cost?
    /// What sharing a queue adds, ns of CPU per frame (in one CPU's time, as
    /// the other costs), by role: two senders on one queue against two
    /// senders on a queue each, both run at once, at the calibration's first
    /// message size. With two senders on one queue, whichever holds the
    /// running bit transmits the other's frames (half of them), and both
    /// take the qdisc's lock and counters in turn, so the frames, the
    /// queue's state and the NIC ring move between the CPUs. Includes copy
    /// 2's other-core source for a bounced design (the model takes that
    /// part out, as it prices it under copy 2's locality). Optional (older
    /// and hand-written profiles may omit it: no cost).
    public var sharedQueueSenderNsPerFrame: Cost?
    public var sharedQueueQueueNsPerFrame: Cost?

    public init(design: String, senderNsPerByte: Cost, senderNsPerFrame: Cost, queueNsPerByte: Cost, queueNsPerFrame: Cost,
                copiesPerByte: Cost, zeroCopyFraction: Cost, poolRecyclesPerByte: Cost, poolRingFraction: Cost,
                cpuShare: Cost, pageSource: PageSource) {
        self.design = design
        self.senderNsPerByte = senderNsPerByte; self.senderNsPerFrame = senderNsPerFrame
        self.queueNsPerByte = queueNsPerByte; self.queueNsPerFrame = queueNsPerFrame
        self.copiesPerByte = copiesPerByte; self.zeroCopyFraction = zeroCopyFraction
        self.poolRecyclesPerByte = poolRecyclesPerByte; self.poolRingFraction = poolRingFraction
        self.cpuShare = cpuShare; self.pageSource = pageSource
    }

    enum CodingKeys: String, CodingKey {
        case design
        case senderNsPerByte = "sender_ns_per_byte", senderNsPerFrame = "sender_ns_per_frame"
        case queueNsPerByte = "queue_ns_per_byte", queueNsPerFrame = "queue_ns_per_frame"
        case copiesPerByte = "copies_per_byte", zeroCopyFraction = "zero_copy_fraction"
        case poolRecyclesPerByte = "pool_recycles_per_byte", poolRingFraction = "pool_ring_fraction"
        case cpuShare = "cpu_share", pageSource = "page_source"
        case twoSenderWorkPerCPUSecond = "two_sender_work_per_cpu_second"
        case sharedQueueSenderNsPerFrame = "shared_queue_sender_ns_per_frame"
        case sharedQueueQueueNsPerFrame = "shared_queue_queue_ns_per_frame"
    }

    var all: [(String, Cost)] {
        [("sender_ns_per_byte", senderNsPerByte), ("sender_ns_per_frame", senderNsPerFrame),
         ("queue_ns_per_byte", queueNsPerByte), ("queue_ns_per_frame", queueNsPerFrame),
         ("copies_per_byte", copiesPerByte), ("zero_copy_fraction", zeroCopyFraction),
         ("pool_recycles_per_byte", poolRecyclesPerByte), ("pool_ring_fraction", poolRingFraction),
         ("cpu_share", cpuShare)]
            + (twoSenderWorkPerCPUSecond.map { [("two_sender_work_per_cpu_second", $0)] } ?? [])
            + (sharedQueueSenderNsPerFrame.map { [("shared_queue_sender_ns_per_frame", $0)] } ?? [])
            + (sharedQueueQueueNsPerFrame.map { [("shared_queue_queue_ns_per_frame", $0)] } ?? [])
    }
}
