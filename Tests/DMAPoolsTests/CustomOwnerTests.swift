@_spi(PagePoolProvider) import DMAPools
import Synchronization
import Testing

// A user's memory provider, written from DMAPools' public API and its
// documented provider SPI only (this file does not `@testable import`): it takes one run from the guest's general
// allocator, hands its pages out under an owner kind of its own, and gives the
// run back when closed.

/// The owner kind of `RegionProvider`'s pages: registered once, like any
/// user's. The provider is found from the page (`ownerObject`, which it sets
/// on every page it holds or releases).
final class RegionOwner: PageOwnerKind, @unchecked Sendable {
    static let owner = PageOwner.register(RegionOwner(name: "test-region"))

    override func freePage(_ head: Page, guest: Guest) {
        guard let object = head.ownerObject else {
            PageOwnerKinds.misuse(head, "test-region: freeing a page that is not handed out (double free?)")
        }
        Unmanaged<RegionProvider>.fromOpaque(object).takeUnretainedValue().takeBack(head)
    }
}

final class RegionProvider: PagePoolMemoryProvider, @unchecked Sendable {
    let name = "test-region"
    var pageOwner: PageOwner { RegionOwner.owner }
    let guest: Guest
    let run: Page
    let order: Int
    private let free = Mutex<[Page]>([])
    let outstanding = Atomic<Int>(0)
    let freedLate = Atomic<Int>(0)

    init(guest: Guest, order: Int = 6) throws {
        self.guest = guest
        self.order = order
        run = try guest.allocator.allocatePages(order: order)
        guest.memory.destroyCompound(run, owner: RegionOwner.owner)
        var pages: [Page] = []
        for i in 0..<(1 << order) {
            let page = guest.memory.page(at: guest.memory.index(of: run) + i)
            page.ownerObject = nil   // not handed out
            pages.append(page)
        }
        free.withLock { $0 = pages }
    }

    func allocatePages(for pool: PagePool, order: Int, into out: UnsafeMutableBufferPointer<Page>) throws(PagePoolError) -> Int {
        precondition(order == 0)
        let n = free.withLock { free in
            let n = min(out.count, free.count)
            for i in 0..<n { out[i] = free.removeLast() }
            return n
        }
        guard n > 0 else { throw .providerExhausted(provider: name, order: order) }
        for i in 0..<n {
            let page = out[i]
            guest.memory.prepareCompound(page, order: 0, owner: pageOwner)
            page.setDMAAddress(pool.mapsDMA ? guest.memory.unencryptedDMAAddress(of: page.physicalAddress) : .mappingError)
            page.setReferenceCount(1)
        }
        outstanding.wrappingAdd(n, ordering: .relaxed)
        return n
    }

    func releasePage(_ page: Page, from pool: PagePool) {
        outstanding.wrappingSubtract(1, ordering: .relaxed)
        if page.release() {
            takeBack(page, late: false)
        } else {
            // Someone else still holds it (released_refcnt): its last holder
            // frees it through the guest's free path, which finds us here.
            page.ownerObject = Unmanaged.passUnretained(self).toOpaque()
        }
    }

    func takeBack(_ page: Page, late: Bool = true) {
        guard page.referenceCount == 0 else { PageOwnerKinds.misuse(page, "test-region: freeing a page still referenced") }
        page.setDMAAddress(.mappingError)
        page.ownerObject = nil
        if late { freedLate.wrappingAdd(1, ordering: .relaxed) }
        free.withLock { $0.append(page) }
    }

    /// Gives the run back to the general allocator.
    func close() {
        let count = free.withLock { $0.count }
        precondition(count == 1 << order, "closing with pages out")
        guest.memory.prepareCompound(run, order: order, owner: .generalAllocator)
        run.setReferenceCount(1)
        guest.allocator.freePages(run)
    }
}

@Suite struct CustomOwnerTests {
    static func guest() throws -> Guest {
        try Guest(.init(guestBytes: 64 << 20, swiotlbBytes: 4 << 20, hypercall: .free))
    }

    /// A guest, a region provider over it and a pool over the provider.
    static func pool() throws -> (Guest, RegionProvider, PagePool) {
        let guest = try guest()
        let provider = try RegionProvider(guest: guest)
        let device = try guest.devices.add(name: "eth0")
        return (guest, provider, try PagePool(.init(flags: .dmaMap, device: device, name: "region"), provider: provider))
    }

    @Test func aUsersPagesAreCountedUnderTheirOwnName() throws {
        let guest = try Self.guest()
        let provider = try RegionProvider(guest: guest)
        #expect(RegionOwner.owner.description == "test-region")
        #expect(PageOwner.registered.contains(RegionOwner.owner))
        #expect(guest.memory.census()[RegionOwner.owner, default: 0] == 64)
        #expect(guest.lostPages() == 64, "the provider holds its region")
        provider.close()
        #expect(guest.memory.census()[RegionOwner.owner, default: 0] == 0)
        #expect(guest.lostPages() == 0)
    }

    @Test func aPageThatOutlivesItsPoolComesHomeThroughTheGuest() throws {
        let (guest, provider, pool) = try Self.pool()
        let page = try pool.allocatePage()
        page.retain()   // an skb clone holds it too
        pool.put(page)
        #expect(pool.statistics.recycling.releasedRefcount == 1)
        #expect(page.owner == RegionOwner.owner)
        pool.destroy()
        #expect(pool.isShutdownComplete)
        #expect(provider.outstanding.load(ordering: .relaxed) == 0)
        #expect(guest.lostPages() == 64)
        guest.putPage(page)   // the clone lets go: the last reference
        #expect(provider.freedLate.load(ordering: .relaxed) == 1)
        provider.close()
        #expect(guest.lostPages() == 0)
    }

    @Test func freeingAUsersPageTwiceIsDiagnosedByItsOwner() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let (guest, provider, pool) = try Self.pool()
            try withExtendedLifetime(provider) {
                let page = try pool.allocatePage()
                page.retain()
                pool.put(page)
                guest.putPage(page)   // home
                page.setReferenceCount(1)
                guest.putPage(page)   // again
            }
        }.map { result in
            let text = String(decoding: result.standardErrorContent, as: UTF8.self)
            #expect(text.contains("test-region: freeing a page that is not handed out"))
        }
    }

    @Test func aPoolPageOnTheFreePathIsDiagnosedAsOneStill() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let (guest, _, pool) = try Self.pool()
            guest.putPage(try pool.allocatePage())
        }.map { result in
            let text = String(decoding: result.standardErrorContent, as: UTF8.self)
            #expect(text.contains("page_pool page reached the page allocator's free path"))
        }
    }
}
