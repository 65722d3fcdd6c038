@_spi(DMAPoolsSupport) import DMAPools
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `txsim calibrate`: the costs of each design's TX path by role, per byte
/// and per frame, measured by running the design's own code
/// (`Experiment.run` through `ProjectionDesigns`), and the machine's copy,
/// lock and bandwidth costs. Repetitions interleave the designs, so a change
/// in the machine's speed falls on all of them alike.
public enum Calibration {
    public struct Options: Sendable {
        public var designs: [String]
        public var repetitions: Int = 3
        public var secondsPerRun: Double = 0.15
        /// Two sizes: per-byte and per-frame costs are solved from both.
        public var messageBytes: [Int] = [65536, 16384]
        /// The calibration runs' flows and round trip: the working set the
        /// costs are measured at. The model corrects copy locality from this
        /// working set to a projected point's, so the nearer the two, the less
        /// it leans on that correction: `txsim project --validate` calibrates
        /// each validated workload at its own flows and round trip.
        public var flows: Int = 2
        public var roundTripMicroseconds: Int = 0
        public var configuration: ExperimentConfiguration = .init()

        public init(designs: [String], repetitions: Int = 3, secondsPerRun: Double = 0.15,
                    configuration: ExperimentConfiguration = .init()) {
            self.designs = designs
            self.repetitions = repetitions
            self.secondsPerRun = secondsPerRun
            self.configuration = configuration
        }

        public static let repetitionRange = 1...50
        public static let secondsRange = 0.05...10.0

        public func check() throws(ParameterError) {
            guard Self.repetitionRange.contains(repetitions) else {
                throw .invalid(parameter: "repetitions", reason: "\(repetitions) must be in \(Self.repetitionRange)")
            }
            guard Self.secondsRange.contains(secondsPerRun) else {
                throw .invalid(parameter: "seconds-per-run", reason: "\(secondsPerRun) must be in 0.05...10 seconds")
            }
            guard (1...Workload.maximumFlows).contains(flows) else {
                throw .invalid(parameter: "calibration-flows", reason: "\(flows) must be in 1...\(Workload.maximumFlows)")
            }
            guard Workload.roundTripRange.contains(roundTripMicroseconds) else {
                throw .invalid(parameter: "calibration-rtt-us",
                               reason: "\(roundTripMicroseconds) must be in \(Workload.roundTripRange) microseconds")
            }
        }
    }

    /// The calibration workload: one sender doing everything (it runs its
    /// queue itself, so copy 2 reads bytes its own core just wrote), `flows`
    /// flows (2 by default), and the round trip given (0 by default: the peer
    /// acknowledges at once, so the sender never waits). CPU time per byte is
    /// thread time, so a sender waiting for acknowledgements adds nothing to it;
    /// what a round trip changes is how many bytes wait in flight, and so how
    /// cold the copies are.
    public static func workload(messageBytes: Int, seconds: Double, flows: Int = 2,
                                roundTripMicroseconds: Int = 0) throws(ParameterError) -> Workload {
        try Workload(senders: 1, queues: 1, flows: flows, messageBytes: messageBytes, roundTripMicroseconds: roundTripMicroseconds,
                     durationSeconds: seconds)
    }

    /// Runs the calibration: machine costs, then `repetitions` rounds of every
    /// design at both message sizes.
    public static func run(_ options: Options, progress: (@Sendable (String) -> Void)? = nil) throws -> CalibrationProfile {
        try options.check()
        progress?("machine costs")
        let machineCosts = try measureMachineCosts(repetitions: max(3, options.repetitions))
        let designs = try measureDesigns(options, progress: progress)
        let machine = CalibrationMachine(cores: onlineCPUs(), lastLevelCacheBytes: lastLevelCacheBytes(),
                                         date: utcNow(), note: "txsim calibrate: \(options.repetitions) repetitions of \(options.secondsPerRun) s per design and message size")
        return CalibrationProfile(machine: machine, method: method(options), machineCosts: machineCosts, designs: designs)
    }

    static func method(_ options: Options) -> CalibrationMethod {
        CalibrationMethod(senders: 1, queues: 1, flows: options.flows, roundTripMicroseconds: options.roundTripMicroseconds,
                          messageBytes: options.messageBytes,
                          secondsPerRun: options.secondsPerRun, repetitions: options.repetitions)
    }

