import Logging
import Synchronization

/// A generic pre-decrypted page allocator: small runs of *shared* memory carved
/// from large chunks that were converted private -> shared once.
///
/// This is the allocator the review asked for (skb, block and slab could all
/// draw from it): instead of a conversion hypercall per page (slower than the
/// memcpy it would save), it pays one per chunk. It takes chunks of
/// `configuration.chunkOrder` (default 9 = 2 MiB) from the `GeneralAllocator`,
/// converts each with one modelled hypercall (`GuestMemory.convert`), and hands
/// out naturally aligned runs of order 0...3 owned by `.decryptedAllocator`, in
/// the shared domain, with `dmaAddress` set to the page's unencrypted DMA
/// address and reference count 1.
///
/// ## Layout: a buddy allocator per chunk
/// Each chunk is a binary buddy tree from `chunkOrder` down to order 0. Free
/// blocks of each order sit on a doubly linked list threaded through the
/// descriptors of their head pages (`ownerObject` = next, `privateWord` = prev;
/// a free block is held by nobody else). Block state (free or handed out, and
/// its order) lives in a private side table, one byte per guest page, never in
/// the shared pages themselves (the host could rewrite those) and never in
/// fields a holder may change. Freeing coalesces with the buddy; when a whole
/// chunk is free again it is kept as a spare (up to `spareChunks`, still shared)
/// or converted back to private with a second modelled hypercall and returned
/// to the general allocator.
///
/// ## Failures
/// A failed private -> shared conversion (fault injection with
/// `HypercallCostModel.failEveryNthCall`) returns the chunk to the general
/// allocator untouched and throws `AllocatorError.conversionFailed`. A failed
/// shared -> private conversion keeps the chunk as a spare: shared memory is
/// never handed back to the private allocator. Both are counted.
///
/// ## Per-CPU lists
/// As the page allocator's per-CPU lists (`per_cpu_pages`), each CPU keeps up
/// to `perCPURuns` free runs of each order: a run freed on a CPU is handed
/// out again there, hot in its cache, without the allocator's lock. A CPU
/// whose list is empty takes half a list's worth from the buddy lists under
/// one lock; one whose list is full gives half back. Runs on a per-CPU list
/// are neither free in the buddy's eyes (they never coalesce) nor handed out
/// (`owns` is false; freeing one again traps). `releaseSpareChunks` drains
/// every list first, as the kernel drains them before it reclaims. Without
/// the lists (`perCPURuns` 0), two senders freeing and allocating runs of one
/// chunk passed its runs and its lock's line between their CPUs on every
/// refill, and a two-sender run settled into a mode with twice the sender's
/// CPU per byte in some runs and not in others (Design/netstack.md).
///
/// Thread-safe: one `Mutex` guards the buddy lists and the counters; each
/// CPU's list has a lock of its own; the side table is atomic. Chunk
/// conversions (modelled hypercalls that may spin for hundreds of
/// microseconds) run outside every lock.
public final class DecryptedAllocator: @unchecked Sendable {
    /// How the allocator sizes and keeps its chunks.
    public struct Configuration: Sendable, Hashable {
        /// Order of the chunks taken from the general allocator and converted in
        /// one hypercall: 3...9 (default 9 = 2 MiB).
        public var chunkOrder: Int
        /// Fully free chunks kept shared for reuse instead of being converted back.
        public var spareChunks: Int
        /// Free runs of each order each CPU keeps (`pcp->high`), 0...1024
        /// (default 16; 0: every free goes straight back to the buddy lists).
        public var perCPURuns: Int

        public static let perCPURunsRange: ClosedRange<Int> = 0...1024

        public init(chunkOrder: Int = PageGeometry.maxOrder, spareChunks: Int = 1, perCPURuns: Int = 16) {
            self.chunkOrder = chunkOrder
            self.spareChunks = spareChunks
            self.perCPURuns = perCPURuns
        }
    }

    /// Orders handed out: 4 KiB ... 32 KiB (the socket frag order).
    public static let orders: ClosedRange<Int> = 0...PageGeometry.socketFragOrder

