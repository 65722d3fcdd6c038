@_spi(DMAPoolsSupport) import DMAPools
import Synchronization
import Testing
@testable import NetStack

/// Records what the frame free path released.
final class ReleaseLog: Sendable {
    let entries = Lock<[(Page, Int, Bool)]>([])
    var count: Int { entries.withLock { $0.count } }
    func record(_ fragment: Fragment, _ recycle: Bool) {
        entries.withLock { $0.append((fragment.page, fragment.offset, recycle)) }
    }
}

@Suite struct FrameTests {
    let memory: GuestMemory
    init() throws {
        memory = try GuestMemory(.init(guestBytes: 32 << 20, swiotlbBytes: 2 << 20, hypercall: .free))
    }

    @Test func cloneSharesDataAndLastFreeReleasesEachFragmentOnce() throws {
        let log = ReleaseLog()
        let cache = FrameCache { log.record($0, $1) }
        let frame = cache.allocate(flow: 7, streamOffset: 4096)
        try cache.append(Fragment(page: memory.page(at: 10), offset: 0, length: 1000), to: frame)
        try cache.append(Fragment(page: memory.page(at: 11), offset: 100, length: 2000), to: frame)
        #expect(cache.length(of: frame) == 3000)
        let clone = cache.clone(frame)
        #expect(cache.dataReferences(of: frame) == 2)
        #expect(cache.isClone(clone) && !cache.isClone(frame))
        #expect(cache.fragments(of: clone).map(\.page) == [memory.page(at: 10), memory.page(at: 11)])
        #expect(cache.flow(of: clone) == 7 && cache.streamOffset(of: clone) == 4096)
        cache.free(clone)
        #expect(log.count == 0, "a clone's free must not release shared fragments")
        cache.free(frame)
        #expect(log.count == 2)
        #expect(log.entries.withLock { $0.map { $0.1 } } == [0, 100])
        let stats = cache.statistics
        #expect(stats.liveFrames == 0 && stats.dataReleased == 1 && stats.fragmentsReleased == 2)
    }

    @Test func ppRecycleMarkTravelsToTheFreePath() throws {
        let log = ReleaseLog()
        let cache = FrameCache { log.record($0, $1) }
        let frame = cache.allocate(flow: 0, streamOffset: 0)
        try cache.append(Fragment(page: memory.page(at: 3), offset: 0, length: 64), to: frame)
        cache.markForRecycle(frame)
        #expect(cache.isMarkedForRecycle(frame))
        cache.free(frame)
        #expect(log.entries.withLock { $0.map { $0.2 } } == [true])
    }

