@_spi(PagePoolProvider) @_spi(DMAPoolsSupport) import DMAPools
import Synchronization

/// A provider that needs no other subsystem: it hands out pages of a range of
/// guest memory with a free list per order, and treats them as DMA-able by
/// giving each its shared-bit DMA address (no conversion is modelled). For
/// tests, benchmarks and `PagePoolMicrobench`; the real providers (system pages,
/// swiotlb pages, pre-decrypted pages) build on swiotlb and the allocator.
///
/// Its pages carry an owner of their own (`PagePoolTestProvider.owner`,
/// "test-pages"), registered as a user's provider would register one: a page
/// that outlives its pool (released with another reference held) comes back
/// here through `Guest.putPage` / `Guest.freePage` and is reused.
///
/// It counts what it does so tests can check the pool's calls.
public final class PagePoolTestProvider: PagePoolMemoryProvider {
    /// The owner of every page the provider holds or has handed out.
    public static let owner = PageOwner.register(TestPagesOwner.shared)

    public let name: String
    public let pageOwner: PageOwner = PagePoolTestProvider.owner
    public let memory: GuestMemory
    /// The page indices it carves from.
    public let pages: Range<Int>

    private struct State {
        var next: Int
        var free: [[Int]] = Array(repeating: [], count: PageGeometry.maxPageOrder + 1)
        var outstanding = 0
        var allocateCalls = 0
        var pagesAllocated = 0
        var pagesReleased = 0
        var pagesFreedAfterRelease = 0
        var attached = 0
        var detached = 0
        var failNextAllocations = 0
        var failNextMappings = 0
        var pfmemallocNext = 0
    }
    private let state: Lock<State>
    private let syncs = Atomic<Int>(0)
    private let lastSyncLength = Atomic<Int>(-1)
    private let lastSyncOffset = Atomic<Int>(-1)

    /// A provider over `pages` of `memory` (default: the first 16 MiB of private pages).
    public init(memory: GuestMemory, pages: Range<Int>? = nil, name: String = "test-pages") {
        self.memory = memory
        let range = pages ?? memory.privatePages.lowerBound..<min(memory.privatePages.upperBound, memory.privatePages.lowerBound + 4096)
        precondition(range.lowerBound >= 0 && range.upperBound <= memory.pageCount, "page range \(range) outside guest memory")
        self.pages = range
        self.name = name
        self.state = Lock(State(next: range.lowerBound))
        TestPagesOwner.shared.add(self)
    }

    deinit {
        TestPagesOwner.shared.remove(self)
    }

    /// Whether `page` lies in this provider's range of its memory.
    func covers(_ page: Page) -> Bool {
        page.descriptor >= memory.descriptors && page.descriptor < memory.descriptors + memory.pageCount
            && pages.contains(memory.index(of: page))
    }

    /// A page released with another reference held (`released_refcnt`) whose
    /// last reference is now gone: back on the free list.
    func freeAfterRelease(_ page: Page) {
        guard page.referenceCount == 0 else {
            PageOwnerKinds.misuse(page, "\(name): freeing a page that is still referenced")
        }
        let order = page.order
        memory.destroyCompound(page, owner: pageOwner)
        state.withLock { s in
            s.free[order].append(memory.index(of: page))
            s.pagesFreedAfterRelease += 1
        }
    }

    public func attach(to pool: PagePool) throws(PagePoolError) {
        state.withLock { $0.attached += 1 }
    }

    public func detach(from pool: PagePool) {
        state.withLock { $0.detached += 1 }
    }

    public func allocatePages(for pool: PagePool, order: Int, into out: UnsafeMutableBufferPointer<Page>) throws(PagePoolError) -> Int {
        let count = 1 << order
        let maps = pool.mapsDMA
        var mappingFailures = 0
        var pfmemalloc = 0
        let filled: Int = state.withLock { s in
            s.allocateCalls += 1
            if s.failNextAllocations > 0 {
                s.failNextAllocations -= 1
                return 0
            }
            var n = 0
            var unmapped: [Int] = []
            // As `alloc_pages_bulk` then `page_pool_dma_map` per page: a bulk of
            // `out.count` pages, less those whose mapping fails.
            var attempts = 0
            while attempts < out.count {
                attempts += 1
                let index: Int
                if let reused = s.free[order].popLast() {
                    index = reused
                } else {
                    let aligned = (s.next + count - 1) & ~(count - 1)
                    guard aligned + count <= pages.upperBound else { break }
                    index = aligned
                    s.next = aligned + count
                }
                if maps && s.failNextMappings > 0 {
                    // `page_pool_dma_map` failed: the page goes back (`put_page`)
                    // and the bulk carries on with the next one.
                    s.failNextMappings -= 1
                    unmapped.append(index)
                    continue
                }
                out[n] = memory.page(at: index)
                n += 1
            }
            // Back on the free list once the bulk is done (not to be taken again by it).
            s.free[order].append(contentsOf: unmapped)
            mappingFailures = unmapped.count
            pfmemalloc = min(n, s.pfmemallocNext)
            s.pfmemallocNext -= pfmemalloc
            s.outstanding += n
            s.pagesAllocated += n
            return n
        }
        guard filled > 0 else {
            if mappingFailures > 0 { throw .providerFailed(provider: name, reason: "DMA mapping failed for all \(mappingFailures) pages") }
            throw .providerExhausted(provider: name, order: order)
        }
        for i in 0..<filled {
            let page = out[i]
            memory.prepareCompound(page, order: order, owner: pageOwner)
            page.setDMAAddress(maps ? memory.unencryptedDMAAddress(of: page.physicalAddress) : .mappingError)
            page.setPFMemalloc(i < pfmemalloc)
            page.setReferenceCount(1)
        }
        return filled
    }

