import Synchronization
import Testing
@testable import DMAPools

@Suite struct DecryptedAllocatorTests {
    private func makeAllocator(megabytes: Int = 64, hypercall: HypercallCostModel = .free,
                               configuration: DecryptedAllocator.Configuration = .init()) throws -> DecryptedAllocator {
        let memory = try smallGuest(megabytes: megabytes, swiotlbMegabytes: 4, hypercall: hypercall)
        return try DecryptedAllocator(general: try GeneralAllocator(memory: memory), configuration: configuration)
    }

    /// The buddy lists alone (no per-CPU lists), for the tests of chunk
    /// accounting that expect a free to reach them at once.
    private static let buddyOnly = DecryptedAllocator.Configuration(perCPURuns: 0)

    @Test func runsAreSharedWithTheirUnencryptedDMAAddress() throws {
        let allocator = try makeAllocator(configuration: Self.buddyOnly)
        let memory = allocator.memory
        var runs: [Page] = []
        for order in DecryptedAllocator.orders {
            let head = try allocator.allocate(order: order)
            let index = memory.index(of: head)
            #expect(index % (1 << order) == 0 && Int(bitPattern: head.bytes) % PageGeometry.bytes(order: order) == 0)
            #expect(head.owner == .decryptedAllocator && head.order == order && head.referenceCount == 1)
            for i in 0..<(1 << order) {
                let page = memory.page(at: index + i)
                #expect(page.domain == .shared)
                #expect(page.dmaAddress == memory.unencryptedDMAAddress(of: page.physicalAddress))
                #expect(memory.physicalAddress(ofShared: page.dmaAddress) == page.physicalAddress)
                #expect(page.head == head)
            }
            #expect(allocator.owns(head))
            head.bytes.initializeMemory(as: UInt8.self, repeating: UInt8(order + 1), count: head.byteCount)
            runs.append(head)
        }
        for (order, head) in runs.enumerated() {
            #expect(head.bytes.load(fromByteOffset: head.byteCount - 1, as: UInt8.self) == UInt8(order + 1))
            allocator.free(head)
            #expect(!allocator.owns(head))
        }
        let stats = allocator.statistics
        #expect(stats.allocations == [1, 1, 1, 1] && stats.frees == [1, 1, 1, 1])
        #expect(stats.livePages == 0 && stats.chunksConverted == 1 && stats.spareChunks == 1)
    }

    @Test func oneConversionPerChunkEachWay() throws {
        let allocator = try makeAllocator(configuration: .init(chunkOrder: 9, spareChunks: 1, perCPURuns: 0))
        let memory = allocator.memory
        let bootShared = memory.sharedPageCount()
        var pages: [Page] = []
        for _ in 0..<512 { pages.append(try allocator.allocate(order: 0)) }
        #expect(memory.conversionStatistics.calls == 1 && memory.conversionStatistics.pagesDecrypted == 512)
        #expect(allocator.statistics.bytesShared == 2 << 20)
        pages.append(try allocator.allocate(order: 0))  // a second chunk
        #expect(memory.conversionStatistics.calls == 2)
        #expect(allocator.statistics.chunksConverted == 2 && allocator.statistics.chunksHeld == 2)
        #expect(allocator.general.statistics.livePages == 1024)
        for page in pages { allocator.free(page) }
        // One chunk kept as the spare, the other converted back and freed.
        var stats = allocator.statistics
        #expect(stats.livePages == 0 && stats.chunksHeld == 1 && stats.spareChunks == 1 && stats.chunksReleased == 1)
        #expect(memory.conversionStatistics.calls == 3 && memory.conversionStatistics.pagesEncrypted == 512)
        #expect(allocator.general.statistics.livePages == 512)
        // The spare serves the next allocation without a conversion.
        let again = try allocator.allocate(order: 3)
        #expect(memory.conversionStatistics.calls == 3)
        allocator.free(again)
        #expect(allocator.releaseSpareChunks() == 1)
        stats = allocator.statistics
        #expect(stats.conversions == 4 && stats.chunksHeld == 0 && stats.bytesShared == 0)
        #expect(allocator.general.statistics.livePages == 0)
        #expect(memory.sharedPageCount() == bootShared)
    }

