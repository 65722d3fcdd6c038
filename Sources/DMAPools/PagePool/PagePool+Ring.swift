import Synchronization

/// One slot of the recycle ring: a sequence number that says whose turn it is,
/// and the page.
@usableFromInline
struct _RecycleRingSlot: ~Copyable {
    /// `position` when a producer may fill the slot, `position + 1` when it
    /// holds a page for the consumer, `position + capacity` once consumed.
    @usableFromInline let sequence: Atomic<Int>
    @usableFromInline var page: Page?

    @usableFromInline
    init(sequence: Int) {
        self.sequence = Atomic(sequence)
        self.page = nil
    }
}

/// The pool's `ptr_ring`: a bounded multi-producer, single-consumer ring of
/// pages, lock-free (Dmitry Vyukov's bounded queue with a sequence per slot).
///
/// Producers are any thread returning a page (`page_pool_recycle_in_ring`);
/// the consumer is the pool's owning context refilling its alloc cache, or
/// teardown once the owner has stopped (the kernel's rule: `page_pool_destroy`
/// runs when allocation can no longer happen concurrently). The capacity is
/// exactly the kernel's ring size, which need not be a power of two.
///
/// Positions only grow: at one operation per nanosecond a 64-bit position
/// wraps after 292 years, so the `&+` on positions cannot overflow in practice.
@usableFromInline
struct _RecycleRing {
    @usableFromInline let slots: UnsafeMutablePointer<_RecycleRingSlot>
    @usableFromInline let capacity: Int
    /// `capacity - 1` when the capacity is a power of two, else -1.
    @usableFromInline let mask: Int
    /// Producer and consumer positions, each on its own cache line.
    @usableFromInline let positions: UnsafeMutableRawPointer

    @usableFromInline static let cacheLine = 128

    init(capacity: Int) {
        precondition(capacity > 0, "ring capacity \(capacity) must be positive")
        self.capacity = capacity
        self.mask = capacity & (capacity - 1) == 0 ? capacity - 1 : -1
        self.slots = .allocate(capacity: capacity)
        for i in 0..<capacity { (slots + i).initialize(to: _RecycleRingSlot(sequence: i)) }
        self.positions = .allocate(byteCount: 3 * Self.cacheLine, alignment: Self.cacheLine)
        (positions + Self.cacheLine).bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
        (positions + 2 * Self.cacheLine).bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
    }

    func deallocate() {
        slots.deinitialize(count: capacity)
        slots.deallocate()
        positions.deallocate()
    }

    /// The next position a producer claims; also the number of pages ever
    /// produced (the `recycle.ring` counter).
    @usableFromInline
    var producerPosition: UnsafePointer<Atomic<Int>> {
        UnsafePointer((positions + Self.cacheLine).assumingMemoryBound(to: Atomic<Int>.self))
    }

    /// The next position the consumer takes. Only the consumer moves it, but it
    /// is atomic so that `count` can be read from any thread.
    @usableFromInline
    var consumerPosition: UnsafePointer<Atomic<Int>> {
        UnsafePointer((positions + 2 * Self.cacheLine).assumingMemoryBound(to: Atomic<Int>.self))
    }

    @inlinable
    func slot(_ position: Int) -> UnsafeMutablePointer<_RecycleRingSlot> {
        // Positions are non-negative (they start at 0 and only grow), so `%` is a plain remainder.
        slots + (mask >= 0 ? position & mask : position % capacity)
    }

    /// `__ptr_ring_produce`: appends a page; false if the ring is full.
    @inlinable
    func produce(_ page: Page) -> Bool {
        // Relaxed: the position is only a guess; the slot's sequence decides.
        var position = producerPosition.pointee.load(ordering: .relaxed)
        while true {
            let slot = slot(position)
            // Acquiring: pairs with the consumer's releasing store, so the
            // consumer's read of the old page happens before our write below.
            let sequence = slot.pointee.sequence.load(ordering: .acquiring)
            let lag = sequence &- position   // both < 2^63: no overflow (see type comment)
            if lag == 0 {
                // The slot is free for `position`: claim it. Relaxed is enough for
                // the claim itself; publication happens through the slot's sequence.
                let (exchanged, current) = producerPosition.pointee.weakCompareExchange(
                    expected: position, desired: position &+ 1,
                    successOrdering: .relaxed, failureOrdering: .relaxed)
                if exchanged {
                    slot.pointee.page = page
                    // Releasing: publishes the page (and every write the producer
                    // made to it) to the consumer's acquiring load.
                    slot.pointee.sequence.store(position &+ 1, ordering: .releasing)
                    return true
                }
                position = current
            } else if lag < 0 {
                // The slot still holds the page from one lap ago: the ring is full.
                return false
            } else {
                // Another producer claimed `position`; move on.
                position = producerPosition.pointee.load(ordering: .relaxed)
            }
        }
    }

    /// `__ptr_ring_consume`: takes the oldest page; nil if the ring is empty
    /// (or the oldest slot is claimed but not yet filled). Consumer only.
    @inlinable
    func consume() -> Page? {
        // Relaxed: only the consumer writes this position.
        let position = consumerPosition.pointee.load(ordering: .relaxed)
        let slot = slot(position)
        // Acquiring: pairs with the producer's releasing store of the sequence,
        // so the page and its contents are visible.
        guard slot.pointee.sequence.load(ordering: .acquiring) == position &+ 1 else { return nil }
        let page = slot.pointee.page
        slot.pointee.page = nil
        // Releasing: our read of the slot happens before the next lap's producer writes it.
        slot.pointee.sequence.store(position &+ capacity, ordering: .releasing)
        // Relaxed: consumer-private progress; `count` readers tolerate staleness.
        consumerPosition.pointee.store(position &+ 1, ordering: .relaxed)
        return page
    }

    /// `__ptr_ring_empty`, from the consumer: a cheap check before a refill.
    @inlinable
    var isEmpty: Bool {
        let position = consumerPosition.pointee.load(ordering: .relaxed)
        // Relaxed: a hint only; `consume` re-checks with acquiring ordering.
        return slot(position).pointee.sequence.load(ordering: .relaxed) != position &+ 1
    }

    /// Pages in the ring (approximate while producers run).
    var count: Int {
        let produced = producerPosition.pointee.load(ordering: .relaxed)
        let consumed = consumerPosition.pointee.load(ordering: .relaxed)
        return max(0, produced - consumed)
    }

    /// Pages ever produced (`recycle.ring`).
    var producedCount: Int { producerPosition.pointee.load(ordering: .relaxed) }

    /// Calls `body` with every page in the ring, without consuming (for reports;
    /// consumer context, or a quiescent ring).
    func forEachPage(_ body: (Page) -> Void) {
        let consumed = consumerPosition.pointee.load(ordering: .acquiring)
        var position = consumed
        while true {
            let slot = slot(position)
            guard slot.pointee.sequence.load(ordering: .acquiring) == position &+ 1, let page = slot.pointee.page else { break }
            body(page)
            position &+= 1
            if position &- consumed >= capacity { break }
        }
    }
}
