import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A joinable OS thread running one closure: the model's CPUs are real threads,
/// so senders and TX queues contend for the machine's cores as they would for a
/// guest's vCPUs.
package final class ModelThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: @Sendable () -> Void
    /// CPU time the thread used, in nanoseconds, read when its body returned.
    private let cpu = Atomic<UInt64>(0)

    private init(body: @escaping @Sendable () -> Void) { self.body = body }

    private static let startedCount = Atomic<Int>(0)
    /// Model threads started in this process so far (for reliability reports).
    public static var started: Int { startedCount.load(ordering: .relaxed) }

    /// Starts `body` on a new thread (`name` is kept for diagnostics).
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) -> ModelThread {
        let handle = ModelThread(body: body)
        let context = Unmanaged.passRetained(Box(handle: handle, name: name)).toOpaque()
        let rc = pthread_create(&handle.thread, nil, { raw in
            guard let raw else { preconditionFailure("pthread started without its context") }
            let box = Unmanaged<Box>.fromOpaque(raw).takeRetainedValue()
            box.handle.body()
            box.handle.cpu.store(threadCPUNanoseconds(), ordering: .releasing)
            return nil
        }, context)
        precondition(rc == 0, "pthread_create failed for thread \(name): \(rc)")
        startedCount.wrappingAdd(1, ordering: .relaxed)   // a count of threads: cannot overflow
        return handle
    }

    /// Waits for the thread to finish and returns the CPU nanoseconds it used.
    @discardableResult
    public func join() -> UInt64 {
        pthread_join(thread, nil)
        return cpu.load(ordering: .acquiring)
    }

    private final class Box {
        let handle: ModelThread
        let name: String
        init(handle: ModelThread, name: String) {
            self.handle = handle
            self.name = name
        }
    }
}

/// CPU time used by the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds.
public func threadCPUNanoseconds() -> UInt64 { cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID) }

/// CPU time used by every thread of this process (`CLOCK_PROCESS_CPUTIME_ID`), in nanoseconds.
package func processCPUNanoseconds() -> UInt64 { cpuNanoseconds(CLOCK_PROCESS_CPUTIME_ID) }

private func cpuNanoseconds(_ clock: clockid_t) -> UInt64 {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Sleeps the calling thread for about `nanoseconds`.
package func sleep(nanoseconds: UInt64) {
    var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}
