import DMAPools

/// Random map / sync / unmap sequences against a real `SWIOTLB` over a real
/// guest, each step checked against `SWIOTLBReferenceModel` (which slot the
/// kernel's search picks), the bounce copy rules (byte comparisons at both ends
/// of every mapping and of every synced range), the pool's own invariants (the
/// per-segment `list` encoding, area counters) and its statistics. At the end
/// every mapping is unmapped and the pool must be empty again.
///
/// Used by `txsim fuzz` (seeded, bounded in time), by the property tests (fixed
/// seeds) and by a coverage-guided fuzzer through `FuzzSource(bytes:)`.
public enum SWIOTLBFuzzer {
    /// A deliberate disagreement planted in the model, so a test can show the
    /// fuzzer catches one. `.none` in every real run.
    public enum ModelFault: Sendable { case none, searchStartsOneAreaLate }

    struct LiveMapping {
        var tlb: PhysicalAddress
        var original: PhysicalAddress
        var size: Int
        var direction: DMADirection
        var device: Device
        var first: Int
        var slots: Int
    }

    /// Runs up to `steps` operations with choices from `source` (fewer when an
    /// input's bytes run out). The guest is 64 MiB with a 1 MiB pool (512 slots)
    /// in 1, 2 or 4 areas: small enough that exhaustion, wrap-around and
    /// segment ends are reached often.
    public static func run(_ source: inout FuzzSource, steps: Int, modelFault: ModelFault = .none) throws -> FuzzReport {
        var report = FuzzReport(target: "swiotlb", source: source)
        let areaCount = source.pick([1, 2, 4])
        let memory = try GuestMemory(.init(guestBytes: 64 << 20, swiotlbBytes: 1 << 20, hypercall: .free))
        let swiotlb = try SWIOTLB(memory: memory, areaCount: areaCount)
        let registry = DeviceRegistry(forceBounce: true)
        let devices = [try registry.add(name: "nic0"),
                       try registry.add(name: "nvme0", minAlignMask: 0xFFF),
                       try registry.add(name: "odd", minAlignMask: 0x3FFF)]
        var model = SWIOTLBReferenceModel(nslabs: swiotlb.nslabs, areaCount: areaCount, startDMA: swiotlb.startDMAAddressValue)
        var live: [LiveMapping] = []
        var exhausted = 0
        let privatePages = memory.privatePages.count

        func bytes(_ address: PhysicalAddress, _ count: Int) throws -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(start: try memory.pointer(to: address), count: count)
        }
        func same(_ a: PhysicalAddress, _ b: PhysicalAddress, _ count: Int) throws -> Bool {
            report.bytesVerified &+= count   // bounded by the steps' sizes: cannot overflow
            return try bytes(a, count).elementsEqual(bytes(b, count))
        }

