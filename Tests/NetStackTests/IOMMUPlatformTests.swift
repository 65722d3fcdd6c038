import Testing
import NetStackTestSupport
@_spi(DMAPoolsSupport) import DMAPools
@testable import NetStack

/// `--platform iommu`: no encryption, devices behind an IOMMU, nothing bounces.
/// Serialized: its runs are short, and a dozen at once beside the other
/// suites' can starve one of the two cores' time until it moves nothing.
@Suite(.serialized) struct IOMMUPlatformTests {
    static func configuration(_ mode: IOMMUMode, provider: any PagePoolProviderKind = .system) -> ExperimentConfiguration {
        var c = Small.configuration
        c.platform = .iommu(IOMMUConfiguration(mode: mode, costs: .free))
        c.poolProvider = provider
        return c
    }

    static let applicable = ["bounce", "page-pool"]

    @Test(arguments: applicable, IOMMUMode.allCases)
    func everyByteArrivesNothingIsLostAndNothingBounces(_ name: String, _ mode: IOMMUMode) throws {
        let kind = try DesignRegistry.shared.design(named: name)
        let r = try Experiment.run(kind, workload: Small.workload(), configuration: Self.configuration(mode))
        #expect(r.passed, "\(r.firstProblem ?? "")")
        #expect(r.lostPages == 0 && r.dmaFaults == 0 && r.iommu.translationFaults == 0 && r.iommu.badUnmaps == 0)
        #expect(r.bytesCopiedByDMALayer == 0 && r.copiesPerByte < 1.01, "copy 1 only: \(r.copiesPerByte)")
        #expect(r.platform == "iommu" && r.iommu.maps > 0)
        if mode == .strict { #expect(r.iommu.flushes == 0) } else { #expect(r.iommu.invalidations == 0) }
    }

    @Test func theGeneralPageDesignMapsAndUnmapsEveryFragment() throws {
        let r = try Experiment.run(.bounce, workload: Small.workload(), configuration: Self.configuration(.strict))
        #expect(r.passed, "\(r.firstProblem ?? "")")
        #expect(r.iommu.maps == r.iommu.unmaps && r.iommu.invalidations == r.iommu.unmaps)
        #expect(r.iommu.pteWrites == r.iommu.pteClears)
        // One mapping per fragment, and no fragment is larger than a 32 KiB socket page.
        #expect(Double(r.iommu.maps) >= Double(r.payloadBytes) / 32768, "\(r.iommu.maps) maps for \(r.payloadBytes) bytes")
    }

    @Test func thePagePoolMapsOncePerPageNotPerFrame() throws {
        let pool = try Experiment.run(.pagePool, workload: Small.workload(), configuration: Self.configuration(.strict))
        #expect(pool.passed, "\(pool.firstProblem ?? "")")
        #expect(pool.iommu.unmaps == 0, "pool pages keep their IOVA while they recycle")
        let allocations = pool.designFigures[named: "alloc fast/slow/empty/refill"]?.counts ?? []
        let fallbacks = pool.designFigures[named: "fallbacks to general pages"]?.count ?? -1
        #expect(fallbacks == 0)
        // Pages that entered a pool: the slow path's (empty) fills of up to 64.
        #expect(allocations.count == 4 && pool.iommu.maps <= 64 * (allocations[1] + allocations[2]))
        #expect(pool.iommu.pteWrites == 8 * pool.iommu.maps, "each map is one whole order-3 pool page")
    }

    @Test func aDesignThatUnmapsBeforeTheNICReadsIsCaught() throws {
        let r = try Experiment.run(EarlyUnmapDesignKind(), workload: Small.workload(), configuration: Self.configuration(.strict))
        #expect(r.dmaFaults > 0 && !r.passed, "every read of an unmapped IOVA must fault")
        #expect(r.iommu.translationFaults == r.dmaFaults)
        #expect(r.lostPages == 0)
    }

    @Test func theNICRefusesAnIOVAThatIsNotMapped() throws {
        let guest = try Guest(.init(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free),
                              platform: .iommu(IOMMUConfiguration(costs: .free)))
        let device = try guest.devices.add(name: "nic0")
        let nic = NICRing(memory: guest.memory, device: device, verify: false)
        let page = try guest.allocator.allocatePages(order: 0)
        let address = try guest.dma.mapPage(page, offset: 0, size: 4096, direction: .toDevice, device: device)
        #expect(nic.consume(address, length: 4096, flow: 0, streamOffset: 0))
        try guest.dma.unmapPage(address, size: 4096, direction: .toDevice, device: device)
        #expect(!nic.consume(address, length: 4096, flow: 0, streamOffset: 0))
        #expect(nic.statistics.dmaFaults == 1)
        guest.allocator.freePages(page)
    }

    @Test(arguments: ["frag-refill", "decrypted-pool", "inline-decrypt"])
    func theConfidentialDesignsAreRefusedByName(_ name: String) throws {
        let kind = try DesignRegistry.shared.design(named: name)
        #expect(kind.unsupportedReason(on: Self.configuration(.strict).platform) != nil)
        #expect(kind.unsupportedReason(on: .confidential) == nil)
        do {
            try Experiment.check([kind], workload: Small.workload(), configuration: Self.configuration(.strict))
            Issue.record("\(name) ran on --platform iommu")
        } catch ExperimentError.invalid(.invalid(let parameter, let reason)) {
            #expect(parameter == "designs" && reason.contains("not applicable"), "\(reason)")
        }
    }

    @Test(arguments: ["swiotlb", "decrypted"])
    func theConfidentialProvidersAreRefusedByName(_ name: String) throws {
        let provider = try DesignRegistry.shared.provider(named: name)
        do {
            try Experiment.check([.pagePool], workload: Small.workload(), configuration: Self.configuration(.strict, provider: provider))
            Issue.record("provider \(name) ran on --platform iommu")
        } catch ExperimentError.invalid(.invalid(let parameter, _)) {
            #expect(parameter == "provider")
        }
        var coco = Small.configuration
        coco.poolProvider = .system
        #expect(throws: ExperimentError.self) { try Experiment.check([.pagePool], workload: Small.workload(), configuration: coco) }
    }

    @Test func costsOutOfRangeAreRefusedByName() {
        var c = Self.configuration(.strict)
        c.platform = .iommu(IOMMUConfiguration(costs: IOMMUCostModel(mapNanoseconds: -1, pteNanoseconds: 0, invalidateNanoseconds: 0,
                                                                      flushNanoseconds: 0, charge: .spin)))
        #expect(throws: ParameterError.invalid(parameter: "iommu-map-ns", reason: "-1 must be in 0...1000000 ns (1 ms)")) { try c.validate() }
        c.platform = .iommu(IOMMUConfiguration(flushQueueSize: 0))
        #expect(throws: ParameterError.self) { try c.validate() }
    }
}
