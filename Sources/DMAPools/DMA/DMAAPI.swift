/// The streaming DMA API (`dma_map_page` / `dma_unmap_page` / `dma_sync_single_*`)
/// over dma-direct and swiotlb, with the seed patch's zero-copy bypass.
///
/// Mapping rules, in order:
/// 1. `device.checkPresent()` (a removed device fails and is counted).
/// 2. A device that must bounce (every device of a confidential VM):
///    - a page of a swiotlb zero-copy run maps to its own bus address with no
///      copy, when the device's mask reaches it (the patch's `swiotlb_map`);
///      unmap and sync of such an address do nothing (`__swiotlb_tbl_unmap_single`);
///    - anything else bounces through swiotlb, and the mapping is the bounce
///      slot's unencrypted bus address; a result the device cannot address is
///      released and fails with `.addressNotReachable`.
/// 3. A device that does not bounce: shared pages map to their unencrypted bus
///    address; private pages fail with `.privateMemory`.
///
/// 4. A device behind an IOMMU (a platform without encryption): any guest page
///    is mapped through the IOMMU (an IOVA, its entries written); unmap clears
///    them (`IOMMU.unmap`), sync checks the range is mapped and copies nothing.
///
/// Unmap and sync take the path their address names, as `dma_direct_unmap_page`
/// does: an address inside the swiotlb pool is a bounce mapping (or a zero-copy
/// run), anything else a direct mapping. Direct mappings are not tracked (the
/// kernel keeps no record of them either); their unmap only checks that the
/// address names shared guest memory.
public final class DMAAPI: @unchecked Sendable {
    public let memory: GuestMemory
    public let swiotlb: SWIOTLB
    let counters: PerCPUCounters

    /// - Precondition: `swiotlb` lives in `memory`.
    public init(memory: GuestMemory, swiotlb: SWIOTLB) {
        precondition(swiotlb.memory === memory, "DMAAPI: swiotlb belongs to another GuestMemory")
        self.memory = memory
        self.swiotlb = swiotlb
        self.counters = PerCPUCounters(counters: DMACounter.allCases.count)
    }


    // MARK: Map

    /// Maps `size` bytes at `offset` into `page` (`dma_map_page_attrs`) for
    /// `device` and returns the bus address the device must use.
    /// `map(_:offset:size:direction:device:)` also says what kind of mapping it made.
    ///
    /// `page` may be any page of a compound run; `offset + size` must stay inside
    /// the run.
    ///
    /// - Throws: `.deviceRemoved`; `.invalidArgument` for a bad offset or size;
    ///   `.privateMemory` when a non-bouncing device is given private memory;
    ///   `.addressNotReachable`; the swiotlb errors of `SWIOTLB.mapSingle`.
    public func mapPage(_ page: Page, offset: Int, size: Int, direction: DMADirection,
                        device: Device) throws(DMAError) -> DMAAddress {
        try map(page, offset: offset, size: size, direction: direction, device: device).address
    }

    /// `mapPage`, returning the kind of mapping made with the address: a
    /// bounce through swiotlb (unmap it: it holds slots and may copy back), a
    /// swiotlb zero-copy run used in place, or a direct mapping of shared
    /// memory (neither needs anything at unmap). Callers need not re-derive the
    /// kind from the page's owner, which cannot tell, for example, a zero-copy
    /// run the device cannot reach (bounced after all).
    public func map(_ page: Page, offset: Int, size: Int, direction: DMADirection,
                    device: Device) throws(DMAError) -> DMAMapping {
        try device.checkPresent()
        let head = page.head
        // Bytes from `page` to the end of its run: a run is at most 2^9 pages.
        let runBytes = head.byteCount &- (page.descriptor - head.descriptor) &<< PageGeometry.shift
        // runBytes - offset: 0 <= offset < runBytes by the time it is evaluated.
        guard offset >= 0, size > 0, offset < runBytes, size <= runBytes &- offset else {
            throw badRange(page, offset, size, runBytes)
        }
        // Inside guest memory: offset < runBytes.
        let physical = PhysicalAddress(page.physicalAddress.rawValue &+ UInt64(offset))
        if let iommu = device.iommu {
            // No encryption: any guest page may be mapped; the run is contiguous.
            let address = try iommu.map(physical, size: size, device: device)
            guard device.canAddress(address, size: size) else {
                try? iommu.unmap(address, size: size, device: device)
                throw DMAError.addressNotReachable(device: device.name, address: address, size: size)
            }
            return DMAMapping(address: address, kind: .translated)
        }
        if device.mustBounce {
            if head.owner == .swiotlbZeroCopy && swiotlb.contains(physical) {
                let address = memory.unencryptedDMAAddress(of: physical)
                if device.canAddress(address, size: size) {
                    counters.add(DMACounter.zeroCopyMaps.rawValue)
                    return DMAMapping(address: address, kind: .zeroCopyRun)
                }
            }
            return DMAMapping(address: try bounce(physical, size: size, direction: direction, device: device), kind: .bounced)
        }
        return DMAMapping(address: try mapDirect(page, physical, size: size, device: device), kind: .direct)
    }

