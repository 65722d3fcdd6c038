import DMAPools
import Testing
@testable import NetStack

/// Frames' linear heads (`Workload.headerBytes`): written by the sender,
/// DMA'd with the frame and checked by the NIC; a `kmalloc`'d head bounces
/// (one copy per header byte), a pre-decrypted slab head does not; counted
/// apart from the payload; every head object comes home.
@Suite struct LinearHeadTests {
    func workload(headerBytes: Int) -> Workload {
        var w = Small.workload(seconds: 0.15)
        w.headerBytes = headerBytes
        return w
    }

    @Test func aKmallocHeadBouncesOncePerHeaderByteAndThePayloadFiguresStayThePayloads() throws {
        let r = try Experiment.run(.bounce, workload: workload(headerBytes: 128), configuration: Small.configuration)
        #expect(r.passed, "\(r.firstProblem ?? "")")
        #expect(r.headBytes > 0 && r.headBytes % 128 == 0)
        #expect(r.headVerifiedBytes == r.headBytes)
        #expect(r.headBytesBounced == r.headBytes && r.headBytesDirect == 0)
        #expect(r.headCopiesPerByte == 1)
        // The payload's copy figures do not include the heads' bounces.
        #expect(r.bytesCopiedByDMALayer == r.bytesMappedBounced)
        #expect(r.headObjectsLost == 0 && r.lostPages == 0)
    }

    @Test func aPreDecryptedHeadIsMappedByItsStoredAddressWithoutABounce() throws {
        let r = try Experiment.run(.decryptedPool, workload: workload(headerBytes: 100), configuration: Small.configuration)
        #expect(r.passed, "\(r.firstProblem ?? "")")
        #expect(r.headBytes > 0 && r.headBytes % 100 == 0)
        #expect(r.headVerifiedBytes == r.headBytes)
        #expect(r.headBytesBounced == 0 && r.headBytesDirect == r.headBytes)
        #expect(r.headCopiesPerByte == 0)
        #expect(r.headSlabPeakPages > 0 && r.headObjectsLost == 0 && r.lostPages == 0)
    }

    /// Behind an IOMMU (no encryption) a `kmalloc`'d head is translated, not
    /// bounced, and its entries are cleared at completion: a leaked entry
    /// would count as a lost page.
    @Test func behindAnIOMMUAHeadIsTranslatedAndUnmappedNotBounced() throws {
        var c = Small.configuration
        c.platform = .iommu(IOMMUConfiguration(mode: .strict, costs: .free))
        let r = try Experiment.run(.bounce, workload: workload(headerBytes: 128), configuration: c)
        #expect(r.passed, "\(r.firstProblem ?? "")")
        #expect(r.headBytes > 0 && r.headVerifiedBytes == r.headBytes && r.headBytesBounced == 0)
        #expect(r.lostPages == 0 && r.headObjectsLost == 0)
    }

    @Test func aSharedRunRefusesAPlatformWithoutEncryption() {
        var c = Small.configuration
        c.platform = .iommu(IOMMUConfiguration(costs: .free))
        #expect(throws: ParameterError.self) { try SharedSimulation.check(c) }
    }

    @Test func withoutHeadsNothingChanges() throws {
        let r = try Experiment.run(.decryptedPool, workload: workload(headerBytes: 0), configuration: Small.configuration)
        #expect(r.passed, "\(r.firstProblem ?? "")")
        #expect(r.headBytes == 0 && r.headBytesBounced == 0 && r.headBytesDirect == 0 && r.headSlabPeakPages == 0)
    }

    /// A user's design chooses where heads live through the plug-in
    /// interface (`linearHeadPlacement`), not by its name: general socket
    /// pages (bounced) with pre-decrypted heads (not bounced).
    @Test func aUsersDesignChoosesItsHeadPlacementThroughThePluginInterface() throws {
        final class HeadsOnlyDesign: GuestDesign, @unchecked Sendable {
            override var name: String { "heads-only" }
            override var linearHeadPlacement: LinearHeadPlacement { .preDecryptedSlab }
        }
        struct HeadsOnlyKind: TransmitDesignKind {
            var name: String { "heads-only" }
            var summary: String { "bounced payload, pre-decrypted heads" }
            func requirements(workload: Workload, configuration: ExperimentConfiguration) -> GuestRequirements {
                GuestRequirements(decryptedAllocator: true)
            }
            func makeDesign(in context: DesignContext) throws -> any TransmitDesign {
                HeadsOnlyDesign(guest: context.guest, device: context.device)
            }
        }
        let r = try Experiment.run(HeadsOnlyKind(), workload: workload(headerBytes: 64), configuration: Small.configuration)
        #expect(r.passed, "\(r.firstProblem ?? "")")
        #expect(r.bytesMappedBounced > 0, "its payload bounces")
        #expect(r.headBytes > 0 && r.headBytesBounced == 0 && r.headBytesDirect == r.headBytes)
    }

    @Test func aFramesHeadGoesBackToItsCacheWithTheLastDataReference() throws {
        let guest = try Guest(Small.configuration.memory)
        let heads = SlabCache(allocator: guest.decrypted)
        let cache = FrameCache(releaseFragment: { _, _ in }, releaseHead: { heads.free($0) })
        let frame = cache.allocate(flow: 0, streamOffset: 0)
        let head = try heads.allocate(size: 128)
        #expect(head.dmaAddress == head.page.dmaAddress + (head.bytes - head.page.bytes))
        cache.attachHead(head, length: 100, to: frame)
        let clone = cache.clone(frame)
        cache.free(frame)
        #expect(heads.statistics.liveObjects == 1, "the clone still holds the data and its head")
        #expect(cache.head(of: clone)?.length == 100)
        cache.free(clone)
        #expect(heads.statistics.liveObjects == 0)
        #expect(heads.shrink() == 0 && guest.lostPages() == 0)
    }

    @Test func aHeadLargerThanASlabObjectIsRefusedByName() {
        var w = Workload()
        w.headerBytes = 2049
        #expect(throws: ParameterError.self) { try w.validate() }
        do { try w.validate() } catch { #expect(error.parameter == "header-bytes") }
        w.headerBytes = -1
        #expect(throws: ParameterError.self) { try w.validate() }
    }
}