    /// Per design, the per-byte and per-frame costs by role.
    public static func measureDesigns(_ options: Options, progress: (@Sendable (String) -> Void)? = nil) throws -> [DesignCosts] {
        try options.check()
        let sizes = options.messageBytes
        precondition(sizes.count == 2 && sizes[0] != sizes[1])
        let resolved = try options.designs.map { try ProjectionDesigns.resolve($0) }
        // samples[d][rep][size]
        var runs = [[[TransmitResult]]](repeating: [], count: resolved.count)
        // samples[d][rep]: two senders, each on its own queue (`twoSenderWork`),
        // and two senders on one queue (`sharedQueueCosts`).
        var twoSenderRuns = [[TransmitResult]](repeating: [], count: resolved.count)
        var sharedQueueRuns = [[TransmitResult]](repeating: [], count: resolved.count)
        let twoSenders = try twoSenderWorkload(messageBytes: sizes[0], seconds: options.secondsPerRun, flows: options.flows,
                                               roundTripMicroseconds: options.roundTripMicroseconds)
        let sharedQueue = try twoSenderWorkload(messageBytes: sizes[0], seconds: options.secondsPerRun, flows: options.flows,
                                                roundTripMicroseconds: options.roundTripMicroseconds, queues: 1)
        for rep in 0..<options.repetitions {
            for (i, design) in resolved.enumerated() {
                progress?("\(options.designs[i]) repetition \(rep + 1)/\(options.repetitions)")
                var pair: [TransmitResult] = []
                for size in sizes {
                    let w = try workload(messageBytes: size, seconds: options.secondsPerRun, flows: options.flows,
                                         roundTripMicroseconds: options.roundTripMicroseconds)
                    pair.append(try ProjectionDesigns.run(design, workload: w, configuration: options.configuration))
                }
                runs[i].append(pair)
                twoSenderRuns[i].append(try ProjectionDesigns.run(design, workload: twoSenders, configuration: options.configuration))
                sharedQueueRuns[i].append(try ProjectionDesigns.run(design, workload: sharedQueue, configuration: options.configuration))
            }
        }
        return resolved.indices.map { i in
            var c = costs(options.designs[i], runs: runs[i], sizes: sizes)
            c.twoSenderWorkPerCPUSecond = twoSenderWork(single: runs[i].map { $0[0] }, twoSenders: twoSenderRuns[i])
            let shared = sharedQueueCosts(single: runs[i].map { $0[0] }, ownQueues: twoSenderRuns[i], sharedQueue: sharedQueueRuns[i],
                                          messageBytes: sizes[0])
            c.sharedQueueSenderNsPerFrame = shared.sender
            c.sharedQueueQueueNsPerFrame = shared.queue
            return c
        }
    }

    /// Per repetition, what two senders sharing one queue cost beyond two
    /// senders on a queue each, both pairs running at once (so that what the
    /// two threads do to each other through the caches, memory and the host
    /// is in both and cancels): the CPU per GB difference by role, as ns per
    /// frame, scaled by the repetition's one-sender over two-sender CPU per
    /// GB so that it is in one CPU's time, as the model's other costs are.
    static func sharedQueueCosts(single: [TransmitResult], ownQueues: [TransmitResult], sharedQueue: [TransmitResult],
                                 messageBytes: Int) -> (sender: Cost, queue: Cost) {
        func cpuPerGB(_ r: TransmitResult) -> Double { r.senderCPUSecondsPerGB + r.queueCPUSecondsPerGB }
        let framesPerByte = ProjectionModel.framesPerByte(messageBytes: messageBytes)
        var sender: [Double] = [], queue: [Double] = []
        for ((one, own), shared) in zip(zip(single, ownQueues), sharedQueue) {
            let work = cpuPerGB(own) > 0 ? min(1, cpuPerGB(one) / cpuPerGB(own)) : 1
            // The senders' waits are not work: a sender of the shared queue
            // that finds it busy yields until its frames have gone.
            func senderWork(_ r: TransmitResult) -> Double {
                r.payloadBytes > 0 ? (r.senderCPUSeconds - r.senderIdleSeconds) / (Double(r.payloadBytes) / 1e9) : 0
            }
            sender.append((senderWork(shared) - senderWork(own)) * work / framesPerByte)
            queue.append((shared.queueCPUSecondsPerGB - own.queueCPUSecondsPerGB) * work / framesPerByte)
        }
        return (.measured(sender), .measured(queue))
    }