    public let general: GeneralAllocator
    public let memory: GuestMemory
    public let configuration: Configuration

    /// Counters, guarded by the lock that also guards `freeLists`.
    let state: Lock<Counters>
    /// Heads of the free lists, one per order 0...chunkOrder. Guarded by `state`.
    let freeLists: UnsafeMutablePointer<UnsafeMutablePointer<PageDescriptor>?>
    /// One byte per guest page (see `BlockState`). Free and chunk states change
    /// under `state`; a run's handed-out and per-CPU states change under the
    /// lock of the CPU list it moves on or off, or by its holder's free.
    let blocks: UnsafeMutablePointer<Atomic<UInt8>>
    /// Each CPU's free runs (one unused list when `perCPURuns` is 0).
    let perCPU: PerCPULocked<CPURuns>
    let descriptors: UnsafeMutablePointer<PageDescriptor>

    /// Creates an allocator drawing chunks from `general`.
    /// - Throws: `invalidConfiguration` for a chunk order outside 3...9 or a
    ///   negative spare count.
    public init(general: GeneralAllocator, configuration: Configuration = .init()) throws(AllocatorError) {
        guard (Self.orders.upperBound...PageGeometry.maxOrder).contains(configuration.chunkOrder) else {
            throw .invalidConfiguration(
                "chunkOrder \(configuration.chunkOrder) must be in \(Self.orders.upperBound)...\(PageGeometry.maxOrder)")
        }
        guard configuration.spareChunks >= 0 else {
            throw .invalidConfiguration("spareChunks \(configuration.spareChunks) must not be negative")
        }
        guard Configuration.perCPURunsRange.contains(configuration.perCPURuns) else {
            throw .invalidConfiguration("perCPURuns \(configuration.perCPURuns) must be in \(Configuration.perCPURunsRange)")
        }
        self.general = general
        self.memory = general.memory
        self.configuration = configuration
        self.state = Lock(Counters())
        self.freeLists = .allocate(capacity: configuration.chunkOrder + 1)
        freeLists.initialize(repeating: nil, count: configuration.chunkOrder + 1)
        self.blocks = .allocate(capacity: general.memory.pageCount)
        for i in 0..<general.memory.pageCount { (blocks + i).initialize(to: Atomic(BlockState.none)) }
        self.descriptors = general.memory.descriptors
        let capacity = configuration.perCPURuns
        perCPU = PerCPULocked(count: capacity > 0 ? perCPUStripeCount() : 1) { CPURuns(capacity: capacity) }
    }

    deinit {
        releaseSpareChunks(keeping: 0)
        let (held, live) = state.withLock { ($0.chunksHeld, $0.livePages) }
        if held > 0 {
            // Live pages pin their chunks: those stay shared and allocated from
            // the general allocator (which reports them if it is destroyed).
            Logger(label: "dma-pools.decrypted-allocator").warning(
                "decrypted allocator destroyed with \(live) pages live in \(held) chunks: the chunks are leaked, still shared")
        }
        freeLists.deinitialize(count: configuration.chunkOrder + 1)
        freeLists.deallocate()
        blocks.deinitialize(count: memory.pageCount)
        blocks.deallocate()
    }

    // MARK: Allocation

    /// Allocates a naturally aligned run of `1 << order` shared pages.
    ///
    /// The head is a compound head owned by `.decryptedAllocator`, in the shared
    /// domain, with `dmaAddress` = `memory.unencryptedDMAAddress(of:)` of its
    /// physical address (every page of the run carries its own), and reference
    /// count 1.
    /// - Throws: `invalidOrder` outside 0...3; `outOfMemory` when the general
    ///   allocator has no chunk; `conversionFailed` when converting a new chunk
    ///   failed (the chunk went back to the general allocator).
    public func allocate(order: Int) throws(AllocatorError) -> Page {
        guard Self.orders.contains(order) else {
            state.withLock { $0.failures += 1 }
            throw .invalidOrder(order, allowed: Self.orders)
        }
        if configuration.perCPURuns > 0, let head = takeFromCPUList(order: order) {
            prepare(head, order: order)
            return head
        }
        var head = state.withLock { counters in takeBlock(order: order, counters: &counters) }
        if head == nil { head = try grow(order: order) }
        prepare(head!, order: order)
        return head!
    }

