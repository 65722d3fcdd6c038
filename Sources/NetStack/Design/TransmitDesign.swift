import DMAPools

/// How one fragment was made visible to the device.
@frozen
public struct FragmentMapping: Sendable, Hashable {
    /// How the bytes reach device-visible memory.
    public enum Kind: UInt8, Sendable {
        /// Copied into a swiotlb bounce slot at map time (copy 2); unmapped at completion.
        case bounced
        /// Already in shared memory with a DMA address of its own: nothing copied.
        case direct
        /// Converted to shared in place by a modelled hypercall; converted back at completion.
        case convertedInPlace
        /// Mapped through the device's IOMMU (an IOVA, nothing copied); unmapped at completion.
        case translated
    }

    public var address: DMAAddress
    public var length: Int
    public var kind: Kind

    @inlinable
    public init(address: DMAAddress, length: Int, kind: Kind) {
        self.address = address
        self.length = length
        self.kind = kind
    }
}

/// Where a design's frames keep their linear heads (`skb->head`, the
/// protocol headers in front of the paged payload; `Workload.headerBytes`).
public enum LinearHeadPlacement: Sendable, Hashable {
    /// `kmalloc` (a slab cache over the general allocator's private pages):
    /// `dma_map_single` bounces the head into a swiotlb slot (a real copy),
    /// unmapped at completion. Today's kernel, for every design.
    case generalAllocator
    /// A slab cache over the guest's pre-decrypted allocator
    /// (`DecryptedSlabCache`): the head is shared from the start and mapped by
    /// its page's stored DMA address plus its offset, nothing copied.
    case preDecryptedSlab
}

/// What differs between TX designs. Sockets, queues, the NIC and the peer are
/// common; a design decides where socket pages come from, how fragment page
/// references are kept and released, and how a fragment is mapped for the device.
///
/// Calling contexts, as in the kernel:
/// - `allocateSocketPage`, `releaseSocketPage`, `isSoleReference` and
///   `retainFragment`: the sender's thread (process context, `tcp_sendmsg`).
/// - `map`/`unmap`: the TX queue's thread (the TX softirq under HARD_TX_LOCK).
/// - `releaseFragment`: whichever thread drops a frame's last data reference
///   (the sender on ACK, or the queue on completion).
public protocol TransmitDesign: AnyObject, Sendable {
    /// The design's name as the reports print it (`bounce`, `frag-refill`, ...).
    var name: String { get }

    /// `sk_page_frag_refill`'s allocation: a page run of `order` for `socket`'s
    /// page fragment, holding one reference for the socket, or nil when none can
    /// be had at that order (the socket then tries order 0).
    func allocateSocketPage(order: Int, for socket: Socket) -> Page?

    /// Whether the socket alone holds `page` (`page_ref_count(page) == 1`), so
    /// its page fragment can restart at offset 0.
    func isSoleReference(_ page: Page) -> Bool

    /// A new fragment references `page` (`get_page`, or a pp fragment reference).
    func retainFragment(_ page: Page)

    /// The socket lets go of its page fragment's page (`put_page`).
    func releaseSocketPage(_ page: Page)

    /// `skb_frag_unref`: a frame's data released a fragment on `page`.
    func releaseFragment(_ page: Page, ppRecycle: Bool)

    /// Whether frames built from this design's pages are marked `pp_recycle`.
    var marksFramesForRecycle: Bool { get }

    /// Where the frames' linear heads live (read once, when the simulation
    /// is built). Default `.generalAllocator`.
    var linearHeadPlacement: LinearHeadPlacement { get }

    /// Maps one fragment for the device, in the queue's context.
    func map(_ fragment: Fragment, socket: Socket, queue: TXQueue) throws(DMAError) -> FragmentMapping

    /// Undoes `map` at completion, in the queue's context.
    func unmap(_ mapping: FragmentMapping, fragment: Fragment, queue: TXQueue) throws(DMAError)

    /// Called once on the queue's thread before it transmits (binds per-queue state).
    func queueStarted(_ queue: TXQueue)

    /// Called once on a sender's thread before it sends (binds per-CPU state).
    func senderStarted(_ sender: Int)

    /// Called once on a sender's thread after its sockets have released everything.
    func senderFinished(_ sender: Int)

    /// Releases the design's own resources (pools) after every frame is freed.
    func shutdown() throws

    /// Whether the transmit path sets the per-CPU `current_tx_socket` around
    /// each frame's `ndo_start_xmit` for this design (the seed patch's change
    /// to `netdev_start_xmit`), so that its `map` can read it through
    /// `TXQueue.currentTXSocket(mapping:)`. Default false.
    var setsCurrentTXSocket: Bool { get }

    /// Called on the socket's sender thread when its connection is closed
    /// and its `struct sock` freed (`--connection-bytes`), after every frame
    /// of it was acknowledged and its page fragment released, before the
    /// flow's next connection opens: per-socket state of the design starts
    /// afresh for it.
    func socketClosed(_ socket: Socket)

    /// Design-specific figures for the report (pool counters, fallbacks...),
    /// typed: a name, a unit, a counter or a label.
    func reportFigures() -> [DesignFigure]
}

extension TransmitDesign {
    public var linearHeadPlacement: LinearHeadPlacement { .generalAllocator }
    public func queueStarted(_ queue: TXQueue) {}
    public func senderStarted(_ sender: Int) {}
    public func senderFinished(_ sender: Int) {}
    public func shutdown() throws {}
    public func reportFigures() -> [DesignFigure] { [] }
    public var setsCurrentTXSocket: Bool { false }
    public func socketClosed(_ socket: Socket) {}
}
