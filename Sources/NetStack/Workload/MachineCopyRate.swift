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

    public init(copyBytes: Int, oneThreadGigabytesPerSecond: Double, twoThreadsGigabytesPerSecond: Double) {
        self.copyBytes = copyBytes
        self.oneThreadGigabytesPerSecond = oneThreadGigabytesPerSecond
        self.twoThreadsGigabytesPerSecond = twoThreadsGigabytesPerSecond
    }

    /// The largest single copy the model makes for `workload`: a message, cut
    /// at the socket page (order 3, 32 KiB) copy 1 fills and copy 2 bounces.
    public static func copyBytes(for workload: Workload) -> Int {
        min(workload.messageBytes, PageGeometry.bytes(order: PageGeometry.socketFragOrder))
    }

    /// Measures the copy rate for `copyBytes`-sized copies: about
    /// `batches` x `batchMilliseconds` per thread count.
    public static func measure(copyBytes: Int, batches: Int = 5, batchMilliseconds: Double = 4) -> MachineCopyRate {
        precondition(copyBytes > 0 && batches > 0)
        let one = CopyLoop(bytes: copyBytes)
        let copiesPerBatch = one.calibrate(milliseconds: batchMilliseconds)
        var samples: [Double] = []
        for _ in 0..<batches { samples.append(one.gigabytesPerSecond(copies: copiesPerBatch)) }
        let oneThread = Spread(samples)?.median ?? 0

        let two = [CopyLoop(bytes: copyBytes), CopyLoop(bytes: copyBytes)]
        var pairSamples: [Double] = []
        for _ in 0..<batches {
            let ready = Atomic<Int>(0)
            let start = monotonicNanoseconds()
            let threads = two.map { loop in
                ModelThread.start(name: "copy-rate") { [loop] in
                    ready.add(1, ordering: .acquiringAndReleasing)
                    while ready.load(ordering: .acquiring) < 2 { sched_yield() }
                    loop.copy(copiesPerBatch)
                }
            }
            for thread in threads { thread.join() }
            let elapsed = Double(monotonicNanoseconds() - start)
            pairSamples.append(elapsed > 0 ? Double(2 * copiesPerBatch * copyBytes) / elapsed : 0)
        }
        return MachineCopyRate(copyBytes: copyBytes, oneThreadGigabytesPerSecond: oneThread,
                               twoThreadsGigabytesPerSecond: Spread(pairSamples)?.median ?? 0)
    }
}

/// A source and a destination of one copy's size, both touched before timing.
private final class CopyLoop: @unchecked Sendable {
    let bytes: Int
    let source: UnsafeMutableRawPointer
    let destination: UnsafeMutableRawPointer

    init(bytes: Int) {
        self.bytes = bytes
        source = .allocate(byteCount: bytes, alignment: 4096)
        destination = .allocate(byteCount: bytes, alignment: 4096)
        memset(source, 0x5a, bytes)
        memset(destination, 0, bytes)
    }

    deinit {
        source.deallocate()
        destination.deallocate()
    }

    func copy(_ copies: Int) {
        for _ in 0..<copies { memcpy(destination, source, bytes) }
    }

    /// Copies per batch so that one batch lasts about `milliseconds`.
    func calibrate(milliseconds: Double) -> Int {
        var copies = 16
        while true {
            let start = monotonicNanoseconds()
            copy(copies)
            let elapsed = Double(monotonicNanoseconds() - start)
            if elapsed >= milliseconds * 1e6 / 4 || copies >= 1 << 26 {
                return max(1, Int(Double(copies) * milliseconds * 1e6 / max(elapsed, 1)))
            }
            copies *= 4
        }
    }

    /// GB/s of one timed batch of `copies` copies.
    func gigabytesPerSecond(copies: Int) -> Double {
        let start = monotonicNanoseconds()
        copy(copies)
        let elapsed = Double(monotonicNanoseconds() - start)
        return elapsed > 0 ? Double(copies * bytes) / elapsed : 0
    }
}
