import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The modelled cost of converting guest pages between private and shared.
///
/// In a real confidential VM a conversion is a hypercall that changes the
/// hypervisor's stage-2 (or EPT/RMP) tables and flushes TLBs. There is no
/// hypervisor here, so the cost is *modelled*, never measured: it is a named,
/// configurable parameter, every conversion is counted, and the time it stands
/// for is reported on its own line, never folded into other figures.
public struct HypercallCostModel: Sendable, Hashable {
    /// How the modelled time is charged to the calling thread.
    public enum Charge: String, Sendable, Hashable, CaseIterable {
        /// Busy-wait for the modelled duration, so throughput reflects it.
        case spin
        /// Only count it: conversions are free in wall-clock time.
        case accountOnly = "account-only"
    }

    /// Fixed cost of one conversion call, in nanoseconds.
    public var perCallNanoseconds: Int
    /// Additional cost for each 4 KiB page converted by that call, in nanoseconds.
    public var perPageNanoseconds: Int
    /// How the cost is charged.
    public var charge: Charge
    /// Fault injection: every Nth conversion fails (0 = never).
    public var failEveryNthCall: Int

    /// Defaults chosen to sit where the review's measurements put in-place
    /// decryption: slower than a 4 KiB memcpy (~0.3 µs) per page. These are
    /// modelled values; set them from your platform's measurements.
    public static let `default` = HypercallCostModel(
        perCallNanoseconds: 2_000, perPageNanoseconds: 500, charge: .spin, failEveryNthCall: 0)

    /// A model that charges nothing (for tests that count, not time).
    public static let free = HypercallCostModel(
        perCallNanoseconds: 0, perPageNanoseconds: 0, charge: .accountOnly, failEveryNthCall: 0)

    /// The largest modelled cost per call: 1 ms, hundreds of times what
    /// published TDX/SEV-SNP/pKVM conversion measurements show (a few to tens of
    /// microseconds). Anything larger models no machine and stalls a run.
    public static let maximumPerCallNanoseconds = 1_000_000
    /// The largest modelled cost per page converted: 100 µs (a 4 KiB memcpy is
    /// about 0.3 µs).
    public static let maximumPerPageNanoseconds = 100_000

    public init(perCallNanoseconds: Int, perPageNanoseconds: Int, charge: Charge, failEveryNthCall: Int) {
        self.perCallNanoseconds = perCallNanoseconds
        self.perPageNanoseconds = perPageNanoseconds
        self.charge = charge
        self.failEveryNthCall = failEveryNthCall
    }

    /// The modelled duration of converting `pages` pages in one call.
    @inlinable
    public func nanoseconds(pages: Int) -> Int { perCallNanoseconds + perPageNanoseconds * pages }
}

/// Counters of the modelled conversion hypercalls.
public struct ConversionStatistics: Sendable, Hashable {
    /// Conversion calls made (both directions, failures included).
    public var calls: Int = 0
    /// Pages converted private -> shared.
    public var pagesDecrypted: Int = 0
    /// Pages converted shared -> private.
    public var pagesEncrypted: Int = 0
    /// Calls that failed (fault injection).
    public var failures: Int = 0
    /// Total modelled time, in nanoseconds (charged or not).
    public var modelledNanoseconds: Int = 0
}

/// A monotonic clock in nanoseconds (`CLOCK_MONOTONIC`), for spinning and timing.
/// Not public API (`@_spi(DMAPoolsSupport)`, inlinable in the package's targets).
@_spi(DMAPoolsSupport)
@inlinable
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Busy-waits for `nanoseconds` on the calling thread.
@inline(never)
package func spin(nanoseconds: Int) {
    guard nanoseconds > 0 else { return }
    let deadline = monotonicNanoseconds() + UInt64(nanoseconds)
    while monotonicNanoseconds() < deadline {}
}
