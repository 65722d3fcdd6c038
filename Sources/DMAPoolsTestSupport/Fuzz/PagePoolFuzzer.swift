import DMAPools

/// Random operation sequences against a real `PagePool` over
/// `PagePoolTestProvider`, each step checked against an exact model of the
/// kernel's recycling machinery: the alloc cache as a LIFO stack of 128, the
/// ring as a FIFO of the pool's ring size, refills of up to 64 from the ring,
/// bulk slow allocations of 64 from the provider, direct and ring recycling,
/// cache_full, ring_full and released_refcnt. After every step the pool's
/// cache and ring depths, every counter and the inflight count must equal the
/// model's, and the provider's outstanding pages must equal the pool's
/// inflight. Every page handed out is filled with its own pattern, checked
/// before it goes back (two users of one page would tear it).
///
/// A second phase carves fragments of random sizes from a fragment pool, each
/// filled with its own pattern and checked when freed.
///
/// At the end every page is put back, the pools are destroyed, and the provider
/// must have every page home with clean descriptors.
public enum PagePoolFuzzer {
    /// A deliberate disagreement planted in the model, so a test can show the
    /// fuzzer catches one. `.none` in every real run.
    public enum ModelFault: Sendable { case none, cacheHoldsOneLess }

    struct Held {
        var page: Page
        var pattern: UInt64
        var extraReference: Bool
    }

    struct Model {
        var cacheCapacity = PagePool.allocCacheSize
        var ringCapacity: Int
        /// The alloc cache, bottom to top; nil for a page the model has not seen
        /// yet (the rest of a bulk allocation from the provider).
        var cache: [Page?] = []
        var ring: [Page] = []
        var statistics = PagePoolStatistics()
        var providerFailures = 0
        var handedOff = 0
    }

