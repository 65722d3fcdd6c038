import Testing
@testable import DMAPools

/// Memory a VM has resident is resident before anything is measured; memory
/// asked to stay on demand is not (mincore, on fresh mappings: deterministic).
@Suite struct GuestMemoryResidencyTests {
    @Test func theSWIOTLBAndThePrivatePrefixAreFaultedInAtBoot() throws {
        var c = GuestMemoryConfiguration(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free)
        c.residentPrivateBytes = 3 << 20   // rounded up to 4 MiB
        let memory = try GuestMemory(c)
        #expect(memory.residentPrivateBytes == 4 << 20)
        #expect(memory.residentPageCount(memory.swiotlbPages) == memory.swiotlbPages.count)
        let prefix = 0..<((4 << 20) >> PageGeometry.shift)
        #expect(memory.residentPageCount(prefix) == prefix.count)
        // Beyond the prefix nothing was touched.
        let rest = prefix.upperBound..<memory.privatePages.upperBound
        #expect(memory.residentPageCount(rest) == 0)
    }

    @Test func aGuestThatOptsOutIsFaultedInOnFirstTouchOnly() throws {
        var c = GuestMemoryConfiguration(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free)
        c.residentAtBoot = false
        c.residentPrivateBytes = 4 << 20
        c.directMapHugePages = false
        let memory = try GuestMemory(c)
        #expect(!memory.hugePagesAdvised)
        #expect(memory.residentPrivateBytes == 0)
        #expect(memory.residentPageCount(0..<memory.pageCount) == 0)
        memory.page(at: memory.swiotlbPages.lowerBound + 3).bytes.storeBytes(of: 1, as: UInt8.self)
        #expect(memory.residentPageCount(memory.swiotlbPages) == 1)
    }

    /// With the direct map on 2 MiB pages a first touch makes at most its
    /// own 2 MiB resident (all of it when the host granted the huge page,
    /// only the touched 4 KiB when it fell back), and never anything outside.
    @Test func aFirstTouchOnHugePagesStaysWithinItsTwoMebibytes() throws {
        var c = GuestMemoryConfiguration(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free)
        c.residentAtBoot = false
        let memory = try GuestMemory(c)
        let hugePage = 512
        let first = memory.swiotlbPages.lowerBound   // 2 MiB aligned: guest memory is
        memory.page(at: first + 3).bytes.storeBytes(of: 1, as: UInt8.self)
        let inside = memory.residentPageCount(first..<(first + hugePage))
        #expect(inside >= 1 && inside <= hugePage)
        #expect(memory.residentPageCount(0..<first) == 0)
        #expect(memory.residentPageCount((first + hugePage)..<memory.pageCount) == 0)
    }

    @Test func thePrivatePrefixIsAtMostThePrivatePart() throws {
        var c = GuestMemoryConfiguration(guestBytes: 64 << 20, swiotlbBytes: 8 << 20, hypercall: .free)
        c.residentPrivateBytes = 1 << 30
        let memory = try GuestMemory(c)
        #expect(memory.residentPrivateBytes == 56 << 20)
        #expect(memory.residentPageCount(0..<memory.pageCount) == memory.pageCount)
    }
}