    /// `swiotlb_map`: bounce, then check the device can reach the bounce slot.
    @inline(__always)
    func bounce(_ physical: PhysicalAddress, size: Int, direction: DMADirection,
                device: Device) throws(DMAError) -> DMAAddress {
        let tlb = try swiotlb.mapSingle(device: device, original: physical, mappingSize: size,
                                        allocAlignMask: 0, direction: direction)
        let address = memory.unencryptedDMAAddress(of: tlb)
        guard device.canAddress(address, size: size) else {
            // Release without copying back (DMA_ATTR_SKIP_CPU_SYNC).
            try? swiotlb.unmapSingle(device: device, tlbAddress: tlb, mappingSize: size,
                                     direction: direction, skipCPUSync: true)
            throw DMAError.addressNotReachable(device: device.name, address: address, size: size)
        }
        let stripe = counters.stripe()
        stripe[DMACounter.bouncedMaps.rawValue].wrappingAdd(1, ordering: .relaxed)
        stripe[DMACounter.bytesCopied.rawValue].wrappingAdd(size, ordering: .relaxed)
        return address
    }

    /// dma-direct for a device that does not bounce: shared memory only.
    @inline(__always)
    func mapDirect(_ page: Page, _ physical: PhysicalAddress, size: Int,
                   device: Device) throws(DMAError) -> DMAAddress {
        // Every page the range touches must be shared. The range lies inside the
        // page's run (checked by the caller), so these page offsets are small.
        let fromPage = physical.rawValue &- page.physicalAddress.rawValue
        let first = Int(truncatingIfNeeded: fromPage >> UInt64(PageGeometry.shift))
        let last = Int(truncatingIfNeeded: (fromPage &+ UInt64(size &- 1)) >> UInt64(PageGeometry.shift))
        for i in first...last {
            let touched = Page(descriptor: page.descriptor + i)
            if touched.domain != .shared { throw DMAError.privateMemory(touched.physicalAddress) }
        }
        let address = memory.unencryptedDMAAddress(of: physical)
        guard device.canAddress(address, size: size) else {
            throw DMAError.addressNotReachable(device: device.name, address: address, size: size)
        }
        counters.add(DMACounter.directMaps.rawValue)
        return address
    }

    // MARK: Unmap

    /// Ends a mapping (`dma_unmap_page_attrs`). A bounce mapping copies back for
    /// `DMA_FROM_DEVICE` / `DMA_BIDIRECTIONAL` and frees its slots; a zero-copy run
    /// stays allocated (it is freed with its pages); a direct mapping needs nothing.
    ///
    /// - Parameter skipCPUSync: `DMA_ATTR_SKIP_CPU_SYNC`: no copy back, even
    ///   for `DMA_FROM_DEVICE` (page_pool's scrub unmaps pages it holds no
    ///   reference to, so it must not write them).
    /// - Throws: `.deviceRemoved`; `.notMapped` when `address` is not a live
    ///   mapping; `.invalidArgument` when `size` exceeds the mapping.
    public func unmapPage(_ address: DMAAddress, size: Int, direction: DMADirection,
                          device: Device, skipCPUSync: Bool = false) throws(DMAError) {
        try device.checkPresent()
        if let iommu = device.iommu {
            try iommu.unmap(address, size: size, device: device)
            return
        }
        let physical = try resolve(address)
        if swiotlb.contains(physical) {
            if isZeroCopyAddress(physical) {
                counters.add(DMACounter.zeroCopyUnmaps.rawValue)
                return
            }
            try swiotlb.unmapSingle(device: device, tlbAddress: physical, mappingSize: size,
                                    direction: direction, skipCPUSync: skipCPUSync)
            let stripe = counters.stripe()
            stripe[DMACounter.bouncedUnmaps.rawValue].wrappingAdd(1, ordering: .relaxed)
            if direction.copiesFromDevice && !skipCPUSync {
                stripe[DMACounter.bytesCopied.rawValue].wrappingAdd(size, ordering: .relaxed)
            }
            return
        }
        try checkDirect(address, physical, device: device)
        counters.add(DMACounter.directUnmaps.rawValue)
    }

    // MARK: Sync

