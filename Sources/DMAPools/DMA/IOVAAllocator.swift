/// An allocator of I/O virtual addresses: size-aligned power-of-two ranges of
/// IOVA pages, as `alloc_iova_fast` hands out (it rounds a request up to a
/// power of two and aligns it to its size).
///
/// The kernel keeps IOVAs in a red-black tree of allocated ranges searched
/// top-down below the device's limit, fronted by per-CPU caches of recently
/// freed ranges of each size (the rcache's magazines). This is a binary buddy
/// allocator instead: per-order free lists (LIFO, so a freed range is the
/// next one of its size handed out, as the rcache's magazines do) over the
/// whole space, splitting larger blocks and coalescing a freed block with its
/// buddy. It is a real allocator (a range is handed out once until freed,
/// the space can run out, a double free is diagnosed), but it departs from
/// the kernel in three ways: one lock instead of per-CPU caches, no top-down
/// search (ranges are not kept below 4 GiB first), and coalescing, which the
/// rbtree does implicitly and the rcache not at all.
///
/// Not thread-safe: `IOMMU` holds it under its lock. Allocates nothing after
/// `init`.
struct IOVAAllocator: ~Copyable {
    /// The largest range: 2^10 pages (4 MiB).
    static let maxOrder = 10
    /// Free-block state per page frame: `free` marks a free block's head (its
    /// order below), `allocated` an allocated block's head.
    private static let none: UInt8 = 0xff
    private static let allocatedFlag: UInt8 = 0x80

    let pages: Int
    /// Per page frame: none, or a block head's order (| allocatedFlag when in use).
    private let state: UnsafeMutablePointer<UInt8>
    /// Intrusive free lists: next and previous free block of the same order (-1 ends).
    private let next: UnsafeMutablePointer<Int32>
    private let previous: UnsafeMutablePointer<Int32>
    private var heads: (Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32) =
        (-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1)
    /// Pages handed out now.
    private(set) var allocatedPages = 0

    /// - Precondition: `pages` is a positive multiple of 2^maxOrder below 2^31.
    init(pages: Int) {
        precondition(pages > 0 && pages % (1 << Self.maxOrder) == 0 && pages < Int(Int32.max),
                     "IOVAAllocator: \(pages) pages must be a positive multiple of \(1 << Self.maxOrder)")
        self.pages = pages
        state = .allocate(capacity: pages)
        state.initialize(repeating: Self.none, count: pages)
        next = .allocate(capacity: pages)
        next.initialize(repeating: -1, count: pages)
        previous = .allocate(capacity: pages)
        previous.initialize(repeating: -1, count: pages)
        var block = pages - (1 << Self.maxOrder)
        while block >= 0 {   // pushed from the top, so the lowest block is handed out first
            push(block, order: Self.maxOrder)
            block -= 1 << Self.maxOrder
        }
    }

    deinit {
        state.deallocate()
        next.deallocate()
        previous.deallocate()
    }

    /// The order of a range of `count` pages: the smallest power of two that holds it.
    static func order(pages count: Int) -> Int {
        count <= 1 ? 0 : Int.bitWidth - (count - 1).leadingZeroBitCount
    }

    /// A size-aligned range of 2^order pages, its first page frame; nil when
    /// no free block of that order or above is left.
    mutating func allocate(order: Int) -> Int? {
        precondition((0...Self.maxOrder).contains(order), "IOVA order \(order) outside 0...\(Self.maxOrder)")
        var found = order
        while found <= Self.maxOrder && head(found) < 0 { found += 1 }
        guard found <= Self.maxOrder else { return nil }
        let block = Int(head(found))
        remove(block, order: found)
        while found > order {   // split: the upper halves go back free
            found -= 1
            push(block + (1 << found), order: found)
        }
        state[block] = Self.allocatedFlag | UInt8(order)
        allocatedPages += 1 << order
        return block
    }

    /// The order of the allocated range starting at `block`, or nil when no
    /// allocated range starts there.
    func allocatedOrder(at block: Int) -> Int? {
        guard block >= 0 && block < pages else { return nil }
        let s = state[block]
        return s != Self.none && s & Self.allocatedFlag != 0 ? Int(s & ~Self.allocatedFlag) : nil
    }

    /// Frees the range at `block` and coalesces it with free buddies.
    /// - Precondition: an allocated range starts at `block` (a double free traps).
    mutating func free(_ freed: Int) {
        guard let freedOrder = allocatedOrder(at: freed) else {
            preconditionFailure("IOVA double free or free of an unallocated range at page frame \(freed)")
        }
        allocatedPages -= 1 << freedOrder
        state[freed] = Self.none
        var block = freed, order = freedOrder
        while order < Self.maxOrder {
            let buddy = block ^ (1 << order)
            guard state[buddy] == UInt8(order) else { break }   // the buddy is free at this order
            remove(buddy, order: order)
            block = min(block, buddy)
            order += 1
        }
        push(block, order: order)
    }

    // MARK: Free lists

    private func head(_ order: Int) -> Int32 {
        withUnsafeBytes(of: heads) { $0.load(fromByteOffset: order * 4, as: Int32.self) }
    }

    private mutating func setHead(_ order: Int, _ value: Int32) {
        withUnsafeMutableBytes(of: &heads) { $0.storeBytes(of: value, toByteOffset: order * 4, as: Int32.self) }
    }

    private mutating func push(_ block: Int, order: Int) {
        let first = head(order)
        next[block] = first
        previous[block] = -1
        if first >= 0 { previous[Int(first)] = Int32(block) }
        setHead(order, Int32(block))
        state[block] = UInt8(order)
    }

    private mutating func remove(_ block: Int, order: Int) {
        let n = next[block], p = previous[block]
        if p >= 0 { next[Int(p)] = n } else { setHead(order, n) }
        if n >= 0 { previous[Int(n)] = p }
        next[block] = -1
        previous[block] = -1
        state[block] = Self.none
    }
}
