extension SWIOTLB {
    /// `swiotlb_release_slots`: returns the allocation whose head slot is `head`
    /// to the free lists, merging with the free slots after it and renumbering
    /// the free slots before it in the segment.
    ///
    /// - Parameters:
    ///   - head: the mapping's first non-padding slot, or a zero-copy run's first slot.
    ///   - offset: the mapping's sub-slot offset (`swiotlb_align_offset(dev, 0, tlb_addr)`).
    ///   - expected: `.mappingHead` or `.zeroCopyHead`: checked under the lock, so a
    ///     concurrent double release loses cleanly.
    ///   - bytesToCPU: bytes the caller copied back, counted under the lock.
    /// - Returns: the slots released, or 0 when `head` is not a live allocation of
    ///   the expected kind (nothing is changed).
    func releaseSlots(head: Int, offset: Int, expected: Slot.Flags, bytesToCPU: Int) -> Int {
        let slots = self.slots
        let areaIndex = head / areaSlots
        let released = area(areaIndex).pointee.withLock { state -> Int in
            guard slots[head].flags.contains(expected) else { return 0 }
            // head - pad_slots >= the run's first slot >= 0.
            let index = head &- Int(slots[head].padSlots)
            // alloc_size <= 256 KiB and offset < 2 KiB.
            let nslots = Self.slotCount(Int(slots[index].allocSize) &+ offset)
            // Merge with the free run that follows, if it is in the same segment.
            let end = index &+ nslots                                 // <= nslabs
            // ALIGN(index + 1, IO_TLB_SEGSIZE); index < nslabs, far from Int.max.
            let segmentEnd = (index &+ Self.segmentSlots) & ~(Self.segmentSlots &- 1)
            var free = end < segmentEnd ? Int(slots[end].list) : 0
            // Step 1: free the run, back to front.
            var i = end &- 1                                          // end > index >= 0
            while i >= index {
                free &+= 1                                            // <= 128
                slots[i].list = UInt16(truncatingIfNeeded: free)
                slots[i].originalAddress = Slot.invalidAddress
                slots[i].allocSize = 0
                slots[i].padSlots = 0
                slots[i].flags = []
                i &-= 1                                               // stops at index - 1 >= -1
            }
            // Step 2: merge with the free slots before it in the segment.
            i = index &- 1                                            // >= -1; -1 & 127 == 127 stops
            while Self.segmentOffset(i) != Self.segmentSlots - 1 && slots[i].list != 0 {
                free &+= 1                                            // <= 128
                slots[i].list = UInt16(truncatingIfNeeded: free)
                i &-= 1                                               // stops at a segment start - 1 >= -1
            }
            state.used &-= nslots                                     // these slots were counted
            if expected == .mappingHead {
                state.liveMappings &-= 1
                state.bytesBouncedToCPU &+= bytesToCPU                // far below 2^63
            }
            #if DMAPOOLS_INVARIANTS
            verifySegmentLocked(containing: index, state)
            #endif
            return nslots
        }
        if released > 0 { totalUsed.wrappingSubtract(released, ordering: .relaxed) }
        return released
    }
}
