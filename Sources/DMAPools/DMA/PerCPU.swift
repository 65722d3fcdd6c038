import CThread
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The calling thread's CPU (`raw_smp_processor_id`) and the machine's CPU count.
///
/// `sched_getcpu` is a GNU extension the Swift Glibc module does not import, so it
/// is resolved once with `dlsym` and called through a C function pointer (glibc
/// answers it from rseq or the vDSO: a few nanoseconds, no system call).
@usableFromInline
struct CPUIdentity: Sendable {
    @usableFromInline
    typealias GetCPU = @convention(c) () -> Int32

    @usableFromInline
    let getcpu: GetCPU?

    /// Resolved once per process.
    @usableFromInline static let shared = CPUIdentity()

    private init() {
        if let symbol = dlsym(nil, "sched_getcpu") {
            getcpu = unsafeBitCast(symbol, to: GetCPU.self)
        } else {
            getcpu = nil
        }
    }

    /// The CPU the calling thread runs on now (0 when unknown). The thread may
    /// migrate right after: callers use it only to pick a starting area or a
    /// counter stripe, never for correctness.
    @inlinable
    func current() -> Int {
        guard let getcpu else { return 0 }
        let cpu = getcpu()
        return cpu >= 0 ? Int(cpu) : 0
    }

    /// Online CPUs (`num_online_cpus`), at least 1.
    static func onlineCount() -> Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }
}

/// The CPU the calling thread runs on now (`raw_smp_processor_id`), 0 when
/// unknown, for picking a per-CPU stripe (`PerCPULocked.withLocal`, inlined
/// into the package's other targets). The thread may migrate right after: use
/// it to choose a stripe, never for correctness.
/// Not public API (`@_spi(DMAPoolsSupport)`).
@_spi(DMAPoolsSupport)
@inlinable
public func currentCPUIndex() -> Int { CPUIdentity.shared.current() }

/// Per-CPU stripes for the online CPUs: their count rounded up to a power of
/// two, so that `currentCPUIndex() & (stripes - 1)` picks one.
/// Not public API (`@_spi(DMAPoolsSupport)`).
@_spi(DMAPoolsSupport)
public func perCPUStripeCount() -> Int { roundUpToPowerOfTwo(CPUIdentity.onlineCount()) }

/// Binds the calling thread to CPU `cpu` for the rest of its life; returns
/// whether it could. For machine probes that must put two threads on two
/// given CPUs (`MachineCopyRate`'s hand-off), never for the model's threads,
/// which the scheduler places as it places a kernel's.
/// Not public API (`@_spi(DMAPoolsSupport)`).
@_spi(DMAPoolsSupport)
public func pinCurrentThread(toCPU cpu: Int) -> Bool {
    guard cpu >= 0, cpu < Int(Int32.max) else { return false }
    return dmapools_pin_current_thread(Int32(cpu)) == 0
}

/// Online CPUs (`num_online_cpus`), at least 1. Not public API.
@_spi(DMAPoolsSupport)
public func onlineCPUCount() -> Int { CPUIdentity.onlineCount() }

/// The smallest power of two >= `value` (`roundup_pow_of_two`), for `value >= 1`.
@inlinable
func roundUpToPowerOfTwo(_ value: Int) -> Int {
    precondition(value >= 1 && value <= 1 << 62, "roundUpToPowerOfTwo(\(value)) out of range")
    return value == 1 ? 1 : 1 << (Int.bitWidth - (value - 1).leadingZeroBitCount)
}

/// Event counters striped by CPU, one cache-line pair per stripe, so threads on
/// different CPUs never write the same line. Each add is a relaxed atomic RMW:
/// counters order nothing, and a thread that migrates mid-add only lands in
/// another stripe. Reads sum every stripe and are a snapshot only when quiescent.
///
/// Owns its one allocation: `~Copyable`, freed in `deinit` with its owner.
@usableFromInline
struct PerCPUCounters: ~Copyable, @unchecked Sendable {
    /// Counters per stripe: 16 words = 128 bytes (two cache lines, against the
    /// adjacent-line prefetcher).
    @usableFromInline static let stride = 16

    @usableFromInline let words: UnsafeMutablePointer<Atomic<Int>>
    let allocation: AlignedAllocation
    @usableFromInline let stripeMask: Int
    @usableFromInline let cpu: CPUIdentity