    public func releasePage(_ page: Page, from pool: PagePool) {
        if page.release() {
            // The last reference: the page is free again.
            page.setDMAAddress(.mappingError)
            let order = page.order
            memory.destroyCompound(page, owner: pageOwner)
            state.withLock { s in
                s.free[order].append(memory.index(of: page))
                s.outstanding -= 1
                s.pagesReleased += 1
            }
        } else {
            // Someone else still holds the page (released_refcnt): it leaves the
            // pool and the provider's accounting; if its last holder frees it
            // through `Guest.putPage`, `TestPagesOwner` brings it back here.
            state.withLock { s in
                s.outstanding -= 1
                s.pagesReleased += 1
            }
        }
    }

    public func syncForDevice(_ page: Page, offset: Int, length: Int, for pool: PagePool) {
        syncs.wrappingAdd(1, ordering: .relaxed)
        lastSyncOffset.store(offset, ordering: .relaxed)
        lastSyncLength.store(length, ordering: .relaxed)
    }

    /// Makes the next `count` allocation calls fail (fault injection).
    public func failNextAllocations(_ count: Int) { state.withLock { $0.failNextAllocations = count } }
    /// Makes the DMA mapping of the next `count` pages fail (fault injection):
    /// each goes back to the free list and the bulk continues without it.
    public func failNextMappings(_ count: Int) { state.withLock { $0.failNextMappings = count } }
    /// Hands out the next `count` pages as pfmemalloc (from the reclaim reserves).
    public func handOutPFMemalloc(_ count: Int) { state.withLock { $0.pfmemallocNext = count } }

    /// Pages handed out and not yet released.
    public var outstandingPages: Int { state.withLock { $0.outstanding } }
    /// `allocatePages` calls so far.
    public var allocateCalls: Int { state.withLock { $0.allocateCalls } }
    /// Pages handed out so far.
    public var pagesAllocated: Int { state.withLock { $0.pagesAllocated } }
    /// Pages taken back so far.
    public var pagesReleased: Int { state.withLock { $0.pagesReleased } }
    /// Pages released with another reference held that later came home
    /// through `Guest.freePage`.
    public var pagesFreedAfterRelease: Int { state.withLock { $0.pagesFreedAfterRelease } }
    /// `attach` / `detach` calls so far.
    public var attachCount: Int { state.withLock { $0.attached } }
    public var detachCount: Int { state.withLock { $0.detached } }
    /// `syncForDevice` calls so far, and the last call's offset and length.
    public var syncCount: Int { syncs.load(ordering: .relaxed) }
    public var lastSync: (offset: Int, length: Int) {
        (lastSyncOffset.load(ordering: .relaxed), lastSyncLength.load(ordering: .relaxed))
    }
}

/// The owner kind of `PagePoolTestProvider`'s pages: finds the provider whose
/// range holds a freed page (a slow path: tests only).
final class TestPagesOwner: PageOwnerKind, @unchecked Sendable {
    static let shared = TestPagesOwner(name: "test-pages")

    private struct Entry { weak var provider: PagePoolTestProvider? }
    private let providers = Lock([ObjectIdentifier: Entry]())

    func add(_ provider: PagePoolTestProvider) {
        providers.withLock { $0[ObjectIdentifier(provider)] = Entry(provider: provider) }
    }

    func remove(_ provider: PagePoolTestProvider) {
        _ = providers.withLock { $0.removeValue(forKey: ObjectIdentifier(provider)) }
    }

    override func freePage(_ head: Page, guest: Guest) {
        let provider = providers.withLock { entries in
            entries.values.lazy.compactMap(\.provider).first { $0.covers(head) }
        }
        guard let provider else { PageOwnerKinds.misuse(head, "freeing a test-pages page whose provider is gone") }
        provider.freeAfterRelease(head)
    }
}