    /// Returns a run `allocate` handed out.
    ///
    /// `page` must be the head of a live run of this allocator, still owned by
    /// `.decryptedAllocator`, with reference count 0 or 1 (as for
    /// `GeneralAllocator.freePages`). A double free, a foreign page or a page
    /// still referenced traps with a message naming it.
    public func free(_ page: Page) {
        let index = page.descriptor - descriptors
        guard index >= 0, index < memory.pageCount else { invalidFree(page, reason: "a page outside this allocator's guest memory") }
        guard page.owner == .decryptedAllocator, !page.isTail else {
            invalidFree(page, reason: "not a run of a decrypted allocator")
        }
        let references = page.referenceCount
        guard references == 0 || references == 1 else { invalidFree(page, reason: "still referenced (\(references) references)") }
        if configuration.perCPURuns > 0 {
            putOnCPUList(page, index: index)
            return
        }
        let spare = state.withLock { counters -> UnsafeMutablePointer<PageDescriptor>? in
            let block = blocks[index].load(ordering: .relaxed)
            guard BlockState.isAllocated(block) else { invalidFree(page, reason: Self.notHandedOut(block)) }
            let order = BlockState.order(block)
            memory.destroyCompoundRun(page, owner: .decryptedAllocator)
            page.storeReferenceCount(0)
            counters.frees[order] += 1
            counters.livePages -= 1 << order
            return putBlock(index: index, order: order, counters: &counters)
        }
        if let spare { release(chunk: Page(descriptor: spare)) }
    }

    /// Gives every CPU's free runs back to the buddy lists, then converts back
    /// and returns fully free chunks beyond `keeping` spares.
    /// Returns how many chunks went back to the general allocator.
    ///
    /// A failed conversion (a hypercall that reported failure and changed
    /// nothing) relinks the chunk as a spare; the next pass takes it again.
    /// After `attempts` failures in a row the rest stay spares, shared and
    /// counted, rather than retrying forever.
    @discardableResult
    public func releaseSpareChunks(keeping: Int = 0, attempts: Int = 4) -> Int {
        var released = drainCPULists()
        var failuresInARow = 0
        while failuresInARow < attempts, let chunk = state.withLock({ counters -> UnsafeMutablePointer<PageDescriptor>? in
            guard counters.spareChunks > keeping, let head = freeLists[configuration.chunkOrder] else { return nil }
            unlink(head, order: configuration.chunkOrder)
            blocks[head - descriptors].store(BlockState.none, ordering: .relaxed)
            counters.spareChunks -= 1
            counters.chunksHeld -= 1
            return head
        }) {
            if release(chunk: Page(descriptor: chunk)) {
                released += 1
                failuresInARow = 0
            } else {
                failuresInARow += 1
            }
        }
        return released
    }

    /// Whether `page` is the head of a run this allocator handed out and has not
    /// taken back.
    public func owns(_ page: Page) -> Bool {
        let index = page.descriptor - descriptors
        guard index >= 0, index < memory.pageCount else { return false }
        return BlockState.isAllocated(blocks[index].load(ordering: .relaxed))
    }

    // MARK: Internals

    /// Sets up the descriptors of a run just taken off a free list (held exclusively).
    private func prepare(_ head: Page, order: Int) {
        memory.prepareCompoundRun(head, order: order, owner: .decryptedAllocator)
        for i in 0..<(1 << order) {
            let page = Page(descriptor: head.descriptor + i)
            page.dmaAddress = memory.unencryptedDMAAddress(of: page.physicalAddress)
        }
        head.descriptor.pointee.ownerObject = Unmanaged.passUnretained(self).toOpaque()
        head.storeReferenceCount(1)
    }