        step: for step in 0..<steps {
            if source.isExhausted { break }
            let context = "step \(step), \(areaCount) areas"
            let roll = source.int(in: 0..<100)
            report.operations += 1
            if roll < 55 || live.isEmpty {
                // Map.
                let device = source.pick(devices)
                // Up to a whole segment: the map path, like the kernel's, does not
                // check swiotlb_max_mapping_size() (what drivers are told).
                let size = switch source.int(in: 0..<10) {
                case 0..<3: source.int(in: 1...2048)
                case 3..<6: source.int(in: 1...8192)
                case 6..<9: source.int(in: 1...65536)
                default: source.int(in: 1...SWIOTLB.segmentBytes)
                }
                let allocAlignMask: UInt64 = source.pick([0, 0, 0, 0, 0xFFF, 0x3FFF, 0xFFFF])
                let page = source.int(in: 16..<(privatePages - 80))
                let original = memory.page(at: page).physicalAddress + source.int(in: 0..<PageGeometry.size)
                let direction = source.pick(DMADirection.allCases)
                let startArea = source.int(in: 0..<areaCount)

                let offset = Int(original.rawValue & device.minAlignMask & (allocAlignMask | UInt64(SWIOTLB.slotSize - 1)))
                let alignment = Int(allocAlignMask) + 1
                let allocSize = (size + offset + alignment - 1) / alignment * alignment
                let modelStart = modelFault == .searchStartsOneAreaLate ? (startArea + 1) % areaCount : startArea
                let expected = model.allocate(original: original.rawValue, allocSize: allocSize,
                                              allocAlignMask: allocAlignMask, minAlignMask: device.minAlignMask,
                                              startArea: modelStart)
                let what = "map of \(size) bytes, align 0x\(String(allocAlignMask, radix: 16)), min-align 0x\(String(device.minAlignMask, radix: 16))"
                do {
                    let tlb = try swiotlb.mapSingle(device: device, original: original, mappingSize: size,
                                                    allocAlignMask: allocAlignMask, direction: direction,
                                                    startArea: startArea)
                    guard let first = expected else {
                        report.fail("\(what) placed at \(tlb) where the model found no room; \(context)")
                        live.append(LiveMapping(tlb: tlb, original: original, size: size, direction: direction,
                                                device: device, first: -1, slots: 0))
                        break step
                    }
                    let slots = (allocSize + SWIOTLB.slotSize - 1) / SWIOTLB.slotSize
                    live.append(LiveMapping(tlb: tlb, original: original, size: size, direction: direction,
                                            device: device, first: first, slots: slots))
                    let head = first + offset / SWIOTLB.slotSize
                    let expectedTLB = swiotlb.start + (head * SWIOTLB.slotSize + offset % SWIOTLB.slotSize)
                    if tlb != expectedTLB {
                        report.fail("\(what) placed at \(tlb), the kernel's search gives \(expectedTLB); \(context)")
                        break step
                    }
                    if tlb.rawValue & device.minAlignMask != original.rawValue & device.minAlignMask {
                        report.fail("\(what) at \(tlb) lost the original's low bits; \(context)")
                        break step
                    }
                    if first / SWIOTLB.segmentSlots != (first + slots - 1) / SWIOTLB.segmentSlots {
                        report.fail("\(what) crosses a segment; \(context)")
                        break step
                    }
                    // Map copies original -> bounce for every direction.
                    if try !same(tlb, original, size) {
                        report.fail("\(what) (\(direction)): the bounce slot does not hold the original's bytes; \(context)")
                        break step
                    }
                } catch {
                    // No room, or (the model's own error) an allocation over a segment.
                    let refused: Bool = switch error as? DMAError {
                    case .swiotlbExhausted?: true
                    case .invalidArgument?: allocSize > SWIOTLB.segmentBytes
                    default: false
                    }
                    guard refused, expected == nil else {
                        report.fail("\(what) failed with \(error) where the model placed it at slot \(expected.map(String.init) ?? "nil"); \(context)")
                        break step
                    }
                    if case .swiotlbExhausted? = error as? DMAError { exhausted += 1 }
                }
            } else if roll < 70 {
                // Sync a random sub-range both ways.
                let m = live[source.int(in: 0..<live.count)]
                let at = source.int(in: 0..<m.size)
                let length = source.int(in: 1...(m.size - at))
                let marker = UInt8(truncatingIfNeeded: source.next())
                try memory.pointer(to: m.tlb + at).storeBytes(of: marker, as: UInt8.self)
                try swiotlb.syncForCPU(device: m.device, tlbAddress: m.tlb + at, size: length, direction: m.direction)
                if m.direction.copiesFromDevice, try !same(m.original + at, m.tlb + at, length) {
                    report.fail("sync for CPU (\(m.direction)) of \(length) bytes at +\(at) did not copy back; \(context)")
                    break step
                }
                try memory.pointer(to: m.original + at).storeBytes(of: marker &+ 1, as: UInt8.self)
                try swiotlb.syncForDevice(device: m.device, tlbAddress: m.tlb + at, size: length, direction: m.direction)
                if m.direction.copiesToDevice, try !same(m.tlb + at, m.original + at, length) {
                    report.fail("sync for device (\(m.direction)) of \(length) bytes at +\(at) did not reach the bounce slot; \(context)")
                    break step
                }
            } else {
                // Unmap a random live mapping; the device wrote its first byte.
                let m = live.remove(at: source.int(in: 0..<live.count))
                let before = try bytes(m.original, 1)[0]
                let marker = before &+ 1
                try memory.pointer(to: m.tlb).storeBytes(of: marker, as: UInt8.self)
                try swiotlb.unmapSingle(device: m.device, tlbAddress: m.tlb, mappingSize: m.size, direction: m.direction)
                let after = try bytes(m.original, 1)[0]
                report.bytesVerified += 1
                if after != (m.direction.copiesFromDevice ? marker : before) {
                    report.fail("unmap (\(m.direction)) copied back \(after), expected \(m.direction.copiesFromDevice ? marker : before); \(context)")
                    break step
                }
                model.release(first: m.first, count: m.slots)
            }

            // Invariants and the model's view after every step.
            let violations = swiotlb.invariantViolations()
            if !violations.isEmpty {
                report.fail("invariants broken: \(violations.joined(separator: "; ")); \(context)")
                break
            }
            let stats = swiotlb.statistics
            if stats.areaUsed != model.areaUsed || stats.liveMappings != live.count || stats.exhaustionFailures != exhausted {
                report.fail("statistics: used per area \(stats.areaUsed) (model \(model.areaUsed)), live \(stats.liveMappings) (\(live.count)), exhaustion failures \(stats.exhaustionFailures) (\(exhausted)); \(context)")
                break
            }
            for slot in 0..<model.nslabs where swiotlb.slotIsAllocated(slot) != model.allocated[slot] {
                report.fail("slot \(slot) allocated: \(!model.allocated[slot]), the model says \(model.allocated[slot]); \(context)")
                break step
            }
        }

        // Teardown: every mapping unmapped, the pool empty and whole again.
        for m in live {
            try swiotlb.unmapSingle(device: m.device, tlbAddress: m.tlb, mappingSize: m.size, direction: m.direction)
            report.operations += 1
        }
        report.lostPages = swiotlb.usedSlots
        if swiotlb.slotList(0) != SWIOTLB.segmentSlots { report.fail("after teardown slot 0's list is \(swiotlb.slotList(0)), not \(SWIOTLB.segmentSlots)") }
        let violations = swiotlb.invariantViolations()
        if !violations.isEmpty { report.fail("after teardown: \(violations.joined(separator: "; "))") }
        return report
    }
}
