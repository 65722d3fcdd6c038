/// What a search allocates: a bounce mapping or a zero-copy run.
struct SlotRequest {
    enum Kind { case mapping, zeroCopy }

    var kind: Kind
    /// `orig_addr` (0 for a zero-copy run: no alignment to preserve).
    var originalAddress: UInt64
    /// Total bytes including leading padding and rounding (`alloc_size`).
    var allocSize: Int
    /// `alloc_align_mask`.
    var allocAlignMask: UInt64
    /// `dma_get_min_align_mask(dev)`.
    var minAlignMask: UInt64
    /// Whole padding slots before the mapping's first slot.
    var padSlots: Int = 0
    /// Bytes copied to the bounce buffer at map time (counted under the lock).
    var mappingSize: Int = 0
}

extension SWIOTLB {
    /// `swiotlb_find_slots`: searches the starting area, then each following area
    /// (wrapping), and returns the first allocated slot, or -1 when every area is
    /// full for this request.
    @inline(__always)
    func findSlots(_ request: SlotRequest, startArea: Int) -> Int {
        guard request.allocSize <= Self.segmentBytes else { return -1 }
        var areaIndex = startArea
        repeat {
            let index = searchPoolArea(areaIndex, request)
            if index >= 0 { return index }
            // areaIndex < areaCount: no overflow.
            areaIndex &+= 1
            if areaIndex >= areaCount { areaIndex = 0 }
        } while areaIndex != startArea
        return -1
    }

    /// The starting area for the calling CPU (`raw_smp_processor_id() & (nareas - 1)`),
    /// or `explicit` when a test pins it.
    @inline(__always)
    func startingArea(_ explicit: Int?) -> Int {
        if let explicit {
            precondition(explicit >= 0 && explicit < areaCount,
                         "swiotlb starting area \(explicit) outside 0..<\(areaCount)")
            return explicit
        }
        return cpu.current() & (areaCount &- 1)                     // areaCount >= 1
    }

    /// `swiotlb_search_pool_area`: first fit from `area.index`, wrapping inside the
    /// area, honouring page alignment for requests >= PAGE_SIZE without other
    /// masks, `alloc_align_mask`, `min_align_mask` and the stride they imply. On
    /// success marks the run allocated under the area lock and returns its first
    /// slot; -1 when the area has no fit.
    func searchPoolArea(_ areaIndex: Int, _ request: SlotRequest) -> Int {
        let nslots = Self.slotCount(request.allocSize)
        precondition(nslots > 0, "swiotlb search for 0 slots")
        // swiotlb_align_offset(dev, 0, orig_addr)
        let offset = Self.alignOffset(minAlignMask: request.minAlignMask, allocAlignMask: 0,
                                      address: request.originalAddress)
        var allocAlignMask = request.allocAlignMask
        var iotlbAlignMask = request.minAlignMask
        // Historically, allocations >= PAGE_SIZE are page aligned when no mask is given.
        if allocAlignMask == 0 && iotlbAlignMask == 0 && request.allocSize >= PageGeometry.size {
            allocAlignMask = UInt64(PageGeometry.size - 1)
        }
        // At least slot aligned; min_align_mask bits below that are kept by the offset.
        allocAlignMask |= UInt64(Self.slotSize - 1)
        iotlbAlignMask &= ~allocAlignMask
        // Masks are below 2^18 here (validated by the callers): small strides.
        let stride = Int(truncatingIfNeeded: max(allocAlignMask, iotlbAlignMask) >> UInt64(Self.slotShift)) &+ 1
        let original = request.originalAddress
        let slots = self.slots
        let areaSlots = self.areaSlots
        let slotBase = areaIndex &* areaSlots          // < nslabs
        let startDMA = startDMARaw

        return area(areaIndex).pointee.withLock { state -> Int in
            if nslots > areaSlots &- state.used { return -1 }   // used <= areaSlots
            var index = state.index
            var checked = 0
            var slotIndex = 0
            var found = false
            while checked < areaSlots {
                slotIndex = slotBase &+ index                       // < nslabs
                // The bus address of the slot: the pool's bus range is far below 2^63.
                let tlbAddress = startDMA &+ UInt64(truncatingIfNeeded: slotIndex &<< Self.slotShift)
                if tlbAddress & allocAlignMask != 0
                    || (original != 0 && tlbAddress & iotlbAlignMask != original & iotlbAlignMask) {
                    index = index &+ 1 >= areaSlots ? 0 : index &+ 1     // wrap_area_index
                    checked &+= 1                                    // <= areaSlots + stride
                    continue
                }
                if Int(slots[slotIndex].list) >= nslots { found = true; break }
                index = index &+ stride >= areaSlots ? 0 : index &+ stride  // wrap_area_index
                checked &+= stride                                   // <= areaSlots + stride
            }
            guard found else { return -1 }
            allocateLocked(&state, first: slotIndex, count: nslots, offset: offset, request: request)
            // Advance the area's index past the run (wrap_area_index(index + nslots)).
            let next = index &+ nslots                               // < 2 * areaSlots
            state.index = next >= areaSlots ? 0 : next
            state.used &+= nslots                                    // <= areaSlots
            #if DMAPOOLS_INVARIANTS
            verifySegmentLocked(containing: slotIndex, state)
            #endif
            return slotIndex
        }
    }

    /// Marks `count` slots from `first` allocated, renumbers the free slots before
    /// them in the segment, and records the mapping or zero-copy run. Called with
    /// the owning area's lock held.
    @inline(__always)
    func allocateLocked(_ state: inout AreaState, first: Int, count: Int, offset: Int, request: SlotRequest) {
        let slots = self.slots
        // alloc_size per slot: bytes from that slot to the end, less the offset.
        // All values are below 2^19: Int32 holds them.
        var remaining = request.allocSize &- offset                   // both below 2^18
        for i in first..<(first &+ count) {                             // <= nslabs
            slots[i].list = 0
            slots[i].allocSize = Int32(truncatingIfNeeded: remaining)
            slots[i].flags = .allocated
            remaining &-= Self.slotSize                                // >= -2^18: 128 steps at most
        }
        // Free slots before the run now end at it: renumber back to the segment start
        // (or the previous allocated slot). -1 & 127 == 127 stops at index 0.
        var free = 0
        var i = first &- 1                                             // >= -1
        while Self.segmentOffset(i) != Self.segmentSlots - 1 && slots[i].list != 0 {
            free &+= 1                                               // < 128
            slots[i].list = UInt16(truncatingIfNeeded: free)
            i &-= 1                                                    // stops at a segment start - 1 >= -1
        }
        switch request.kind {
        case .mapping:
            let head = first &+ request.padSlots                     // inside the run
            slots[head].padSlots = UInt8(truncatingIfNeeded: request.padSlots)
            slots[head].flags = [.allocated, .mappingHead]
            var original = request.originalAddress
            for j in head..<(first &+ count) {                         // <= nslabs
                slots[j].originalAddress = original
                original &+= UInt64(Self.slotSize)                   // inside guest memory
            }
            state.liveMappings &+= 1
            state.bytesBouncedToDevice &+= request.mappingSize       // byte counts stay far below 2^63
        case .zeroCopy:
            slots[first].padSlots = 0
            slots[first].flags = [.allocated, .zeroCopyHead]
        }
    }
}