    /// Takes a free run of `order`, splitting a larger block if needed. Lock held.
    func takeBlock(order: Int, counters: inout Counters) -> Page? {
        var found = order
        while found <= configuration.chunkOrder, freeLists[found] == nil { found += 1 }
        guard found <= configuration.chunkOrder, let block = freeLists[found] else { return nil }
        unlink(block, order: found)
        if found == configuration.chunkOrder { counters.spareChunks -= 1 }
        // Split: keep the lower half, free the upper half, down to `order`.
        while found > order {
            found -= 1
            let buddy = block + (1 << found)
            blocks[buddy - descriptors].store(BlockState.free(order: found), ordering: .relaxed)
            link(buddy, order: found)
        }
        blocks[block - descriptors].store(BlockState.allocated(order: order), ordering: .relaxed)
        counters.allocations[order] += 1
        counters.livePages += 1 << order
        counters.peakLivePages = max(counters.peakLivePages, counters.livePages)
        return Page(descriptor: block)
    }

    /// Puts a freed block back, coalescing with free buddies. Returns a whole
    /// chunk to release (already unlinked) when it exceeds the spare count. Lock held.
    func putBlock(index: Int, order: Int, counters: inout Counters) -> UnsafeMutablePointer<PageDescriptor>? {
        var index = index
        var order = order
        // Chunks are naturally aligned in the region (the general allocator hands
        // out naturally aligned runs), so a block's buddy is at index ^ (1 << order).
        while order < configuration.chunkOrder {
            let buddy = index ^ (1 << order)
            guard blocks[buddy].load(ordering: .relaxed) == BlockState.free(order: order) else { break }
            unlink(descriptors + buddy, order: order)
            blocks[buddy].store(BlockState.none, ordering: .relaxed)
            blocks[index].store(BlockState.none, ordering: .relaxed)
            index &= ~(1 << order)
            order += 1
        }
        if order == configuration.chunkOrder, counters.spareChunks >= configuration.spareChunks {
            blocks[index].store(BlockState.none, ordering: .relaxed)
            counters.chunksHeld -= 1
            return descriptors + index
        }
        blocks[index].store(BlockState.free(order: order), ordering: .relaxed)
        link(descriptors + index, order: order)
        if order == configuration.chunkOrder { counters.spareChunks += 1 }
        return nil
    }

    /// Takes a chunk from the general allocator, converts it to shared, and
    /// allocates from it.
    @inline(never)
    private func grow(order: Int) throws(AllocatorError) -> Page {
        let chunkOrder = configuration.chunkOrder
        let chunk: Page
        do {
            chunk = try general.allocatePages(order: chunkOrder)
        } catch {
            state.withLock { $0.failures += 1 }
            throw error
        }
        let pages = 1 << chunkOrder
        do {
            try memory.convert(chunk, count: pages, to: .shared)
        } catch {
            // Still private and still a live run of the general allocator: give it back.
            general.freePages(chunk)
            state.withLock {
                $0.conversions += 1
                $0.conversionFailures += 1
                $0.failures += 1
            }
            throw .conversionFailed(chunk: chunk.physicalAddress, pages: pages, underlying: error)
        }
        memory.destroyCompoundRun(chunk, owner: .decryptedAllocator)
        chunk.storeReferenceCount(0)
        let (head, excess) = state.withLock { counters in
            counters.conversions += 1
            counters.chunksConverted += 1
            counters.chunksHeld += 1
            counters.peakChunksHeld = max(counters.peakChunksHeld, counters.chunksHeld)
            counters.spareChunks += 1
            blocks[chunk.descriptor - descriptors].store(BlockState.free(order: chunkOrder), ordering: .relaxed)
            link(chunk.descriptor, order: chunkOrder)
            // Under the same lock as the insertion: this cannot fail. It may take
            // a block another thread freed meanwhile, leaving a spare too many.
            let head = takeBlock(order: order, counters: &counters)!
            return (head, takeExcessSpare(counters: &counters))
        }
        if let excess { release(chunk: Page(descriptor: excess)) }
        return head
    }

