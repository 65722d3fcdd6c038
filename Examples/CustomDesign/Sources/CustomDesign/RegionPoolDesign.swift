import DMAPools
import NetStack

/// `region-pool`: per-CPU TX page_pools over a `SharedRegionProvider`. It
/// keeps the page-pool design's pools and page handling (`PagePoolDesign` is
/// open for this) and adds what the region needs: the region is closed
/// (converted back, returned) once the pools have drained, and the report
/// shows the region's own counters.
final class RegionPoolDesign: PagePoolDesign, @unchecked Sendable {
    override var name: String { "region-pool" }
    let region: SharedRegionProvider

    init(context: DesignContext, region: SharedRegionProvider) throws {
        self.region = region
        try super.init(guest: context.guest, device: context.device, senders: context.workload.senders,
                       provider: region, ringSize: context.configuration.poolRingSize)
    }

    override func shutdown() throws {
        try super.shutdown()   // destroys the pools and waits for their pages
        try region.close()
    }

    override func reportFigures() -> [DesignFigure] {
        super.reportFigures() + [
            .count("region pages", region.pageCount, unit: "pages"),
            .count("region released_refcnt", region.releasedWithOtherReferences.load(ordering: .relaxed), unit: "pages"),
            .count("region pages home late", region.cameHomeLate.load(ordering: .relaxed), unit: "pages"),
        ]
    }
}

/// The design as a plug-in: what it needs of the guest (the region reserved
/// in private memory; fallback pages bounce) and its factory. The factory runs
/// before the clock starts, so converting the region is set-up, not measured
/// time (the hypercalls are still counted on their own line).
struct RegionPoolDesignKind: TransmitDesignKind {
    var provider = SharedRegionProviderKind()

    var name: String { "region-pool" }
    var summary: String { "per-CPU TX page_pools over a region converted to shared once at start" }

    func requirements(workload: Workload, configuration: ExperimentConfiguration) -> GuestRequirements {
        GuestRequirements(bounces: true).union(
            provider.requirements(pools: workload.senders, order: PageGeometry.socketFragOrder, configuration: configuration))
    }

    func makeDesign(in context: DesignContext) throws -> any TransmitDesign {
        guard let region = try provider.makeProvider(in: context) as? SharedRegionProvider else {
            preconditionFailure("SharedRegionProviderKind makes SharedRegionProviders")
        }
        return try RegionPoolDesign(context: context, region: region)
    }
}
