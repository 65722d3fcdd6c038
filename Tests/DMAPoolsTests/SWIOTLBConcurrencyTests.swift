import Dispatch
import Synchronization
import Testing
@_spi(PagePoolProvider) @_spi(DMAPoolsSupport) @testable import DMAPools
import DMAPoolsTestSupport

@Suite struct SWIOTLBConcurrencyTests {
    /// Four threads map and unmap (through the DMA API) with random sizes, half
    /// the time from their CPU's area and half from an area of their own, so every
    /// area's lock and the cross-area fallback are exercised; each thread checks
    /// its bytes. Ends with nothing in use and consistent free lists.
    @Test func threadsMapAndUnmapAcrossAreas() throws {
        let f = try SWIOTLBFixture(swiotlbBytes: 4 << 20, areaCount: 4)
        let dma = DMAAPI(memory: f.memory, swiotlb: f.swiotlb)
        let threads = 4
        let operations = 20_000
        let failures = Lock<[String]>([])
        let exhausted = Atomic<Int>(0)
        let seed = UInt64.random(in: 0...UInt64.max)
        // Each thread's originals: an order-6 run (64 private pages) of its own.
        for thread in 0..<threads {
            f.memory.prepareCompound(f.memory.page(at: 1024 + thread * 64), order: 6, owner: .generalAllocator)
        }

        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            var rng = SplitMix64(seed: seed &+ UInt64(thread))
            let run = f.memory.page(at: 1024 + thread * 64)
            var live: [(address: DMAAddress, page: Page, offset: Int, size: Int, direction: DMADirection, marker: UInt8)] = []
            func fail(_ message: String) { failures.withLock { $0.append("thread \(thread), seed \(seed): \(message)") } }
            for op in 0..<operations {
                if live.count < 12 && (live.isEmpty || Int.random(in: 0..<2, using: &rng) == 0) {
                    let page = run
                    let offset = Int.random(in: 0..<(48 << 12), using: &rng)
                    let size = Int.random(in: 0..<4, using: &rng) == 0
                        ? Int.random(in: 1...(16 << 10), using: &rng) : Int.random(in: 1...1500, using: &rng)
                    let direction = DMADirection.allCases[Int.random(in: 0..<3, using: &rng)]
                    let marker = UInt8(truncatingIfNeeded: op)
                    (page.bytes + offset).storeBytes(of: marker, as: UInt8.self)
                    do {
                        let address: DMAAddress
                        if op & 1 == 0 {
                            address = try dma.mapPage(page, offset: offset, size: size, direction: direction, device: f.device)
                        } else {
                            // Pin the starting area (DMAAPI always uses the CPU's).
                            let tlb = try f.swiotlb.mapSingle(device: f.device, original: page.physicalAddress + offset,
                                                              mappingSize: size, direction: direction, startArea: thread)
                            address = f.swiotlb.dmaAddress(of: tlb)
                        }
                        guard let bounce = f.memory.physicalAddress(ofShared: address),
                              let pointer = try? f.memory.pointer(to: bounce),
                              pointer.load(as: UInt8.self) == marker else {
                            fail("op \(op): bounce buffer at \(address) does not hold the marker")
                            return
                        }
                        pointer.storeBytes(of: marker &+ 1, as: UInt8.self)   // the device writes
                        live.append((address, page, offset, size, direction, marker))
                    } catch {
                        guard case .swiotlbExhausted? = error as? DMAError else { fail("op \(op): \(error)"); return }
                        exhausted.wrappingAdd(1, ordering: .relaxed)
                    }
                } else {
                    let m = live.remove(at: Int.random(in: 0..<live.count, using: &rng))
                    do {
                        try dma.unmapPage(m.address, size: m.size, direction: m.direction, device: f.device)
                    } catch {
                        fail("op \(op): unmap \(m.address): \(error)"); return
                    }
                    let byte = (m.page.bytes + m.offset).load(as: UInt8.self)
                    if m.direction.copiesFromDevice && byte != m.marker &+ 1 {
                        fail("op \(op): unmap did not copy the device's byte back (\(byte))")
                        return
                    }
                }
            }
            for m in live {
                do { try dma.unmapPage(m.address, size: m.size, direction: m.direction, device: f.device) } catch {
                    fail("final unmap \(m.address): \(error)")
                }
            }
        }

        let messages = failures.withLock { $0 }
        #expect(messages.isEmpty, "\(messages.prefix(5))")
        let stats = f.swiotlb.statistics
        #expect(stats.used == 0)
        #expect(stats.areaUsed == [0, 0, 0, 0])
        #expect(stats.liveMappings == 0)
        #expect(stats.usedHighWater > 0)
        #expect(stats.exhaustionFailures == exhausted.load(ordering: .relaxed))
        let violations = f.swiotlb.invariantViolations()
        #expect(violations.isEmpty, "\(violations)")
    }
}