    /// Unlinks a whole free chunk if more than `spareChunks` are held. Lock held.
    private func takeExcessSpare(counters: inout Counters) -> UnsafeMutablePointer<PageDescriptor>? {
        guard counters.spareChunks > configuration.spareChunks,
              let head = freeLists[configuration.chunkOrder] else { return nil }
        unlink(head, order: configuration.chunkOrder)
        blocks[head - descriptors].store(BlockState.none, ordering: .relaxed)
        counters.spareChunks -= 1
        counters.chunksHeld -= 1
        return head
    }

    /// Converts a whole free chunk (unlinked, not counted as held) back to
    /// private and frees it to the general allocator. If the conversion fails,
    /// the chunk is kept as a spare. Returns whether it went back.
    @discardableResult
    func release(chunk: Page) -> Bool {
        let chunkOrder = configuration.chunkOrder
        do {
            try memory.convert(chunk, count: 1 << chunkOrder, to: .private)
        } catch {
            state.withLock { counters in
                counters.conversions += 1
                counters.conversionFailures += 1
                counters.chunksHeld += 1
                counters.peakChunksHeld = max(counters.peakChunksHeld, counters.chunksHeld)
                counters.spareChunks += 1
                blocks[chunk.descriptor - descriptors].store(BlockState.free(order: chunkOrder), ordering: .relaxed)
                link(chunk.descriptor, order: chunkOrder)
            }
            return false
        }
        state.withLock { counters in
            counters.conversions += 1
            counters.chunksReleased += 1
        }
        memory.prepareCompoundRun(chunk, order: chunkOrder, owner: .generalAllocator)
        chunk.storeReferenceCount(1)
        general.freePages(chunk)
        return true
    }

    // Free lists threaded through free blocks' head descriptors. Lock held.

    private func link(_ block: UnsafeMutablePointer<PageDescriptor>, order: Int) {
        let next = freeLists[order]
        block.pointee.ownerObject = next.map { UnsafeMutableRawPointer($0) }
        block.pointee.privateWord = 0
        next?.pointee.privateWord = UInt(bitPattern: block)
        freeLists[order] = block
    }

    private func unlink(_ block: UnsafeMutablePointer<PageDescriptor>, order: Int) {
        let next = block.pointee.ownerObject?.assumingMemoryBound(to: PageDescriptor.self)
        let previous = UnsafeMutablePointer<PageDescriptor>(bitPattern: block.pointee.privateWord)
        if let previous {
            previous.pointee.ownerObject = next.map { UnsafeMutableRawPointer($0) }
        } else {
            freeLists[order] = next
        }
        next?.pointee.privateWord = UInt(bitPattern: previous)
        block.pointee.ownerObject = nil
        block.pointee.privateWord = 0
    }

    /// Why a run whose side-table byte is `block` cannot be freed.
    static func notHandedOut(_ block: UInt8) -> String {
        if BlockState.isFree(block) { return "double free" }
        if BlockState.isOnCPUList(block) { return "double free (the run is on a per-CPU list)" }
        return "not a live run of this allocator (double free?)"
    }

    @inline(never)
    func invalidFree(_ page: Page, reason: String) -> Never {
        fatalError("DecryptedAllocator.free: invalid free of \(page): \(reason)")
    }
}

/// The side-table byte of a guest page: 0 unless the page heads a block of this
/// allocator; then bit 7 = free, bit 6 = handed out, bit 5 = on a CPU's list,
/// low bits = the block's order.
enum BlockState {
    static let none: UInt8 = 0
    static func free(order: Int) -> UInt8 { 0x80 | UInt8(order) }
    static func allocated(order: Int) -> UInt8 { 0x40 | UInt8(order) }
    static func isFree(_ state: UInt8) -> Bool { state & 0x80 != 0 }
    static func isAllocated(_ state: UInt8) -> Bool { state & 0x40 != 0 }
    /// Free on a CPU's list: neither free to the buddy nor handed out (bit 5).
    static func onCPUList(order: Int) -> UInt8 { 0x20 | UInt8(order) }
    static func isOnCPUList(_ state: UInt8) -> Bool { state & 0x20 != 0 }
    static func order(_ state: UInt8) -> Int { Int(state & 0x0F) }
}
