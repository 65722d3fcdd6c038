/// A slab cache of small DMA-able objects over pre-decrypted pages: what the
/// review means by teaching SLAB about confidential-computing allocators.
/// (`SlabCache(allocator:)`; the same cache over the general allocator,
/// `SlabCache(general:)`, is `kmalloc`: private objects that bounce.)
public typealias DecryptedSlabCache = SlabCache

/// A slab cache of small objects (64 B ... 2 KiB) over order-0 pages of one
/// page source: pre-decrypted pages (`init(allocator:)`, the cache the review
/// asks for) or the general allocator's private pages (`init(general:)`,
/// `kmalloc`, whose objects a device reaches only through a bounce).
///
/// Drivers allocate small and map often (descriptors, command blocks, the
/// linear heads of frames with their protocol headers); with `kmalloc` those
/// are private and bounce on every map. Here each size class (64 B ... 2 KiB,
/// powers of two) carves order-0 pages of a `DecryptedAllocator` into
/// objects, so an object is shared from the start and its DMA address is its
/// page's stored address plus its offset: no bounce, no per-object
/// conversion. A page whose objects are all free goes back to the allocator
/// once the class has another free page (one spare per class, as a slab keeps
/// a partial list).
///
/// Thread-safe: one lock per cache (a model of `kmem_cache`'s per-node lists,
/// not of its per-CPU fast path).
public final class SlabCache: @unchecked Sendable {
    /// Where a cache's pages come from.
    public enum PageSource: Sendable {
        /// Shared pages of a pre-decrypted allocator: objects are device-visible
        /// at their page's stored DMA address plus their offset.
        case preDecrypted(DecryptedAllocator)
        /// Private pages of the general allocator (`kmalloc`): an object has no
        /// DMA address of its own; the DMA API bounces it at map.
        case general(GeneralAllocator)
    }

    /// The object sizes, each a size class.
    public static let objectSizes = [64, 128, 256, 512, 1024, 2048]

    /// One object: where its bytes are and its DMA address: its page's
    /// stored address plus its offset for a pre-decrypted page,
    /// `DMAAddress.mappingError` for a `kmalloc` object (map it through the DMA API).
    public struct Object: @unchecked Sendable, Hashable {
        public let bytes: UnsafeMutableRawPointer
        public let dmaAddress: DMAAddress
        public let size: Int
        /// The slab page the object lives in.
        public let page: Page

        public static func == (a: Self, b: Self) -> Bool { a.bytes == b.bytes }
        public func hash(into hasher: inout Hasher) { hasher.combine(bytes) }
    }

    /// Counters of the cache.
    public struct Statistics: Sendable, Hashable {
        public var allocations = 0
        public var frees = 0
        /// Objects handed out and not freed.
        public var liveObjects = 0
        /// Pages the cache holds from the allocator (in use or spare).
        public var pages = 0
        /// The most pages the cache held at once.
        public var peakPages = 0
        public var pagesReturned = 0
    }

    struct SizeClass {
        var free: [Int: [Int]] = [:]     // page index -> free offsets
        var used: [Int: Int] = [:]       // page index -> objects in use
        /// Pages with at least one free object, the most recent last: an
        /// allocation takes from the last, without searching.
        var partial: [Int] = []
    }

    struct State {
        var classes: [SizeClass] = Array(repeating: SizeClass(), count: SlabCache.objectSizes.count)
        var statistics = Statistics()
    }

    public let source: PageSource
    /// The pre-decrypted allocator the pages come from (nil for `kmalloc`).
    public var allocator: DecryptedAllocator? {
        if case .preDecrypted(let a) = source { return a }
        return nil
    }
    private let memory: GuestMemory
    private let state = Lock(State())

    /// The cache over pre-decrypted pages.
    public init(allocator: DecryptedAllocator) {
        source = .preDecrypted(allocator)
        memory = allocator.memory
    }

    /// `kmalloc`: the cache over the general allocator's private pages.
    public init(general: GeneralAllocator) {
        source = .general(general)
        memory = general.memory
    }

    /// Whether objects are device-visible without a bounce (the pages are shared).
    public var isPreDecrypted: Bool { allocator != nil }

    private func allocatePage() throws(AllocatorError) -> Page {
        switch source {
        case .preDecrypted(let a): try a.allocate(order: 0)
        case .general(let g): try g.allocatePages(order: 0)
        }
    }

    private func freePage(_ page: Page) {
        switch source {
        case .preDecrypted(let a): a.free(page)
        case .general(let g): g.freePages(page)
        }
    }