    /// Two senders of the design at once, with the calibration's flows in
    /// all (`twoSenderFlows`) and a queue each, so that the two threads share
    /// the machine (caches, memory, the other tenants) over the working set
    /// the one-sender runs measured; at the calibration's first message size.
    /// With `queues: 1`, the two senders share one queue (`sharedQueueCosts`).
    public static func twoSenderWorkload(messageBytes: Int, seconds: Double, flows: Int = 2,
                                         roundTripMicroseconds: Int = 0, queues: Int = 2) throws(ParameterError) -> Workload {
        try Workload(senders: 2, queues: queues, flows: twoSenderFlows(calibrationFlows: flows), messageBytes: messageBytes,
                     roundTripMicroseconds: roundTripMicroseconds, durationSeconds: seconds)
    }

    /// Flows of the two-sender runs: the calibration's flows in all (at
    /// least 2, one per sender), not twice them. The model prices a point's
    /// working set itself, relative to the calibration's flows (copy 1's
    /// cold fraction from the flows' user buffers and socket pages, copy 2's
    /// from the bytes waiting), so the two-sender runs keep that working set
    /// and measure only what the second thread adds. With twice the flows
    /// they also measured the doubled working set, which the model then
    /// charged again: at the pressure workload's 32 flows, 64 flows of 4 MiB
    /// send buffers and 2 MiB user buffers, and on one queue a qdisc backlog
    /// that grows with the flows (bounce on this machine: batches of 16-17
    /// frames with 2 flows, 26-39 with 4; `scripts/shared-queue-flows.sh`,
    /// Design/projection.md).
    public static func twoSenderFlows(calibrationFlows flows: Int) -> Int {
        min(max(2, flows), Workload.maximumFlows)
    }

    /// Per repetition, the design's CPU per GB with one sender over its CPU
    /// per GB with two senders running at once: the work a CPU second buys
    /// when the other core runs the same design (below 1 when the two
    /// threads slow each other down through the caches, memory or the host).
    static func twoSenderWork(single: [TransmitResult], twoSenders: [TransmitResult]) -> Cost {
        func cpuPerGB(_ r: TransmitResult) -> Double { r.senderCPUSecondsPerGB + r.queueCPUSecondsPerGB }
        return .measured(zip(single, twoSenders).map { one, two in
            cpuPerGB(two) > 0 ? cpuPerGB(one) / cpuPerGB(two) : 1
        })
    }

