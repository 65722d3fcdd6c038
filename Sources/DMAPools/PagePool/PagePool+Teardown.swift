import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Logging

/// Where a pool is in its shutdown.
public enum PagePoolShutdownPhase: Sendable, Hashable {
    /// Not destroyed.
    case active
    /// Destroyed, waiting for inflight pages (`page_pool_release_retry`).
    case waitingForInflight
    /// Every page is back with the provider; the provider was detached.
    case complete
}

struct _PagePoolTeardownState {
    var phase = PagePoolShutdownPhase.active
    var startNanoseconds: UInt64 = 0
    var nextWarningNanoseconds: UInt64 = 0
    var warnings = 0
    var retries = 0
    var completionHandlers: [@Sendable () -> Void] = []
    var waiters: [CheckedContinuation<Void, Never>] = []
}

/// Pages of a pool that were never returned.
public struct PagePoolLeakReport: Sendable, CustomStringConvertible {
    /// The pool's description.
    public let pool: String
    /// Pages still carrying the pool's signature that are held outside the pool
    /// (not idle in its cache or ring, not its current fragment page).
    public let pages: [Page]

    public var description: String {
        guard !pages.isEmpty else { return "\(pool): no pages outstanding" }
        let shown = pages.prefix(16).map { "  \($0) dma \($0.dmaAddress)" }
        let more = pages.count > 16 ? ["  ... and \(pages.count - 16) more"] : []
        return (["\(pool): \(pages.count) page(s) never returned:"] + shown + more).joined(separator: "\n")
    }
}

extension PagePool {
    /// `page_pool_destroy`: the driver is done with the pool. Direct recycling
    /// stops, the fragment page, the alloc cache and the ring go back to the
    /// provider, and if pages are still in flight the pool retries every
    /// `releaseRetryInterval`, warning every `stallWarningInterval`
    /// ("stalled pool shutdown: id N, M inflight S sec"), until they all came
    /// home. Pages put after this go straight to the provider.
    ///
    /// Call it from the owning context, once nothing allocates any more (the
    /// kernel's rule). Destroying twice traps.
    public func destroy() {
        let first = teardown.withLock { state -> Bool in
            guard state.phase == .active else { return false }
            state.phase = .waitingForInflight
            state.startNanoseconds = monotonicNanoseconds()
            state.nextWarningNanoseconds = state.startNanoseconds + UInt64(Self.nanoseconds(parameters.stallWarningInterval))
            return true
        }
        guard first else { _misuse(.poolDestroyed(pool: "\(self) (destroyed twice)")) }
        // `page_pool_disable_direct_recycling`.
        disableDirectRecycling()
        // Sequentially consistent: pairs with `_syncForDeviceUnlessDestroyed`
        // (and, releasing, a put that sees the flag also sees the owner cleared).
        shared.destroyed.store(true, ordering: .sequentiallyConsistent)
        _freeFragmentPage()
        _returnAllocCache()
        _scrub()
        _releaseAttempt()
    }

    /// `page_pool_empty_alloc_cache_once` (and `page_pool_update_nid`'s flush):
    /// every page of the alloc cache goes back to the provider. Owning context.
    func _returnAllocCache() {
        while hot.pointee.cacheCount > 0 {
            hot.pointee.cacheCount -= 1
            _returnToProvider(cache[hot.pointee.cacheCount])
        }
    }

    /// `page_pool_scrub`: no more syncs for the device (a put now skips them;
    /// wait for any under way), then unmap every page the pool mapped and has
    /// not released: those in the ring (released right after) and those still
    /// in flight, which come home unmapped.
    func _scrub() {
        guard tracksMappedPages else { return }
        if readMostly.pointee.dmaSync {
            while shared.syncsInProgress.load(ordering: .sequentiallyConsistent) != 0 { sched_yield() }
        }
        // Taken out of the record under its lock, with their addresses: a page
        // coming home at the same moment finds itself gone and skips the unmap.
        let pages = shared.dmaMapped.withLock { mapped -> [(Page, DMAAddress)] in
            let pages = mapped.map { ($0, $0.dmaAddress) }
            mapped.removeAll()
            return pages
        }
        for (page, address) in pages { provider.unmapInflightPage(page, address: address, for: self) }
    }

    /// Where the pool is in its shutdown.
    public var shutdownPhase: PagePoolShutdownPhase { teardown.withLock { $0.phase } }

    /// Whether the shutdown finished (every page back with the provider).
    public var isShutdownComplete: Bool { shutdownPhase == .complete }

    /// Stall warnings logged so far.
    public var stallWarningCount: Int { teardown.withLock { $0.warnings } }

    /// Release retries run so far.
    public var releaseRetryCount: Int { teardown.withLock { $0.retries } }

    /// Calls `body` once the shutdown completes (at once if it has).
    public func onShutdownComplete(_ body: @escaping @Sendable () -> Void) {
        let runNow = teardown.withLock { state -> Bool in
            if state.phase == .complete { return true }
            state.completionHandlers.append(body)
            return false
        }
        if runNow { body() }
    }

