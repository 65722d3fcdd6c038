import Synchronization
#if DMAPOOLS_TSAN
import CSanitizer
#endif

/// The standard library's `Mutex`, with its critical sections made visible to
/// ThreadSanitizer.
///
/// On Linux `Synchronization.Mutex` is a futex lock whose atomics run in the
/// uninstrumented runtime, so ThreadSanitizer sees no happens-before edge
/// between one holder's unlock and the next holder's lock and reports every
/// guarded access as a race (a two-thread counter under `Mutex.withLock` is
/// enough to show it). Built with `-DDMAPOOLS_TSAN` (as `.ci/run` builds its
/// ThreadSanitizer pass), `withLock` tells the sanitizer what the lock does:
/// acquire on the lock's address right after locking, release right before
/// unlocking. Without the flag it is exactly `Mutex`.
/// Not public API: the package's targets reach it through
/// `@_spi(DMAPoolsSupport) import DMAPools`. SPI rather than `package`, because
/// a `package` declaration's inlinable body is not specialised in the other
/// targets (NetStack's frame cache and queues called the generic entry point,
/// with a metadata lookup, on every lock).
@_spi(DMAPoolsSupport)
@frozen
public struct Lock<Value: ~Copyable>: ~Copyable {
    @usableFromInline let mutex: Mutex<Value>

    @inlinable
    public init(_ initialValue: consuming sending Value) {
        mutex = Mutex(initialValue)
    }

    /// Runs `body` with the guarded value, holding the lock.
    @inlinable
    public borrowing func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        #if DMAPOOLS_TSAN
        // The lock's own address names it to the sanitizer. Taken outside the
        // critical section: an access to `value` before the acquire would
        // itself be reported.
        let address = withUnsafePointer(to: mutex) { UnsafeMutableRawPointer(mutating: $0) }
        return try mutex.withLock { (value: inout sending Value) throws(E) -> sending Result in
            __tsan_acquire(address)
            defer { __tsan_release(address) }
            return try body(&value)
        }
        #else
        return try mutex.withLock(body)
        #endif
    }
}

extension Lock: @unchecked Sendable where Value: ~Copyable {}