    /// Solves cost/byte = perByte + perFrame x frames/byte at the two sizes,
    /// per repetition; the median and extremes over repetitions.
    static func costs(_ name: String, runs: [[TransmitResult]], sizes: [Int]) -> DesignCosts {
        let f0 = ProjectionModel.framesPerByte(messageBytes: sizes[0]), f1 = ProjectionModel.framesPerByte(messageBytes: sizes[1])
        func solve(_ perByte: (TransmitResult) -> Double) -> (byte: [Double], frame: [Double]) {
            var bytes: [Double] = [], frames: [Double] = []
            for pair in runs {
                let c0 = perByte(pair[0]), c1 = perByte(pair[1])
                let frame = (c1 - c0) / (f1 - f0)
                frames.append(frame)
                bytes.append(c0 - frame * f0)
            }
            return (bytes, frames)
        }
        let sender = solve { $0.senderCPUSecondsPerGB }   // s/GB = ns/byte
        let queue = solve { $0.queueCPUSecondsPerGB }
        let big = runs.map { $0[0] }
        let zeroCopy = Cost.measured(big.map(\.zeroCopyFraction))
        let capped = big.contains { $0.zeroCopyPercent > 0 } && zeroCopy.value > 0.5
        let source: PageSource = zeroCopy.value < 0.5 ? .general : capped ? .swiotlbCapped : .uncapped
        func recycles(_ r: TransmitResult) -> (cached: Double, ring: Double) {
            var cached = 0.0, ring = 0.0
            // page_pool's counters (`recycle cached/cache_full`, `recycle ring/ring_full`).
            for figure in r.designFigures {
                let parts = figure.counts.map(Double.init)
                if figure.name.hasPrefix("recycle cached"), let c = parts.first { cached += c }
                if figure.name.hasPrefix("recycle ring"), let g = parts.first { ring += g + (parts.count > 1 ? parts[1] : 0) }
            }
            return (cached, ring)
        }
        let perByte = big.map { r -> Double in
            let (c, g) = recycles(r)
            return r.payloadBytes > 0 ? (c + g) / Double(r.payloadBytes) : 0
        }
        let ringShare = big.map { r -> Double in
            let (c, g) = recycles(r)
            return c + g > 0 ? g / (c + g) : 0
        }
        let share = runs.flatMap { $0 }.map { r in r.seconds > 0 ? min(1, (r.senderCPUSeconds + r.queueCPUSeconds) / r.seconds) : 1 }
        return DesignCosts(design: name, senderNsPerByte: .measured(sender.byte), senderNsPerFrame: .measured(sender.frame),
                           queueNsPerByte: .measured(queue.byte), queueNsPerFrame: .measured(queue.frame),
                           copiesPerByte: .measured(big.map(\.copiesPerByte)), zeroCopyFraction: zeroCopy,
                           poolRecyclesPerByte: .measured(perByte), poolRingFraction: .measured(ringShare),
                           cpuShare: .measured(share), pageSource: source)
    }

    // MARK: Machine costs

    static let copyBytes = 32 << 10

    /// Copies by locality, the contended swiotlb lock and pool ring, and cold
    /// copy bandwidth with one and two threads; each `repetitions` times.
    public static func measureMachineCosts(repetitions: Int) throws -> MachineCosts {
        let cache = max(lastLevelCacheBytes(), 8 << 20)
        let region = min(max(4 * cache, 32 << 20), 128 << 20)
        var hot: [Double] = [], other: [Double] = [], cold: [Double] = [], one: [Double] = [], two: [Double] = []
        var bounceSame: [Double] = [], bounceOther: [Double] = []
        var speedup: [Double] = [], perCPU: [Double] = []
        var lock: [Double] = [], lockContended: [Double] = [], cacheRecycle: [Double] = [], ring: [Double] = []
        // 32 KiB copies walking regions larger than the last-level cache.
        let coldLoops = [CopyRegion(chunk: copyBytes, span: region), CopyRegion(chunk: copyBytes, span: region)]
        let swiotlb = try SWIOTLBBench()
        // Copy 2 as it runs: into bounce slots walking a pool beyond the LLC
        // (resident, like a guest's), from a source one core or the other wrote.
        let bounce = BounceDestination(span: region)
        for _ in 0..<repetitions {
            hot.append(sameCoreHot())
            bounceSame.append(bounce.copyNanosecondsPerByte(sourceWrittenByOtherCore: false))
            bounceOther.append(bounce.copyNanosecondsPerByte(sourceWrittenByOtherCore: true))
            let scaling = twoThreadScaling()
            speedup.append(scaling.speedup)
            perCPU.append(scaling.perCPUSecond)
            other.append(otherCore())
            let c = coldLoops[0].nanosecondsPerByte()
            cold.append(c)
            one.append(1 / c)
            two.append(twoThreadsGBps(coldLoops))
            lock.append(try swiotlb.mapUnmapNanoseconds(contended: false))
            lockContended.append(try swiotlb.mapUnmapNanoseconds(contended: true))
            let pool = try poolCosts()
            cacheRecycle.append(pool.cache)
            ring.append(pool.ring)
        }
        return MachineCosts(copySameCoreHotNsPerByte: .measured(hot), copyOtherCoreNsPerByte: .measured(other),
                            copyColdNsPerByte: .measured(cold), swiotlbMapUnmapNs: .measured(lock),
                            swiotlbMapUnmapContendedNs: .measured(lockContended), poolCacheRecycleNs: .measured(cacheRecycle),
                            poolRingRecycleContendedNs: .measured(ring), copyBandwidthOneThreadGBps: .measured(one),
                            copyBandwidthTwoThreadsGBps: .measured(two), twoThreadSpeedup: .measured(speedup),
                            twoThreadWorkPerCPUSecond: .measured(perCPU),
                            copyToBounceSameCoreNsPerByte: .measured(bounceSame),
                            copyToBounceOtherCoreNsPerByte: .measured(bounceOther))
    }

