@_spi(DMAPoolsSupport) import DMAPools
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Random operation sequences against a real `PagePool` over
/// `PagePoolTestProvider`, each step checked against a reference model written
/// from the kernel's own rules (`net/core/page_pool.c`, `include/linux/ptr_ring.h`),
/// not from the pool's code:
///
/// - the alloc cache: a LIFO stack of 128, refilled with up to 64 pages from the
///   ring when empty (`page_pool_refill_alloc_cache`), else 64 order-0 pages in
///   bulk from the provider;
/// - the ring: an array of slots where a slot is free only when it holds no
///   page; the producer fails (`ring_full`) on an occupied slot; the consumer
///   clears consumed slots only in batches (`__ptr_ring_discard_one`, batch 16
///   for rings of 32 or more with 64-byte lines, else 1) and at the array's end;
/// - puts: `page_pool_put_unrefed_netmem` widens `allow_direct` to the owning
///   context (`page_pool_napi_local`), so an owner's put is cached unless the
///   cache is full (`cache_full`, then the ring); a put from another thread
///   (here a real second thread) takes the ring; a page with an extra
///   reference is released (`released_refcnt`);
/// - bulk puts (`page_pool_put_netmem_bulk`): runs of at most 16; the pages of
///   a run that need the ring go in under one producer lock, `ring_full` counts
///   once for the run and the rest of the run is released.
///
/// After every step the pool's cache depth, ring depth, occupied ring slots,
/// every counter and the inflight count must equal the model's, and the
/// provider's outstanding pages must equal the pool's inflight. Every page
/// handed out is filled with its own pattern, checked before it goes back.
/// Ring sizes include 1, 2, 3 and sizes that are not powers of two.
///
/// A second phase carves fragments of random sizes (zero included) from a
/// fragment pool on a random architecture, each filled with its own pattern and
/// checked when freed.
///
/// At the end every page is put back, the pools are destroyed, and the provider
/// must have every page home with clean descriptors.
public enum PagePoolFuzzer {
    /// A deliberate disagreement planted in the model, so a test can show the
    /// fuzzer tells the two behaviours apart. Each but the first re-creates a
    /// behaviour the pool once had. `.none` in every real run.
    public enum ModelFault: Sendable, CaseIterable {
        case none
        /// The alloc cache holds 127 pages.
        case cacheHoldsOneLess
        /// A ring of one slot accepts a second page over the first (the old
        /// sequence-numbered ring used one value for "full" and "free").
        case ringOfOneOverwrites
        /// The consumer clears each slot as it consumes it (no batching).
        case consumerClearsAtOnce
        /// A bulk put counts `ring_full` once per page that did not fit.
        case ringFullPerBulkPage
        /// An owner's put with `allowDirect: false` goes to the ring.
        case ownerPutSkipsTheCache
    }

    /// The ring sizes a run picks from when none is given.
    public static let ringSizes = [0, 1, 2, 3, 5, 16, 17, 31, 32, 33, 64, 100, 200, 512]

    struct Held {
        var page: Page
        var pattern: UInt64
        var extraReference: Bool
    }

    /// The kernel's `ptr_ring`, as the header describes it.
    struct ReferenceRing {
        var queue: [Page?]
        var producer = 0
        var consumerHead = 0
        var consumerTail = 0
        let batch: Int
        let overwriteWhenSingle: Bool
        /// Pages produced and not consumed.
        var pages = 0

        init(size: Int, cacheLineBytes: Int, fault: ModelFault) {
            queue = Array(repeating: nil, count: size)
            // `__ptr_ring_set_size`: two cache lines of pointers, 1 if more than half the ring.
            let lineBatch = 2 * cacheLineBytes / 8
            batch = fault == .consumerClearsAtOnce || lineBatch > size / 2 ? 1 : lineBatch
            overwriteWhenSingle = fault == .ringOfOneOverwrites && size == 1
        }

        /// `__ptr_ring_produce`.
        mutating func produce(_ page: Page) -> Bool {
            if queue[producer] != nil && !overwriteWhenSingle { return false }
            if queue[producer] == nil { pages += 1 }
            queue[producer] = page
            producer += 1
            if producer >= queue.count { producer = 0 }
            return true
        }

        /// `__ptr_ring_empty`.
        var isEmpty: Bool { queue[consumerHead] == nil }

