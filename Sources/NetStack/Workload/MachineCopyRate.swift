@_spi(DMAPoolsSupport) import DMAPools
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The machine's copy rate, measured in the same invocation as the results it
/// is reported beside: `memcpy` of the workload's copy size between two
/// buffers of that size (cache resident: the rate the model's copies can reach
/// at best on this machine, not a NIC's or a real guest's rate), by one thread
/// and by two threads at once (each with its own buffers). Rates are in GB/s,
/// 10^9 bytes per second (not gigabits).
public struct MachineCopyRate: Sendable, Hashable {
    /// Bytes per `memcpy`.
    public var copyBytes: Int
    /// One thread, GB/s: the median of `batches` timed batches.
    public var oneThreadGigabytesPerSecond: Double
    /// Two threads copying at once, GB/s in total.
    public var twoThreadsGigabytesPerSecond: Double
    /// The bytes of the working-set probe's source (and of its destination):
    /// the workload's user buffers, 0 when not measured.
    public var workingSetBytes: Int
    /// One thread copying `copyBytes` chunks that walk a source and a
    /// destination of `workingSetBytes` each, GB/s: what the cache-resident
    /// rate does not show (the last-level cache shared with other tenants,
    /// memory bandwidth) when the workload's buffers do not fit in a core's
    /// caches.
    public var workingSetGigabytesPerSecond: Double
    /// Nanoseconds per byte to overwrite a `copyBytes` buffer with a copy
    /// right after another thread (on the other CPU, when there is one free)
    /// read all of it: what copy 1 pays to refill a socket page whose lines
    /// the CPU that bounced it (copy 2) still holds, as each line must be
    /// taken back from that CPU's cache. 0 when not measured.
    public var handoffNanosecondsPerByte: Double
    /// The same overwrite right after this thread wrote the buffer itself
    /// (its lines in this CPU's cache): the reference the hand-off is set
    /// against. 0 when not measured.
    public var ownRewriteNanosecondsPerByte: Double

    public init(copyBytes: Int, oneThreadGigabytesPerSecond: Double, twoThreadsGigabytesPerSecond: Double,
                workingSetBytes: Int = 0, workingSetGigabytesPerSecond: Double = 0,
                handoffNanosecondsPerByte: Double = 0, ownRewriteNanosecondsPerByte: Double = 0) {
        self.copyBytes = copyBytes
        self.oneThreadGigabytesPerSecond = oneThreadGigabytesPerSecond
        self.twoThreadsGigabytesPerSecond = twoThreadsGigabytesPerSecond
        self.workingSetBytes = workingSetBytes
        self.workingSetGigabytesPerSecond = workingSetGigabytesPerSecond
        self.handoffNanosecondsPerByte = handoffNanosecondsPerByte
        self.ownRewriteNanosecondsPerByte = ownRewriteNanosecondsPerByte
    }

    /// How many times dearer the hand-off is than the own rewrite (0 when
    /// not measured).
    public var handoffFactor: Double {
        ownRewriteNanosecondsPerByte > 0 ? handoffNanosecondsPerByte / ownRewriteNanosecondsPerByte : 0
    }

    /// The working-set probe's size for `workload`: its flows' user buffers
    /// (one run of the largest order, 2 MiB, each), at most 64 MiB.
    public static func workingSetBytes(for workload: Workload) -> Int {
        min(workload.flows * PageGeometry.bytes(order: PageGeometry.maxOrder), 64 << 20)
    }

    /// The largest single copy the model makes for `workload`: a message, cut
    /// at the socket page (order 3, 32 KiB) copy 1 fills and copy 2 bounces.
    public static func copyBytes(for workload: Workload) -> Int {
        min(workload.messageBytes, PageGeometry.bytes(order: PageGeometry.socketFragOrder))
    }

    /// Measures the copy rate for `copyBytes`-sized copies: about
    /// `batches` x `batchMilliseconds` per thread count.
    public static func measure(copyBytes: Int, workingSetBytes: Int = 0, batches: Int = 5,
                               batchMilliseconds: Double = 4) -> MachineCopyRate {
        precondition(copyBytes > 0 && batches > 0)
        let one = CopyRegion(chunk: copyBytes)
        let copiesPerBatch = one.calibrate(milliseconds: batchMilliseconds)
        var samples: [Double] = []
        for _ in 0..<batches { samples.append(one.gigabytesPerSecond(chunks: copiesPerBatch)) }
        let oneThread = Spread(samples)?.median ?? 0

        let two = [CopyRegion(chunk: copyBytes), CopyRegion(chunk: copyBytes)]
        var pairSamples: [Double] = []
        for _ in 0..<batches {
            pairSamples.append(CopyRegion.concurrentGigabytesPerSecond(two, name: "copy-rate",
                                                                        bytes: 2 * copiesPerBatch * copyBytes) { $0.copy(copiesPerBatch) })
        }
        var workingSetRate = 0.0
        if workingSetBytes >= copyBytes {
            let walk = CopyRegion(chunk: copyBytes, span: workingSetBytes)
            let chunks = walk.calibrate(milliseconds: batchMilliseconds)
            var walkSamples: [Double] = []
            for _ in 0..<batches { walkSamples.append(walk.gigabytesPerSecond(chunks: chunks)) }
            workingSetRate = Spread(walkSamples)?.median ?? 0
        }
        let handoff = CacheHandoff(bytes: copyBytes).measure(batches: batches, rewritesPerBatch: handoffRewritesPerBatch)
        return MachineCopyRate(copyBytes: copyBytes, oneThreadGigabytesPerSecond: oneThread,
                               twoThreadsGigabytesPerSecond: Spread(pairSamples)?.median ?? 0,
                               workingSetBytes: workingSetBytes >= copyBytes ? workingSetBytes : 0,
                               workingSetGigabytesPerSecond: workingSetRate,
                               handoffNanosecondsPerByte: handoff.afterOtherRead, ownRewriteNanosecondsPerByte: handoff.afterOwnWrite)
    }