    @Test func atMostSeventeenFragmentsAndEachMustFitItsPage() throws {
        let cache = FrameCache { _, _ in }
        let frame = cache.allocate(flow: 0, streamOffset: 0)
        for i in 0..<17 {
            try cache.append(Fragment(page: memory.page(at: i), offset: 0, length: 10), to: frame)
        }
        #expect(throws: FrameError.tooManyFragments(limit: 17)) {
            try cache.append(Fragment(page: memory.page(at: 100), offset: 0, length: 10), to: frame)
        }
        let other = cache.allocate(flow: 0, streamOffset: 0)
        #expect(throws: FrameError.invalidFragment(offset: 4000, length: 200, runBytes: 4096)) {
            try cache.append(Fragment(page: memory.page(at: 100), offset: 4000, length: 200), to: other)
        }
        #expect(throws: FrameError.self) {
            try cache.append(Fragment(page: memory.page(at: 100), offset: 0, length: 0), to: other)
        }
        cache.free(frame)
        cache.free(other)
    }

    @Test func coalescingExtendsTheLastFragment() throws {
        let cache = FrameCache { _, _ in }
        let frame = cache.allocate(flow: 0, streamOffset: 0)
        let page = memory.page(at: 40)
        try cache.append(Fragment(page: page, offset: 0, length: 100), to: frame)
        #expect(cache.canCoalesce(frame, page: page, offset: 100))
        #expect(!cache.canCoalesce(frame, page: page, offset: 101))
        #expect(!cache.canCoalesce(frame, page: memory.page(at: 41), offset: 100))
        cache.extendLastFragment(of: frame, by: 50)
        #expect(cache.fragments(of: frame).first?.length == 150)
        #expect(cache.length(of: frame) == 150)
        cache.free(frame)
    }

    @Test func slotsAreReusedAndChunksGrowOnDemand() {
        let cache = FrameCache { _, _ in }
        var frames: [Frame] = []
        for i in 0..<5000 { frames.append(cache.allocate(flow: i, streamOffset: 0)) }
        #expect(cache.statistics.chunksAdded == 2)
        for f in frames { cache.free(f) }
        for _ in 0..<5000 { cache.free(cache.allocate(flow: 0, streamOffset: 0)) }
        #expect(cache.statistics.chunksAdded == 2)
        #expect(cache.statistics.liveFrames == 0)
    }

    @Test func framesFreedOnOtherThreadsLoseNothing() async throws {
        let log = ReleaseLog()
        let cache = FrameCache { log.record($0, $1) }
        let page = memory.page(at: 5)
        let perTask = 2000
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<4 {
                group.addTask {
                    var frees: [Task<Void, Never>] = []
                    for i in 0..<perTask {
                        let frame = cache.allocate(flow: t, streamOffset: UInt64(i))
                        try? cache.append(Fragment(page: page, offset: 0, length: 8), to: frame)
                        let clone = cache.clone(frame)
                        // Free the original here and the clone from another task.
                        cache.free(frame)
                        frees.append(Task.detached { cache.free(clone) })
                    }
                    for free in frees { await free.value }
                }
            }
        }
        // Every detached free was awaited: no timed wait, which a busy test run
        // (the cooperative pool's threads held by other tests) could outlast.
        #expect(cache.statistics.liveFrames == 0)
        #expect(log.count == 4 * perTask)
    }

    @Test func doubleFreeIsADiagnosedTrap() async {
        await #expect(processExitsWith: .failure) {
            let cache = FrameCache { _, _ in }
            let frame = cache.allocate(flow: 0, streamOffset: 0)
            cache.free(frame)
            cache.free(frame)
        }
    }
}

@Suite struct PayloadPatternTests {
    @Test func fillAndCheckAgreeAtAnyAlignment() {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 300, alignment: 8)
        defer { buffer.deallocate() }
        let pattern = PayloadPattern(flow: 3)
        for start: UInt64 in [0, 1, 7, 8, 13, 1 << 40] {
            for count in [0, 1, 5, 8, 9, 300] {
                pattern.fill(buffer, count: count, streamOffset: start)
                #expect(pattern.firstMismatch(in: buffer, count: count, streamOffset: start) == nil)
                for i in 0..<count { #expect(buffer.load(fromByteOffset: i, as: UInt8.self) == pattern.byte(at: start + UInt64(i))) }
            }
        }
    }

    @Test func aCorruptedByteIsFoundAtItsOffset() {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 8)
        defer { buffer.deallocate() }
        let pattern = PayloadPattern(flow: 9)
        pattern.fill(buffer, count: 4096, streamOffset: 12345)
        buffer.storeBytes(of: buffer.load(fromByteOffset: 2049, as: UInt8.self) ^ 0x10, toByteOffset: 2049, as: UInt8.self)
        #expect(pattern.firstMismatch(in: buffer, count: 4096, streamOffset: 12345) == 2049)
        #expect(PayloadPattern(flow: 8).firstMismatch(in: buffer, count: 16, streamOffset: 12345) != nil)
    }

    @Test func theStreamRepeatsWithItsPeriodOnly() {
        let pattern = PayloadPattern(flow: 1, period: 64)
        for offset: UInt64 in 0..<64 {
            #expect(pattern.byte(at: offset) == pattern.byte(at: offset + 64))
            #expect(pattern.byte(at: offset) == pattern.byte(at: offset + 640))
        }
        // The eight words of one period are distinct, and the ninth is the first again.
        let words = (0..<9).map { pattern.word(at: UInt64($0) * 8) }
        #expect(Set(words.prefix(8)).count == 8)
        #expect(words[8] == words[0])
    }
}
