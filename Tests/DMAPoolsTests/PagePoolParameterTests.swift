import Testing
@testable import DMAPools
import DMAPoolsTestSupport

@Suite struct PagePoolParameterTests {
    static let device = try! DeviceRegistry().add(name: "eth0")

    @Test func defaultsAreValidAndTheRingSizeFollowsTheKernel() throws {
        try PagePoolParameters().validate()
        #expect(PagePoolParameters(poolSize: 0).ringSize == 1024)
        #expect(PagePoolParameters(poolSize: 100).ringSize == 100)
        #expect(PagePoolParameters(poolSize: 16384).ringSize == 16384)
        #expect(PagePoolParameters(poolSize: 40000).ringSize == 16384)
        // A typical RX pool and a TX pool (with the explicit extension flag).
        try PagePoolParameters(flags: [.dmaMap, .dmaSyncForDevice], dmaDirection: .fromDevice,
                               maxLength: 1500, offset: 256, device: Self.device).validate()
        try PagePoolParameters(flags: [.dmaMap, .transmit], dmaDirection: .toDevice, device: Self.device).validate()
        try PagePoolParameters(order: 9, flags: [.dmaMap, .dmaSyncForDevice], dmaDirection: .bidirectional,
                               maxLength: 2 << 20, device: Self.device).validate()
    }

    /// Every invalid combination, and the parameter its error must name.
    static let invalid: [(PagePoolParameters, String)] = [
        (PagePoolParameters(flags: PagePoolFlags(rawValue: 1 << 5)), "flags"),
        (PagePoolParameters(flags: PagePoolFlags(rawValue: 1 << 4 | 1)), "flags"),
        (PagePoolParameters(order: -1), "order"),
        (PagePoolParameters(order: 11), "order"),
        (PagePoolParameters(poolSize: -1), "poolSize"),
        // DMA_MAP: FROM_DEVICE or BIDIRECTIONAL only (the kernel's rule)...
        (PagePoolParameters(flags: .dmaMap, dmaDirection: .toDevice, device: device), "dmaDirection"),
        // ...unless the pool says it transmits; and a transmit pool never maps FROM_DEVICE.
        (PagePoolParameters(flags: [.dmaMap, .transmit], dmaDirection: .fromDevice, device: device), "dmaDirection"),
        (PagePoolParameters(flags: .transmit, dmaDirection: .toDevice), "flags"),
        (PagePoolParameters(flags: .dmaMap), "device"),
        // DMA_SYNC_DEV needs DMA_MAP and max_len > 0.
        (PagePoolParameters(flags: .dmaSyncForDevice, maxLength: 1500), "flags"),
        (PagePoolParameters(flags: [.dmaMap, .dmaSyncForDevice], maxLength: 0, device: device), "maxLength"),
        (PagePoolParameters(maxLength: -5), "maxLength"),
        (PagePoolParameters(offset: -1), "offset"),
        (PagePoolParameters(flags: [.dmaMap, .dmaSyncForDevice], maxLength: 4000, offset: 256, device: device), "offset"),
        (PagePoolParameters(cpu: -2), "cpu"),
        (PagePoolParameters(queueIndex: -1), "queueIndex"),
        (PagePoolParameters(name: ""), "name"),
        (PagePoolParameters(releaseRetryInterval: .zero), "releaseRetryInterval"),
        (PagePoolParameters(stallWarningInterval: .seconds(-1)), "stallWarningInterval"),
    ]

    @Test(arguments: 0..<invalid.count)
    func invalidCombinationNamesTheParameter(_ index: Int) {
        let (parameters, name) = Self.invalid[index]
        do {
            try parameters.validate()
            Issue.record("case \(index) (\(name)) was accepted")
        } catch {
            guard case .invalidParameter(let parameter, let why) = error else {
                Issue.record("case \(index): unexpected \(error)")
                return
            }
            #expect(parameter == name, "case \(index): \(why)")
            #expect(error.description.contains(name))
        }
    }

    @Test func poolCreationValidates() throws {
        let memory = try GuestMemory(.init(guestBytes: 16 << 20, swiotlbBytes: 4 << 20, hypercall: .free))
        let provider = PagePoolTestProvider(memory: memory)
        #expect(throws: PagePoolError.invalidParameter("order", "11 is outside 0...10 (MAX_PAGE_ORDER)")) {
            _ = try PagePool(.init(order: 11), provider: provider)
        }
        #expect(provider.attachCount == 0)
        let pool = try PagePool(.init(poolSize: 300, name: "rx0"), provider: provider)
        #expect(provider.attachCount == 1)
        #expect(pool.ringCapacity == 300)
        #expect(pool.description.contains("rx0"))
        #expect(pool.signature & 0xffff_ffff == PagePool.signatureMagic)
        pool.destroy()
        #expect(pool.isShutdownComplete)
        #expect(provider.detachCount == 1)
    }
}