    /// Hand-offs timed per batch of the probe.
    static let handoffRewritesPerBatch = 200
    /// Batches of the probe `Experiment.comparison` runs before every run
    /// (of half as many hand-offs each as the probe before and after).
    static let handoffBatchesPerRun = 3
}

/// The hand-off probe: a buffer overwritten by this thread right after a
/// helper thread read all of it, against the same overwrite right after this
/// thread wrote it. The helper spins on a flag between reads (yielding now
/// and then, so a busy machine still makes progress), so on a machine with a
/// free CPU it runs on the other one.
final class CacheHandoff: @unchecked Sendable {
    let bytes: Int
    let buffer: UnsafeMutableRawPointer
    let source: UnsafeMutableRawPointer
    let scratch: UnsafeMutableRawPointer
    /// 0: idle; 1: the helper should read `buffer`; 2: the helper should stop.
    let request = Atomic<Int>(0)

    init(bytes: Int) {
        precondition(bytes > 0)
        self.bytes = bytes
        buffer = .allocate(byteCount: bytes, alignment: 4096)
        source = .allocate(byteCount: bytes, alignment: 4096)
        scratch = .allocate(byteCount: bytes, alignment: 4096)
        memset(source, 0x5a, bytes)
        memset(buffer, 0, bytes)
        memset(scratch, 0, bytes)
    }

    deinit {
        buffer.deallocate()
        source.deallocate()
        scratch.deallocate()
    }

    /// Spins until `done()`, yielding every 1024 tries so that a busy
    /// machine still runs the other thread.
    private static func spin(until done: () -> Bool) {
        var tries = 0
        while !done() {
            tries &+= 1
            if tries & 1023 == 0 { sched_yield() }
        }
    }

    /// The probe `Experiment.comparison` runs around every run: the
    /// hand-off cost in ns per byte of a socket page (32 KiB), a few
    /// milliseconds; 0 on a machine with one CPU.
    static func probe(bytes: Int = 32 << 10) -> Double {
        CacheHandoff(bytes: bytes).measure(batches: MachineCopyRate.handoffBatchesPerRun,
                                           rewritesPerBatch: MachineCopyRate.handoffRewritesPerBatch / 2,
                                           budgetNanoseconds: probeBudgetNanoseconds).afterOtherRead
    }

    /// At most 20 ms per probe (a few milliseconds on an idle machine): a comparison
    /// probes between every two runs, and a busy machine must not make that its cost.
    static let probeBudgetNanoseconds: UInt64 = 20_000_000

    /// Medians over `batches` of the nanoseconds per byte of an overwrite
    /// after the helper's read, and after this thread's own write; both 0
    /// on a machine with one CPU. The writer runs on CPU 0 and the helper on
    /// CPU 1, each in a thread of its own bound there, so the figure is the
    /// cross-CPU cost whatever the scheduler would have done.
    ///
    /// With `budgetNanoseconds`, the probe stops once it has run that long
    /// and uses the hand-offs it timed (none: 0, not measured). Each
    /// hand-off needs the other thread running, so on a machine whose CPUs
    /// are busy the probe would otherwise wait on the scheduler for every
    /// one; the timed overwrite itself does not include that wait.
    func measure(batches: Int, rewritesPerBatch: Int, budgetNanoseconds: UInt64? = nil) -> (afterOtherRead: Double, afterOwnWrite: Double) {
        guard onlineCPUCount() >= 2 else { return (0, 0) }
        let helper = ModelThread.start(name: "handoff-reader") { [self] in
            _ = pinCurrentThread(toCPU: 1)
            while true {
                var r = 0
                Self.spin { r = request.load(ordering: .acquiring); return r != 0 }
                if r == 2 { return }
                memcpy(scratch, buffer, bytes)
                request.store(0, ordering: .releasing)
            }
        }
        let figures = Lock<(other: [Double], own: [Double])>(([], []))
        let writer = ModelThread.start(name: "handoff-writer") { [self] in
            _ = pinCurrentThread(toCPU: 0)
            var other: [Double] = []
            var own: [Double] = []
            let deadline = budgetNanoseconds.map { monotonicNanoseconds() &+ $0 }
            var overBudget = false
            for _ in 0..<batches where !overBudget {
                var otherNanoseconds: UInt64 = 0
                var ownNanoseconds: UInt64 = 0
                var rewrites = 0
                for _ in 0..<rewritesPerBatch {
                    if let deadline, monotonicNanoseconds() > deadline {
                        overBudget = true
                        break
                    }
                    rewrites += 1
                    memcpy(buffer, source, bytes)
                    request.store(1, ordering: .releasing)
                    Self.spin { request.load(ordering: .acquiring) == 0 }
                    let t0 = monotonicNanoseconds()
                    memcpy(buffer, source, bytes)
                    let t1 = monotonicNanoseconds()
                    memcpy(buffer, source, bytes)
                    let t2 = monotonicNanoseconds()
                    otherNanoseconds &+= t1 &- t0
                    ownNanoseconds &+= t2 &- t1
                }
                guard rewrites > 0 else { break }
                let total = Double(rewrites * bytes)
                other.append(Double(otherNanoseconds) / total)
                own.append(Double(ownNanoseconds) / total)
            }
            request.store(2, ordering: .releasing)
            figures.withLock { $0 = (other, own) }
        }
        _ = writer.join()
        _ = helper.join()
        let (other, own) = figures.withLock { $0 }
        return (Spread(other)?.median ?? 0, Spread(own)?.median ?? 0)
    }
}