        /// `__ptr_ring_consume` with `__ptr_ring_discard_one`.
        mutating func consume() -> Page? {
            guard let page = queue[consumerHead] else { return nil }
            let consumed = consumerHead
            consumerHead += 1
            if consumerHead - consumerTail >= batch || consumerHead >= queue.count {
                var i = consumed
                while i >= consumerTail { queue[i] = nil; i -= 1 }
                consumerTail = consumerHead
            }
            if consumerHead >= queue.count {
                consumerHead = 0
                consumerTail = 0
            }
            pages -= 1
            return page
        }

        var occupiedSlots: Int { queue.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }
    }

    struct Model {
        var cacheCapacity = PagePool.allocCacheSize
        var ring: ReferenceRing
        /// The alloc cache, bottom to top; nil for a page the model has not seen
        /// yet (the rest of a bulk allocation from the provider).
        var cache: [Page?] = []
        var statistics = PagePoolStatistics()
        var providerFailures = 0
        var handedOff = 0
        let fault: ModelFault
    }

    public static func run(_ source: inout FuzzSource, steps: Int, modelFault: ModelFault = .none,
                           poolSize: Int? = nil) throws -> FuzzReport {
        var report = FuzzReport(target: "page_pool", source: source)
        let memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 4 << 20, hypercall: .free))
        let providerPages = source.pick([65, 256, 1024, 4096])
        let provider = PagePoolTestProvider(memory: memory, pages: 0..<providerPages, name: "fuzz-pages")
        let device = try DeviceRegistry().add(name: "eth0")
        let poolSize = poolSize ?? source.pick(ringSizes)
        let pool = try PagePool(.init(poolSize: poolSize, flags: .dmaMap, device: device, name: "fuzz"), provider: provider)
        let remote = RemoteContext()
        defer { remote.stop() }
        var model = Model(ring: ReferenceRing(size: pool.parameters.ringSize,
                                              cacheLineBytes: pool.parameters.architecture.cacheLineBytes,
                                              fault: modelFault),
                          fault: modelFault)
        if modelFault == .cacheHoldsOneLess { model.cacheCapacity -= 1 }
        var held: [Held] = []

        func fill(_ page: Page, _ pattern: UInt64) {
            let words = page.bytes.bindMemory(to: UInt64.self, capacity: PageGeometry.size / 8)
            for i in 0..<(PageGeometry.size / 8) { words[i] = pattern &+ UInt64(i) }   // a pattern: wrapping is intended
        }
        func intact(_ page: Page, _ pattern: UInt64) -> Bool {
            report.bytesVerified &+= PageGeometry.size   // bounded by steps: cannot overflow
            let words = page.bytes.bindMemory(to: UInt64.self, capacity: PageGeometry.size / 8)
            for i in 0..<(PageGeometry.size / 8) where words[i] != pattern &+ UInt64(i) { return false }
            return true
        }

        /// One `allocatePage()` on the pool and on the model.
        func allocate(_ context: String) -> Bool {
            var expected: Page?
            var fromProvider = false
            if let top = model.cache.popLast() {
                expected = top
                model.statistics.allocation.fast += 1
            } else if !model.ring.isEmpty {
                // `page_pool_refill_alloc_cache`: consume while the cache holds fewer than 64.
                while model.cache.count < PagePool.allocCacheRefill, let page = model.ring.consume() {
                    model.cache.append(page)
                }
                expected = model.cache.removeLast()
                model.statistics.allocation.refill += 1
            } else {
                model.statistics.allocation.empty += 1
                fromProvider = true
            }
            // Pages released with another holder's reference never come back to
            // the test provider: its capacity shrinks by each of them.
            let available = providerPages - model.handedOff - provider.outstandingPages
            let outstandingBefore = provider.outstandingPages
            let page: Page
            do {
                page = try pool.allocatePage()
            } catch {
                let providerHadNone = available <= 0 || model.providerFailures > 0
                guard fromProvider, providerHadNone, case .providerExhausted = error else {
                    report.fail("allocation failed with \(error) where the model expected a page; \(context)")
                    return false
                }
                if model.providerFailures > 0 { model.providerFailures -= 1 }
                return true
            }
            if fromProvider {
                let got = provider.outstandingPages - outstandingBefore
                guard model.providerFailures == 0, got == min(PagePool.allocCacheRefill, available) else {
                    report.fail("the slow path took \(got) pages from a provider with \(available) left (\(model.providerFailures) failures pending); \(context)")
                    return false
                }
                model.statistics.allocation.slow += 1
                model.statistics.holdCount += got
                model.cache = Array(repeating: nil, count: got - 1)
            } else if let expectedPage = expected, page != expectedPage {
                report.fail("allocation returned \(page), the model expected \(expectedPage); \(context)")
                return false
            }
            if held.contains(where: { $0.page == page }) {
                report.fail("\(page) handed out twice; \(context)")
                return false
            }
            if page.owner != .pagePool || page.referenceCount != 1 || page.dmaAddress != memory.unencryptedDMAAddress(of: page.physicalAddress) {
                report.fail("\(page) handed out with owner \(page.owner), ref \(page.referenceCount), DMA address \(page.dmaAddress); \(context)")
                return false
            }
            let pattern = source.next()
            fill(page, pattern)
            held.append(Held(page: page, pattern: pattern, extraReference: false))
            return true
        }

        /// How a put reaches the pool.
        enum PutKind { case recycleDirect, ownerNotDirect, remote }

        /// The model's `__page_pool_put_page` for one page: true if it needs the ring.
        func modelPutCandidate(_ h: Held, local: Bool) -> Bool {
            if h.extraReference {
                model.statistics.recycling.releasedRefcount += 1
                model.statistics.releaseCount += 1
                return false
            }
            if local {
                if model.cache.count < model.cacheCapacity {
                    model.cache.append(h.page)
                    model.statistics.recycling.cached += 1
                    return false
                }
                model.statistics.recycling.cacheFull += 1
            }
            return true
        }

        /// Takes held page `index` out of `held`, checking its bytes.
        func takeHeld(_ index: Int, _ context: String) -> Held? {
            let h = held.remove(at: index)
            guard intact(h.page, h.pattern) else {
                report.fail("\(h.page) was written by someone else while held; \(context)")
                return nil
            }
            return h
        }

        /// The holder of an extra reference drops it after the pool released the page.
        func dropExtraReference(_ h: Held, _ context: String) -> Bool {
            guard h.extraReference else { return true }
            guard h.page.release() else {
                report.fail("\(h.page) still referenced after released_refcnt; \(context)")
                return false
            }
            model.handedOff += 1
            return true
        }

        /// Gives back held page `index`.
        func put(_ index: Int, _ kind: PutKind, _ context: String) -> Bool {
            guard let h = takeHeld(index, context) else { return false }
            switch kind {
            case .recycleDirect: pool.recycleDirect(h.page)
            case .ownerNotDirect: pool.put(h.page, allowDirect: false)
            case .remote:
                let page = h.page
                remote.run { pool.put(page) }
            }
            // `page_pool_napi_local`: the owner's puts are local whatever they say.
            let local = kind == .recycleDirect || (kind == .ownerNotDirect && model.fault != .ownerPutSkipsTheCache)
            if modelPutCandidate(h, local: local) {
                if model.ring.produce(h.page) {
                    model.statistics.recycling.ring += 1
                } else {
                    model.statistics.recycling.ringFull += 1
                    model.statistics.releaseCount += 1
                }
            }
            return dropExtraReference(h, context)
        }

        /// A bulk put (`page_pool_put_netmem_bulk`) of the `count` most recent pages.
        func bulkPut(_ count: Int, remotely: Bool, _ context: String) -> Bool {
            var pages: [Held] = []
            for _ in 0..<count {
                guard let h = takeHeld(held.count - 1, context) else { return false }
                pages.append(h)
            }
            let batch = PageBatch(pages: pages.map(\.page))
            if remotely {
                remote.run { pool.put(contentsOf: batch.pages) }
            } else {
                pool.put(contentsOf: batch.pages)
            }
            var start = 0
            while start < pages.count {
                let run = pages[start..<min(start + PagePool.bulkPutSize, pages.count)]
                start += run.count
                let candidates = run.filter { modelPutCandidate($0, local: !remotely) }
                var produced = 0
                while produced < candidates.count && model.ring.produce(candidates[produced].page) { produced += 1 }
                model.statistics.recycling.ring += produced
                let left = candidates.count - produced
                if left > 0 {
                    model.statistics.recycling.ringFull += model.fault == .ringFullPerBulkPage ? left : 1
                    model.statistics.releaseCount += left
                }
            }
            for h in pages where !dropExtraReference(h, context) { return false }
            return true
        }

        func check(_ context: String) -> Bool {
            let s = pool.statistics
            // One NUMA node: the model expects no waive.
            let expected = model.statistics
            if s.allocation != expected.allocation || s.recycling != expected.recycling
                || s.holdCount != expected.holdCount || s.releaseCount != expected.releaseCount {
                report.fail("counters \(s) differ from the model's \(expected); \(context)")
                return false
            }
            if pool.cachedPageCount != model.cache.count || pool.ringPageCount != model.ring.pages
                || pool.ringOccupiedSlotCount != model.ring.occupiedSlots {
                report.fail("cache \(pool.cachedPageCount), ring \(pool.ringPageCount) pages in \(pool.ringOccupiedSlotCount) occupied slots; the model has \(model.cache.count), \(model.ring.pages) in \(model.ring.occupiedSlots); \(context)")
                return false
            }
            if s.inflight != held.count + model.cache.count + model.ring.pages {
                report.fail("inflight \(s.inflight) but \(held.count) held + \(model.cache.count) cached + \(model.ring.pages) ringed; \(context)")
                return false
            }
            if provider.outstandingPages != s.inflight {
                report.fail("the provider has \(provider.outstandingPages) pages out, the pool \(s.inflight) inflight; \(context)")
                return false
            }
            return true
        }

        // Phase 1: whole pages against the reference model.
        let pageSteps = steps * 3 / 4
        step: for step in 0..<pageSteps {
            if source.isExhausted { break }
            let context = "step \(step), ring \(pool.parameters.ringSize), \(providerPages) provider pages"
            let roll = source.int(in: 0..<100)
            report.operations += 1
            switch roll {
            case 0..<36 where held.count < 3 * providerPages / 4:
                guard allocate(context) else { break step }
            case 0..<44 where held.count < 3 * providerPages / 4:
                // A bulk allocation is a run of single ones (`allocatePages`).
                for _ in 0..<source.int(in: 2...80) where held.count < providerPages {
                    guard allocate(context) else { break step }
                }
            case 44..<56 where !held.isEmpty:
                guard put(source.int(in: 0..<held.count), .recycleDirect, context) else { break step }
            case 56..<64 where !held.isEmpty:
                guard put(source.int(in: 0..<held.count), .ownerNotDirect, context) else { break step }
            case 64..<84 where !held.isEmpty:
                guard put(source.int(in: 0..<held.count), .remote, context) else { break step }
            case 84..<92 where !held.isEmpty:
                // A bulk put of the most recent pages, as a driver completing a batch.
                let count = min(held.count, source.int(in: 2...70))
                guard bulkPut(count, remotely: source.int(in: 0..<3) != 0, context) else { break step }
            case 92..<97 where !held.isEmpty:
                // Someone else takes a page reference: the put must release the page.
                let i = source.int(in: 0..<held.count)
                if !held[i].extraReference {
                    held[i].page.retain()
                    held[i].extraReference = true
                }
            case 97..<100:
                // The provider fails its next allocation.
                provider.failNextAllocations(1)
                model.providerFailures = 1
            default:
                break
            }
            if !check(context) { break }
        }
        provider.failNextAllocations(0)

        // Phase 2: fragments, checked by their patterns.
        if report.problem == nil {
            try fragments(&source, steps: steps - pageSteps, memory: memory, device: device, report: &report)
        }

        // Teardown: everything back from the other thread, the pool destroyed, every page home.
        let leftovers = PageBatch(pages: held.map(\.page))
        remote.run { for page in leftovers.pages { pool.put(page) } }
        for h in held where h.extraReference { _ = h.page.release() }
        report.operations += held.count
        held.removeAll()
        pool.destroy()
        let end = pool.statistics
        if !pool.isShutdownComplete || end.inflight != 0 {
            report.fail("after destroy: shutdown \(pool.shutdownPhase), \(end.inflight) inflight")
        }
        report.lostPages += provider.outstandingPages
        for index in 0..<providerPages {
            let d = memory.descriptors + index
            if d.pointee.poolSignature != 0 || d.pointee.ownerObject != nil {
                report.fail("page \(index) still carries pool state after destroy")
                break
            }
        }
        return report
    }

    struct HeldFragment {
        var fragment: PagePoolFragment
        var pattern: UInt8
    }

    /// Fragments of random sizes (zero included) from an order-0 or order-1
    /// pool on x86-64 or arm64: each filled with its own byte and checked when
    /// freed, so overlapping fragments or a page recycled under a live fragment
    /// are caught; each offset must be the previous one plus the previous size
    /// rounded up to the architecture's `dma_get_cache_alignment()`.
    static func fragments(_ source: inout FuzzSource, steps: Int, memory: GuestMemory, device: Device,
                          report: inout FuzzReport) throws {
        let order = source.int(in: 0...1)
        let architecture = source.pick([Architecture.x86_64, .arm64])
        let firstPage = 8192
        let provider = PagePoolTestProvider(memory: memory, pages: firstPage..<(firstPage + 1024), name: "fuzz-fragments")
        let pool = try PagePool(.init(order: order, poolSize: 64, flags: .dmaMap, device: device, name: "fuzz-fragments",
                                      architecture: architecture),
                                provider: provider)
        let alignment = architecture.dmaCacheAlignment
        var live: [HeldFragment] = []
        var last: (page: Page, end: Int)?
        func intact(_ h: HeldFragment) -> Bool {
            report.bytesVerified &+= h.fragment.length   // bounded by steps: cannot overflow
            return UnsafeRawBufferPointer(start: h.fragment.bytes, count: h.fragment.length).allSatisfy { $0 == h.pattern }
        }
        for step in 0..<steps {
            if source.isExhausted || report.problem != nil { break }
            report.operations += 1
            if live.isEmpty || (source.int(in: 0..<100) < 55 && live.count < 400) {
                let pageBytes = pool.parameters.pageBytes
                let size = source.pick([0, 64, 130, 256, 1500, 2048, 3000, pageBytes, source.int(in: 1...pageBytes)])
                let fragment: PagePoolFragment
                do {
                    fragment = try pool.allocateFragment(size: size)
                } catch {
                    guard case .providerExhausted = error else {
                        report.fail("fragment of \(size) bytes failed with \(error); fragment step \(step)")
                        break
                    }
                    continue
                }
                let reserved = (size + alignment - 1) / alignment * alignment
                if fragment.offset + reserved > pageBytes || fragment.length != size {
                    report.fail("fragment at +\(fragment.offset) of \(fragment.length) bytes does not fit its page; fragment step \(step)")
                    break
                }
                if let last, last.page == fragment.page, fragment.offset != 0, fragment.offset != last.end {
                    report.fail("fragment at +\(fragment.offset) follows one ending at +\(last.end) (alignment \(alignment)); fragment step \(step)")
                    break
                }
                last = (fragment.page, fragment.offset + reserved)
                let pattern = UInt8(truncatingIfNeeded: source.next())
                fragment.bytes.initializeMemory(as: UInt8.self, repeating: pattern, count: fragment.length)
                live.append(HeldFragment(fragment: fragment, pattern: pattern))
            } else {
                let h = live.remove(at: source.int(in: 0..<live.count))
                if !intact(h) {
                    report.fail("fragment at +\(h.fragment.offset) of \(h.fragment.length) bytes in \(h.fragment.page) was overwritten; fragment step \(step)")
                    break
                }
                pool.put(h.fragment.page, allowDirect: source.int(in: 0..<2) == 0)
            }
        }
        for h in live {
            if !intact(h) { report.fail("fragment at +\(h.fragment.offset) in \(h.fragment.page) was overwritten at teardown") }
            pool.put(h.fragment.page, allowDirect: false)
            report.operations += 1
        }
        pool.destroy()
        if !pool.isShutdownComplete || pool.statistics.inflight != 0 {
            report.fail("fragment pool after destroy: \(pool.shutdownPhase), \(pool.statistics.inflight) inflight")
        }
        report.lostPages += provider.outstandingPages
    }
}

/// Pages as a Sendable bag, to carry them to the other thread.
struct PageBatch: @unchecked Sendable { var pages: [Page] }

/// A second thread that runs one closure at a time for the fuzzer and waits for
/// it: a put from a context that does not own the pool, in step with the model.
final class RemoteContext: @unchecked Sendable {
    private let work = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private var job: (@Sendable () -> Void)?
    private var thread = pthread_t()
    private var stopped = false

    init() {
        let box = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { argument in
            guard let argument else { return nil }
            let context = Unmanaged<RemoteContext>.fromOpaque(argument).takeRetainedValue()
            context.loop()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    private func loop() {
        while true {
            work.wait()
            // The semaphores order `job` between the two threads.
            guard let job else { break }
            job()
            self.job = nil
            done.signal()
        }
    }

    /// Runs `body` on the other thread and returns when it has finished.
    func run(_ body: @escaping @Sendable () -> Void) {
        precondition(!stopped, "remote context used after stop()")
        job = body
        work.signal()
        done.wait()
    }

    /// Ends the thread (and waits for it).
    func stop() {
        guard !stopped else { return }
        stopped = true
        job = nil
        work.signal()
        pthread_join(thread, nil)
    }
}
