import DMAPools
import NetStack

/// A deliberately wrong design, for checks that must catch it (the tests and
/// the reliability campaign's `iommu-early-unmap-caught`): it unmaps each
/// fragment right after mapping it, before the NIC reads it (a use of a DMA
/// address after `dma_unmap`). Built on the same public plug-in interface as
/// every other design; never registered.
public final class EarlyUnmapDesign: GuestDesign, @unchecked Sendable {
    public override var name: String { "early-unmap" }
    public override func map(_ fragment: Fragment, socket: Socket, queue: TXQueue) throws(DMAError) -> FragmentMapping {
        let m = try mapThroughDMAAPI(fragment, queue: queue)
        try guest.dma.unmapPage(m.address, size: m.length, direction: .toDevice, device: queue.device)
        return FragmentMapping(address: m.address, length: m.length, kind: .direct)
    }
}

/// The kind of `EarlyUnmapDesign`.
public struct EarlyUnmapDesignKind: TransmitDesignKind {
    public init() {}
    public var name: String { "early-unmap" }
    public var summary: String { "planted defect: unmaps each fragment before the device reads it" }
    public func requirements(workload: Workload, configuration: ExperimentConfiguration) -> GuestRequirements { GuestRequirements() }
    public func makeDesign(in context: DesignContext) throws -> any TransmitDesign {
        EarlyUnmapDesign(guest: context.guest, device: context.device)
    }
}