    /// Waits for the shutdown to complete.
    public func waitForShutdown() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = teardown.withLock { state -> Bool in
                if state.phase == .complete { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    /// Blocks the calling thread until the shutdown completes or `timeout`
    /// passes; returns whether it completed.
    @discardableResult
    public func waitForShutdown(timeout: Duration) -> Bool {
        let deadline = monotonicNanoseconds() + UInt64(Self.nanoseconds(timeout))
        while !isShutdownComplete {
            if monotonicNanoseconds() >= deadline { return false }
            usleep(1000)
        }
        return true
    }

    /// The pages of this pool that are held outside it, found by scanning
    /// `memory`'s descriptors for the pool's signature. Before `destroy()` these
    /// are the pages in use; after it, the pages never returned.
    public func leakReport(scanning memory: GuestMemory) -> PagePoolLeakReport {
        let fragmentPage = hot.pointee.fragmentPage
        var pages: [Page] = []
        for index in 0..<memory.pageCount {
            let descriptor = memory.descriptors + index
            guard descriptor.pointee.poolSignature == signature else { continue }
            let page = Page(descriptor: descriptor)
            // Idle in the cache or ring: fragment count 0. The current fragment
            // page is the pool's own until drained.
            if descriptor.pointee._fragmentReferenceCount.load(ordering: .acquiring) == 0 || page == fragmentPage { continue }
            pages.append(page)
        }
        return PagePoolLeakReport(pool: description, pages: pages)
    }

    // MARK: Release and retry

    /// `page_pool_release`: drain the ring, and finish if nothing is in flight;
    /// otherwise schedule a retry.
    func _releaseAttempt() {
        // `page_pool_empty_ring`. Only teardown consumes now (allocation is over),
        // and retries run one at a time, so the ring still has a single consumer.
        while let page = ring.consume() {
            if page.referenceCount != 1 {
                parameters.logger.critical("\(self): page_pool refcnt \(page.referenceCount) violation on \(page)")
            }
            _returnToProvider(page)
        }
        if _checkShutdownComplete() { return }
        let interval = Self.nanoseconds(parameters.releaseRetryInterval)
        Self.releaseRetryQueue.asyncAfter(deadline: .now() + .nanoseconds(interval)) { [self] in
            _releaseRetry()
        }
    }

    /// Where release retries run. The kernel queues `page_pool_release_retry`
    /// as delayed work on the system workqueue, whose kworkers the scheduler
    /// runs like any other thread. The global concurrent queue is no such
    /// place: it runs as many blocks as there are CPUs, so work that keeps its
    /// threads busy (a `concurrentPerform`, a test run on two CPUs) held a
    /// retry back for seconds, and a shutdown that needed 1 ms timed out. A
    /// serial queue of its own gets a thread when it has work (libdispatch's
    /// overcommit), whatever the global queue is doing; retries of every pool
    /// run on it one at a time.
    static let releaseRetryQueue = DispatchQueue(label: "page_pool_release_retry")

    /// `page_pool_release_retry`.
    func _releaseRetry() {
        let (inflight, warn, seconds) = teardown.withLock { state -> (Int, Bool, Double) in
            guard state.phase == .waitingForInflight else { return (0, false, 0) }
            state.retries += 1
            let now = monotonicNanoseconds()
            let inflight = self.inflight
            guard inflight > 0, now >= state.nextWarningNanoseconds else { return (inflight, false, 0) }
            state.warnings += 1
            state.nextWarningNanoseconds = now + UInt64(Self.nanoseconds(parameters.stallWarningInterval))
            return (inflight, true, Double(now - state.startNanoseconds) / 1e9)
        }
        if warn {
            let secondsText = seconds >= 1 ? "\(Int(seconds))" : String(format3: seconds)
            parameters.logger.warning(
                "page_pool_release_retry() stalled pool shutdown: id \(id), \(inflight) inflight \(secondsText) sec",
                metadata: ["pool": "\(parameters.name)", "inflight": "\(inflight)"])
        }
        if shutdownPhase == .waitingForInflight { _releaseAttempt() }
    }

    /// Finishes the shutdown if it is under way and nothing is in flight.
    /// Idempotent; returns whether the shutdown is complete.
    @discardableResult
    @usableFromInline
    func _checkShutdownComplete() -> Bool {
        let finished = teardown.withLock { state -> (handlers: [@Sendable () -> Void], waiters: [CheckedContinuation<Void, Never>])? in
            guard state.phase == .waitingForInflight, inflight == 0 else { return nil }
            state.phase = .complete
            defer { state.completionHandlers = []; state.waiters = [] }
            return (state.completionHandlers, state.waiters)
        }
        guard let finished else { return shutdownPhase == .complete }
        // `page_pool_uninit`: the provider's destroy hook.
        provider.detach(from: self)
        for handler in finished.handlers { handler() }
        for waiter in finished.waiters { waiter.resume() }
        return true
    }

    static func nanoseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
    }
}

extension String {
    /// Three decimals, without Foundation.
    fileprivate init(format3 value: Double) {
        let milli = Int((value * 1000).rounded())
        let fraction = String(milli % 1000)
        self = "\(milli / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }
}
