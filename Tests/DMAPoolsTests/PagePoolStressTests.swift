import Synchronization
import Testing
@_spi(DMAPoolsSupport) @testable import DMAPools

#if canImport(Glibc)
import Glibc
#endif

/// A page hand-off from the owner to one worker: batches under a lock.
final class PageInbox: Sendable {
    private let batches = Lock<[[Page]]>([])
    let closed = Atomic<Bool>(false)

    var count: Int { batches.withLock { $0.count } }
    func push(_ batch: [Page]) { batches.withLock { $0.append(batch) } }
    func pop() -> [Page]? { batches.withLock { $0.isEmpty ? nil : $0.removeFirst() } }
}

@Suite struct PagePoolStressTests {
    /// Allocations the owner makes (parameter: raise it for a longer soak).
    static let allocations = Int(getenv("PAGE_POOL_STRESS_ALLOCATIONS").flatMap { String(cString: $0) }.flatMap(Int.init) ?? 600_000)
    static let workers = 3

    /// The owner allocates while several threads put pages back through the
    /// ring; the owner also recycles some directly and hands some out with an
    /// extra reference (released_refcnt). Then destroy: nothing may be lost.
    @Test func ownerAllocatesWhileOtherThreadsPutThroughTheRing() throws {
        let f = try PagePoolFixture(.init(poolSize: 512, flags: .dmaMap), providerPages: 8192)
        let pool = f.pool
        let inboxes = (0..<Self.workers).map { _ in PageInbox() }
        let putsByWorkers = Atomic<Int>(0)
        let threads = inboxes.map { inbox in
            TestThread {
                var puts = 0
                while true {
                    if let batch = inbox.pop() {
                        for page in batch { pool.put(page) }
                        puts += batch.count
                    } else if inbox.closed.load(ordering: .acquiring) && inbox.count == 0 {
                        break
                    } else {
                        sched_yield()
                    }
                }
                putsByWorkers.wrappingAdd(puts, ordering: .relaxed)
            }
        }

        let batchSize = 32
        var allocated = 0
        var putsByOwner = 0
        var elevated = 0
        var batch: [Page] = []
        batch.reserveCapacity(batchSize)
        var round = 0
        while allocated < Self.allocations {
            let page = try pool.allocatePage()
            allocated += 1
            if allocated % 1009 == 0 {
                // Someone else keeps a page reference: the put must release it.
                page.retain()
                pool.put(page)
                #expect(page.release())
                elevated += 1
                putsByOwner += 1
                continue
            }
            batch.append(page)
            if batch.count == batchSize {
                let inbox = inboxes[round % Self.workers]
                round += 1
                if inbox.count < 8 {
                    inbox.push(batch)
                } else {
                    for page in batch { pool.put(page) }   // on the owner: direct
                    putsByOwner += batch.count
                }
                batch.removeAll(keepingCapacity: true)
            }
        }
        for page in batch { pool.put(page) }
        putsByOwner += batch.count
        for inbox in inboxes { inbox.closed.store(true, ordering: .releasing) }
        for thread in threads { thread.join() }

        let s = pool.statistics
        #expect(putsByOwner + putsByWorkers.load(ordering: .relaxed) == allocated)
        #expect(s.pagesAllocated == allocated)
        // Every allocation is accounted for as cached, ringed or released.
        #expect(s.pagesReturned == allocated, "\(s)")
        #expect(s.recycling.releasedRefcount == elevated)
        #expect(s.recycling.ring > 0)
        let idle = pool.cachedPageCount + pool.ringPageCount
        #expect(s.inflight == idle, "every page the pool holds is idle in the cache or the ring")
        #expect(s.releaseCount == s.recycling.ringFull + s.recycling.releasedRefcount)

        pool.destroy()
        #expect(pool.isShutdownComplete)
        let end = pool.statistics
        #expect(end.inflight == 0 && end.holdCount == end.releaseCount)
        #expect(end.releaseCount == s.releaseCount + idle)
        #expect(f.provider.pagesAllocated - f.provider.pagesReleased == 0)
        f.expectEveryPageHome()
    }
}
