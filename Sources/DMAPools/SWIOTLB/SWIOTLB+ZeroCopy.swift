extension SWIOTLB {
    /// The largest zero-copy run: one segment (order 6, 256 KiB).
    public static let maxZeroCopyOrder = 6

    /// `zerocopy_tx_percent`: the share of the pool's slots (0...90) that may be in
    /// use when a zero-copy run is allocated; 0 disables the mode.
    public var zeroCopyPercent: Int { zeroCopyPercentStorage.load(ordering: .relaxed) }

    /// Sets `zerocopy_tx_percent`.
    /// - Throws: `.invalidArgument` outside 0...90 (90 is the maximum, to leave
    ///   slots for ordinary bounce mappings).
    public func setZeroCopyPercent(_ percent: Int) throws(DMAError) {
        guard (0...90).contains(percent) else {
            throw .invalidArgument("zerocopy_tx_percent \(percent) must be in 0...90")
        }
        zeroCopyPercentStorage.store(percent, ordering: .relaxed)
    }

    /// Allocates a naturally aligned run of `1 << order` pages out of the pool for
    /// long-lived use (the seed patch's `swiotlb_alloc_pages`). The run is already
    /// shared memory: mapping it needs no bounce, its DMA address is its own.
    ///
    /// The returned head page is a compound run owned by `.swiotlbZeroCopy`, with
    /// reference count 1 and `dmaAddress` set to its unencrypted bus address. The
    /// bounce device is stored in the head's `ownerObject` as a retained
    /// `Unmanaged<Device>` (the patch's `swiotlb_set_page_dev` + `get_device`); the
    /// reference is dropped by `freeZeroCopyPages`.
    ///
    /// The cap reads the exact used count (the kernel's `CONFIG_DEBUG_FS`
    /// `mem_used`), not the patch's jiffies-cached `fast_mem_used`.
    ///
    /// - Throws: `.deviceRemoved`; `.invalidArgument` for an order outside
    ///   0...6; `.addressNotReachable` when the device cannot reach the pool;
    ///   `.zeroCopyCapReached` when the mode is disabled or
    ///   `percent * nslabs <= used * 100`; `.swiotlbExhausted` when no area has a
    ///   free aligned run (counted as a zero-copy allocation failure).
    public func allocateZeroCopyPages(order: Int, device: Device, startArea: Int? = nil) throws(DMAError) -> Page {
        try device.checkAdmitsAllocation()
        guard (0...Self.maxZeroCopyOrder).contains(order) else {
            throw .invalidArgument("zero-copy order \(order) must be in 0...\(Self.maxZeroCopyOrder) (one segment at most)")
        }
        guard device.dmaMask >= lastDMARaw else { throw poolUnreachable(device) }
        let percent = zeroCopyPercent
        let used = totalUsed.load(ordering: .relaxed)
        guard percent > 0, percent * nslabs > used * 100 else {
            throw .zeroCopyCapReached(percent: percent, usedSlots: used, totalSlots: nslabs)
        }
        let bytes = PageGeometry.bytes(order: order)
        // Natural alignment: alloc_align_mask = ~(PAGE_MASK << order).
        let request = SlotRequest(kind: .zeroCopy, originalAddress: 0, allocSize: bytes,
                                  allocAlignMask: UInt64(bytes - 1), minAlignMask: device.minAlignMask)
        let index = findSlots(request, startArea: startingArea(startArea))
        guard index >= 0 else {
            zeroCopyAllocationFailures.wrappingAdd(1, ordering: .relaxed)
            throw .swiotlbExhausted(size: bytes, usedSlots: totalUsed.load(ordering: .relaxed), totalSlots: nslabs)
        }
        let nslots = Self.slotCount(bytes)
        noteAllocated(nslots)
        // Two slots per page; the run is page (indeed naturally) aligned.
        let head = memory.page(at: firstPageIndex + index >> (PageGeometry.shift - Self.slotShift))
        memory.prepareCompoundRun(head, order: order, owner: .swiotlbZeroCopy)
        head.storeReferenceCount(1)
        head.dmaAddress = memory.unencryptedDMAAddress(of: head.physicalAddress)
        head.descriptor.pointee.ownerObject = Unmanaged.passRetained(device).toOpaque()
        zeroCopyRuns.wrappingAdd(1, ordering: .relaxed)
        zeroCopyPagesInUse.wrappingAdd(1 << order, ordering: .relaxed)
        zeroCopySlotsInUse.wrappingAdd(nslots, ordering: .relaxed)
        return head
    }

    /// Returns a zero-copy run to the pool (`swiotlb_free_pages`): dissolves the
    /// compound run, hands the descriptors back to `.swiotlbSlots`, releases the
    /// slots and drops the device reference.
    ///
    /// `page` may be the head or any tail page. Traps when the page is not part of
    /// a live zero-copy run or its reference count is not 0.
    public func freeZeroCopyPages(_ page: Page) {
        let head = page.head
        guard isZeroCopy(head), let device = head.descriptor.pointee.ownerObject else {
            notZeroCopy(page)
        }
        let references = head.referenceCount
        precondition(references == 0,
                     "freeZeroCopyPages: \(head) still has \(references) references")
        let order = head.order
        let slot = slotIndex(of: head.physicalAddress.rawValue)
        memory.destroyCompoundRun(head, owner: .swiotlbSlots)
        let released = releaseSlots(head: slot, offset: 0, expected: .zeroCopyHead, bytesToCPU: 0)
        guard released > 0 else { notZeroCopy(page) }
        Unmanaged<Device>.fromOpaque(device).release()
        zeroCopyRuns.wrappingSubtract(1, ordering: .relaxed)
        zeroCopyPagesInUse.wrappingSubtract(1 << order, ordering: .relaxed)
        zeroCopySlotsInUse.wrappingSubtract(released, ordering: .relaxed)
    }

    /// Whether `page` belongs to a live zero-copy run of this pool
    /// (`is_zerocopy_swiotlb_folio`).
    @inlinable
    public func isZeroCopy(_ page: Page) -> Bool {
        let address = page.physicalAddress.rawValue
        return address >= startRaw && address < endRaw && page.head.owner == .swiotlbZeroCopy
    }

    /// The device a zero-copy run was allocated for, if `page` is in one.
    public func zeroCopyDevice(of page: Page) -> Device? {
        guard isZeroCopy(page), let device = page.head.descriptor.pointee.ownerObject else { return nil }
        return Unmanaged<Device>.fromOpaque(device).takeUnretainedValue()
    }

    @inline(never)
    func notZeroCopy(_ page: Page) -> Never {
        fatalError("freeZeroCopyPages: \(page) is not part of a live swiotlb zero-copy run")
    }
}
