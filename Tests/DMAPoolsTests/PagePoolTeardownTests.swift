import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import Testing
@_spi(DMAPoolsSupport) @testable import DMAPools

/// A log handler that keeps messages, to check the stall warning's text.
struct CapturingLogHandler: LogHandler {
    final class Store: Sendable {
        let messages = Lock<[String]>([])
    }
    let store: Store
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        store.messages.withLock { $0.append("\(event.level): \(event.message)") }
    }
}

@Suite struct PagePoolTeardownTests {
    @Test func destroyWithNothingInFlightCompletesAtOnce() throws {
        let f = try PagePoolFixture()
        var pages: [Page] = []
        for _ in 0..<70 { pages.append(try f.pool.allocatePage()) }
        for page in pages.prefix(35) { f.pool.put(page) }
        let rest = PageBatch(pages: Array(pages.dropFirst(35)))
        let pool = f.pool
        TestThread.run { for page in rest.pages { pool.put(page) } }   // these wait in the ring
        #expect(pool.ringPageCount == 35)
        let completed = Atomic<Int>(0)
        pool.destroy()
        pool.onShutdownComplete { completed.wrappingAdd(1, ordering: .relaxed) }
        #expect(pool.isShutdownComplete && completed.load(ordering: .relaxed) == 1)
        #expect(pool.inflight == 0 && pool.statistics.releaseCount == 128)
        #expect(f.provider.detachCount == 1 && pool.stallWarningCount == 0)
        #expect(throws: PagePoolError.poolDestroyed(pool: pool.description)) { _ = try pool.allocatePage() }
        f.expectEveryPageHome()
        #expect(pool.leakReport(scanning: f.memory).pages.isEmpty)
    }

    @Test func destroyWaitsForInflightPagesAndWarnsWhenStalled() async throws {
        let store = CapturingLogHandler.Store()
        let logger = Logger(label: "test.page-pool") { _ in CapturingLogHandler(store: store) }
        let f = try PagePoolFixture(.init(flags: .dmaMap, name: "stalled-rx",
                                          releaseRetryInterval: .milliseconds(2),
                                          stallWarningInterval: .milliseconds(20),
                                          logger: logger))
        let pool = f.pool
        let held = PageBatch(pages: [try pool.allocatePage(), try pool.allocatePage(), try pool.allocatePage()])
        let fragment = try pool.allocateFragment(size: 1000)
        // Before destroy, the report lists pages in use (not the pool's own fragment page).
        #expect(Set(pool.leakReport(scanning: f.memory).pages) == Set(held.pages))
        pool.destroy()
        #expect(pool.shutdownPhase == .waitingForInflight)
        #expect(pool.inflight == 4)

        // Let the retry run and warn at least once.
        let deadline = monotonicNanoseconds() + 2_000_000_000
        while pool.stallWarningCount == 0 && monotonicNanoseconds() < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(pool.stallWarningCount >= 1)
        #expect(pool.releaseRetryCount >= 1)
        #expect(!pool.isShutdownComplete)
        let warnings = store.messages.withLock { $0 }.filter { $0.contains("stalled pool shutdown") }
        #expect(warnings.first?.contains("stalled pool shutdown: id \(pool.id), 4 inflight") == true, "\(warnings)")

        let report = pool.leakReport(scanning: f.memory)
        #expect(report.pages.count == 4)
        #expect(report.description.contains("4 page(s) never returned"))
        #expect(report.description.contains("stalled-rx"))

        // The pages come home (from another thread, and a fragment): straight to the provider.
        TestThread.run { for page in held.pages { pool.put(page) } }
        #expect(pool.inflight == 1 && !pool.isShutdownComplete)
        pool.put(fragment)
        await pool.waitForShutdown()
        #expect(pool.isShutdownComplete && pool.inflight == 0)
        #expect(pool.statistics.releasedAfterDestroy == 4)
        #expect(f.provider.detachCount == 1)
        f.expectEveryPageHome()
        #expect(pool.leakReport(scanning: f.memory).pages.isEmpty)
    }

    /// A pool destroyed with one page out, that page then left in its ring by a
    /// producer that raced with destroy (missed the flag): only a release
    /// retry can bring it home.
    private func poolWithAPageLeftInTheRingAfterDestroy() throws -> PagePoolFixture {
        let f = try PagePoolFixture(.init(flags: .dmaMap, releaseRetryInterval: .milliseconds(1)))
        let page = try f.pool.allocatePage()
        f.pool.destroy()
        #expect(!f.pool.isShutdownComplete)
        page.descriptor.pointee._fragmentReferenceCount.store(0, ordering: .relaxed)
        let produced = f.pool.ring.produce(page)
        #expect(produced)
        return f
    }

    @Test func pagesLeftInTheRingAfterDestroyAreDrainedByTheRetry() throws {
        let f = try poolWithAPageLeftInTheRingAfterDestroy()
        #expect(f.pool.waitForShutdown(timeout: .seconds(2)))
        #expect(f.pool.inflight == 0)
        f.expectEveryPageHome()
    }

    /// The global concurrent queue runs only as many blocks as there are CPUs;
    /// blocks that keep them all busy must not hold back a pool's release
    /// retry (CI once timed out a 1 ms shutdown that way). The spinners stop
    /// when the shutdown completes, or after 10 s, so a retry that waited
    /// behind them would miss the 5 s deadline.
    @Test func aReleaseRetryRunsWhileTheGlobalQueueIsBusy() throws {
        let done = Atomic<Bool>(false)
        let started = Atomic<Int>(0)
        let stop = monotonicNanoseconds() + 10_000_000_000
        for _ in 0..<4 * max(2, CPUIdentity.onlineCount()) {
            DispatchQueue.global().async {
                started.wrappingAdd(1, ordering: .relaxed)
                while !done.load(ordering: .acquiring) && monotonicNanoseconds() < stop {}
            }
        }
        while started.load(ordering: .relaxed) == 0 { usleep(100) }
        let f = try poolWithAPageLeftInTheRingAfterDestroy()
        let completed = f.pool.waitForShutdown(timeout: .seconds(5))
        done.store(true, ordering: .releasing)
        #expect(completed)
        #expect(f.pool.inflight == 0)
        f.expectEveryPageHome()
    }
}
