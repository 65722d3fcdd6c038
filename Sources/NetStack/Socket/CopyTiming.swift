@_spi(DMAPoolsSupport) import DMAPools
import Synchronization

/// Copy 1 timed by where its destination's lines were last read
/// (`txsim run --copy-timing`, `ExperimentConfiguration.copyTiming`): a
/// diagnostic, off by default, for the cost of a sender refilling a socket
/// page that a queue run bounced (copy 2 read every byte of it) on this CPU,
/// on another CPU, or never since the guest was built.
///
/// With it on, every 32 KiB piece of copy 1 reads the monotonic clock twice
/// (`clock_monotonic_ns`, about 25 ns each, against about a microsecond of
/// copy) and every bounced fragment writes one byte per 4 KiB page it covers,
/// so its Gbps are not the default run's: read it for the split, not for
/// throughput.
public struct CopyTimingFigures: Sendable, Hashable {
    /// Where a copy-1 destination's lines were last read by a CPU.
    public enum Destination: Int, CaseIterable, Sendable {
        /// Bounced (copy 2) by a queue run on the CPU now writing it.
        case bouncedHere
        /// Bounced by a queue run on another CPU: its lines may still be
        /// there, and each must be taken back before it is written.
        case bouncedElsewhere
        /// Never bounced since the guest was built.
        case notBounced
    }

    /// Nanoseconds of copy 1 and its bytes, by `Destination.rawValue`.
    public var nanoseconds: [Int] = [0, 0, 0]
    public var bytes: [Int] = [0, 0, 0]

    public init() {}

    /// Nanoseconds per byte of copy 1 into `destination`, or nil if no byte went there.
    public func nanosecondsPerByte(_ destination: Destination) -> Double? {
        let b = bytes[destination.rawValue]
        return b > 0 ? Double(nanoseconds[destination.rawValue]) / Double(b) : nil
    }

    /// The share of copy 1's bytes that went to `destination`.
    public func byteFraction(_ destination: Destination) -> Double {
        let total = bytes.reduce(0, +)
        return total > 0 ? Double(bytes[destination.rawValue]) / Double(total) : 0
    }

    /// Two sets of figures added up.
    public static func + (a: Self, b: Self) -> Self {
        var sum = a
        for i in 0..<3 {
            sum.nanoseconds[i] += b.nanoseconds[i]
            sum.bytes[i] += b.bytes[i]
        }
        return sum
    }

    /// Two runs' figures added up, where either may not have timed copies.
    static func sum(_ a: Self?, _ b: Self?) -> Self? {
        switch (a, b) {
        case let (a?, b?): a + b
        case (nil, _): b
        case (_, nil): a
        }
    }
}

/// The state behind `CopyTimingFigures`: per guest page, the CPU whose queue
/// run last bounced it (0: none yet; else the CPU's index plus one, modulo
/// 255). Written by queue runs, read by senders; each entry is a relaxed
/// atomic byte, as a stale answer only moves one copy to another column.
final class CopyTiming: @unchecked Sendable {
    private let tags: UnsafeMutablePointer<Atomic<UInt8>>
    private let pageCount: Int
    private let base: UInt

    init(memory: GuestMemory) {
        pageCount = memory.pageCount
        base = UInt(bitPattern: memory.base)
        tags = .allocate(capacity: pageCount)
        for i in 0..<pageCount { (tags + i).initialize(to: Atomic(0)) }
    }

    deinit {
        tags.deinitialize(count: pageCount)
        tags.deallocate()
    }

    private func index(of address: UnsafeMutableRawPointer) -> Int? {
        let offset = UInt(bitPattern: address) &- base
        let i = Int(truncatingIfNeeded: offset >> UInt(PageGeometry.shift))
        return offset < UInt(pageCount) << UInt(PageGeometry.shift) ? i : nil
    }

    private static func tag(cpu: Int) -> UInt8 { UInt8(cpu % 255 + 1) }

    /// A queue run on the calling CPU bounced `fragment`: tags every 4 KiB page it covers.
    func noteBounced(_ fragment: Fragment) {
        guard fragment.length > 0, let first = index(of: fragment.page.bytes + fragment.offset),
              let last = index(of: fragment.page.bytes + fragment.offset + fragment.length - 1) else { return }
        let tag = Self.tag(cpu: currentCPUIndex())
        for i in first...last { tags[i].store(tag, ordering: .relaxed) }
    }

    /// Where the page at `address` was last bounced, seen from the calling CPU.
    func destination(of address: UnsafeMutableRawPointer) -> CopyTimingFigures.Destination {
        guard let i = index(of: address) else { return .notBounced }
        let tag = tags[i].load(ordering: .relaxed)
        if tag == 0 { return .notBounced }
        return tag == Self.tag(cpu: currentCPUIndex()) ? .bouncedHere : .bouncedElsewhere
    }
}
