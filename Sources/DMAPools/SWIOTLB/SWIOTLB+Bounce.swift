extension SWIOTLB {
    // MARK: Map

    /// Bounces `mappingSize` bytes at `original` into newly allocated slots
    /// (`swiotlb_tbl_map_single`) and returns the bounce buffer's address.
    ///
    /// The original's bytes are copied into the bounce buffer for every direction,
    /// `DMA_FROM_DEVICE` included, so a device that writes only part of the buffer
    /// cannot expose stale pool contents. The returned address keeps the bits of
    /// `original` covered by the device's `min_align_mask`; padding slots before it
    /// and rounding after it are allocated but not copied.
    ///
    /// - Parameters:
    ///   - allocAlignMask: required alignment of the allocation, `2^n - 1`
    ///     (0: none; allocations >= PAGE_SIZE are then page aligned).
    ///   - startArea: the area to search first; `nil` uses the calling CPU's area.
    /// `swiotlb_max_mapping_size()` is not checked, as the kernel's map path does
    /// not check it: it is what `dma_max_mapping_size()` advertises to drivers
    /// (`maxMappingSize(for:)`). A mapping fits when its allocation (the size
    /// plus the `min_align_mask` offset, rounded to `allocAlignMask + 1`) fits
    /// in a segment.
    ///
    /// - Throws: `.deviceRemoved`; `.addressNotReachable` when the device's DMA mask
    ///   cannot reach the pool; `.invalidArgument` for a zero size, an allocation
    ///   over a segment, a bad mask or an original outside guest memory;
    ///   `.swiotlbExhausted` (counted) when no area has a fitting run.
    public func mapSingle(
        device: Device,
        original: PhysicalAddress,
        mappingSize: Int,
        allocAlignMask: UInt64 = 0,
        direction: DMADirection,
        startArea: Int? = nil
    ) throws(DMAError) -> PhysicalAddress {
        try device.checkPresent()
        guard device.dmaMask >= lastDMARaw else { throw poolUnreachable(device) }
        let originalRaw = original.rawValue
        // `mask &+ 1` wraps only for UInt64.max, which the `< segmentBytes` test rejects.
        guard mappingSize > 0, allocAlignMask & (allocAlignMask &+ 1) == 0,
              allocAlignMask < UInt64(Self.segmentBytes),
              originalRaw >= guestStartRaw, originalRaw < guestEndRaw,
              UInt64(mappingSize) <= guestEndRaw &- originalRaw    // originalRaw < guestEndRaw
        else {
            throw badMapArguments(original, mappingSize, allocAlignMask)
        }
        let minAlignMask = device.minAlignMask
        let offset = Self.alignOffset(minAlignMask: minAlignMask, allocAlignMask: allocAlignMask, address: originalRaw)
        // ALIGN(mapping_size + offset, alloc_align_mask + 1); the terms are below
        // 2^18 once mappingSize is bounded by the first check.
        let alignMask = Int(truncatingIfNeeded: allocAlignMask)
        let allocSize = mappingSize <= Self.segmentBytes
            ? (mappingSize &+ offset &+ alignMask) & ~alignMask : Int.max
        guard allocSize <= Self.segmentBytes else { throw mappingTooLarge(device, mappingSize, allocSize) }
        let padSlots = offset &>> Self.slotShift
        let request = SlotRequest(kind: .mapping, originalAddress: originalRaw, allocSize: allocSize,
                                  allocAlignMask: allocAlignMask, minAlignMask: minAlignMask,
                                  padSlots: padSlots, mappingSize: mappingSize)
        let index = findSlots(request, startArea: startingArea(startArea))
        guard index >= 0 else { throw exhausted(allocSize) }
        noteAllocated(Self.slotCount(allocSize))
        // slot_addr(start, index + pad_slots) + (offset & (IO_TLB_SIZE - 1)): inside the pool.
        let tlbAddress = slotAddress(index &+ padSlots) &+ UInt64(offset & (Self.slotSize &- 1))
        // swiotlb_bounce(dev, tlb_addr, mapping_size, DMA_TO_DEVICE), for every direction.
        pointer(toPool: tlbAddress).copyMemory(from: guestPointer(originalRaw), byteCount: mappingSize)
        return PhysicalAddress(tlbAddress)
    }

    // MARK: Unmap

    /// Ends a bounce mapping (`swiotlb_tbl_unmap_single`): copies the bounce buffer
    /// back to the original for `DMA_FROM_DEVICE` and `DMA_BIDIRECTIONAL`, then
    /// releases the slots, merging them with free neighbours.
    ///
    /// - Throws: `.deviceRemoved`; `.notMapped` when `tlbAddress` is not the address
    ///   a live mapping returned; `.invalidArgument` when `mappingSize` is 0 or
    ///   larger than the mapping.
    public func unmapSingle(
        device: Device,
        tlbAddress: PhysicalAddress,
        mappingSize: Int,
        direction: DMADirection
    ) throws(DMAError) {
        try device.checkPresent()
        try unmapSingle(device: device, tlbAddress: tlbAddress, mappingSize: mappingSize,
                        direction: direction, skipCPUSync: false)
    }

    /// `swiotlb_tbl_unmap_single` with `DMA_ATTR_SKIP_CPU_SYNC` optional.
    func unmapSingle(
        device: Device,
        tlbAddress: PhysicalAddress,
        mappingSize: Int,
        direction: DMADirection,
        skipCPUSync: Bool
    ) throws(DMAError) {
        let tlb = tlbAddress.rawValue
        let head = try liveMappingHead(tlb, device: device)
        // The head slot's alloc_size is the mapping plus its end rounding.
        guard mappingSize > 0, mappingSize <= Int(slots[head].allocSize) else {
            throw sizeOverrun(tlbAddress, mappingSize, available: Int(slots[head].allocSize))
        }
        var copied = 0
        if !skipCPUSync && direction.copiesFromDevice {
            // swiotlb_bounce(dev, tlb_addr, mapping_size, DMA_FROM_DEVICE)
            guestPointer(slots[head].originalAddress)
                .copyMemory(from: pointer(toPool: tlb), byteCount: mappingSize)
            copied = mappingSize
        }
        let offset = Int(truncatingIfNeeded: tlb) & (Self.slotSize &- 1)   // constant 2047
        guard releaseSlots(head: head, offset: offset, expected: .mappingHead, bytesToCPU: copied) > 0 else {
            throw notMapped(tlbAddress)     // lost a race with another unmap of the same address
        }
    }

    // MARK: Sync

    /// `swiotlb_sync_single_for_device`: copies `size` bytes of the original at the
    /// matching position into the bounce buffer at `tlbAddress` (anywhere inside a
    /// live mapping) for `DMA_TO_DEVICE` and `DMA_BIDIRECTIONAL`; nothing for
    /// `DMA_FROM_DEVICE`.
    ///
    /// - Throws: `.deviceRemoved`; `.notMapped` when `tlbAddress` is not inside a
    ///   live mapping; `.invalidArgument` when the range runs past the mapping.
    public func syncForDevice(device: Device, tlbAddress: PhysicalAddress, size: Int,
                              direction: DMADirection) throws(DMAError) {
        try device.checkPresent()
        let (bounce, original) = try syncRange(tlbAddress, size: size, device: device)
        guard direction.copiesToDevice else { return }
        bounce.copyMemory(from: original, byteCount: size)
        syncCounters.add(SyncCounter.bytesToDevice.rawValue, size)
    }

    /// `swiotlb_sync_single_for_cpu`: copies `size` bytes of the bounce buffer at
    /// `tlbAddress` back to the original for `DMA_FROM_DEVICE` and
    /// `DMA_BIDIRECTIONAL`; nothing for `DMA_TO_DEVICE`.
    ///
    /// - Throws: as `syncForDevice`.
    public func syncForCPU(device: Device, tlbAddress: PhysicalAddress, size: Int,
                           direction: DMADirection) throws(DMAError) {
        try device.checkPresent()
        let (bounce, original) = try syncRange(tlbAddress, size: size, device: device)
        guard direction.copiesFromDevice else { return }
        original.copyMemory(from: bounce, byteCount: size)
        syncCounters.add(SyncCounter.bytesToCPU.rawValue, size)
    }

    /// The bounce and original bytes of a sync (the addressing of `swiotlb_bounce`):
    /// the slot holding `tlbAddress` gives `orig_addr` and `alloc_size`, adjusted
    /// by the position of `tlbAddress` past the mapping's sub-slot offset.
    @inline(__always)
    func syncRange(_ tlbAddress: PhysicalAddress, size: Int, device: Device)
        throws(DMAError) -> (bounce: UnsafeMutableRawPointer, original: UnsafeMutableRawPointer) {
        let tlb = tlbAddress.rawValue
        guard contains(tlbAddress) else { throw notMapped(tlbAddress) }
        let index = slotIndex(of: tlb)
        let originalRaw = slots[index].originalAddress
        guard originalRaw != Slot.invalidAddress else { throw notMapped(tlbAddress) }
        // Can be negative within the first `offset` bytes of a later slot; both
        // terms are in 0..<2048, so the difference cannot overflow.
        let tlbOffset = (Int(truncatingIfNeeded: tlb) & (Self.slotSize &- 1))
            &- Self.alignOffset(minAlignMask: device.minAlignMask, allocAlignMask: 0, address: originalRaw)
        let available = Int(slots[index].allocSize) &- tlbOffset   // both below 2^19 in magnitude
        guard size > 0, size <= available else {
            throw sizeOverrun(tlbAddress, size, available: available)
        }
        // orig_addr + tlb_offset: inside the original buffer.
        let original = originalRaw &+ UInt64(bitPattern: Int64(tlbOffset))
        return (pointer(toPool: tlb), guestPointer(original))
    }

    // MARK: Helpers

    /// The head slot of the live mapping that returned `tlb`, or `.notMapped`.
    /// Reads the head's flags without the area lock: a caller that holds the
    /// mapping is its only user; racing double unmaps are caught again under the
    /// lock by `releaseSlots`.
    @inline(__always)
    func liveMappingHead(_ tlb: UInt64, device: Device) throws(DMAError) -> Int {
        let address = PhysicalAddress(tlb)
        guard contains(address) else { throw notMapped(address) }
        let head = slotIndex(of: tlb)
        // Only the fields the mapping owns: `list` belongs to the area lock.
        guard slots[head].flags.contains(.mappingHead),
              Int(truncatingIfNeeded: tlb) & (Self.slotSize &- 1)       // constant 2047
                == Self.alignOffset(minAlignMask: device.minAlignMask, allocAlignMask: 0,
                                    address: slots[head].originalAddress)
        else { throw notMapped(address) }
        return head
    }

    /// Counts `nslots` newly allocated slots and raises the high-water mark
    /// (`inc_used_and_hiwater`).
    @inline(__always)
    func noteAllocated(_ nslots: Int) {
        let used = totalUsed.wrappingAdd(nslots, ordering: .relaxed).newValue
        var highWater = usedHighWater.load(ordering: .relaxed)
        while used > highWater {
            let (exchanged, current) = usedHighWater.compareExchange(
                expected: highWater, desired: used, ordering: .relaxed)
            if exchanged { break }
            highWater = current
        }
    }

    // MARK: Errors (slow paths)

    @inline(never)
    func exhausted(_ allocSize: Int) -> DMAError {
        exhaustionFailures.wrappingAdd(1, ordering: .relaxed)
        return .swiotlbExhausted(size: allocSize, usedSlots: totalUsed.load(ordering: .relaxed), totalSlots: nslabs)
    }

    @inline(never)
    func poolUnreachable(_ device: Device) -> DMAError {
        .addressNotReachable(device: device.name, address: DMAAddress(startDMARaw), size: nslabs << Self.slotShift)
    }

    @inline(never)
    func notMapped(_ address: PhysicalAddress) -> DMAError {
        .notMapped(memory.unencryptedDMAAddress(of: address))
    }

    @inline(never)
    func badMapArguments(_ original: PhysicalAddress, _ mappingSize: Int, _ allocAlignMask: UInt64) -> DMAError {
        if mappingSize <= 0 {
            return .invalidArgument("swiotlb mapping size \(mappingSize) must be positive")
        }
        // `&+ 1` wraps only for UInt64.max, caught by the second test.
        if allocAlignMask & (allocAlignMask &+ 1) != 0 || allocAlignMask >= UInt64(Self.segmentBytes) {
            return .invalidArgument(
                "swiotlb allocAlignMask 0x\(String(allocAlignMask, radix: 16)) must be 2^n - 1 below 256 KiB")
        }
        return .invalidArgument("swiotlb original \(original) + \(mappingSize) bytes is outside guest memory")
    }

    @inline(never)
    func mappingTooLarge(_ device: Device, _ mappingSize: Int, _ allocSize: Int) -> DMAError {
        .invalidArgument(
            "swiotlb mapping of \(mappingSize) bytes for \(device.name) needs more than a segment: "
                + "\(Self.segmentBytes) bytes per allocation including alignment offset "
                + "(drivers keep to dma_max_mapping_size, \(maxMappingSize(for: device)) bytes)")
    }

    @inline(never)
    func sizeOverrun(_ tlbAddress: PhysicalAddress, _ size: Int, available: Int) -> DMAError {
        .invalidArgument("swiotlb access of \(size) bytes at \(tlbAddress) must be positive and within the mapping's \(available) bytes")
    }
}