    public static func run(_ source: inout FuzzSource, steps: Int, modelFault: ModelFault = .none) throws -> FuzzReport {
        var report = FuzzReport(target: "page_pool", source: source)
        let memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 4 << 20, hypercall: .free))
        let providerPages = source.pick([256, 1024, 4096])
        let provider = PagePoolTestProvider(memory: memory, pages: 0..<providerPages, name: "fuzz-pages")
        let device = try DeviceRegistry().add(name: "eth0")
        let poolSize = source.pick([0, 16, 64, 200, 512])
        let pool = try PagePool(.init(poolSize: poolSize, flags: .dmaMap, device: device, name: "fuzz"), provider: provider)
        var model = Model(ringCapacity: pool.parameters.ringSize)
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
                let moved = min(PagePool.allocCacheRefill, model.ring.count)
                model.cache = model.ring.prefix(moved).map { $0 }
                model.ring.removeFirst(moved)
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
                report.fail("allocation returned \(page), the LIFO cache's top is \(expectedPage); \(context)")
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

        /// Gives back held page `index`, directly (owner) or through the ring.
        func put(_ index: Int, direct: Bool, _ context: String) -> Bool {
            let h = held.remove(at: index)
            guard intact(h.page, h.pattern) else {
                report.fail("\(h.page) was written by someone else while held; \(context)")
                return false
            }
            pool.put(h.page, allowDirect: direct)
            if h.extraReference {
                model.statistics.recycling.releasedRefcount += 1
                model.statistics.releaseCount += 1
                // Whoever held the other reference drops it now: the last one.
                guard h.page.release() else {
                    report.fail("\(h.page) still referenced after released_refcnt; \(context)")
                    return false
                }
                model.handedOff += 1
                return true
            }
            if direct {
                if model.cache.count < model.cacheCapacity {
                    model.cache.append(h.page)
                    model.statistics.recycling.cached += 1
                    return true
                }
                model.statistics.recycling.cacheFull += 1
            }
            if model.ring.count < model.ringCapacity {
                model.ring.append(h.page)
                model.statistics.recycling.ring += 1
            } else {
                model.statistics.recycling.ringFull += 1
                model.statistics.releaseCount += 1
            }
            return true
        }

        func check(_ context: String) -> Bool {
            let s = pool.statistics
            var expected = model.statistics
            expected.allocation.waive = s.allocation.waive
            if s.allocation != expected.allocation || s.recycling != expected.recycling
                || s.holdCount != expected.holdCount || s.releaseCount != expected.releaseCount {
                report.fail("counters \(s) differ from the model's \(expected); \(context)")
                return false
            }
            if pool.cachedPageCount != model.cache.count || pool.ringPageCount != model.ring.count {
                report.fail("cache \(pool.cachedPageCount) ring \(pool.ringPageCount), the model has \(model.cache.count) and \(model.ring.count); \(context)")
                return false
            }
            if s.inflight != held.count + model.cache.count + model.ring.count {
                report.fail("inflight \(s.inflight) but \(held.count) held + \(model.cache.count) cached + \(model.ring.count) ringed; \(context)")
                return false
            }
            if provider.outstandingPages != s.inflight {
                report.fail("the provider has \(provider.outstandingPages) pages out, the pool \(s.inflight) inflight; \(context)")
                return false
            }
            return true
        }

        // Phase 1: whole pages against the exact model.
        let pageSteps = steps * 3 / 4
        step: for step in 0..<pageSteps {
            if source.isExhausted { break }
            let context = "step \(step), ring \(model.ringCapacity), \(providerPages) provider pages"
            let roll = source.int(in: 0..<100)
            report.operations += 1
            switch roll {
            case 0..<38 where held.count < 3 * providerPages / 4:
                guard allocate(context) else { break step }
            case 0..<45 where held.count < 3 * providerPages / 4:
                // A bulk allocation is a run of single ones (`allocatePages`).
                for _ in 0..<source.int(in: 2...80) where held.count < providerPages {
                    guard allocate(context) else { break step }
                }
            case 45..<70 where !held.isEmpty:
                guard put(source.int(in: 0..<held.count), direct: true, context) else { break step }
            case 70..<88 where !held.isEmpty:
                guard put(source.int(in: 0..<held.count), direct: false, context) else { break step }
            case 88..<93 where !held.isEmpty:
                // A bulk put of the most recent pages, as a driver completing a batch.
                let count = min(held.count, source.int(in: 2...70))
                let direct = source.int(in: 0..<2) == 0
                for _ in 0..<count {
                    guard put(held.count - 1, direct: direct, context) else { break step }
                }
            case 93..<97 where !held.isEmpty:
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

        // Teardown: everything back, the pool destroyed, every page home.
        for h in held {
            pool.put(h.page, allowDirect: false)
            if h.extraReference { _ = h.page.release() }
            report.operations += 1
        }
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

    /// Fragments of random sizes from an order-0 or order-1 pool: each filled
    /// with its own byte and checked when freed, so overlapping fragments or a
    /// page recycled under a live fragment are caught.
    static func fragments(_ source: inout FuzzSource, steps: Int, memory: GuestMemory, device: Device,
                          report: inout FuzzReport) throws {
        let order = source.int(in: 0...1)
        let firstPage = 8192
        let provider = PagePoolTestProvider(memory: memory, pages: firstPage..<(firstPage + 1024), name: "fuzz-fragments")
        let pool = try PagePool(.init(order: order, poolSize: 64, flags: .dmaMap, device: device, name: "fuzz-fragments"),
                                provider: provider)
        var live: [HeldFragment] = []
        func intact(_ h: HeldFragment) -> Bool {
            report.bytesVerified &+= h.fragment.length   // bounded by steps: cannot overflow
            return UnsafeRawBufferPointer(start: h.fragment.bytes, count: h.fragment.length).allSatisfy { $0 == h.pattern }
        }
        for step in 0..<steps {
            if source.isExhausted || report.problem != nil { break }
            report.operations += 1
            if live.isEmpty || (source.int(in: 0..<100) < 55 && live.count < 400) {
                let size = source.pick([64, 256, 1500, 2048, 3000, pool.parameters.pageBytes, source.int(in: 1...pool.parameters.pageBytes)])
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
                if fragment.offset + fragment.length > pool.parameters.pageBytes || fragment.offset % PagePool.fragmentAlignment != 0 {
                    report.fail("fragment at +\(fragment.offset) of \(fragment.length) bytes does not fit its page; fragment step \(step)")
                    break
                }
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