/// A source and a destination of `span` bytes, both touched before timing,
/// copied `chunk` bytes at a time, walking both in step and wrapping at the
/// end. With `span == chunk` it is the same copy again and again (cache
/// resident); with a span beyond the caches it is a cold copy. The copy-rate
/// probes here and the calibration's cold copies (`Calibration`) share it.
final class CopyRegion: @unchecked Sendable {
    let chunk: Int
    /// `span` rounded down to whole chunks.
    let span: Int
    let source: UnsafeMutableRawPointer
    let destination: UnsafeMutableRawPointer
    private var offset = 0

    init(chunk: Int, span: Int? = nil) {
        precondition(chunk > 0 && (span ?? chunk) >= chunk, "copy chunk \(chunk) must be positive and fit in span \(span ?? chunk)")
        self.chunk = chunk
        self.span = (span ?? chunk) / chunk * chunk
        source = .allocate(byteCount: self.span, alignment: 4096)
        destination = .allocate(byteCount: self.span, alignment: 4096)
        memset(source, 0x5a, self.span)
        memset(destination, 0, self.span)
    }

    deinit {
        source.deallocate()
        destination.deallocate()
    }

    /// `chunks` copies of `chunk` bytes, each at the next offset.
    func copy(_ chunks: Int) {
        for _ in 0..<chunks {
            memcpy(destination + offset, source + offset, chunk)
            offset += chunk
            if offset == span { offset = 0 }
        }
    }

    /// One copy of every chunk of the span.
    func pass() { copy(span / chunk) }

    /// Chunks per batch so that one batch lasts about `milliseconds`.
    func calibrate(milliseconds: Double) -> Int {
        var chunks = 16
        while true {
            let start = monotonicNanoseconds()
            copy(chunks)
            let elapsed = Double(monotonicNanoseconds() - start)
            if elapsed >= milliseconds * 1e6 / 4 || chunks >= 1 << 26 {
                return max(1, Int(Double(chunks) * milliseconds * 1e6 / max(elapsed, 1)))
            }
            chunks *= 4
        }
    }

    /// GB/s of one timed batch of `chunks` copies.
    func gigabytesPerSecond(chunks: Int) -> Double {
        let start = monotonicNanoseconds()
        copy(chunks)
        let elapsed = Double(monotonicNanoseconds() - start)
        return elapsed > 0 ? Double(chunks * chunk) / elapsed : 0
    }

    /// GB/s copied by one thread per region at once, each running `work` on
    /// its region, `bytes` in all. The clock starts once every thread is
    /// running (they meet at a barrier first) and stops when the last one is
    /// done, so the threads' creation and start-up are not timed.
    static func concurrentGigabytesPerSecond(_ regions: [CopyRegion], name: String, bytes: Int,
                                             _ work: @escaping @Sendable (CopyRegion) -> Void) -> Double {
        let arrived = Atomic<Int>(0)
        let spans = Lock<(start: UInt64, end: UInt64)>((.max, 0))
        let threads = regions.map { region in
            ModelThread.start(name: name) { [region] in
                arrived.add(1, ordering: .acquiringAndReleasing)
                while arrived.load(ordering: .acquiring) < regions.count { sched_yield() }
                let start = monotonicNanoseconds()
                work(region)
                let end = monotonicNanoseconds()
                spans.withLock { $0 = (min($0.start, start), max($0.end, end)) }
            }
        }
        for thread in threads { thread.join() }
        let (start, end) = spans.withLock { $0 }
        return end > start ? Double(bytes) / Double(end - start) : 0
    }

    /// Nanoseconds per byte of one timed pass.
    func nanosecondsPerByte() -> Double {
        let start = monotonicNanoseconds()
        pass()
        return Double(monotonicNanoseconds() - start) / Double(span)
    }
}