    init(counters: Int) {
        precondition(counters > 0 && counters <= Self.stride, "at most \(Self.stride) counters per stripe")
        let stripes = roundUpToPowerOfTwo(CPUIdentity.onlineCount())
        stripeMask = stripes - 1
        cpu = CPUIdentity.shared
        let total = stripes * Self.stride
        allocation = AlignedAllocation(byteCount: total * MemoryLayout<Atomic<Int>>.stride, alignment: 128)
        words = allocation.pointer.bindMemory(to: Atomic<Int>.self, capacity: total)
        for i in 0..<total { (words + i).initialize(to: Atomic(0)) }
    }

    deinit {
        words.deinitialize(count: (stripeMask + 1) * Self.stride)
        allocation.deallocate()
    }

    /// The calling CPU's stripe base.
    @inlinable
    func stripe() -> UnsafeMutablePointer<Atomic<Int>> {
        // `current() & stripeMask` < stripes and `stride` is 16: the product is tiny.
        words + (cpu.current() & stripeMask) &* Self.stride
    }

    /// Adds `amount` to counter `counter` in the calling CPU's stripe.
    @inlinable
    func add(_ counter: Int, _ amount: Int = 1) {
        stripe()[counter].wrappingAdd(amount, ordering: .relaxed)
    }

    /// The sum of counter `counter` over every stripe.
    func sum(_ counter: Int) -> Int {
        var total = 0
        for s in 0...stripeMask { total &+= words[s * Self.stride + counter].load(ordering: .relaxed) } // counts of events, far below 2^63
        return total
    }
}

/// A value per CPU, each under a lock of its own: the shape of the kernel's
/// per-CPU caches (`kmem_cache_cpu`, `per_cpu_pages`). A thread works on the
/// stripe of the CPU it runs on, so values freed and reused on one CPU stay in
/// that CPU's cache and no line is written from two CPUs in the common case;
/// the lock only matters when a thread migrates mid-operation. Each stripe is
/// padded on both sides against the adjacent-line prefetcher, and is reached
/// through an unretained table, so the hot path does no ARC traffic.
///
/// Owns its stripes: `~Copyable`, released in `deinit` with its owner.
/// Not public API (`@_spi(DMAPoolsSupport)`; SPI rather than `package`, as
/// `Lock`, so that its inlinable body is specialised in the other targets).
@_spi(DMAPoolsSupport)
public struct PerCPULocked<Value: ~Copyable>: ~Copyable, @unchecked Sendable {
    @usableFromInline
    final class Stripe: @unchecked Sendable {
        private let paddingBefore: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                                    UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        @usableFromInline let lock: Lock<Value>
        private let paddingAfter: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                                   UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

        init(_ value: consuming sending Value) { lock = Lock(value) }
    }

    @usableFromInline let stripes: UnsafeMutablePointer<Unmanaged<Stripe>>
    @usableFromInline let mask: Int
    /// How many stripes (a power of two).
    public let count: Int

    /// `count` stripes (a power of two; default: one per online CPU, rounded
    /// up), each holding `make()`.
    public init(count: Int = perCPUStripeCount(), _ make: () -> sending Value) {
        precondition(count >= 1 && count & (count - 1) == 0, "stripe count \(count) must be a power of two")
        stripes = .allocate(capacity: count)
        for i in 0..<count { (stripes + i).initialize(to: .passRetained(Stripe(make()))) }
        mask = count - 1
        self.count = count
    }

    deinit {
        for i in 0..<count { stripes[i].release() }
        stripes.deallocate()
    }

    /// Runs `body` on the calling CPU's value, holding its lock.
    @inlinable
    public func withLocal<Result>(_ body: (inout sending Value) -> sending Result) -> Result {
        stripes[currentCPUIndex() & mask]._withUnsafeGuaranteedRef { $0.lock.withLock(body) }
    }

    /// Runs `body` on stripe `index` (0..<count), holding its lock (slow
    /// paths that visit every CPU's value: sums, drains).
    public func withStripe<Result>(_ index: Int, _ body: (inout sending Value) -> sending Result) -> Result {
        precondition(index >= 0 && index < count, "stripe \(index) out of 0..<\(count)")
        return stripes[index]._withUnsafeGuaranteedRef { $0.lock.withLock(body) }
    }
}
