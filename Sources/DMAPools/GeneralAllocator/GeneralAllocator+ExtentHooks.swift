import CJemalloc
import Synchronization

/// The bump carver behind one arena's extent hooks: the private part of guest
/// memory, handed to jemalloc front to back and never taken back.
///
/// jemalloc asks for extents (multiples of 4 KiB, usually 2 MiB or more because
/// retained growth starts at a huge page) and keeps every extent it gets: the
/// `dalloc` hook is NULL, so freed extents stay in the arena and are reused. A
/// bump pointer is therefore the whole allocator; its high-water mark is the
/// number of bytes of the region the arena has ever touched.
struct CarveState: Sendable {
    /// First byte of the private range.
    let start: UInt
    /// One past the last byte of the private range.
    let limit: UInt
    /// Next uncarved byte; `start <= cursor <= limit`.
    var cursor: UInt
    /// Successful alloc-hook calls.
    var carves = 0
    /// Alloc-hook calls refused (range exhausted, or a `new_addr` other than `cursor`).
    var refusals = 0
    /// Bytes skipped to honour an alignment larger than the cursor's.
    var paddingBytes = 0

    init(start: UInt, limit: UInt) {
        self.start = start
        self.limit = limit
        self.cursor = start
    }

    /// Bytes of the range carved so far (the high-water mark: nothing is returned).
    var carvedBytes: Int { Int(cursor - start) }

    /// Carves `size` bytes aligned to `alignment`, at exactly `newAddress` if it
    /// is non-zero. Returns nil when that cannot be done.
    mutating func carve(at newAddress: UInt, size: Int, alignment: Int) -> UInt? {
        guard size > 0, alignment > 0, alignment & (alignment - 1) == 0 else {
            refusals += 1
            return nil
        }
        let mask = UInt(alignment) - 1
        let address: UInt
        if newAddress != 0 {
            // Only that address will do. Below the cursor everything already
            // belongs to the arena; above it, taking it would strand the gap.
            guard newAddress == cursor, newAddress & mask == 0 else {
                refusals += 1
                return nil
            }
            address = newAddress
        } else {
            // cursor <= limit and limit is a user-space address far below
            // UInt.max - alignment, so the round-up cannot wrap.
            address = (cursor &+ mask) & ~mask
        }
        // Compare by subtraction so a huge `size` cannot overflow.
        guard address <= limit, UInt(size) <= limit - address else {
            refusals += 1
            return nil
        }
        paddingBytes += Int(address - cursor)
        cursor = address + UInt(size)
        carves += 1
        return address
    }
}

/// One heap block per arena holding its `extent_hooks_t` followed by its carve
/// state, so a hook finds its state from the `extent_hooks_t *` jemalloc passes:
///
///     [ extent_hooks_t | padding | Lock<CarveState> ]
///     ^ the pointer given to arenas.create
///
/// The block outlives the arena: it is freed only after `arena.<i>.destroy`.
enum ExtentHookBlock {
    static let stateOffset: Int = {
        let align = MemoryLayout<Lock<CarveState>>.alignment
        return (MemoryLayout<extent_hooks_t>.size + align - 1) / align * align
    }()

    static var byteCount: Int { stateOffset + MemoryLayout<Lock<CarveState>>.size }

    static var alignment: Int {
        max(MemoryLayout<extent_hooks_t>.alignment, MemoryLayout<Lock<CarveState>>.alignment)
    }

    /// Allocates and fills a block for the private range `[start, limit)`.
    static func create(start: UInt, limit: UInt) -> UnsafeMutablePointer<extent_hooks_t> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: alignment)
        let hooks = raw.bindMemory(to: extent_hooks_t.self, capacity: 1)
        hooks.initialize(to: extent_hooks_t(
            alloc: extentAlloc,
            dalloc: nil,          // opt out: extents are retained and reused by the arena
            destroy: nil,         // nothing to undo: the region is unmapped with GuestMemory
            commit: extentCommit, // always committed: success
            decommit: nil,        // refuse: memory stays committed
            purge_lazy: nil,      // refuse: freed pages keep their bytes
            purge_forced: nil,
            split: extentSplitOrMerge,
            merge: extentMerge))
        (raw + stateOffset).bindMemory(to: Lock<CarveState>.self, capacity: 1)
            .initialize(to: Lock(CarveState(start: start, limit: limit)))
        return hooks
    }

    /// The carve state that follows `hooks`.
    static func state(_ hooks: UnsafeMutablePointer<extent_hooks_t>) -> UnsafeMutablePointer<Lock<CarveState>> {
        (UnsafeMutableRawPointer(hooks) + stateOffset).assumingMemoryBound(to: Lock<CarveState>.self)
    }

    /// Frees a block whose arena has been destroyed.
    static func destroy(_ hooks: UnsafeMutablePointer<extent_hooks_t>) {
        state(hooks).deinitialize(count: 1)
        hooks.deinitialize(count: 1)
        UnsafeMutableRawPointer(hooks).deallocate()
    }
}

// MARK: The hooks (C calling convention, called by jemalloc on any thread)

/// `extent_alloc`: carve from the private range. The carve happens under the
/// block's lock because jemalloc may call it concurrently (retained growth under
/// the arena's grow mutex, metadata blocks under the base mutex).
private let extentAlloc: @convention(c) (
    UnsafeMutablePointer<extent_hooks_t>?, UnsafeMutableRawPointer?, Int, Int,
    UnsafeMutablePointer<Bool>?, UnsafeMutablePointer<Bool>?, UInt32
) -> UnsafeMutableRawPointer? = { hooks, newAddress, size, alignment, zero, commit, _ in
    guard let hooks else { return nil }
    let address = ExtentHookBlock.state(hooks).pointee.withLock { state in
        state.carve(at: UInt(bitPattern: newAddress), size: size, alignment: alignment)
    }
    guard let address else { return nil }
    // Carved memory was never handed out before (the cursor only moves forward)
    // and the region is fresh anonymous memory: it is zero and committed.
    zero?.pointee = true
    commit?.pointee = true
    return UnsafeMutableRawPointer(bitPattern: address)
}

/// `extent_commit`: the region is always committed; report success.
private let extentCommit: @convention(c) (
    UnsafeMutablePointer<extent_hooks_t>?, UnsafeMutableRawPointer?, Int, Int, Int, UInt32
) -> Bool = { _, _, _, _, _, _ in false }

/// `extent_split`: allowed (false = success); the range is one mapping.
private let extentSplitOrMerge: @convention(c) (
    UnsafeMutablePointer<extent_hooks_t>?, UnsafeMutableRawPointer?, Int, Int, Int, Bool, UInt32
) -> Bool = { _, _, _, _, _, _, _ in false }

/// `extent_merge`: allowed (false = success); adjacent carves are contiguous.
private let extentMerge: @convention(c) (
    UnsafeMutablePointer<extent_hooks_t>?, UnsafeMutableRawPointer?, Int,
    UnsafeMutableRawPointer?, Int, Bool, UInt32
) -> Bool = { _, _, _, _, _, _, _ in false }