    /// A hot 32 KiB copy loop on one thread, then on two at once (each its
    /// own buffers), for `milliseconds` each: the work two threads get done
    /// per wall second over one thread's (`speedup`: 2 on two idle physical
    /// cores, less on hyperthread siblings or a machine shared with other
    /// tenants), and the work per CPU second of a thread with the other
    /// running over one running alone (`perCPUSecond`: what sharing a core
    /// costs, whatever share of time the threads get).
    public static func twoThreadScaling(milliseconds: Double = 40) -> (speedup: Double, perCPUSecond: Double) {
        func copies(threads: Int) -> (perWall: Double, perCPU: Double) {
            let total = Atomic<Int>(0)
            let cpu = Atomic<Int>(0)
            let ready = Atomic<Int>(0)
            let stop = Atomic<Bool>(false)
            let workers = (0..<threads).map { _ in
                ModelThread.start(name: "calibrate-speedup") {
                    let src = UnsafeMutableRawPointer.allocate(byteCount: copyBytes, alignment: 4096)
                    let dst = UnsafeMutableRawPointer.allocate(byteCount: copyBytes, alignment: 4096)
                    memset(src, 0x5a, copyBytes); memset(dst, 0, copyBytes)
                    ready.add(1, ordering: .acquiringAndReleasing)
                    while ready.load(ordering: .acquiring) < threads + 1 { sched_yield() }
                    let c0 = threadCPUNanoseconds()
                    var n = 0
                    while !stop.load(ordering: .relaxed) { memcpy(dst, src, copyBytes); n += 1 }
                    cpu.add(Int(threadCPUNanoseconds() - c0), ordering: .acquiringAndReleasing)
                    total.add(n, ordering: .acquiringAndReleasing)
                    src.deallocate(); dst.deallocate()
                }
            }
            while ready.load(ordering: .acquiring) < threads { sched_yield() }
            ready.add(1, ordering: .acquiringAndReleasing)
            let t0 = monotonicNanoseconds()
            sleep(nanoseconds: UInt64(milliseconds * 1e6))
            stop.store(true, ordering: .releasing)
            for w in workers { w.join() }
            let elapsed = Double(monotonicNanoseconds() - t0)
            let n = Double(total.load(ordering: .acquiring))
            return (n / elapsed, n / max(1, Double(cpu.load(ordering: .acquiring))))
        }
        let one = copies(threads: 1), two = copies(threads: 2)
        return (one.perWall > 0 ? two.perWall / one.perWall : 2, one.perCPU > 0 ? two.perCPU / one.perCPU : 1)
    }

    /// 32 KiB copies whose source this thread wrote just before (only the copy is timed).
    static func sameCoreHot(copies: Int = 400) -> Double {
        let src = UnsafeMutableRawPointer.allocate(byteCount: copyBytes, alignment: 4096)
        let dst = UnsafeMutableRawPointer.allocate(byteCount: copyBytes, alignment: 4096)
        defer { src.deallocate(); dst.deallocate() }
        memset(dst, 0, copyBytes)
        return timedCopies(copies, source: src, writtenByOtherCore: false) { dst }
    }

    /// 32 KiB copies whose source the other thread wrote just before: the
    /// threads take turns (writer, then copier), only the copy is timed.
    static func otherCore(copies: Int = 400) -> Double {
        let src = UnsafeMutableRawPointer.allocate(byteCount: copyBytes, alignment: 4096)
        let dst = UnsafeMutableRawPointer.allocate(byteCount: copyBytes, alignment: 4096)
        defer { src.deallocate(); dst.deallocate() }
        memset(dst, 0, copyBytes)
        return timedCopies(copies, source: src, writtenByOtherCore: true) { dst }
    }

