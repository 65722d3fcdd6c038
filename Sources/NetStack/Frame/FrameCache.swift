@_spi(DMAPoolsSupport) import DMAPools
import Synchronization

/// The `sk_buff` head: which shared data it points at, and whether it is live.
@usableFromInline
struct FrameHeader {
    @usableFromInline var dataSlot: Int32 = -1
    @usableFromInline var isLive = false
    @usableFromInline var isClone = false
    /// Times this header was put back on a qdisc after a failed transmit.
    @usableFromInline var requeues: UInt8 = 0
    /// Times the socket sent this (original) frame again after a drop.
    @usableFromInline var retransmits: UInt8 = 0
}

/// A stack of free slot numbers with storage allocated on growth only.
struct SlotStack: ~Copyable {
    private var storage: UnsafeMutablePointer<Int32>
    private var capacity: Int
    private(set) var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
    }

    deinit { storage.deallocate() }

    mutating func push(_ slot: Int32) {
        if count == capacity { grow() }
        storage[count] = slot
        count &+= 1  // count < capacity here
    }

    mutating func pop() -> Int32? {
        guard count > 0 else { return nil }
        count &-= 1  // count > 0
        return storage[count]
    }

    private mutating func grow() {
        let bigger = UnsafeMutablePointer<Int32>.allocate(capacity: capacity * 2)
        bigger.update(from: storage, count: count)
        storage.deallocate()
        storage = bigger
        capacity *= 2
    }
}

/// Free header and data slots, and the counters of the CPU that holds them.
struct FrameSlots: ~Copyable {
    var headers = SlotStack(capacity: FrameCache.refillBatch * 4)
    var data = SlotStack(capacity: FrameCache.refillBatch * 4)
    var statistics = FrameCacheStatistics()
}

/// Statistics of a frame cache.
public struct FrameCacheStatistics: Sendable, Hashable {
    public var framesAllocated = 0
    public var clones = 0
    public var framesFreed = 0
    public var dataReleased = 0
    public var fragmentsReleased = 0
    public var chunksAdded = 0
    /// Frames (originals and clones) currently live.
    public var liveFrames: Int { framesAllocated + clones - framesFreed }

    /// How each field adds up: the one list `+` is made from.
    static var fields: [FieldRule<Self>] {
        [.sum(\.framesAllocated), .sum(\.clones), .sum(\.framesFreed), .sum(\.dataReleased),
         .sum(\.fragmentsReleased), .sum(\.chunksAdded)]
    }

    /// Two sets of counters added up (two CPUs' stripes).
    public static func + (a: Self, b: Self) -> Self { fields.combine(a, b) }
}

/// The slab caches for frames (`skbuff_head_cache` and the data blocks), and the
/// free path that hands fragment pages back to their owners.
///
/// Slots come in chunks of 4096 allocated on demand (a counted slow path) and are
/// never returned, like a slab cache. As in SLUB, each CPU keeps free slots
/// and counters of its own (a stripe, under a lock only that CPU's threads
/// take in practice): a frame freed on a CPU is reused there, and allocating
/// or freeing writes no line another CPU writes. A stripe that runs dry
/// takes a batch from a shared depot; one that holds too many gives half
/// back (frames allocated by one CPU and freed by another, such as a clone
/// freed by the queue's runner, drift that way). The hot path allocates
/// nothing.
///
/// This cache had one lock and one counter set shared by every CPU: their
/// lines moved between the CPUs on every allocation and free, one of the two
/// shared structures behind the two-sender runs that doubled their CPU per
/// byte in some runs and not in others (the other: the pre-decrypted
/// allocator's lists; see Design/netstack.md, "Per-CPU caches").
public final class FrameCache: @unchecked Sendable {
    public typealias FragmentRelease = @Sendable (_ fragment: Fragment, _ ppRecycle: Bool) -> Void
    public typealias HeadRelease = @Sendable (_ head: SlabCache.Object) -> Void

    @usableFromInline static let chunkShift = 12
    @usableFromInline static let chunkSize = 1 << chunkShift
    static let maxChunks = 4096

    /// Free slots a CPU keeps before it hands half back to the depot, and
    /// what it takes from the depot when it runs out (SLUB's per-CPU
    /// partial lists, in miniature).
    static let stripeHighWater = 256
    static let refillBatch = 64

    @usableFromInline let headerChunks: UnsafeMutablePointer<UnsafeMutablePointer<FrameHeader>?>
    @usableFromInline let dataChunks: UnsafeMutablePointer<UnsafeMutablePointer<FrameData>?>
    /// Per-CPU free slots and counters (`kmem_cache_cpu`): a frame allocated
    /// and freed on one CPU never touches another CPU's lines.
    private let stripes = PerCPULocked { FrameSlots() }
    /// Free slots no CPU holds: new chunks, and what a CPU with too many gives back.
    private let depot = Lock(FrameSlots())
    private let chunkCount = Lock(0)
    /// Called for each fragment when the last reference to a frame's data goes.
    public let releaseFragment: FragmentRelease
    /// Called for the linear head, if any, when the last reference goes
    /// (`skb_free_head`).
    public let releaseHead: HeadRelease?

