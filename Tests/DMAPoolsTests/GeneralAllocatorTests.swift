import CJemalloc
import Synchronization
import Testing
@_spi(DMAPoolsSupport) @testable import DMAPools

/// A small guest: 64 MiB, 4 MiB of it swiotlb, conversions free.
func smallGuest(megabytes: Int = 64, swiotlbMegabytes: Int = 4,
                hypercall: HypercallCostModel = .free) throws -> GuestMemory {
    try GuestMemory(.init(guestBytes: megabytes << 20, swiotlbBytes: swiotlbMegabytes << 20, hypercall: hypercall))
}

@Suite struct GeneralAllocatorTests {
    @Test func runsComeFromThePrivateRangeNaturallyAligned() throws {
        let memory = try smallGuest()
        let allocator = try GeneralAllocator(memory: memory)
        var runs: [Page] = []
        for order in GeneralAllocator.orders {
            let head = try allocator.allocatePages(order: order)
            let index = memory.index(of: head)
            #expect(memory.privatePages.contains(index) && memory.privatePages.contains(index + (1 << order) - 1))
            #expect(index % (1 << order) == 0)
            #expect(Int(bitPattern: head.bytes) % PageGeometry.bytes(order: order) == 0)
            #expect(head.physicalAddress.rawValue % UInt64(PageGeometry.bytes(order: order)) == 0)
            #expect(head.order == order && head.owner == .generalAllocator && head.domain == .private)
            #expect(head.referenceCount == 1)
            #expect(head.byteCount == PageGeometry.bytes(order: order))
            for tail in 1..<(1 << order) {
                let page = memory.page(at: index + tail)
                #expect(page.isTail && page.head == head && page.owner == .generalAllocator)
            }
            // The bytes are ours to write and read back.
            head.bytes.storeBytes(of: UInt64(0xC0FFEE) &+ UInt64(order), as: UInt64.self)
            (head.bytes + head.byteCount - 8).storeBytes(of: UInt64(order), as: UInt64.self)
            runs.append(head)
        }
        for (order, head) in runs.enumerated() {
            #expect(head.bytes.load(as: UInt64.self) == 0xC0FFEE + UInt64(order))
            #expect((head.bytes + head.byteCount - 8).load(as: UInt64.self) == UInt64(order))
        }
        let user = try allocator.allocatePages(order: 0, owner: .user)
        #expect(user.owner == .user)
        allocator.freePages(user)
        for head in runs { allocator.freePages(head) }
        let stats = allocator.statistics
        #expect(stats.allocations == [2, 1, 1, 1, 1, 1, 1, 1, 1, 1])
        #expect(stats.frees == stats.allocations)
        #expect(stats.livePages == 0 && stats.liveRuns == 0)
        #expect(memory.census()[.generalAllocator, default: 0] == 0)
        #expect(runs.allSatisfy { $0.owner == .free && $0.referenceCount == 0 && $0.order == 0 })
    }

    @Test func freeAcceptsAReleasedLastReference() throws {
        let allocator = try GeneralAllocator(memory: try smallGuest())
        let page = try allocator.allocatePages(order: 3)
        page.retain()
        #expect(!page.release())
        #expect(page.release())  // put_page dropped the last reference ...
        allocator.freePages(page) // ... and the free path frees it at count 0
        #expect(allocator.statistics.livePages == 0)
    }

    @Test func freedRunsAreReusedSoCarvingStaysBounded() throws {
        let allocator = try GeneralAllocator(memory: try smallGuest())
        var held: [Page] = []
        held.reserveCapacity(64)
        func cycle() throws {
            for i in 0..<64 { held.append(try allocator.allocatePages(order: i % 2 == 0 ? 0 : 3)) }
            for page in held { allocator.freePages(page) }
            held.removeAll(keepingCapacity: true)
        }
        try cycle()
        let warm = allocator.statistics.bytesCarved
        for _ in 0..<200 { try cycle() }
        let stats = allocator.statistics
        #expect(stats.bytesCarved == warm)
        #expect(stats.bytesCarved <= 16 << 20)
        #expect(stats.allocations[0] == 201 * 32 && stats.allocations[3] == 201 * 32)
        #expect(stats.livePages == 0)
    }

