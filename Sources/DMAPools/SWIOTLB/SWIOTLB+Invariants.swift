extension SWIOTLB {
    /// Walks every segment of every area, holding all area locks, and returns
    /// each broken invariant as text (empty when the pool is consistent):
    ///
    /// - list: from each segment's end backwards, `list[i]` is 0 for an allocated
    ///   slot and `list[i + 1] + 1` for a free one (1 at the segment's end);
    /// - free slots carry no `orig_addr`, `alloc_size`, `pad_slots`;
    /// - each area's `used` equals its allocated slots, and its live-mapping count
    ///   its mapping heads;
    /// - the total `used` and the zero-copy slot count match the walk.
    ///
    /// The totals are updated just outside the area locks, so call this when no
    /// operation is in flight.
    public func invariantViolations() -> [String] {
        var violations: [String] = []
        var allocated = 0
        var zeroCopySlots = 0
        withAllAreasLocked(from: 0) { states in
            for a in 0..<areaCount {
                let counts = areaViolations(a, states[a], into: &violations)
                allocated += counts.allocated
                zeroCopySlots += counts.zeroCopySlots
            }
        }
        let used = totalUsed.load(ordering: .relaxed)
        if used != allocated { violations.append("total used \(used) != \(allocated) allocated slots") }
        let zeroCopy = zeroCopySlotsInUse.load(ordering: .relaxed)
        if zeroCopy != zeroCopySlots {
            violations.append("zero-copy slots in use \(zeroCopy) != \(zeroCopySlots) in zero-copy runs")
        }
        return violations
    }

    /// Traps, listing the violations, unless the pool is consistent.
    public func checkInvariants() {
        let violations = invariantViolations()
        precondition(violations.isEmpty, "swiotlb invariants broken:\n" + violations.joined(separator: "\n"))
    }

    /// The check run after every operation when compiled with
    /// `DMAPOOLS_INVARIANTS`, with the changed area's lock held: walks the one
    /// segment the operation changed (an allocation, its renumbered predecessors
    /// and a release's merges all stay inside one segment) and bounds the area's
    /// `used`. O(128) per operation, so debug builds stay usable with large pools;
    /// `checkInvariants()` walks everything.
    func verifySegmentLocked(containing slot: Int, _ state: AreaState) {
        let first = slot & ~(Self.segmentSlots - 1)
        var next = 0
        var i = first + Self.segmentSlots - 1
        while i >= first {
            let allocated = slots[i].flags.rawValue & Slot.Flags.allocated.rawValue != 0
            let list = Int(slots[i].list)
            if list != (allocated ? 0 : next + 1) {
                preconditionFailure("swiotlb segment \(first / Self.segmentSlots) broken at slot \(i): list \(list), allocated \(allocated), next list \(next)")
            }
            next = list
            i -= 1
        }
        precondition(state.used >= 0 && state.used <= areaSlots,
                     "swiotlb area used \(state.used) outside 0...\(areaSlots)")
    }

    /// Appends area `areaIndex`'s violations (its lock held) and returns its
    /// allocated slots and zero-copy slots.
    func areaViolations(_ areaIndex: Int, _ state: AreaState, into violations: inout [String])
        -> (allocated: Int, zeroCopySlots: Int) {
        let first = areaIndex * areaSlots
        var allocated = 0
        var heads = 0
        var zeroCopySlots = 0
        var segment = first
        while segment < first + areaSlots {
            var next = 0   // list of the following slot in the segment; 0 past its end
            for i in stride(from: segment + Self.segmentSlots - 1, through: segment, by: -1) {
                let slot = slots[i]
                let isAllocated = slot.flags.contains(.allocated)
                let expected = isAllocated ? 0 : next + 1
                if Int(slot.list) != expected && violations.count < 16 {
                    violations.append("slot \(i) (segment \(i / Self.segmentSlots)): list \(slot.list), expected \(expected)\(isAllocated ? " (allocated)" : "")")
                }
                next = Int(slot.list)
                if isAllocated {
                    allocated += 1
                    if slot.flags.contains(.mappingHead) {
                        heads += 1
                        if Int(slot.padSlots) > i - segment && violations.count < 16 {
                            violations.append("slot \(i): \(slot.padSlots) pad slots reach before its segment")
                        }
                    }
                    if slot.flags.contains(.zeroCopyHead) {
                        zeroCopySlots += Self.slotCount(Int(slot.allocSize))
                    }
                } else if (slot.originalAddress != Slot.invalidAddress || slot.allocSize != 0
                           || slot.padSlots != 0 || slot.flags != []) && violations.count < 16 {
                    violations.append("free slot \(i) keeps orig_addr/alloc_size/pad_slots/flags")
                }
            }
            segment += Self.segmentSlots
        }
        if state.used != allocated {
            violations.append("area \(areaIndex): used \(state.used) != \(allocated) allocated slots")
        }
        if state.liveMappings != heads {
            violations.append("area \(areaIndex): \(state.liveMappings) live mappings counted, \(heads) mapping heads")
        }
        if state.index < 0 || state.index >= areaSlots {
            violations.append("area \(areaIndex): index \(state.index) outside 0..<\(areaSlots)")
        }
        return (allocated, zeroCopySlots)
    }

    /// Runs `body` with every area from `from` on locked, in index order (the
    /// only multi-area lock order, so it cannot deadlock against itself; single
    /// operations hold one area lock at a time).
    private func withAllAreasLocked(from index: Int, _ states: [AreaState] = [],
                                    _ body: ([AreaState]) -> Void) {
        if index == areaCount { body(states); return }
        area(index).pointee.withLock { state in
            withAllAreasLocked(from: index + 1, states + [state], body)
        }
    }
}

// What the fuzzer in DMAPoolsTestSupport checks against its reference model.
extension SWIOTLB {
    /// `phys_to_dma_unencrypted(start)` as a raw bus address.
    package var startDMAAddressValue: UInt64 { startDMARaw }
    /// Whether slot `index` is allocated (the model-only flag, not `list`).
    package func slotIsAllocated(_ index: Int) -> Bool { slots[index].flags.contains(.allocated) }
    /// Slot `index`'s `list`: free slots from it to the end of its segment.
    package func slotList(_ index: Int) -> Int { Int(slots[index].list) }
}
