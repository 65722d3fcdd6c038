import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The pool's `ptr_ring` (`include/linux/ptr_ring.h`), with the kernel's rules,
/// because they decide how many pages leave the pool when the ring fills:
///
/// - A slot is free exactly when it holds no page (the kernel's NULL). A
///   producer looks at the slot at `producer` and reports full (`-ENOSPC`) when
///   it is occupied, so a ring of size N holds exactly N pages, whatever N is
///   (1 included, and N need not be a power of two).
/// - Producers serialise on the producer lock (`producer_lock`);
///   `page_pool_recycle_ring_bulk` holds it across a whole bulk.
/// - One consumer (the owning context refilling its alloc cache, or teardown
///   once allocation has stopped). A consumed slot is not cleared at once:
///   `__ptr_ring_discard_one` clears consumed slots in batches of `batch`, in
///   reverse order, and whenever the head reaches the end of the array. Until
///   then the producer still sees them occupied, so the ring reports full up to
///   `batch - 1` puts before it holds `size` pages.
/// - `batch` is `2 * SMP_CACHE_BYTES / sizeof(void *)` (16 with 64-byte cache
///   lines), or 1 when that is more than half the ring (`__ptr_ring_set_size`).
///
/// Memory orderings: the producer publishes a page with a releasing store into
/// its slot, the consumer takes it with an acquiring load (the kernel's
/// `smp_wmb` / `READ_ONCE` pair); the consumer clears slots with releasing
/// stores and the producer's check loads acquiring, so the consumer's read of
/// the old page happens before the slot is reused.
@usableFromInline
struct _RecycleRing: ~Copyable {
    /// The array of slots: a page's descriptor address, or 0 (NULL) when free.
    @usableFromInline let slots: UnsafeMutablePointer<Atomic<UInt>>
    /// `size`: how many pages the ring holds.
    @usableFromInline let capacity: Int
    /// `batch`: consumed slots are cleared this many at a time.
    @usableFromInline let batch: Int
    /// Two cache lines: the producer's (lock, index, produced count) and the
    /// consumer's (head, tail, consumed count), as the kernel aligns them.
    @usableFromInline let lines: UnsafeMutableRawPointer
    private let linesAllocation: AlignedAllocation

    @usableFromInline static let lineBytes = 128

    /// A ring of `capacity` slots; `cacheLineBytes` is the platform's
    /// `SMP_CACHE_BYTES`, which sets the consumer's batch.
    init(capacity: Int, cacheLineBytes: Int = Architecture.x86_64.cacheLineBytes) {
        precondition(capacity > 0, "ring capacity \(capacity) must be positive")
        self.capacity = capacity
        self.batch = _RecycleRing.batch(capacity: capacity, cacheLineBytes: cacheLineBytes)
        self.slots = .allocate(capacity: capacity)
        for i in 0..<capacity { (slots + i).initialize(to: Atomic(0)) }
        self.linesAllocation = AlignedAllocation(byteCount: 2 * Self.lineBytes, alignment: Self.lineBytes)
        self.lines = linesAllocation.pointer
        lines.initializeMemory(as: UInt8.self, repeating: 0, count: 2 * Self.lineBytes)
        (lines + Self.producerLockOffset).bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
        (lines + Self.producedOffset).bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
        (lines + Self.consumedOffset).bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
        (lines + Self.producerIndexOffset).bindMemory(to: Int.self, capacity: 1).initialize(to: 0)
        (lines + Self.consumerHeadOffset).bindMemory(to: Int.self, capacity: 2).initialize(repeating: 0, count: 2)
    }

    deinit {
        slots.deinitialize(count: capacity)
        slots.deallocate()
        linesAllocation.deallocate()
    }

    /// `__ptr_ring_set_size`'s batch.
    static func batch(capacity: Int, cacheLineBytes: Int) -> Int {
        let batch = cacheLineBytes * 2 / MemoryLayout<UnsafeRawPointer>.size
        return batch > capacity / 2 || batch == 0 ? 1 : batch
    }

    // Producer line.
    @usableFromInline static let producerLockOffset = 0
    @usableFromInline static let producerIndexOffset = 8
    @usableFromInline static let producedOffset = 16
    // Consumer line.
    @usableFromInline static let consumerHeadOffset = lineBytes
    @usableFromInline static let consumerTailOffset = lineBytes + 8
    @usableFromInline static let consumedOffset = lineBytes + 16

    @inlinable var producerLock: UnsafePointer<Atomic<Int>> {
        UnsafePointer((lines + Self.producerLockOffset).assumingMemoryBound(to: Atomic<Int>.self))
    }
    /// `producer`: written only under the producer lock.
    @inlinable var producerIndex: UnsafeMutablePointer<Int> {
        (lines + Self.producerIndexOffset).assumingMemoryBound(to: Int.self)
    }
    /// Pages ever produced (the `recycle.ring` counter). Written under the
    /// producer lock, atomic so reports can read it from anywhere.
    @inlinable var produced: UnsafePointer<Atomic<Int>> {
        UnsafePointer((lines + Self.producedOffset).assumingMemoryBound(to: Atomic<Int>.self))
    }
    /// `consumer_head` and `consumer_tail`: the consumer's alone.
    @inlinable var consumerHead: UnsafeMutablePointer<Int> {
        (lines + Self.consumerHeadOffset).assumingMemoryBound(to: Int.self)
    }
    @inlinable var consumerTail: UnsafeMutablePointer<Int> {
        (lines + Self.consumerTailOffset).assumingMemoryBound(to: Int.self)
    }
    /// Pages ever consumed, for `count`.
    @inlinable var consumed: UnsafePointer<Atomic<Int>> {
        UnsafePointer((lines + Self.consumedOffset).assumingMemoryBound(to: Atomic<Int>.self))
    }