    /// - Parameters:
    ///   - releaseFragment: where fragment pages go when their frame's data
    ///     is released (`skb_release_data`): the design decides (page_pool, swiotlb,
    ///     general allocator).
    ///   - releaseHead: where a frame's linear head goes then (its slab cache).
    public init(releaseFragment: @escaping FragmentRelease, releaseHead: HeadRelease? = nil) {
        self.releaseFragment = releaseFragment
        self.releaseHead = releaseHead
        headerChunks = .allocate(capacity: Self.maxChunks)
        headerChunks.initialize(repeating: nil, count: Self.maxChunks)
        dataChunks = .allocate(capacity: Self.maxChunks)
        dataChunks.initialize(repeating: nil, count: Self.maxChunks)
    }

    deinit {
        let chunks = chunkCount.withLock { $0 }
        for c in 0..<chunks {
            // Chunks 0..<chunkCount are allocated (they are only ever added).
            if let headers = headerChunks[c] {
                headers.deinitialize(count: Self.chunkSize)
                headers.deallocate()
            }
            if let data = dataChunks[c] {
                data.deinitialize(count: Self.chunkSize)
                data.deallocate()
            }
        }
        headerChunks.deallocate()
        dataChunks.deallocate()
    }

    @inlinable
    func header(_ slot: Int32) -> UnsafeMutablePointer<FrameHeader> {
        headerChunks[Int(slot) >> Self.chunkShift].unsafelyUnwrapped + (Int(slot) & (Self.chunkSize - 1))
    }

    @inlinable
    func data(_ slot: Int32) -> UnsafeMutablePointer<FrameData> {
        dataChunks[Int(slot) >> Self.chunkShift].unsafelyUnwrapped + (Int(slot) & (Self.chunkSize - 1))
    }

    @usableFromInline
    func data(of frame: Frame) -> UnsafeMutablePointer<FrameData> {
        let h = header(frame.slot)
        if !h.pointee.isLive { Self.deadFrame(frame, "used") }
        return data(h.pointee.dataSlot)
    }

    /// Adds one chunk of header and data slots (slow path, counted).
    @inline(never)
    private func addChunk() {
        chunkCount.withLock { chunks in
            precondition(chunks < Self.maxChunks, "frame cache exhausted: \(chunks * Self.chunkSize) frames live")
            let headers = UnsafeMutablePointer<FrameHeader>.allocate(capacity: Self.chunkSize)
            headers.initialize(repeating: FrameHeader(), count: Self.chunkSize)
            let data = UnsafeMutablePointer<FrameData>.allocate(capacity: Self.chunkSize)
            for i in 0..<Self.chunkSize { (data + i).initialize(to: FrameData()) }
            headerChunks[chunks] = headers
            dataChunks[chunks] = data
            let first = Int32(chunks * Self.chunkSize)
            depot.withLock { free in
                for i in (0..<Int32(Self.chunkSize)).reversed() {
                    free.headers.push(first + i)
                    free.data.push(first + i)
                }
            }
            chunks += 1
        }
    }

    /// A header slot and, with `withData`, a data slot from the calling CPU's
    /// stripe, refilled from the depot (and the depot from a new chunk) when
    /// it runs dry; counted as an allocation, or as a clone without data.
    private func takeSlots(withData: Bool) -> (header: Int32, data: Int32) {
        while true {
            let taken = stripes.withLocal { local -> (header: Int32, data: Int32)? in
                if local.headers.count == 0 || (withData && local.data.count == 0) { refill(&local) }
                guard local.headers.count > 0, !withData || local.data.count > 0 else { return nil }
                // Both stacks were just checked non-empty.
                let h = local.headers.pop().unsafelyUnwrapped
                let d = withData ? local.data.pop().unsafelyUnwrapped : -1
                if withData { local.statistics.framesAllocated += 1 } else { local.statistics.clones += 1 }
                return (h, d)
            }
            if let taken { return taken }
            addChunk()
        }
    }

    /// Moves up to `refillBatch` slots of each kind the stripe lacks from the depot.
    private func refill(_ local: inout FrameSlots) {
        depot.withLock { free in
            if local.headers.count == 0 {
                for _ in 0..<Self.refillBatch { guard let h = free.headers.pop() else { break }; local.headers.push(h) }
            }
            if local.data.count == 0 {
                for _ in 0..<Self.refillBatch { guard let d = free.data.pop() else { break }; local.data.push(d) }
            }
        }
    }