    @Test func mixedOrdersCoalesceBackIntoWholeChunks() throws {
        let allocator = try makeAllocator(configuration: .init(chunkOrder: 6, spareChunks: 2, perCPURuns: 0))
        var generator = SystemRandomNumberGenerator()
        var live: [Page] = []
        for round in 0..<2_000 {
            if live.isEmpty || Int.random(in: 0..<3, using: &generator) != 0 {
                live.append(try allocator.allocate(order: Int.random(in: 0...3, using: &generator)))
            } else {
                allocator.free(live.remove(at: Int.random(in: 0..<live.count, using: &generator)))
            }
            if round % 500 == 0 {
                let pages = live.reduce(0) { $0 + (1 << $1.order) }
                #expect(allocator.statistics.livePages == pages)
            }
        }
        // No two live runs overlap.
        let covered = live.flatMap { head in (0..<(1 << head.order)).map { allocator.memory.index(of: head) + $0 } }
        #expect(Set(covered).count == covered.count)
        live.shuffle(using: &generator)
        for page in live { allocator.free(page) }
        let stats = allocator.statistics
        #expect(stats.livePages == 0 && stats.chunksHeld == stats.spareChunks && stats.spareChunks <= 2)
        #expect(stats.chunksConverted - stats.chunksReleased == stats.chunksHeld)
        #expect(allocator.memory.census()[.decryptedAllocator, default: 0] == stats.chunksHeld << 6)
    }

    @Test func conversionFailuresLoseNothing() throws {
        // Every conversion fails: the chunk goes straight back to jemalloc.
        let always = HypercallCostModel(perCallNanoseconds: 0, perPageNanoseconds: 0, charge: .accountOnly, failEveryNthCall: 1)
        let failing = try makeAllocator(hypercall: always)
        #expect {
            try failing.allocate(order: 0)
        } throws: { error in
            guard case .conversionFailed(_, 512, .conversionFailed(pages: 512, call: 1))? = error as? AllocatorError else { return false }
            return "\(error)".contains("could not convert")
        }
        var stats = failing.statistics
        #expect(stats.conversionFailures == 1 && stats.failures == 1 && stats.chunksHeld == 0)
        #expect(failing.general.statistics.livePages == 0)
        #expect(failing.memory.sharedPageCount() == failing.memory.swiotlbPages.count)