    // MARK: Producer lock

    /// `spin_lock(&r->producer_lock)`.
    @inlinable
    func lockProducer() {
        // Acquiring: the previous holder's writes to the index and slots are visible.
        if _fastPath(producerLock.pointee.compareExchange(
            expected: 0, desired: 1, successOrdering: .acquiring, failureOrdering: .relaxed).exchanged) {
            return
        }
        _lockProducerContended()
    }

    /// Spins on a plain load (no cache-line ping-pong), and yields now and then:
    /// a user-space holder can be preempted, which a kernel spinlock holder cannot.
    @inline(never)
    @usableFromInline
    func _lockProducerContended() {
        var spins = 0
        while true {
            // Relaxed: a hint; the exchange below decides.
            while producerLock.pointee.load(ordering: .relaxed) != 0 {
                spins &+= 1
                if spins & 63 == 0 { sched_yield() }
            }
            if producerLock.pointee.compareExchange(
                expected: 0, desired: 1, successOrdering: .acquiring, failureOrdering: .relaxed).exchanged {
                return
            }
        }
    }

    /// `spin_unlock(&r->producer_lock)`. Releasing: publishes the index and counter.
    @inlinable
    func unlockProducer() {
        producerLock.pointee.store(0, ordering: .releasing)
    }

    // MARK: Produce

    /// `__ptr_ring_produce` under the lock held by the caller: false (`-ENOSPC`)
    /// if the slot at `producer` is still occupied.
    @inlinable
    func _produceLocked(_ page: Page) -> Bool {
        let index = producerIndex.pointee
        let slot = slots + index
        // Acquiring: pairs with the consumer's releasing clear of this slot.
        if slot.pointee.load(ordering: .acquiring) != 0 { return false }
        // Releasing: publishes the page (and every write made to it) to the consumer.
        slot.pointee.store(UInt(bitPattern: page.descriptor), ordering: .releasing)
        let next = index &+ 1   // < capacity <= 16384: cannot overflow
        producerIndex.pointee = next == capacity ? 0 : next
        // Under the lock: a plain read-modify-write is enough; atomic for readers.
        produced.pointee.store(produced.pointee.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        return true
    }

    /// `ptr_ring_produce`: appends a page; false if the ring is full.
    @inlinable
    func produce(_ page: Page) -> Bool {
        lockProducer()
        let produced = _produceLocked(page)
        unlockProducer()
        return produced
    }

    /// The producer half of `page_pool_recycle_ring_bulk`: appends pages in
    /// order under one hold of the producer lock, stopping at the first that
    /// does not fit. Returns how many went in.
    @inlinable
    func produce(contentsOf pages: UnsafeBufferPointer<Page>) -> Int {
        lockProducer()
        var count = 0
        while count < pages.count && _produceLocked(pages[count]) { count &+= 1 }
        unlockProducer()
        return count
    }

    // MARK: Consume (one consumer at a time)

    /// `__ptr_ring_consume`: takes the oldest page; nil if the ring is empty.
    @inlinable
    func consume() -> Page? {
        let head = consumerHead.pointee
        // Acquiring: pairs with the producer's releasing store, so the page and
        // its contents are visible.
        guard let descriptor = UnsafeMutablePointer<PageDescriptor>(
            bitPattern: (slots + head).pointee.load(ordering: .acquiring)) else { return nil }
        _discardOne(head)
        // Relaxed: a counter for `count`.
        consumed.pointee.store(consumed.pointee.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        return Page(descriptor: descriptor)
    }

    /// `__ptr_ring_discard_one`: advance the head; clear consumed slots once a
    /// batch of them has built up, or at the end of the array.
    @inlinable
    func _discardOne(_ consumedIndex: Int) {
        var head = consumedIndex &+ 1   // < capacity + 1: cannot overflow
        let tail = consumerTail.pointee
        if _slowPath(head &- tail >= batch || head >= capacity) {
            // Reverse order, as the kernel: the producer's current line last.
            var index = consumedIndex
            while index >= tail {
                // Releasing: our read of the page happens before the producer reuses the slot.
                (slots + index).pointee.store(0, ordering: .releasing)
                index &-= 1
            }
            consumerTail.pointee = head
        }
        if _slowPath(head >= capacity) {
            head = 0
            consumerTail.pointee = 0
        }
        consumerHead.pointee = head
    }

    /// `__ptr_ring_empty`, from the consumer: a cheap check before a refill.
    @inlinable
    var isEmpty: Bool {
        // Relaxed: a hint only; `consume` re-checks with acquiring ordering.
        (slots + consumerHead.pointee).pointee.load(ordering: .relaxed) == 0
    }

    /// Pages in the ring (approximate while producers run).
    var count: Int {
        let consumed = self.consumed.pointee.load(ordering: .relaxed)
        return max(0, produced.pointee.load(ordering: .relaxed) - consumed)
    }

    /// Pages ever produced (`recycle.ring`).
    var producedCount: Int { produced.pointee.load(ordering: .relaxed) }

    /// Occupied slots, consumed-but-not-yet-cleared ones included: what the
    /// producer sees (quiescent ring; for tests and reports).
    var occupiedSlotCount: Int {
        (0..<capacity).reduce(0) { $0 + ((slots + $1).pointee.load(ordering: .relaxed) != 0 ? 1 : 0) }
    }
}