    /// Hands half of a stripe's slots back to the depot once it holds more
    /// than `stripeHighWater` of a kind (frames freed on another CPU than
    /// the one that allocated them pile up there).
    private func flush(_ local: inout FrameSlots) {
        depot.withLock { free in
            while local.headers.count > Self.stripeHighWater / 2, let h = local.headers.pop() { free.headers.push(h) }
            while local.data.count > Self.stripeHighWater / 2, let d = local.data.pop() { free.data.push(d) }
        }
    }

    // MARK: Frame operations

    /// `alloc_skb`: a new frame with no fragments, carrying bytes of `flow`'s
    /// stream from `streamOffset`.
    public func allocate(flow: Int, streamOffset: UInt64) -> Frame {
        let (h, d) = takeSlots(withData: true)
        let data = self.data(d)
        data.pointee.dataReference.store(1, ordering: .relaxed)
        data.pointee.fragmentCount = 0
        data.pointee.ppRecycle = false
        data.pointee.length = 0
        data.pointee.flow = flow
        data.pointee.streamOffset = streamOffset
        data.pointee.transmittedAt.store(0, ordering: .relaxed)
        data.pointee.head = nil
        data.pointee.headLength = 0
        header(h).pointee = FrameHeader(dataSlot: d, isLive: true, isClone: false)
        return Frame(slot: h)
    }

    /// `skb_fill_page_desc`: appends a fragment. The caller has already taken the
    /// page reference the fragment holds.
    public func append(_ fragment: Fragment, to frame: Frame) throws(FrameError) {
        let d = data(of: frame)
        guard d.pointee.fragmentCount < FrameData.maxFragments else {
            throw .tooManyFragments(limit: FrameData.maxFragments)
        }
        let run = fragment.page.head.byteCount - (fragment.page.head.bytes.distance(to: fragment.page.bytes))
        guard fragment.length > 0, fragment.offset >= 0, fragment.offset + fragment.length <= run else {
            throw .invalidFragment(offset: fragment.offset, length: fragment.length, runBytes: run)
        }
        d.pointee.fragments[d.pointee.fragmentCount] = fragment
        d.pointee.fragmentCount += 1
        d.pointee.length += fragment.length
    }

    /// `skb_can_coalesce`: whether `bytes` at `offset` of `page` continue the
    /// frame's last fragment.
    public func canCoalesce(_ frame: Frame, page: Page, offset: Int) -> Bool {
        let d = data(of: frame)
        guard d.pointee.fragmentCount > 0 else { return false }
        let last = d.pointee.fragments[d.pointee.fragmentCount - 1]
        return last.page == page && last.offset + last.length == offset
    }

    /// Grows the last fragment by `bytes` (the caller checked `canCoalesce`).
    public func extendLastFragment(of frame: Frame, by bytes: Int) {
        let d = data(of: frame)
        precondition(d.pointee.fragmentCount > 0 && bytes > 0, "extendLastFragment on a frame without fragments")
        d.pointee.fragments[d.pointee.fragmentCount - 1].length += bytes
        d.pointee.length += bytes
    }

    /// Gives the frame its linear head: `length` header bytes at the start of
    /// `head`, which the frame now owns (released with its data, through
    /// `releaseHead`).
    public func attachHead(_ head: SlabCache.Object, length: Int, to frame: Frame) {
        let d = data(of: frame)
        precondition(d.pointee.head == nil && length > 0 && length <= head.size,
                     "a frame takes one head of at most its object's size (\(length) of \(head.size) bytes)")
        precondition(releaseHead != nil, "a frame cache without releaseHead cannot own heads")
        d.pointee.head = head
        d.pointee.headLength = length
    }

    /// The frame's linear head and its header bytes, or nil.
    public func head(of frame: Frame) -> (object: SlabCache.Object, length: Int)? {
        let d = data(of: frame)
        guard let head = d.pointee.head else { return nil }
        return (head, d.pointee.headLength)
    }

    /// `skb_mark_for_recycle`.
    public func markForRecycle(_ frame: Frame) {
        data(of: frame).pointee.ppRecycle = true
    }

    /// `skb_clone`: a new header sharing the frame's data (one more data reference).
    public func clone(_ frame: Frame) -> Frame {
        let hdr = header(frame.slot)
        if !hdr.pointee.isLive { Self.deadFrame(frame, "cloned") }
        let d = data(hdr.pointee.dataSlot)
        d.pointee.dataReference.wrappingAdd(1, ordering: .relaxed)  // the caller holds one
        let h = takeSlots(withData: false).header
        header(h).pointee = FrameHeader(dataSlot: hdr.pointee.dataSlot, isLive: true, isClone: true)
        return Frame(slot: h)
    }

