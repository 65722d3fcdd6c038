import DMAPools
import Synchronization

/// A paged fragment of a frame (`skb_frag_t`): bytes `[offset, offset + length)`
/// of a page run.
@frozen
public struct Fragment: Hashable, Sendable {
    public var page: Page
    public var offset: Int
    public var length: Int

    @inlinable
    public init(page: Page, offset: Int, length: Int) {
        self.page = page
        self.offset = offset
        self.length = length
    }

    /// The fragment's first byte.
    @inlinable
    public var bytes: UnsafeMutableRawPointer { page.bytes + offset }
}

/// Errors a caller can recover from when building frames.
public enum FrameError: Error, Hashable, CustomStringConvertible {
    /// `MAX_SKB_FRAGS` (17) would be exceeded.
    case tooManyFragments(limit: Int)
    /// A fragment with no bytes, or one that runs past its page run.
    case invalidFragment(offset: Int, length: Int, runBytes: Int)

    public var description: String {
        switch self {
        case .tooManyFragments(let limit): "a frame holds at most \(limit) fragments (MAX_SKB_FRAGS)"
        case .invalidFragment(let offset, let length, let run):
            "fragment [\(offset), +\(length)) does not fit in its \(run)-byte page run"
        }
    }
}

/// `skb_shared_info` and the data it describes: the fragments, the data reference
/// count that clones share, and the metadata the NIC checks in verify mode.
public struct FrameData: ~Copyable {
    /// `MAX_SKB_FRAGS`.
    public static let maxFragments = 17

    /// `dataref`: the frame and each of its clones hold one.
    @usableFromInline let dataReference = Atomic<Int32>(0)
    /// The fragments (capacity `maxFragments`, allocated once with the slot).
    @usableFromInline let fragments: UnsafeMutablePointer<Fragment>
    @usableFromInline var fragmentCount: Int = 0
    /// `skb->pp_recycle`: fragment pages carrying a pool signature go back to their pool.
    @usableFromInline var ppRecycle = false
    /// Payload bytes.
    @usableFromInline var length: Int = 0
    /// The flow the payload belongs to and its offset in the flow's byte stream.
    @usableFromInline var flow: Int = 0
    @usableFromInline var streamOffset: UInt64 = 0
    /// Monotonic nanoseconds when the NIC finished with the data (0 = not yet).
    @usableFromInline let transmittedAt = Atomic<UInt64>(0)
    /// The linear head (`skb->head`) and how many of its bytes carry headers,
    /// or nil for a frame without one. Released with the data.
    @usableFromInline var head: SlabCache.Object? = nil
    @usableFromInline var headLength: Int = 0

    init() {
        fragments = .allocate(capacity: Self.maxFragments)
    }

    deinit { fragments.deallocate() }
}

/// The `sk_buff` analog: a handle on frame data. A frame and its clones share one
/// `FrameData`; each holds a data reference, and the fragments' pages are released
/// when the last one is freed.
///
/// `Frame` is a trivial handle (a slot index in its `FrameCache`), so frames move
/// through queues without ARC. Freeing a frame twice is a diagnosed trap.
@frozen
public struct Frame: Hashable, Sendable {
    /// The slot of this frame's header in its cache.
    public let slot: Int32

    @inlinable
    init(slot: Int32) { self.slot = slot }
}
