import ArgumentParser
import NetStackReports
import DMAPools

/// A confidential-VM layout and a short swiotlb exercise with real bounces.
struct Layout: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a confidential-VM layout and run a short swiotlb exercise.")

    @OptionGroup var guestOptions: GuestOptions

    @Option(parsing: .unconditional, help: "Mappings in the swiotlb exercise, 1...10000000.")
    var mappings: Int = 2000

    /// The exercise keeps up to 64 mappings of up to 64 KiB live.
    static let exerciseSWIOTLBBytes = 64 * 65536

    func validate() throws {
        guard (1...10_000_000).contains(mappings) else {
            throw ValidationError("invalid --mappings: \(mappings) must be in 1...10000000")
        }
        let swiotlb = try guestOptions.configuration().memory.swiotlbBytes
        guard swiotlb >= Self.exerciseSWIOTLBBytes else {
            throw ValidationError("invalid --swiotlb-mib: the exercise keeps up to 64 mappings of 64 KiB live, "
                                  + "so the swiotlb needs at least \(Self.exerciseSWIOTLBBytes >> 20) MiB, not \(swiotlb >> 20)")
        }
    }

    func run() throws {
        let guest = try Guest(guestOptions.configuration().memory)
        let memory = guest.memory
        let c = memory.configuration
        let swiotlb = guest.swiotlb
        print("Confidential VM layout")
        print("  guest memory        \(c.guestBytes >> 20) MiB: \(memory.pageCount) pages of \(PageGeometry.size) B, descriptors \((memory.pageCount * MemoryLayout<PageDescriptor>.stride) >> 10) KiB (\(MemoryLayout<PageDescriptor>.stride) B each)")
        print("  private domain      \(memory.privatePages.count) pages (\(memory.privatePages.count >> 8) MiB), general allocator: jemalloc arena \(guest.allocator.arenaIndex)")
        print("  shared domain       \(memory.sharedPageCount()) pages: the swiotlb pool")
        print("  swiotlb             \(c.swiotlbBytes >> 20) MiB = \(swiotlb.nslabs) slots of \(SWIOTLB.slotSize) B in \(swiotlb.nslabs / SWIOTLB.segmentSlots) segments, \(swiotlb.areaCount) areas (6% of memory clamped to 64 MiB..1 GiB)")
        print("  shared DMA bit      \(c.sharedBit) (DMA address = physical | 0x\(String(memory.sharedMask, radix: 16)))")
        print("  hypercall model     \(c.hypercall.perCallNanoseconds) ns/call + \(c.hypercall.perPageNanoseconds) ns/page, \(c.hypercall.charge.rawValue) (modelled, not measured)")

        // The exercise: map private pages for a bouncing device with mixed sizes,
        // keep up to 64 mappings live, and check the bounced bytes.
        let device = try guest.devices.add(name: "nic0")
        let source = try guest.allocator.allocatePages(order: 5)  // 128 KiB: room to slide a 64 KiB mapping
        defer { guest.allocator.freePages(source) }
        for i in 0..<source.byteCount { source.bytes.storeBytes(of: UInt8(truncatingIfNeeded: i &* 31 &+ 7), toByteOffset: i, as: UInt8.self) }
        let sizes = [64, 1500, 4096, 9000, 65536]
        var live: [(DMAAddress, Int)] = []
        var mismatches = 0
        for i in 0..<mappings {
            let size = sizes[i % sizes.count]
            let offset = (i * 977) % (source.byteCount - size + 1)
            let address = try guest.dma.mapPage(source, offset: offset, size: size, direction: .toDevice, device: device)
            if let physical = memory.physicalAddress(ofShared: address),
               memcmp(try memory.pointer(to: physical), source.bytes + offset, size) != 0 { mismatches += 1 }
            live.append((address, size))
            if live.count == 64 {
                for (a, s) in live { try guest.dma.unmapPage(a, size: s, direction: .toDevice, device: device) }
                live.removeAll(keepingCapacity: true)
            }
        }
        let peak = swiotlb.statistics
        for (a, s) in live { try guest.dma.unmapPage(a, size: s, direction: .toDevice, device: device) }
        let after = swiotlb.statistics
        print("")
        print("swiotlb exercise (\(mappings) DMA_TO_DEVICE mappings of \(sizes.map(String.init).joined(separator: "/")) B, up to 64 live)")
        print("  mappings made       \(guest.dma.statistics.maps) (bounced \(guest.dma.statistics.bouncedMaps))")
        print("  bytes bounced       \(after.bytesBouncedToDevice) to the device, \(after.bytesBouncedToCPU) back; \(mismatches) bounce slots differed from their source")
        print("  slots in use        \(peak.used) before the last unmap, \(after.used) after")
        print("  slots high-water    \(after.usedHighWater) of \(after.nslabs) (\(fixed(100 * Double(after.usedHighWater) / Double(after.nslabs), 2))%)")
        if mismatches != 0 || after.used != 0 { throw ExitCode(2) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
