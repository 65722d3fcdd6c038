@_spi(DMAPoolsSupport) import DMAPools
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Side-by-side measurement: every figure is the median of several batches timed
/// with the monotonic clock in one process, so ratios between figures taken in
/// one run are meaningful on a shared, noisy machine.
public enum Measure {
    private static let _sink = Atomic<UInt64>(0)

    /// Median nanoseconds per operation of `body(n)`, which performs `n`
    /// operations. Each batch runs `operations`; one warm-up batch of
    /// `warmUpOperations` (default: `operations`) is discarded.
    public static func nanosecondsPerOperation<E: Error>(
        batches: Int = 9, operations: Int, warmUpOperations: Int? = nil, _ body: (Int) throws(E) -> Void
    ) throws(E) -> Double {
        precondition(batches > 0 && operations > 0, "batches \(batches) and operations \(operations) must be positive")
        try body(warmUpOperations ?? operations)
        var samples: [Double] = []
        samples.reserveCapacity(batches)
        for _ in 0..<batches {
            let start = monotonicNanoseconds()
            try body(operations)
            let elapsed = monotonicNanoseconds() - start
            samples.append(Double(elapsed) / Double(operations))
        }
        return median(samples)
    }

    /// The opaque sink every loop's result goes into, so that the optimizer
    /// cannot drop the work that produced it: a non-inlined call that stores
    /// the value where the compiler cannot see it read.
    @inline(never)
    public static func consume(_ value: UInt64) {
        _sink.store(_sink.load(ordering: .relaxed) &+ value, ordering: .relaxed)
    }

    /// The median (the mean of the middle two for an even count).
    public static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }

    /// The machine's single-thread copy bandwidth in GB/s (10^9 bytes per second),
    /// copying `bytes` between two buffers larger than the last-level cache would
    /// favour, the physical limit every design's copies are held against.
    public static func memcpyGigabytesPerSecond(bytes: Int = 64 << 20) -> Double {
        let source = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        defer { source.deallocate(); destination.deallocate() }
        for i in stride(from: 0, to: bytes, by: 8) { source.storeBytes(of: UInt64(i), toByteOffset: i, as: UInt64.self) }
        memset(destination, 1, bytes)
        let nsPerByte = nanosecondsPerOperation(batches: 7, operations: bytes) { _ in
            memcpy(destination, source, bytes)
        }
        return 1 / nsPerByte
    }
}
