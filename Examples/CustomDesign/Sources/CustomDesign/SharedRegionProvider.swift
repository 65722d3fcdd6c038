// The provider SPI is the documented way for a memory provider to set what
// only the owner of a page may set (its owner, reference count, DMA address,
// owner object): see `PagePoolMemoryProvider` and Design/page-pool.md.
@_spi(PagePoolProvider) import DMAPools
import NetStack
import Synchronization

/// The owner kind of `SharedRegionProvider`'s pages, registered once like
/// every owner kind. While a page is in the region (free or handed out) it
/// carries this owner, so `Guest.lostPages()` and the census count it under
/// "shared-region". A page that outlived its pool (`released_refcnt`) comes
/// home through `Guest.putPage` -> `Guest.freePage` -> here, and finds its
/// provider through `ownerObject`, which the provider set when the pool let go.
final class SharedRegionOwner: PageOwnerKind, @unchecked Sendable {
    static let owner = PageOwner.register(SharedRegionOwner(name: "shared-region"))

    override func freePage(_ head: Page, guest: Guest) {
        guard let object = head.ownerObject else {
            PageOwnerKinds.misuse(head, "shared-region: freeing a page that is not handed out (double free?)")
        }
        Unmanaged<SharedRegionProvider>.fromOpaque(object).takeUnretainedValue().takeBack(head, late: true)
    }
}

/// A page_pool memory provider over a region of guest memory converted to
/// shared once, when the provider is made (one modelled hypercall per 2 MiB
/// chunk, counted by the guest's conversion statistics), and back when it is
/// closed. Pages are the socket frag order (32 KiB) and carry their own bus
/// address, so nothing bounces and nothing is converted per page.
///
/// `allocatePages` runs in the pool's owning context, `releasePage` and
/// `takeBack` on any thread: the free list is behind a mutex (slow paths
/// only; the pools' caches and rings serve the fast paths).
final class SharedRegionProvider: PagePoolMemoryProvider, @unchecked Sendable {
    let name = "shared-region"
    var pageOwner: PageOwner { SharedRegionOwner.owner }
    let guest: Guest
    /// The order of the pages handed out (the socket frag order).
    let order = PageGeometry.socketFragOrder
    /// The 2 MiB chunks the region is made of.
    private let chunks: [Page]
    private let free: Mutex<[Page]>
    let pageCount: Int
    /// Pages handed to pools and not yet taken back.
    let outstanding = Atomic<Int>(0)
    /// Pages a pool let go while someone else held them (`released_refcnt`).
    let releasedWithOtherReferences = Atomic<Int>(0)
    /// Of those, the pages that came home later through the guest's free path.
    let cameHomeLate = Atomic<Int>(0)

    static let chunkOrder = PageGeometry.maxOrder

    /// Takes `bytes` (whole 2 MiB chunks) from the guest's general allocator
    /// and converts each chunk to shared in one call.
    init(guest: Guest, bytes: Int) throws {
        self.guest = guest
        let chunkBytes = PageGeometry.bytes(order: Self.chunkOrder)
        let count = max(1, bytes / chunkBytes)
        var chunks: [Page] = []
        do {
            for _ in 0..<count {
                let chunk = try guest.allocator.allocatePages(order: Self.chunkOrder)
                chunks.append(chunk)
                try guest.memory.convert(chunk, count: 1 << Self.chunkOrder, to: .shared)
                guest.memory.destroyCompound(chunk, owner: SharedRegionOwner.owner)
            }
        } catch {
            // Give back what was taken (a chunk that failed to convert is still private).
            for chunk in chunks { try? Self.giveBack(chunk, guest: guest) }
            throw error
        }
        self.chunks = chunks
        let perChunk = 1 << (Self.chunkOrder - order)
        var pages: [Page] = []
        pages.reserveCapacity(count * perChunk)
        for chunk in chunks {
            let first = guest.memory.index(of: chunk)
            for i in 0..<perChunk { pages.append(guest.memory.page(at: first + (i << order))) }
        }
        pageCount = pages.count
        free = Mutex(pages)
    }

    /// A chunk back to the general allocator, private again.
    private static func giveBack(_ chunk: Page, guest: Guest) throws {
        if chunk.domain == .shared { try guest.memory.convert(chunk, count: 1 << chunkOrder, to: .private) }
        guest.memory.prepareCompound(chunk, order: chunkOrder, owner: .generalAllocator)
        chunk.setReferenceCount(1)
        guest.allocator.freePages(chunk)
    }

    /// Converts the region back to private and returns it to the general
    /// allocator. Every page must be home.
    func close() throws {
        let home = free.withLock { $0.count }
        precondition(home == pageCount, "shared-region: closing with \(pageCount - home) pages out")
        for chunk in chunks {
            guest.memory.destroyCompound(chunk, owner: SharedRegionOwner.owner)
            try Self.giveBack(chunk, guest: guest)
        }
    }

    // MARK: mp_ops

    func attach(to pool: PagePool) throws(PagePoolError) {
        guard pool.parameters.order == order else {
            throw .invalidParameter("order", "\(pool.parameters.order) is not supported by memory provider \(name): it hands out order-\(order) pages")
        }
    }

    func allocatePages(for pool: PagePool, order: Int, into out: UnsafeMutableBufferPointer<Page>) throws(PagePoolError) -> Int {
        let n = free.withLock { free in
            let n = min(out.count, free.count)
            for i in 0..<n { out[i] = free.removeLast() }
            return n
        }
        guard n > 0 else { throw .providerExhausted(provider: name, order: order, reason: "all \(pageCount) region pages are out") }
        for i in 0..<n {
            let page = out[i]
            guest.memory.prepareCompound(page, order: order, owner: pageOwner)
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
            // released_refcnt: someone else (a frame's clone) still holds the
            // page. Its last holder frees it through the guest's free path,
            // which finds this provider through the owner object.
            releasedWithOtherReferences.wrappingAdd(1, ordering: .relaxed)
            page.ownerObject = Unmanaged.passUnretained(self).toOpaque()
        }
    }

    /// A page whose last reference is gone comes back to the free list.
    func takeBack(_ page: Page, late: Bool) {
        guard page.referenceCount == 0 else { PageOwnerKinds.misuse(page, "shared-region: taking back a page still referenced") }
        guest.memory.destroyCompound(page, owner: SharedRegionOwner.owner)
        if late { cameHomeLate.wrappingAdd(1, ordering: .relaxed) }
        free.withLock { $0.append(page) }
    }
}

/// The provider as a plug-in: registered under `shared-region`, so it
/// resolves by name like `swiotlb` and `decrypted` (`txsim --provider`
/// resolves through the same registry). Its region is private memory
/// converted to shared, so it asks the fit check to reserve it.
struct SharedRegionProviderKind: PagePoolProviderKind {
    /// The region's size.
    var bytes = 64 << 20

    var name: String { "shared-region" }
    var summary: String { "pages of a region converted to shared once at start (one hypercall per 2 MiB chunk)" }

    func requirements(pools: Int, order: Int, configuration: ExperimentConfiguration) -> GuestRequirements {
        GuestRequirements(privateReserveBytes: bytes, bounces: false)
    }

    func makeProvider(in context: DesignContext) throws -> any PagePoolMemoryProvider {
        try SharedRegionProvider(guest: context.guest, bytes: bytes)
    }
}
