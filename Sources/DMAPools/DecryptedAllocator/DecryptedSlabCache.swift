/// A slab cache of small DMA-able objects over pre-decrypted pages: what the
/// review means by teaching SLAB about confidential-computing allocators.
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
public final class DecryptedSlabCache: @unchecked Sendable {
    /// The object sizes, each a size class.
    public static let objectSizes = [64, 128, 256, 512, 1024, 2048]

    /// One object: where its bytes are and the address a device uses.
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
        var classes: [SizeClass] = Array(repeating: SizeClass(), count: DecryptedSlabCache.objectSizes.count)
        var statistics = Statistics()
    }

    public let allocator: DecryptedAllocator
    private let state = Lock(State())

    public init(allocator: DecryptedAllocator) {
        self.allocator = allocator
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
        let page = try allocator.allocate(order: 0)
        let index = allocator.memory.index(of: page)
        return state.withLock { s in
            s.classes[c].free[index] = Array(stride(from: PageGeometry.size - objectSize, through: 0, by: -objectSize))
            s.classes[c].used[index] = 0
            s.classes[c].partial.append(index)
            s.statistics.pages += 1
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
        let page = allocator.memory.page(at: index)
        return Object(bytes: page.bytes + offset, dmaAddress: page.dmaAddress + offset, size: objectSize, page: page)
    }

    /// Gives an object back. A page left with no object in use goes back to
    /// the allocator when its class has another page with free objects.
    /// Traps on an object this cache did not hand out or already took back.
    public func free(_ object: Object) {
        guard let c = Self.sizeClass(for: object.size), Self.objectSizes[c] == object.size else {
            preconditionFailure("freeing a slab object of size \(object.size): not a size this cache hands out")
        }
        let index = allocator.memory.index(of: object.page)
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
        if let release { allocator.free(release) }
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
                    out.append(allocator.memory.page(at: index))
                }
            }
            s.statistics.pages -= out.count
            s.statistics.pagesReturned += out.count
            return out
        }
        for page in pages { allocator.free(page) }
        return statistics.liveObjects
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }
}