    /// `copies` copies of `copyBytes` from `source` into `destination()`,
    /// each after the source was written again, by this thread or by another
    /// one (the threads take turns: writer, then copier); only the copies
    /// are timed. Nanoseconds per byte.
    static func timedCopies(_ copies: Int, source: UnsafeMutableRawPointer, writtenByOtherCore: Bool,
                            destination: () -> UnsafeMutableRawPointer) -> Double {
        var total: UInt64 = 0
        func copy() {
            let dst = destination()
            let t0 = monotonicNanoseconds()
            memcpy(dst, source, copyBytes)
            total += monotonicNanoseconds() - t0
        }
        guard writtenByOtherCore else {
            for i in 0..<copies {
                memset(source, Int32(i & 0xff), copyBytes)
                copy()
            }
            return Double(total) / Double(copies * copyBytes)
        }
        let shared = SendablePointer(source)
        let turn = Atomic<Int>(0)   // even: the writer's turn; odd: the copier's
        let writer = ModelThread.start(name: "calibrate-writer") {
            for i in 0..<copies {
                while turn.load(ordering: .acquiring) != 2 * i { sched_yield() }
                memset(shared.pointer, Int32(i & 0xff), copyBytes)
                turn.store(2 * i + 1, ordering: .releasing)
            }
        }
        for i in 0..<copies {
            while turn.load(ordering: .acquiring) != 2 * i + 1 { sched_yield() }
            copy()
            turn.store(2 * i + 2, ordering: .releasing)
        }
        writer.join()
        return Double(total) / Double(copies * copyBytes)
    }

    /// GB/s copied by two threads at once, each walking its own cold region.
    static func twoThreadsGBps(_ loops: [CopyRegion]) -> Double {
        CopyRegion.concurrentGigabytesPerSecond(loops, name: "calibrate-bandwidth",
                                                bytes: loops.reduce(0) { $0 + $1.span }) { $0.pass() }
    }

    /// page_pool over swiotlb pages: alloc + direct recycle on the owner; and
    /// alloc on the owner with the other thread putting each page back
    /// through the ptr_ring (both threads' CPU time, per page).
    static func poolCosts(pages: Int = 50_000) throws -> (cache: Double, ring: Double) {
        let guest = try Guest(.init(guestBytes: 256 << 20, swiotlbBytes: 64 << 20, hypercall: .free), zeroCopyPercent: 90)
        let device = try guest.devices.add(name: "calibrate-pool")
        let provider = SWIOTLBPageProvider(swiotlb: guest.swiotlb, device: device)
        let pool = try PagePool(.init(order: 0, poolSize: 1024, flags: [.dmaMap, .transmit], dmaDirection: .toDevice,
                                      device: device, name: "calibrate"), provider: provider)
        defer { pool.destroy() }
        for _ in 0..<4096 { pool.recycleDirect(try pool.allocatePage()) }   // warm
        let c0 = threadCPUNanoseconds()
        for _ in 0..<pages { pool.recycleDirect(try pool.allocatePage()) }
        let cache = Double(threadCPUNanoseconds() - c0) / Double(pages)

        let handoff = Mutex<[Page]>([])
        let done = Atomic<Bool>(false)
        let sharedPool = SendablePool(pool: pool)
        let putter = ModelThread.start(name: "calibrate-ring") {
            var local: [Page] = []
            while true {
                handoff.withLock { swap(&local, &$0) }
                if local.isEmpty {
                    if done.load(ordering: .acquiring) && handoff.withLock({ $0.isEmpty }) { break }
                    sched_yield()
                    continue
                }
                for page in local { sharedPool.pool.put(page, allowDirect: false) }
                local.removeAll(keepingCapacity: true)
            }
        }
        let a0 = threadCPUNanoseconds()
        var batch: [Page] = []
        for _ in 0..<pages {
            batch.append(try pool.allocatePage())
            if batch.count == 32 {
                while handoff.withLock({ $0.count }) > 512 { sched_yield() }
                handoff.withLock { $0.append(contentsOf: batch) }
                batch.removeAll(keepingCapacity: true)
            }
        }
        handoff.withLock { $0.append(contentsOf: batch) }
        let ownerCPU = threadCPUNanoseconds() - a0
        done.store(true, ordering: .releasing)
        let putterCPU = putter.join()
        return (cache, Double(ownerCPU + putterCPU) / Double(pages))
    }