    @Test func ordersOutOfRangeAreErrors() throws {
        let allocator = try GeneralAllocator(memory: try smallGuest())
        #expect(throws: AllocatorError.invalidOrder(10, allowed: 0...9)) { try allocator.allocatePages(order: 10) }
        #expect(throws: AllocatorError.invalidOrder(-1, allowed: 0...9)) { try allocator.allocatePages(order: -1) }
        #expect(allocator.statistics.failures == 2)
        #expect("\(AllocatorError.invalidOrder(10, allowed: 0...9))".contains("order 10"))
    }

    @Test func exhaustingThePrivateRangeIsAnError() throws {
        // 16 MiB guest, 2 MiB swiotlb: 14 MiB private, 2 MiB of it jemalloc metadata.
        let memory = try smallGuest(megabytes: 16, swiotlbMegabytes: 2)
        let allocator = try GeneralAllocator(memory: memory)
        var held: [Page] = []
        var failure: AllocatorError?
        while failure == nil, held.count < 1000 {
            do { held.append(try allocator.allocatePages(order: 9)) } catch { failure = error }
        }
        guard case .outOfMemory(let requested, let carved, let total)? = failure else {
            Issue.record("expected outOfMemory, got \(String(describing: failure))")
            return
        }
        #expect(requested == 2 << 20 && total == 14 << 20 && carved <= total)
        // Each aligned 2 MiB run makes jemalloc grow by size + alignment - 4 KiB.
        #expect(held.count >= 3)
        // The unaligned leftovers still serve smaller runs; then the guest is full.
        while let page = try? allocator.allocatePages(order: 0) { held.append(page) }
        let heldBytes = held.reduce(0) { $0 + $1.byteCount }
        #expect(heldBytes >= 10 << 20)
        #expect(allocator.statistics.failures >= 2)
        #expect(allocator.statistics.bytesCarved <= 14 << 20)
        for page in held { allocator.freePages(page) }
        // Everything freed is usable again.
        let again = try allocator.allocatePages(order: 9)
        allocator.freePages(again)
        #expect(allocator.statistics.livePages == 0)
    }

    @Test func tooSmallAGuestCannotHoldAnArena() throws {
        // 4 MiB guest with 2 MiB swiotlb: 2 MiB private, all of it jemalloc metadata.
        let memory = try smallGuest(megabytes: 4, swiotlbMegabytes: 2)
        do {
            let allocator = try GeneralAllocator(memory: memory)
            #expect(throws: AllocatorError.self) { try allocator.allocatePages(order: 0) }
        } catch {
            guard case .outOfMemory = error else { Issue.record("unexpected \(error)"); return }
        }
    }

    @Test func allocatorsOverSeparateGuestsCoexist() throws {
        let memories = try (0..<3).map { _ in try smallGuest(megabytes: 32, swiotlbMegabytes: 2) }
        var allocators = try memories.map { try GeneralAllocator(memory: $0) }
        #expect(Set(allocators.map(\.arenaIndex)).count == 3)
        for round in 0..<50 {
            for (i, allocator) in allocators.enumerated() {
                let page = try allocator.allocatePages(order: round % 4)
                #expect(memories[i].privatePages.contains(memories[i].index(of: page)))
                #expect(allocator.contains(page) && !allocators[(i + 1) % 3].contains(page))
                allocator.freePages(page)
            }
        }
        // Destroying one arena leaves the others working.
        allocators.removeFirst()
        for allocator in allocators {
            let page = try allocator.allocatePages(order: 9)
            allocator.freePages(page)
            #expect(allocator.statistics.livePages == 0)
        }
    }