    /// The size class for `size` bytes, or nil when it is not in 1...2048.
    public static func sizeClass(for size: Int) -> Int? {
        guard size > 0 else { return nil }
        return objectSizes.firstIndex { $0 >= size }
    }

    /// An object of at least `size` bytes (1...2048), shared, with its DMA address.
    /// - Throws: `invalidConfiguration` for a size outside 1...2048; the
    ///   allocator's error when it has no page left.
    public func allocate(size: Int) throws(AllocatorError) -> Object {
        guard let c = Self.sizeClass(for: size) else {
            throw .invalidConfiguration("slab object size \(size) must be in 1...\(Self.objectSizes[Self.objectSizes.count - 1])")
        }
        let objectSize = Self.objectSizes[c]
        if let object = state.withLock({ take(c, objectSize: objectSize, state: &$0) }) { return object }
        // A new slab page, carved outside the lock (the allocator has its own).
        let page = try allocatePage()
        let index = memory.index(of: page)
        return state.withLock { s in
            s.classes[c].free[index] = Array(stride(from: PageGeometry.size - objectSize, through: 0, by: -objectSize))
            s.classes[c].used[index] = 0
            s.classes[c].partial.append(index)
            s.statistics.pages += 1
            s.statistics.peakPages = max(s.statistics.peakPages, s.statistics.pages)
            guard let object = take(c, objectSize: objectSize, state: &s) else {
                preconditionFailure("slab class \(objectSize) has no free object right after carving \(page)")
            }
            return object
        }
    }

    private func take(_ c: Int, objectSize: Int, state s: inout State) -> Object? {
        guard let index = s.classes[c].partial.last, let offset = s.classes[c].free[index]?.popLast() else { return nil }
        if s.classes[c].free[index]?.isEmpty ?? true { s.classes[c].partial.removeLast() }
        s.classes[c].used[index, default: 0] += 1
        s.statistics.allocations += 1
        s.statistics.liveObjects += 1
        let page = memory.page(at: index)
        // A private page has no DMA address of its own (`mappingError`): its
        // objects get one only from the DMA API, by a bounce.
        let address = isPreDecrypted ? page.dmaAddress + offset : DMAAddress.mappingError
        return Object(bytes: page.bytes + offset, dmaAddress: address, size: objectSize, page: page)
    }

    /// Gives an object back. A page left with no object in use goes back to
    /// the allocator when its class has another page with free objects.
    /// Traps on an object this cache did not hand out or already took back.
    public func free(_ object: Object) {
        guard let c = Self.sizeClass(for: object.size), Self.objectSizes[c] == object.size else {
            preconditionFailure("freeing a slab object of size \(object.size): not a size this cache hands out")
        }
        let index = memory.index(of: object.page)
        let offset = object.bytes - object.page.bytes
        let release: Page? = state.withLock { s in
            guard let used = s.classes[c].used[index], used > 0, offset >= 0, offset < PageGeometry.size,
                  !(s.classes[c].free[index]?.contains(offset) ?? true) else {
                preconditionFailure("freeing slab object at offset \(offset) of \(object.page): not live in this cache (double free?)")
            }
            s.classes[c].used[index] = used - 1
            s.classes[c].free[index, default: []].append(offset)
            if s.classes[c].free[index]?.count == 1 { s.classes[c].partial.append(index) }
            s.statistics.frees += 1
            s.statistics.liveObjects -= 1
            // Empty, and another page of the class has free objects: give it back.
            guard used - 1 == 0, s.classes[c].partial.count > 1 else { return nil }
            s.classes[c].partial.removeAll { $0 == index }
            s.classes[c].free[index] = nil
            s.classes[c].used[index] = nil
            s.statistics.pages -= 1
            s.statistics.pagesReturned += 1
            return object.page
        }
        if let release { freePage(release) }
    }

    /// Returns every page with no object in use to the allocator (teardown).
    /// Returns how many objects are still live (0 when the cache is empty).
    @discardableResult
    public func shrink() -> Int {
        let pages: [Page] = state.withLock { s in
            var out: [Page] = []
            for c in s.classes.indices {
                for (index, used) in s.classes[c].used where used == 0 {
                    s.classes[c].used[index] = nil
                    s.classes[c].free[index] = nil
                    s.classes[c].partial.removeAll { $0 == index }
                    out.append(memory.page(at: index))
                }
            }
            s.statistics.pages -= out.count
            s.statistics.pagesReturned += out.count
            return out
        }
        for page in pages { freePage(page) }
        return statistics.liveObjects
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }
}