    /// `dma_sync_single_for_device`: before the device reads `size` bytes at
    /// `address` (a position inside a mapping), copies them into the bounce buffer
    /// for `DMA_TO_DEVICE` / `DMA_BIDIRECTIONAL`. Zero-copy and direct mappings
    /// need nothing.
    public func syncSingleForDevice(_ address: DMAAddress, size: Int, direction: DMADirection,
                                    device: Device) throws(DMAError) {
        try sync(address, size: size, direction: direction, device: device, forDevice: true)
    }

    /// `dma_sync_single_for_cpu`: after the device wrote, copies `size` bytes at
    /// `address` back to the original for `DMA_FROM_DEVICE` / `DMA_BIDIRECTIONAL`.
    /// Zero-copy and direct mappings need nothing.
    public func syncSingleForCPU(_ address: DMAAddress, size: Int, direction: DMADirection,
                                 device: Device) throws(DMAError) {
        try sync(address, size: size, direction: direction, device: device, forDevice: false)
    }

    @inline(__always)
    func sync(_ address: DMAAddress, size: Int, direction: DMADirection, device: Device,
              forDevice: Bool) throws(DMAError) {
        try device.checkPresent()
        if let iommu = device.iommu {
            // Coherent, unencrypted: nothing to copy; the range must be mapped.
            guard iommu.isMapped(address, length: size, device: device) else { throw DMAError.notMapped(address) }
            return
        }
        let physical = try resolve(address)
        if swiotlb.contains(physical) {
            if isZeroCopyAddress(physical) { return }
            if forDevice {
                try swiotlb.syncForDevice(device: device, tlbAddress: physical, size: size, direction: direction)
                if direction.copiesToDevice { counters.add(DMACounter.bytesCopied.rawValue, size) }
            } else {
                try swiotlb.syncForCPU(device: device, tlbAddress: physical, size: size, direction: direction)
                if direction.copiesFromDevice { counters.add(DMACounter.bytesCopied.rawValue, size) }
            }
            counters.add(DMACounter.syncs.rawValue)
            return
        }
        try checkDirect(address, physical, device: device)
    }

    // MARK: Helpers

    /// The guest-physical address behind a bus address, or `.notMapped`.
    @inline(__always)
    func resolve(_ address: DMAAddress) throws(DMAError) -> PhysicalAddress {
        guard let physical = memory.physicalAddress(ofShared: address) else { throw DMAError.notMapped(address) }
        return physical
    }

    /// Whether a pool address lies in a zero-copy run (its descriptor says so).
    @inline(__always)
    func isZeroCopyAddress(_ physical: PhysicalAddress) -> Bool {
        // A pool address: at or above the pool start, page index inside memory.
        let index = swiotlb.firstPageIndex
            &+ Int(truncatingIfNeeded: (physical.rawValue &- swiotlb.start.rawValue) >> UInt64(PageGeometry.shift))
        return swiotlb.isZeroCopy(memory.page(at: index))   // inside the pool: index is valid
    }

    /// A direct mapping's address must name shared guest memory, and only a device
    /// that does not bounce has direct mappings.
    @inline(__always)
    func checkDirect(_ address: DMAAddress, _ physical: PhysicalAddress, device: Device) throws(DMAError) {
        guard !device.mustBounce, let page = try? memory.page(containing: physical), page.domain == .shared else {
            throw DMAError.notMapped(address)
        }
    }

    @inline(never)
    func badRange(_ page: Page, _ offset: Int, _ size: Int, _ runBytes: Int) -> DMAError {
        .invalidArgument("DMA map of \(size) bytes at offset \(offset) of \(page): size must be positive and the range inside the page's \(runBytes) bytes")
    }
}

/// A mapping `DMAAPI.map` made: the bus address and how it was made.
@frozen
public struct DMAMapping: Sendable, Hashable {
    /// How a mapping was made.
    public enum Kind: UInt8, Sendable, Hashable {
        /// Bounced through a swiotlb slot: `unmapPage` releases the slot (and
        /// copies back for `DMA_FROM_DEVICE` / `DMA_BIDIRECTIONAL`).
        case bounced
        /// A swiotlb zero-copy run used at its own address: nothing to unmap.
        case zeroCopyRun
        /// Shared memory mapped directly (a device that does not bounce):
        /// nothing to unmap.
        case direct
        /// Mapped through the device's IOMMU (an IOVA, its page-table entries
        /// written): `unmapPage` clears them and ends the IOTLB entries.
        case translated
    }

    /// The bus address the device must use.
    public let address: DMAAddress
    public let kind: Kind

    @inlinable
    public init(address: DMAAddress, kind: Kind) {
        self.address = address
        self.kind = kind
    }
}