    @Test func pagesLiveAtDestroyAreCountedAsLost() throws {
        let memory = try smallGuest()
        let before = GeneralAllocator.pagesLostAtArenaDestroy
        do {
            let allocator = try GeneralAllocator(memory: memory)
            _ = try allocator.allocatePages(order: 3)
            _ = try allocator.allocatePages(order: 0)
        }
        #expect(GeneralAllocator.pagesLostAtArenaDestroy - before >= 9)
    }

    @Test func freeHookRunsFirstAndIsCounted() throws {
        let memory = try smallGuest()
        let taken = Lock<[Page]>([])
        // Takes order-1 runs, as the seed patch diverts its zero-copy pages.
        let allocator = try GeneralAllocator(memory: memory) { page in
            guard page.order == 1 else { return false }
            taken.withLock { $0.append(page) }
            return true
        }
        var pages: [Page] = []
        for i in 0..<30 { pages.append(try allocator.allocatePages(order: i % 3)) }
        for page in pages { allocator.freePages(page) }
        let stats = allocator.statistics
        #expect(stats.hookChecks == 30)
        #expect(stats.hookInterceptions == 10)
        #expect(taken.withLock { $0.count } == 10)
        #expect(stats.liveRuns == 10)
        // Without a hook nothing is counted.
        let plain = try GeneralAllocator(memory: try smallGuest())
        plain.freePages(try plain.allocatePages(order: 0))
        #expect(plain.statistics.hookChecks == 0)
        // Give the hook's pages back by dropping the allocator (they are lost with it).
        taken.withLock { $0.removeAll() }
    }

