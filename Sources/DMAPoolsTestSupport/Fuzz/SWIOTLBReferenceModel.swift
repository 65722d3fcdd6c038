import DMAPools

/// A reference model of the swiotlb pool for the fuzzer and the property tests:
/// a bitmap of allocated slots and each area's `index` and `used`, searched
/// first-fit from the index with wrap-around exactly as
/// `swiotlb_search_pool_area` does, but deciding fit from the bitmap (all of
/// `[s, s + n)` free and inside one segment) instead of the `list` field the
/// real pool keeps. Slow and obviously right: that is the point.
public struct SWIOTLBReferenceModel: Sendable {
    public let nslabs: Int
    public let areaCount: Int
    public let areaSlots: Int
    public let startDMA: UInt64
    public private(set) var allocated: [Bool]
    public private(set) var areaIndex: [Int]
    public private(set) var areaUsed: [Int]

    public init(nslabs: Int, areaCount: Int, startDMA: UInt64) {
        self.nslabs = nslabs
        self.areaCount = areaCount
        self.areaSlots = nslabs / areaCount
        self.startDMA = startDMA
        allocated = Array(repeating: false, count: nslabs)
        areaIndex = Array(repeating: 0, count: areaCount)
        areaUsed = Array(repeating: 0, count: areaCount)
    }

    static let slotBytes = SWIOTLB.slotSize
    static let segmentSlots = SWIOTLB.segmentSlots

    func fits(_ slot: Int, _ count: Int) -> Bool {
        slot % Self.segmentSlots + count <= Self.segmentSlots && !allocated[slot..<(slot + count)].contains(true)
    }

    /// The first slot the kernel would allocate for `allocSize` bytes, marking
    /// the run; nil when no area has room.
    public mutating func allocate(original: UInt64, allocSize: Int, allocAlignMask: UInt64,
                                  minAlignMask: UInt64, startArea: Int) -> Int? {
        guard allocSize <= Self.segmentSlots * Self.slotBytes else { return nil }
        let count = (allocSize + Self.slotBytes - 1) / Self.slotBytes
        var alignMask = allocAlignMask
        var iotlbMask = minAlignMask
        if alignMask == 0 && iotlbMask == 0 && allocSize >= PageGeometry.size { alignMask = UInt64(PageGeometry.size - 1) }
        alignMask |= UInt64(Self.slotBytes - 1)
        iotlbMask &= ~alignMask
        let stride = Int(max(alignMask, iotlbMask) >> 11) + 1
        for k in 0..<areaCount {
            let area = (startArea + k) % areaCount
            guard count <= areaSlots - areaUsed[area] else { continue }
            var index = areaIndex[area]
            var checked = 0
            while checked < areaSlots {
                let slot = area * areaSlots + index
                let bus = startDMA + UInt64(slot * Self.slotBytes)
                if bus & alignMask != 0 || (original != 0 && bus & iotlbMask != original & iotlbMask) {
                    index = index + 1 >= areaSlots ? 0 : index + 1
                    checked += 1
                    continue
                }
                if fits(slot, count) {
                    for s in slot..<(slot + count) { allocated[s] = true }
                    areaIndex[area] = index + count >= areaSlots ? 0 : index + count
                    areaUsed[area] += count
                    return slot
                }
                index = index + stride >= areaSlots ? 0 : index + stride
                checked += stride
            }
        }
        return nil
    }

    /// Frees `count` slots from `first`. Traps on a slot the model never
    /// allocated: that is a bug in the driver, not in the pool.
    public mutating func release(first: Int, count: Int) {
        for s in first..<(first + count) {
            precondition(allocated[s], "reference model: slot \(s) released while free")
            allocated[s] = false
        }
        areaUsed[first / areaSlots] -= count
    }
}
