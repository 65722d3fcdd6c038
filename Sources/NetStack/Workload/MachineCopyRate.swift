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

    public init(copyBytes: Int, oneThreadGigabytesPerSecond: Double, twoThreadsGigabytesPerSecond: Double,
                workingSetBytes: Int = 0, workingSetGigabytesPerSecond: Double = 0) {
        self.copyBytes = copyBytes
        self.oneThreadGigabytesPerSecond = oneThreadGigabytesPerSecond
        self.twoThreadsGigabytesPerSecond = twoThreadsGigabytesPerSecond
        self.workingSetBytes = workingSetBytes
        self.workingSetGigabytesPerSecond = workingSetGigabytesPerSecond
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
        return MachineCopyRate(copyBytes: copyBytes, oneThreadGigabytesPerSecond: oneThread,
                               twoThreadsGigabytesPerSecond: Spread(pairSamples)?.median ?? 0,
                               workingSetBytes: workingSetBytes >= copyBytes ? workingSetBytes : 0,
                               workingSetGigabytesPerSecond: workingSetRate)
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