    @Test func concurrentAllocAndFreeEndWithNothingLive() async throws {
        let allocator = try GeneralAllocator(memory: try smallGuest(megabytes: 128, swiotlbMegabytes: 4))
        let iterations = 20_000
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<4 {
                group.addTask {
                    var held: [Page] = []
                    held.reserveCapacity(8)
                    for i in 0..<iterations {
                        let order = (i &+ task) % 4
                        guard let page = try? allocator.allocatePages(order: order) else {
                            Issue.record("allocation failed"); return
                        }
                        page.bytes.storeBytes(of: UInt32(task), as: UInt32.self)
                        held.append(page)
                        if held.count == 8 {
                            for page in held {
                                #expect(page.bytes.load(as: UInt32.self) == UInt32(task))
                                allocator.freePages(page)
                            }
                            held.removeAll(keepingCapacity: true)
                        }
                    }
                    for page in held { allocator.freePages(page) }
                }
            }
        }
        let stats = allocator.statistics
        #expect(stats.allocations.reduce(0, +) == 4 * iterations)
        #expect(stats.livePages == 0)
        #expect(allocator.memory.census()[.generalAllocator, default: 0] == 0)
    }

    @Test func localCacheServesThisArenaOnly() throws {
        let memory = try smallGuest()
        let other = try GeneralAllocator(memory: try smallGuest())
        let allocator = try GeneralAllocator(memory: memory)
        do {
            let cache = try allocator.makeLocalCache()
            let otherCache = try other.makeLocalCache()
            var held: [Page] = []
            for round in 0..<300 {
                for i in 0..<16 {
                    let page = try cache.allocatePages(order: i % 5 == 0 ? 3 : 0)
                    #expect(allocator.contains(page) && page.referenceCount == 1 && page.owner == .generalAllocator)
                    held.append(page)
                }
                // Interleave the other arena through its own cache.
                otherCache.freePages(try otherCache.allocatePages(order: 0))
                // Either free path works for a run from the cache.
                for (i, page) in held.enumerated() {
                    if (i + round) % 2 == 0 { cache.freePages(page) } else { allocator.freePages(page) }
                }
                held.removeAll(keepingCapacity: true)
            }
            #expect(allocator.statistics.bytesCarved <= 8 << 20)
            #expect(allocator.statistics.livePages == 0)
        }
        // The caches are gone (flushed); the arenas can be destroyed safely.
        #expect(memory.census()[.generalAllocator, default: 0] == 0)
    }

    @Test func localCachesPerTaskEndWithNothingLive() async throws {
        let allocator = try GeneralAllocator(memory: try smallGuest(megabytes: 128, swiotlbMegabytes: 4))
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    guard let cache = try? allocator.makeLocalCache() else { Issue.record("no tcache"); return }
                    for i in 0..<20_000 {
                        guard let page = try? cache.allocatePages(order: i % 8 == 0 ? 3 : 0) else {
                            Issue.record("allocation failed"); return
                        }
                        cache.freePages(page)
                    }
                }
            }
        }
        #expect(allocator.statistics.livePages == 0)
        #expect(allocator.statistics.allocations.reduce(0, +) == 80_000)
    }

    /// Why the allocator passes MALLOCX_TCACHE_NONE: a tcache's bins are per size
    /// class, so a region cached from arena A is returned for a mallocx naming B.
    @Test func sharedTCacheCrossesArenas() throws {
        let a = try GeneralAllocator(memory: try smallGuest())
        let b = try GeneralAllocator(memory: try smallGuest())
        let tcache = try Jemalloc.exchange("tcache.create", writing: Int?.none, reading: UInt32.self)
        defer { try? Jemalloc.write("tcache.destroy", tcache) }
        let size = 4096
        let flagsA = Jemalloc.arena(a.arenaIndex) | Jemalloc.tcache(tcache) | Jemalloc.lgAlign(12)
        let flagsB = Jemalloc.arena(b.arenaIndex) | Jemalloc.tcache(tcache) | Jemalloc.lgAlign(12)
        let fromA = try #require(mallocx(size, flagsA))
        #expect(a.memory.contains(fromA))
        sdallocx(fromA, size, flagsA)  // into the tcache
        let fromB = try #require(mallocx(size, flagsB))
        #expect(fromB == fromA, "tcache hit ignores MALLOCX_ARENA")
        #expect(a.memory.contains(fromB) && !b.memory.contains(fromB))
        sdallocx(fromB, size, flagsA)
        // Without a tcache the arena is honoured.
        let none = Jemalloc.arena(b.arenaIndex) | Jemalloc.tcacheNone | Jemalloc.lgAlign(12)
        let direct = try #require(mallocx(size, none))
        #expect(b.memory.contains(direct))
        sdallocx(direct, size, none)
    }

    @Test func doubleFreeTraps() async {
        let trap0 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try GeneralAllocator(memory: try smallGuest())
            let page = try allocator.allocatePages(order: 2)
            allocator.freePages(page)
            allocator.freePages(page)
        }
        #expect(standardError(of: trap0).contains("GeneralAllocator.freePages: double free of page(phys:0x"))
    }

    @Test func foreignPageTraps() async {
        let trap1 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let a = try GeneralAllocator(memory: try smallGuest())
            let b = try GeneralAllocator(memory: try smallGuest())
            b.freePages(try a.allocatePages(order: 0))
        }
        #expect(standardError(of: trap1).contains("invalid free of page("))
        let trap2 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let memory = try smallGuest()
            let allocator = try GeneralAllocator(memory: memory)
            allocator.freePages(memory.page(at: memory.swiotlbPages.lowerBound))
        }
        #expect(standardError(of: trap2).contains("outside this allocator"))
    }

    @Test func stillReferencedPageTraps() async {
        let trap3 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try GeneralAllocator(memory: try smallGuest())
            let page = try allocator.allocatePages(order: 0)
            page.retain()
            allocator.freePages(page)
        }
        #expect(standardError(of: trap3).contains("still referenced (2 references)"))
    }
}

/// What an exit test's process wrote to standard error.
func standardError(of result: ExitTest.Result?) -> String {
    result.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
}
