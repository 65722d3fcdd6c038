/// A FIFO of frames in a growable ring (grows by doubling; never shrinks), for
/// retransmit queues and qdiscs. Not thread-safe: its owner serialises access.
struct FrameRing: ~Copyable {
    private var storage: UnsafeMutablePointer<Frame>
    private var capacity: Int
    private var head = 0
    private(set) var count = 0

    init(capacity: Int = 64) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "ring capacity must be a power of two")
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
    }

    deinit { storage.deallocate() }

    var isEmpty: Bool { count == 0 }

    var first: Frame? { count == 0 ? nil : storage[head] }

    /// The `i`th frame from the head (`0..<count`).
    subscript(i: Int) -> Frame {
        precondition(i >= 0 && i < count, "frame ring index \(i) out of 0..<\(count)")
        return storage[(head &+ i) & (capacity - 1)]
    }

    mutating func append(_ frame: Frame) {
        if count == capacity { grow() }
        storage[(head &+ count) & (capacity - 1)] = frame  // head + count < 2 * capacity
        count &+= 1
    }

    mutating func removeFirst() -> Frame? {
        guard count > 0 else { return nil }
        let frame = storage[head]
        head = (head &+ 1) & (capacity - 1)
        count &-= 1
        return frame
    }

    private mutating func grow() {
        let bigger = UnsafeMutablePointer<Frame>.allocate(capacity: capacity * 2)
        for i in 0..<count { (bigger + i).initialize(to: storage[(head + i) & (capacity - 1)]) }
        storage.deallocate()
        storage = bigger
        head = 0
        capacity *= 2
    }
}