    /// `kfree_skb`: frees the header; the last data reference releases every
    /// fragment to its owner (`skb_release_data`). Freeing twice traps.
    public func free(_ frame: Frame) {
        let hdr = header(frame.slot)
        if !hdr.pointee.isLive { Self.deadFrame(frame, "freed twice") }
        let dataSlot = hdr.pointee.dataSlot
        hdr.pointee.isLive = false
        hdr.pointee.dataSlot = -1
        let d = data(dataSlot)
        let last = d.pointee.dataReference.wrappingSubtract(1, ordering: .acquiringAndReleasing).oldValue == 1
        var released = 0
        if last {
            let recycle = d.pointee.ppRecycle
            for i in 0..<d.pointee.fragmentCount {
                releaseFragment(d.pointee.fragments[i], recycle)
            }
            released = d.pointee.fragmentCount
            d.pointee.fragmentCount = 0
            if let head = d.pointee.head {
                d.pointee.head = nil
                d.pointee.headLength = 0
                releaseHead?(head)
            }
        }
        stripes.withLocal { local in
            local.headers.push(frame.slot)
            local.statistics.framesFreed += 1
            if last {
                local.data.push(dataSlot)
                local.statistics.dataReleased += 1
                local.statistics.fragmentsReleased += released
            }
            if local.headers.count > Self.stripeHighWater || local.data.count > Self.stripeHighWater { flush(&local) }
        }
    }

    // MARK: Reading a frame

    /// The frame's fragments (valid while the frame is live).
    public func fragments(of frame: Frame) -> UnsafeBufferPointer<Fragment> {
        let d = data(of: frame)
        return UnsafeBufferPointer(start: d.pointee.fragments, count: d.pointee.fragmentCount)
    }

    public func length(of frame: Frame) -> Int { data(of: frame).pointee.length }
    public func isMarkedForRecycle(_ frame: Frame) -> Bool { data(of: frame).pointee.ppRecycle }
    public func flow(of frame: Frame) -> Int { data(of: frame).pointee.flow }
    public func streamOffset(of frame: Frame) -> UInt64 { data(of: frame).pointee.streamOffset }
    public func isClone(_ frame: Frame) -> Bool { header(frame.slot).pointee.isClone }
    /// Counts one more requeue of this header and returns the new count.
    public func noteRequeue(_ frame: Frame) -> Int {
        let h = header(frame.slot)
        if !h.pointee.isLive { Self.deadFrame(frame, "requeued") }
        h.pointee.requeues &+= 1  // bounded by TXQueue.maxRequeues < 255
        return Int(h.pointee.requeues)
    }
    /// Counts one more retransmission of this (original) frame and returns the new count.
    public func noteRetransmit(_ frame: Frame) -> Int {
        let h = header(frame.slot)
        if !h.pointee.isLive { Self.deadFrame(frame, "retransmitted") }
        h.pointee.retransmits &+= 1  // bounded by Socket.maxRetransmits < 255
        return Int(h.pointee.retransmits)
    }

    /// `transmittedAt` of a frame whose data never reached the wire: the queue
    /// dropped it, and its socket must send it again.
    public static let droppedMark = UInt64.max

    /// Marks the frame's data as handed to the wire at `nanoseconds` (monotonic);
    /// the peer model acknowledges it one round-trip later.
    public func markTransmitted(_ frame: Frame, at nanoseconds: UInt64) {
        data(of: frame).pointee.transmittedAt.store(nanoseconds, ordering: .releasing)
    }

    /// Marks the frame's data as dropped before it reached the wire (`droppedMark`).
    public func markDropped(_ frame: Frame) {
        data(of: frame).pointee.transmittedAt.store(Self.droppedMark, ordering: .releasing)
    }

    /// Marks the frame's data as not yet sent again, before it is retransmitted.
    func markUnsent(_ frame: Frame) {
        data(of: frame).pointee.transmittedAt.store(0, ordering: .releasing)
    }

    /// When the frame's data reached the wire, 0 if it has not yet, or
    /// `droppedMark` if it was dropped on the way.
    public func transmittedAt(_ frame: Frame) -> UInt64 {
        data(of: frame).pointee.transmittedAt.load(ordering: .acquiring)
    }

    /// `dataref`: the frame and its live clones.
    public func dataReferences(of frame: Frame) -> Int {
        Int(data(of: frame).pointee.dataReference.load(ordering: .acquiring))
    }

    /// The sum over every CPU's counters (a snapshot when no frame moves).
    public var statistics: FrameCacheStatistics {
        var total = FrameCacheStatistics()
        for cpu in 0..<stripes.count { total = total + stripes.withStripe(cpu) { $0.statistics } }
        total.chunksAdded = chunkCount.withLock { $0 }
        return total
    }

    @inline(never)
    @usableFromInline
    static func deadFrame(_ frame: Frame, _ what: String) -> Never {
        fatalError("frame slot \(frame.slot) \(what) after it was freed (double free or use after free)")
    }
}