        // Every second conversion fails: growth fails once, then succeeds on retry;
        // the failed conversion back keeps the chunk as a spare.
        let everyOther = HypercallCostModel(perCallNanoseconds: 0, perPageNanoseconds: 0, charge: .accountOnly, failEveryNthCall: 2)
        let allocator = try makeAllocator(hypercall: everyOther, configuration: .init(chunkOrder: 9, spareChunks: 0, perCPURuns: 0))
        var pages = try (0..<64).map { _ in try allocator.allocate(order: 3) }  // call 1: one full chunk
        #expect(throws: AllocatorError.self) { try allocator.allocate(order: 3) }  // call 2 fails
        pages.append(try allocator.allocate(order: 3))  // call 3
        #expect(allocator.general.statistics.livePages == 1024)
        for page in pages { allocator.free(page) }  // calls 4 (fails: kept) and 5 (released)
        stats = allocator.statistics
        #expect(stats.conversions == 5 && stats.conversionFailures == 2 && stats.failures == 1)
        #expect(stats.livePages == 0 && stats.chunksHeld == 1 && stats.spareChunks == 1)
        #expect(allocator.general.statistics.livePages == 512)
        #expect(allocator.releaseSpareChunks(attempts: 1) == 0)  // call 6 fails again: one attempt, still kept
        #expect(allocator.releaseSpareChunks() == 1)  // call 7
        #expect(allocator.general.statistics.livePages == 0)
        #expect(allocator.memory.sharedPageCount() == allocator.memory.swiotlbPages.count)
    }

    @Test func releaseRetriesATransientFailureAndGivesUpOnAPersistentOne() throws {
        // Every second conversion fails: a release that fails is retried in the
        // same pass, so teardown returns every chunk.
        let everyOther = HypercallCostModel(perCallNanoseconds: 0, perPageNanoseconds: 0, charge: .accountOnly, failEveryNthCall: 2)
        let allocator = try makeAllocator(hypercall: everyOther, configuration: .init(chunkOrder: 9, spareChunks: 4, perCPURuns: 0))
        var pages: [Page] = []
        while allocator.statistics.chunksHeld < 3 {
            if let page = try? allocator.allocate(order: 3) { pages.append(page) }
        }
        for page in pages { allocator.free(page) }
        let held = allocator.statistics.chunksHeld
        #expect(held == 3, "spares kept: \(allocator.statistics)")
        #expect(allocator.releaseSpareChunks() == held)
        #expect(allocator.statistics.conversionFailures > 1)
        #expect(allocator.general.statistics.livePages == 0)
        #expect(allocator.memory.sharedPageCount() == allocator.memory.swiotlbPages.count)
    }

    @Test func invalidRequestsAreErrors() throws {
        let allocator = try makeAllocator()
        #expect(throws: AllocatorError.invalidOrder(4, allowed: 0...3)) { try allocator.allocate(order: 4) }
        #expect(throws: AllocatorError.invalidOrder(-1, allowed: 0...3)) { try allocator.allocate(order: -1) }
        #expect(allocator.statistics.failures == 2)
        #expect(throws: AllocatorError.self) {
            try DecryptedAllocator(general: allocator.general, configuration: .init(chunkOrder: 2))
        }
        #expect(throws: AllocatorError.self) {
            try DecryptedAllocator(general: allocator.general, configuration: .init(spareChunks: -1))
        }
    }

    @Test func generalAllocatorExhaustionIsAnError() throws {
        let allocator = try makeAllocator(megabytes: 16)  // 12 MiB private, 2 MiB of it metadata
        var pages: [Page] = []
        do {
            while pages.count < 10_000 { pages.append(try allocator.allocate(order: 3)) }
            Issue.record("expected exhaustion")
        } catch {
            guard case .outOfMemory = error else { Issue.record("unexpected \(error)"); return }
        }
        // Each aligned 2 MiB chunk may cost jemalloc up to 4 MiB of carve.
        #expect(pages.count >= 64 * 2)
        for page in pages { allocator.free(page) }
        #expect(allocator.statistics.livePages == 0)
    }

    @Test func concurrentAllocAndFreeEndWithNothingLive() async throws {
        let allocator = try makeAllocator(megabytes: 128)
        let iterations = 20_000
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<4 {
                group.addTask {
                    var held: [Page] = []
                    held.reserveCapacity(16)
                    for i in 0..<iterations {
                        guard let page = try? allocator.allocate(order: (i &* 7 &+ task) % 4) else {
                            Issue.record("allocation failed"); return
                        }
                        page.bytes.storeBytes(of: UInt16(task), as: UInt16.self)
                        held.append(page)
                        if held.count == 16 {
                            for page in held {
                                if page.bytes.load(as: UInt16.self) != UInt16(task) || page.domain != .shared {
                                    Issue.record("run \(page) was handed out twice")
                                }
                                allocator.free(page)
                            }
                            held.removeAll(keepingCapacity: true)
                        }
                    }
                    for page in held { allocator.free(page) }
                }
            }
        }
        let stats = allocator.statistics
        #expect(stats.allocations.reduce(0, +) == 4 * iterations && stats.frees == stats.allocations)
        #expect(stats.livePages == 0)
        // Free runs wait on the CPUs' lists; draining them leaves whole chunks.
        allocator.releaseSpareChunks()
        let drained = allocator.statistics
        #expect(drained.pagesOnCPULists == 0 && drained.chunksHeld == 0 && drained.livePages == 0)
        #expect(allocator.general.statistics.livePages == 0)
        #expect(allocator.statistics.conversions == allocator.memory.conversionStatistics.calls)
    }

    /// Frees one run twice (the body of an exit test, which captures nothing).
    private static func freeARunTwice(perCPURuns: Int) throws {
        let memory = try smallGuest()
        let allocator = try DecryptedAllocator(general: try GeneralAllocator(memory: memory),
                                               configuration: .init(perCPURuns: perCPURuns))
        let keep = try allocator.allocate(order: 0)  // keeps the chunk alive
        let page = try allocator.allocate(order: 1)
        allocator.free(page)
        allocator.free(page)
        _ = keep
    }

    @Test func doubleFreeTraps() async {
        // The second free finds the run on this CPU's list...
        let onList = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            try Self.freeARunTwice(perCPURuns: 16)
        }
        #expect(standardError(of: onList).contains("DecryptedAllocator.free: invalid free of page(phys:0x"))
        #expect(standardError(of: onList).contains("double free (the run is on a per-CPU list)"))
        // ...or, without the lists, free in the buddy lists.
        let inBuddy = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            try Self.freeARunTwice(perCPURuns: 0)
        }
        #expect(standardError(of: inBuddy).contains("DecryptedAllocator.free: invalid free of page(phys:0x"))
        #expect(standardError(of: inBuddy).contains(": double free"))
    }

    @Test func aRunFreedOnACPUIsHandedOutAgainFromItsList() throws {
        let allocator = try makeAllocator(configuration: .init(chunkOrder: 9, spareChunks: 0, perCPURuns: 4))
        let keep = try allocator.allocate(order: 0)  // keeps the chunk held
        let run = try allocator.allocate(order: 3)
        run.bytes.storeBytes(of: 0xA5, as: UInt8.self)
        allocator.free(run)
        var stats = allocator.statistics
        #expect(!allocator.owns(run) && stats.livePages == 1 && stats.pagesOnCPULists >= 8)
        // Handed out again as a new run: owned, shared, its DMA address set.
        let again = try allocator.allocate(order: 3)
        #expect(allocator.owns(again) && again.owner == .decryptedAllocator && again.order == 3 && again.referenceCount == 1)
        #expect(again.dmaAddress == allocator.memory.unencryptedDMAAddress(of: again.physicalAddress))
        stats = allocator.statistics
        #expect(stats.allocations == [1, 0, 0, 2] && stats.frees == [0, 0, 0, 1] && stats.livePages == 9)
        allocator.free(again)
        allocator.free(keep)
        stats = allocator.statistics
        #expect(stats.livePages == 0 && stats.frees == stats.allocations)
        #expect(stats.chunksHeld == 1, "runs on the lists keep their chunk")
        #expect(allocator.releaseSpareChunks() == 1)
        stats = allocator.statistics
        #expect(stats.chunksHeld == 0 && stats.pagesOnCPULists == 0 && allocator.general.statistics.livePages == 0)
    }

    @Test func aFullCPUListGivesHalfBackToTheBuddyLists() throws {
        let allocator = try makeAllocator(configuration: .init(chunkOrder: 9, spareChunks: 1, perCPURuns: 8))
        let runs = try (0..<64).map { _ in try allocator.allocate(order: 3) }  // one whole chunk
        for run in runs { allocator.free(run) }
        // This thread's frees may land on either CPU's list if it migrates;
        // a list never holds more than perCPURuns runs of an order.
        let stats = allocator.statistics
        #expect(stats.livePages == 0 && stats.frees == [0, 0, 0, 64])
        #expect(stats.pagesOnCPULists <= roundUpToPowerOfTwo(CPUIdentity.onlineCount()) * 8 * 8)
        #expect(stats.pagesOnCPULists < 512, "full lists gave runs back")
        // Every run can be had again, none twice (runs left on another CPU's
        // list, if this thread moved, come from a second chunk instead).
        let again = try (0..<64).map { _ in try allocator.allocate(order: 3) }
        #expect(Set(again.map { allocator.memory.index(of: $0) }).count == 64)
        for run in again { allocator.free(run) }
        allocator.releaseSpareChunks()
        #expect(allocator.statistics.chunksHeld == 0 && allocator.general.statistics.livePages == 0)
    }

    @Test func perCPURunsOutOfRangeIsAnError() throws {
        let allocator = try makeAllocator()
        for bad in [-1, 1025] {
            #expect {
                try DecryptedAllocator(general: allocator.general, configuration: .init(perCPURuns: bad))
            } throws: { error in
                "\(error)".contains("perCPURuns \(bad) must be in 0...1024")
            }
        }
    }

    @Test func foreignPageTraps() async {
        let trap1 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let general = try GeneralAllocator(memory: try smallGuest())
            let allocator = try DecryptedAllocator(general: general)
            allocator.free(try general.allocatePages(order: 0))
        }
        #expect(standardError(of: trap1).contains("not a run of a decrypted allocator"))
        let trap2 = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let general = try GeneralAllocator(memory: try smallGuest())
            let a = try DecryptedAllocator(general: general)
            let b = try DecryptedAllocator(general: general)
            b.free(try a.allocate(order: 0))
        }
        #expect(standardError(of: trap2).contains("not a live run of this allocator"))
    }
}
