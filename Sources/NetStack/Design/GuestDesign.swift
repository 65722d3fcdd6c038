import DMAPools
import Synchronization

/// The common ground of the designs: a guest, the NIC's device, page references
/// kept as the kernel keeps them for ordinary pages (`get_page`/`put_page`), and
/// mapping through the DMA API (which bounces in a confidential VM, and maps
/// and unmaps an IOVA per fragment behind an IOMMU).
/// Designs override what they change.
open class GuestDesign: TransmitDesign, @unchecked Sendable {
    public let guest: Guest
    public let device: Device
    open var name: String { "base" }
    open var marksFramesForRecycle: Bool { false }
    /// `kmalloc`'d heads, bounced at map, unless a design says otherwise.
    open var linearHeadPlacement: LinearHeadPlacement { .generalAllocator }

    public init(guest: Guest, device: Device) {
        self.guest = guest
        self.device = device
    }

    /// `alloc_pages` from the general allocator (private memory).
    open func allocateSocketPage(order: Int, for socket: Socket) -> Page? {
        try? guest.allocator.allocatePages(order: order)
    }

    open func isSoleReference(_ page: Page) -> Bool { page.head.referenceCount == 1 }

    open func retainFragment(_ page: Page) { page.head.retain() }

    open func releaseSocketPage(_ page: Page) { guest.putPage(page) }

    open func releaseFragment(_ page: Page, ppRecycle: Bool) { guest.putPage(page) }

    /// `skb_frag_dma_map`: the DMA API decides (bounce, or the patch's zero-copy bypass).
    open func map(_ fragment: Fragment, socket: Socket, queue: TXQueue) throws(DMAError) -> FragmentMapping {
        try mapThroughDMAAPI(fragment, queue: queue)
    }

    open func unmap(_ mapping: FragmentMapping, fragment: Fragment, queue: TXQueue) throws(DMAError) {
        switch mapping.kind {
        case .bounced, .translated:
            try guest.dma.unmapPage(mapping.address, size: mapping.length, direction: .toDevice, device: queue.device)
        case .direct, .convertedInPlace:
            // A zero-copy swiotlb run: `dma_unmap_page` would do nothing; a pool
            // or pre-decrypted page: the driver never mapped it.
            break
        }
    }

    public final func mapThroughDMAAPI(_ fragment: Fragment, queue: TXQueue) throws(DMAError) -> FragmentMapping {
        let mapping = try guest.dma.map(fragment.page, offset: fragment.offset, size: fragment.length,
                                        direction: .toDevice, device: queue.device)
        let kind: FragmentMapping.Kind = switch mapping.kind {
        case .bounced: .bounced
        case .translated: .translated
        case .direct, .zeroCopyRun: .direct
        }
        return FragmentMapping(address: mapping.address, length: fragment.length, kind: kind)
    }

    /// Maps a fragment of a page that carries its own DMA address (a pool or
    /// pre-decrypted page: `page_pool_get_dma_addr`), without the DMA API.
    public final func mapByStoredAddress(_ fragment: Fragment, queue: TXQueue) throws(DMAError) -> FragmentMapping {
        let address = fragment.page.head.dmaAddress + fragment.offset
        guard queue.device.canAddress(address, size: fragment.length) else {
            throw .addressNotReachable(device: queue.device.name, address: address, size: fragment.length)
        }
        return FragmentMapping(address: address, length: fragment.length, kind: .direct)
    }

    open func queueStarted(_ queue: TXQueue) {}
    open func senderStarted(_ sender: Int) {}
    open func senderFinished(_ sender: Int) {}
    open func shutdown() throws {}
    open func reportFigures() -> [DesignFigure] { [] }
    open var setsCurrentTXSocket: Bool { false }
    open func socketClosed(_ socket: Socket) {}
}

/// `bounce`: today's kernel. Socket pages come from the general allocator
/// (private); `dma_map` copies every fragment into a swiotlb slot in the TX
/// softirq (copy 2), serialised per queue.
public final class BounceDesign: GuestDesign, @unchecked Sendable {
    public override var name: String { "bounce" }
}

/// The `bounce` design kind: a plain guest, nothing set up beyond it.
public struct BounceDesignKind: TransmitDesignKind {
    public init() {}
    public var name: String { "bounce" }
    public var summary: String { "today's kernel: general (private) socket pages, every fragment bounced through swiotlb at map" }
    public func requirements(workload: Workload, configuration: ExperimentConfiguration) -> GuestRequirements {
        GuestRequirements()
    }
    public func makeDesign(in context: DesignContext) throws -> any TransmitDesign {
        BounceDesign(guest: context.guest, device: context.device)
    }
}

extension TransmitDesignKind where Self == BounceDesignKind {
    /// `bounce`: today's kernel.
    public static var bounce: BounceDesignKind { BounceDesignKind() }
}
