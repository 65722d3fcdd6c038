import DMAPools

/// Side-by-side measurement: every figure is the median of several batches timed
/// with the monotonic clock in one process, so ratios between figures taken in
/// one run are meaningful on a shared, noisy machine.
enum Measure {
    /// Median nanoseconds per operation of `body`, which performs `operations`
    /// operations per call. One warm-up batch is discarded.
    static func nanosecondsPerOperation(batches: Int = 9, operations: Int, _ body: () throws -> Void) rethrows -> Double {
        precondition(batches > 0 && operations > 0)
        try body()
        var samples: [Double] = []
        samples.reserveCapacity(batches)
        for _ in 0..<batches {
            let start = monotonicNanoseconds()
            try body()
            let elapsed = monotonicNanoseconds() - start
            samples.append(Double(elapsed) / Double(operations))
        }
        return median(samples)
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }

    /// The machine's single-thread copy bandwidth in GB/s (10^9 bytes per second),
    /// copying `bytes` between two buffers larger than the last-level cache would
    /// favour, the physical limit every design's copies are held against.
    static func memcpyGigabytesPerSecond(bytes: Int = 64 << 20) -> Double {
        let source = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        defer { source.deallocate(); destination.deallocate() }
        for i in stride(from: 0, to: bytes, by: 8) { source.storeBytes(of: UInt64(i), toByteOffset: i, as: UInt64.self) }
        memset(destination, 1, bytes)
        let nsPerByte = nanosecondsPerOperation(batches: 7, operations: bytes) {
            memcpy(destination, source, bytes)
        }
        return 1 / nsPerByte
    }
}

#if canImport(Glibc)
import Glibc
#endif