    // MARK: Machine facts

    public static func onlineCPUs() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// sysfs `cpu0/cache/index3/size` (e.g. "16384K"), 0 when unreadable.
    public static func lastLevelCacheBytes() -> Int {
        guard let file = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r") else { return 0 }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 64)
        guard fgets(&line, Int32(line.count), file) != nil else { return 0 }
        let text = String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let digits = text.prefix { $0.isNumber }
        guard let n = Int(digits) else { return 0 }
        switch text.dropFirst(digits.count).first {
        case "K": return n << 10
        case "M": return n << 20
        case "G": return n << 30
        default: return n
        }
    }

    public static func utcNow() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }
}

/// Copy 2's shape: 32 KiB copies into a destination that walks `span`
/// bytes (a bounce pool larger than the last-level cache, faulted in up
/// front), from a 32 KiB source written just before the copy by this thread
/// or by another one (the threads take turns; only the copy is timed).
final class BounceDestination: @unchecked Sendable {
    let span: Int
    let slots: UnsafeMutableRawPointer
    let source: UnsafeMutableRawPointer
    private var offset = 0

    init(span: Int) {
        self.span = span / Calibration.copyBytes * Calibration.copyBytes
        slots = .allocate(byteCount: self.span, alignment: 4096)
        source = .allocate(byteCount: Calibration.copyBytes, alignment: 4096)
        memset(slots, 0, self.span)
        memset(source, 0, Calibration.copyBytes)
    }

    deinit { slots.deallocate(); source.deallocate() }

    private func nextSlot() -> UnsafeMutableRawPointer {
        let slot = slots + offset
        offset += Calibration.copyBytes
        if offset == span { offset = 0 }
        return slot
    }

    func copyNanosecondsPerByte(sourceWrittenByOtherCore: Bool, copies: Int = 400) -> Double {
        Calibration.timedCopies(copies, source: source, writtenByOtherCore: sourceWrittenByOtherCore) { nextSlot() }
    }
}

private struct SendablePointer: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    init(_ pointer: UnsafeMutableRawPointer) { self.pointer = pointer }
}

private struct SendablePool: @unchecked Sendable { let pool: PagePool }

/// swiotlb with one area: map + unmap of 32 KiB (bounce copy included),
/// alone or with another thread doing the same on the same area.
final class SWIOTLBBench: @unchecked Sendable {
    let guest: Guest
    let device: Device
    let pages: [Page]

    init() throws {
        guest = try Guest(.init(guestBytes: 256 << 20, swiotlbBytes: 64 << 20, hypercall: .free), swiotlbAreas: 1)
        let guest = self.guest
        device = try guest.devices.add(name: "calibrate-swiotlb")
        pages = try (0..<2).map { _ in try guest.allocator.allocatePages(order: PageGeometry.socketFragOrder) }
        for page in pages { memset(page.bytes, 0x5a, page.byteCount) }
    }

    deinit { for page in pages { guest.allocator.freePages(page) } }

    func loop(_ page: Page, operations: Int) throws {
        for _ in 0..<operations {
            let address = try guest.dma.mapPage(page, offset: 0, size: Calibration.copyBytes, direction: .toDevice, device: device)
            try guest.dma.unmapPage(address, size: Calibration.copyBytes, direction: .toDevice, device: device)
        }
    }

    func mapUnmapNanoseconds(contended: Bool, operations: Int = 4000) throws -> Double {
        try loop(pages[0], operations: 200)
        let stop = Atomic<Bool>(false)
        let other: ModelThread? = contended ? ModelThread.start(name: "calibrate-swiotlb") { [self] in
            while !stop.load(ordering: .acquiring) { try? loop(pages[1], operations: 16) }
        } : nil
        let t0 = monotonicNanoseconds()
        try loop(pages[0], operations: operations)
        let elapsed = monotonicNanoseconds() - t0
        stop.store(true, ordering: .releasing)
        other?.join()
        return Double(elapsed) / Double(operations)
    }
}
