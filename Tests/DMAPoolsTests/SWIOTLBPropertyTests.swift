import Testing
@testable import DMAPools

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, good enough for tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A reference model of the pool: a bitmap of allocated slots and each area's
/// `index` and `used`, searched first-fit from the index with wrap, exactly as
/// `swiotlb_search_pool_area` does, but deciding fit from the bitmap (all of
/// `[s, s + n)` free and inside one segment) instead of the `list` field.
struct ReferencePool {
    let nslabs: Int
    let areaCount: Int
    let areaSlots: Int
    let startDMA: UInt64
    var allocated: [Bool]
    var areaIndex: [Int]
    var areaUsed: [Int]

    init(nslabs: Int, areaCount: Int, startDMA: UInt64) {
        self.nslabs = nslabs
        self.areaCount = areaCount
        self.areaSlots = nslabs / areaCount
        self.startDMA = startDMA
        allocated = Array(repeating: false, count: nslabs)
        areaIndex = Array(repeating: 0, count: areaCount)
        areaUsed = Array(repeating: 0, count: areaCount)
    }

    func fits(_ slot: Int, _ count: Int) -> Bool {
        slot % 128 + count <= 128 && !allocated[slot..<(slot + count)].contains(true)
    }

    /// The first slot the kernel would allocate, marking the run; nil when full.
    mutating func allocate(original: UInt64, allocSize: Int, allocAlignMask: UInt64,
                           minAlignMask: UInt64, startArea: Int) -> Int? {
        guard allocSize <= 256 << 10 else { return nil }
        let count = (allocSize + 2047) / 2048
        var alignMask = allocAlignMask
        var iotlbMask = minAlignMask
        if alignMask == 0 && iotlbMask == 0 && allocSize >= 4096 { alignMask = 4095 }
        alignMask |= 2047
        iotlbMask &= ~alignMask
        let stride = Int(max(alignMask, iotlbMask) >> 11) + 1
        for k in 0..<areaCount {
            let area = (startArea + k) % areaCount
            guard count <= areaSlots - areaUsed[area] else { continue }
            var index = areaIndex[area]
            var checked = 0
            while checked < areaSlots {
                let slot = area * areaSlots + index
                let bus = startDMA + UInt64(slot) * 2048
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

    mutating func release(first: Int, count: Int) {
        for s in first..<(first + count) {
            precondition(allocated[s])
            allocated[s] = false
        }
        areaUsed[first / areaSlots] -= count
    }
}

@Suite struct SWIOTLBPropertyTests {
    struct LiveMapping {
        var tlb: PhysicalAddress
        var original: PhysicalAddress
        var size: Int
        var direction: DMADirection
        var device: Device
        var first: Int
        var slots: Int
    }

    static let seeds: [UInt64] = [1, 2, 0x5EED, 0xDEAD_BEEF, UInt64.random(in: 0...UInt64.max)]

    @Test(arguments: seeds)
    func randomMapUnmapSyncMatchesTheReferenceModel(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let areaCount = [1, 2, 4][Int.random(in: 0..<3, using: &rng)]
        let f = try SWIOTLBFixture(swiotlbBytes: 1 << 20, areaCount: areaCount)
        let devices = [f.device,
                       try f.registry.add(name: "nvme0", minAlignMask: 0xFFF),
                       try f.registry.add(name: "odd", minAlignMask: 0x3FFF)]
        var model = ReferencePool(nslabs: f.swiotlb.nslabs, areaCount: areaCount, startDMA: f.swiotlb.startDMARaw)
        var live: [LiveMapping] = []
        var exhausted = 0
        let steps = 2500
        let privatePages = f.memory.privatePages.count

        for step in 0..<steps {
            let context = "seed \(seed) (0x\(String(seed, radix: 16))), step \(step), \(areaCount) areas"
            let roll = Int.random(in: 0..<100, using: &rng)
            if roll < 55 || live.isEmpty {
                // Map.
                let device = devices[Int.random(in: 0..<devices.count, using: &rng)]
                let sizeClass = Int.random(in: 0..<10, using: &rng)
                let maximum = f.swiotlb.maxMappingSize(for: device)
                let size = switch sizeClass {
                case 0..<3: Int.random(in: 1...2048, using: &rng)
                case 3..<6: Int.random(in: 1...8192, using: &rng)
                case 6..<9: Int.random(in: 1...65536, using: &rng)
                default: Int.random(in: 1...maximum, using: &rng)
                }
                let allocAlignMask: UInt64 = [0, 0, 0, 0, 0xFFF, 0x3FFF, 0xFFFF][Int.random(in: 0..<7, using: &rng)]
                let page = Int.random(in: 16..<(privatePages - 80), using: &rng)
                let original = f.original(page: page, offset: Int.random(in: 0..<4096, using: &rng))
                let direction = DMADirection.allCases[Int.random(in: 0..<3, using: &rng)]
                let startArea = Int.random(in: 0..<areaCount, using: &rng)

                let offset = Int(original.rawValue & device.minAlignMask & (allocAlignMask | 2047))
                let alignment = Int(allocAlignMask) + 1
                let allocSize = (size + offset + alignment - 1) / alignment * alignment
                let expected = model.allocate(original: original.rawValue, allocSize: allocSize,
                                              allocAlignMask: allocAlignMask, minAlignMask: device.minAlignMask,
                                              startArea: startArea)
                do {
                    let tlb = try f.swiotlb.mapSingle(device: device, original: original, mappingSize: size,
                                                      allocAlignMask: allocAlignMask, direction: direction,
                                                      startArea: startArea)
                    guard let first = expected else {
                        Issue.record("mapped at \(tlb) where the model found no room; \(context)")
                        return
                    }
                    let head = first + offset / 2048
                    let expectedTLB = f.swiotlb.start + (head * 2048 + offset % 2048)
                    #expect(tlb == expectedTLB, "size \(size) align 0x\(String(allocAlignMask, radix: 16)) minAlign 0x\(String(device.minAlignMask, radix: 16)); \(context)")
                    #expect(tlb.rawValue & device.minAlignMask == original.rawValue & device.minAlignMask, "\(context)")
                    #expect(first / 128 == (first + (allocSize + 2047) / 2048 - 1) / 128, "crosses a segment; \(context)")
                    #expect(try f.bytes(at: tlb, count: 1) == f.bytes(at: original, count: 1), "\(context)")
                    #expect(try f.bytes(at: tlb + (size - 1), count: 1) == f.bytes(at: original + (size - 1), count: 1), "\(context)")
                    live.append(LiveMapping(tlb: tlb, original: original, size: size, direction: direction, device: device,
                                            first: first, slots: (allocSize + 2047) / 2048))
                    if tlb != expectedTLB { return }
                } catch {
                    guard case .swiotlbExhausted? = error as? DMAError, expected == nil else {
                        Issue.record("map failed with \(error) where the model placed it at \(String(describing: expected)); \(context)")
                        return
                    }
                    exhausted += 1
                }
            } else if roll < 70 {
                // Sync a random sub-range both ways.
                let m = live[Int.random(in: 0..<live.count, using: &rng)]
                let at = Int.random(in: 0..<m.size, using: &rng)
                let length = Int.random(in: 1...(m.size - at), using: &rng)
                let marker = UInt8.random(in: 0...255, using: &rng)
                try f.memory.pointer(to: m.tlb + at).storeBytes(of: marker, as: UInt8.self)
                try f.swiotlb.syncForCPU(device: m.device, tlbAddress: m.tlb + at, size: length, direction: m.direction)
                if m.direction.copiesFromDevice {
                    #expect(try f.bytes(at: m.original + at, count: length) == f.bytes(at: m.tlb + at, count: length), "\(context)")
                }
                try f.memory.pointer(to: m.original + at).storeBytes(of: marker &+ 1, as: UInt8.self)
                try f.swiotlb.syncForDevice(device: m.device, tlbAddress: m.tlb + at, size: length, direction: m.direction)
                if m.direction.copiesToDevice {
                    #expect(try f.bytes(at: m.tlb + at, count: length) == f.bytes(at: m.original + at, count: length), "\(context)")
                }
            } else {
                // Unmap a random live mapping; the device wrote its first byte.
                let m = live.remove(at: Int.random(in: 0..<live.count, using: &rng))
                let before = try f.bytes(at: m.original, count: 1)
                let marker = before[0] &+ 1
                try f.memory.pointer(to: m.tlb).storeBytes(of: marker, as: UInt8.self)
                try f.swiotlb.unmapSingle(device: m.device, tlbAddress: m.tlb, mappingSize: m.size, direction: m.direction)
                #expect(try f.bytes(at: m.original, count: 1) == (m.direction.copiesFromDevice ? [marker] : before), "\(context)")
                model.release(first: m.first, count: m.slots)
            }

            // Invariants and the model's view after every step.
            let violations = f.swiotlb.invariantViolations()
            #expect(violations.isEmpty, "\(violations); \(context)")
            let stats = f.swiotlb.statistics
            #expect(stats.areaUsed == model.areaUsed, "\(context)")
            #expect(stats.liveMappings == live.count, "\(context)")
            #expect(stats.exhaustionFailures == exhausted, "\(context)")
            for slot in 0..<model.nslabs where f.swiotlb.slots[slot].flags.contains(.allocated) != model.allocated[slot] {
                Issue.record("slot \(slot) allocated \(model.allocated[slot]) in the model; \(context)")
                return
            }
            if !violations.isEmpty { return }
        }
        for m in live {
            try f.swiotlb.unmapSingle(device: m.device, tlbAddress: m.tlb, mappingSize: m.size, direction: m.direction)
        }
        #expect(f.swiotlb.usedSlots == 0, "seed \(seed)")
        #expect(f.swiotlb.slots[0].list == 128, "seed \(seed)")
        #expect(f.swiotlb.invariantViolations().isEmpty, "seed \(seed)")
    }
}
