import Synchronization

/// An IOMMU in front of the guest's devices, on a platform without memory
/// encryption: `dma_map` allocates an IOVA range and writes page-table
/// entries, `dma_unmap` clears them and ends their IOTLB entries, strictly
/// (an invalidation before it returns) or lazily (the IOVA waits on a flush
/// queue, reusable only after the batched flush). Devices reach memory only
/// through `translate`, which refuses, as a DMA fault, any page whose entry
/// is not present at the moment of the read, or belongs to another device's
/// domain.
///
/// There is no IOTLB: a device read walks the table, so a read after the
/// entry was cleared faults even in lazy mode, where real hardware could
/// still hit a stale IOTLB entry until the flush (the window lazy mode
/// trades for speed). That is stricter than hardware, on purpose: it is
/// what catches a design that unmaps early.
///
/// Every operation's cost is modelled (`IOMMUCostModel`), counted in
/// `statistics` and charged to the calling thread. Thread-safe: the IOVA
/// allocator and the flush queue are under one lock; entries are atomics;
/// the counters are per-CPU. Map, unmap and translate allocate nothing.
public final class IOMMU: @unchecked Sendable {
    public let memory: GuestMemory
    public let configuration: IOMMUConfiguration
    /// The first IOVA (page frame 0 of the IOVA space). Above 4 GiB, so that
    /// an IOVA is never mistaken for a guest-physical address of a small guest.
    public static let iovaBase: UInt64 = 1 << 40

    let table: IOMMUPageTable
    private let state: Lock<State>
    let counters: PerCPUCounters

    private struct State: ~Copyable {
        var allocator: IOVAAllocator
        /// Lazy mode's flush queue: IOVA ranges (first page frame) unmapped, not yet flushed.
        let queue: UnsafeMutablePointer<Int32>
        var queued = 0

        deinit { queue.deallocate() }
    }

    private enum Counter: Int, CaseIterable {
        case maps, unmaps, pteWrites, pteClears, invalidations, flushes, iovasQueued, translationFaults,
             badUnmaps, mappingsTornDown, entriesTornDown, iovaExhausted, modelledNanoseconds
    }

    /// An IOMMU over `memory`'s pages with `configuration`'s IOVA space (its
    /// `iovaPages`, or twice the guest's pages), rounded up to whole 4 MiB blocks.
    public init(memory: GuestMemory, configuration: IOMMUConfiguration) throws(DMAError) {
        guard IOMMUConfiguration.flushQueueRange.contains(configuration.flushQueueSize) else {
            throw .invalidArgument("iommu-flush-queue \(configuration.flushQueueSize) must be in \(IOMMUConfiguration.flushQueueRange)")
        }
        let requested = configuration.iovaPages == 0 ? max(1 << 16, 2 * memory.pageCount) : configuration.iovaPages
        guard IOMMUConfiguration.iovaPagesRange.contains(requested) else {
            throw .invalidArgument("IOVA space of \(requested) pages must be in \(IOMMUConfiguration.iovaPagesRange)")
        }
        let block = 1 << IOVAAllocator.maxOrder
        let pages = (requested + block - 1) / block * block
        self.memory = memory
        self.configuration = configuration
        table = IOMMUPageTable(count: pages)
        let queue = UnsafeMutablePointer<Int32>.allocate(capacity: configuration.flushQueueSize)
        state = Lock(State(allocator: IOVAAllocator(pages: pages), queue: queue))
        counters = PerCPUCounters(counters: Counter.allCases.count)
    }

    /// IOVA pages in the space.
    public var iovaPages: Int { table.count }

    // MARK: Map and unmap

    /// `iommu_dma_map_page`: an IOVA range for `size` bytes at `physical`
    /// (the range's pages must lie in one run of guest pages), its entries
    /// written for `device`. Charges the map and per-entry costs.
    ///
    /// - Throws: `.invalidArgument` for a size the IOVA allocator cannot
    ///   hold in one range (over 4 MiB); `.iovaExhausted` when no range is free
    ///   even after flushing the lazy queue.
    public func map(_ physical: PhysicalAddress, size: Int, device: Device) throws(DMAError) -> DMAAddress {
        let offset = physical.pageOffset
        let count = (offset &+ size &+ PageGeometry.size &- 1) >> PageGeometry.shift
        let order = IOVAAllocator.order(pages: count)
        guard size > 0, order <= IOVAAllocator.maxOrder else {
            throw .invalidArgument("IOMMU map of \(size) bytes: the largest IOVA range is \(PageGeometry.size << IOVAAllocator.maxOrder) bytes")
        }
        var flushed = false
        let frame = state.withLock { s -> Int? in
            if let frame = s.allocator.allocate(order: order) { return frame }
            // As alloc_iova_fast does on failure: free what is cached, retry.
            guard s.queued > 0 else { return nil }
            flushLocked(&s)
            flushed = true
            return s.allocator.allocate(order: order)
        }
        if flushed { charge(configuration.costs.flushNanoseconds) }
        guard let frame else {
            counters.add(Counter.iovaExhausted.rawValue)
            throw .iovaExhausted(size: size, iovaPages: table.count)
        }
        let first = physical.pageFrameNumber
        for i in 0..<count {
            table.write(frame &+ i, IOMMUPageTable.entry(physicalFrame: first &+ UInt64(i), device: device.id))
        }
        let stripe = counters.stripe()
        stripe[Counter.maps.rawValue].wrappingAdd(1, ordering: .relaxed)
        stripe[Counter.pteWrites.rawValue].wrappingAdd(count, ordering: .relaxed)
        let c = configuration.costs
        charge(c.mapNanoseconds &+ c.pteNanoseconds &* count)
        return DMAAddress(Self.iovaBase &+ UInt64(frame) << UInt64(PageGeometry.shift) &+ UInt64(offset))
    }

    /// `iommu_dma_unmap_page`: clears the entries of the mapping that starts
    /// at `address` (the address `map` returned) for `size` bytes, then
    /// invalidates the IOTLB (strict) or queues the IOVA for the next flush
    /// (lazy; a full queue is flushed now).
    ///
    /// - Throws: `.notMapped` when no mapping of `device` starts at `address`,
    ///   when `size` exceeds it, or when an entry is already clear (a double
    ///   unmap): counted in `badUnmaps`, nothing changed.
    public func unmap(_ address: DMAAddress, size: Int, device: Device) throws(DMAError) {
        guard let (frame, offset) = frame(of: address), size > 0 else {
            counters.add(Counter.badUnmaps.rawValue)
            throw .notMapped(address)
        }
        let count = (offset &+ size &+ PageGeometry.size &- 1) >> PageGeometry.shift
        let strict = configuration.mode == .strict
        let queueSize = configuration.flushQueueSize
        // 0: bad unmap; 1: unmapped (strict: invalidated); 2: queued; 3: queued and flushed.
        let outcome = state.withLock { s -> Int in
            guard let order = s.allocator.allocatedOrder(at: frame), count <= 1 << order else { return 0 }
            for i in 0..<count {
                let e = table.read(frame &+ i)
                guard e != 0, IOMMUPageTable.device(of: e) == device.id else { return 0 }
            }
            for i in 0..<count { _ = table.clear(frame &+ i) }
            if strict {
                s.allocator.free(frame)
                return 1
            }
            s.queue[s.queued] = Int32(frame)
            s.queued &+= 1
            if s.queued == queueSize {
                flushLocked(&s)
                return 3
            }
            return 2
        }
        guard outcome != 0 else {
            counters.add(Counter.badUnmaps.rawValue)
            throw .notMapped(address)
        }
        let stripe = counters.stripe()
        stripe[Counter.unmaps.rawValue].wrappingAdd(1, ordering: .relaxed)
        stripe[Counter.pteClears.rawValue].wrappingAdd(count, ordering: .relaxed)
        let c = configuration.costs
        var cost = c.pteNanoseconds &* count
        if outcome == 1 {
            stripe[Counter.invalidations.rawValue].wrappingAdd(1, ordering: .relaxed)
            cost &+= c.invalidateNanoseconds
        } else {
            stripe[Counter.iovasQueued.rawValue].wrappingAdd(1, ordering: .relaxed)
            if outcome == 3 { cost &+= c.flushNanoseconds }
        }
        charge(cost)
    }

    /// Flushes the lazy queue now (`iommu_dma_flush_iotlb_all` from the flush
    /// queue's timer or teardown): its IOVAs become reusable. Nothing queued:
    /// nothing done, nothing charged.
    public func flush() {
        let flushed = state.withLock { s -> Bool in
            guard s.queued > 0 else { return false }
            flushLocked(&s)
            return true
        }
        if flushed { charge(configuration.costs.flushNanoseconds) }
    }

    /// One flush: counted here (the caller charges it, outside the lock).
    private func flushLocked(_ s: inout State) {
        for i in 0..<s.queued { s.allocator.free(Int(s.queue[i])) }
        s.queued = 0
        counters.add(Counter.flushes.rawValue)
    }

    /// The device's domain goes with the device (`device_del`): every entry
    /// it still has is cleared and its IOVAs freed, the lazy queue flushed.
    /// Later reads by the device fault; later unmaps find nothing (the DMA API
    /// refuses any operation on a removed device before it gets here).
    public func detach(_ device: Device) {
        let (mappings, entries) = state.withLock { s -> (Int, Int) in
            if s.queued > 0 { flushLocked(&s) }
            var mappings = 0, entries = 0
            var frame = 0
            while frame < table.count {
                guard let order = s.allocator.allocatedOrder(at: frame) else { frame &+= 1; continue }
                let first = table.read(frame)
                if first != 0 && IOMMUPageTable.device(of: first) == device.id {
                    for i in 0..<(1 << order) where table.clear(frame &+ i) != 0 { entries &+= 1 }
                    s.allocator.free(frame)
                    mappings &+= 1
                }
                frame &+= 1 << order
            }
            return (mappings, entries)
        }
        counters.add(Counter.mappingsTornDown.rawValue, mappings)
        counters.add(Counter.entriesTornDown.rawValue, entries)
        charge(configuration.costs.flushNanoseconds)
    }

    // MARK: The device's side

    /// What `device` reads at `address`: the bytes behind `length` bytes of
    /// IOVA, each page's entry present, the device's own, and the pages
    /// consecutive guest memory; else the fault, counted.
    public func translate(_ address: DMAAddress, length: Int, device: Device) -> Result<UnsafeMutableRawPointer, IOMMUFault> {
        guard length > 0, let (frame, offset) = frame(of: address) else {
            return fault("\(address) is outside the IOVA space")
        }
        let count = (offset &+ length &+ PageGeometry.size &- 1) >> PageGeometry.shift
        guard frame &+ count <= table.count else { return fault("\(address) +\(length) runs past the IOVA space") }
        let first = table.read(frame)
        guard first != 0 else { return fault("IOMMU fault: \(device.name) read \(address), whose IOVA page is not mapped") }
        guard IOMMUPageTable.device(of: first) == device.id else {
            return fault("IOMMU fault: \(device.name) read \(address), mapped in another device's domain")
        }
        let physicalFrame = IOMMUPageTable.physicalFrame(of: first)
        for i in 1..<max(1, count) {
            let e = table.read(frame &+ i)
            guard e != 0, IOMMUPageTable.device(of: e) == device.id,
                  IOMMUPageTable.physicalFrame(of: e) == physicalFrame &+ UInt64(i) else {
                return fault("IOMMU fault: \(device.name) read \(address) +\(length), whose page \(i) is not mapped")
            }
        }
        let physical = PhysicalAddress(physicalFrame << UInt64(PageGeometry.shift))
        guard let page = try? memory.page(containing: physical),
              (try? memory.page(containing: physical + ((count << PageGeometry.shift) - 1))) != nil else {
            return fault("IOMMU entry for \(address) names memory outside the guest")
        }
        return .success(page.bytes + offset)
    }

    /// Whether every page of `length` bytes at `address` is mapped for
    /// `device` now (what `dma_sync_*` checks on this platform).
    public func isMapped(_ address: DMAAddress, length: Int, device: Device) -> Bool {
        guard length > 0, let (frame, offset) = frame(of: address) else { return false }
        let count = (offset &+ length &+ PageGeometry.size &- 1) >> PageGeometry.shift
        guard frame &+ count <= table.count else { return false }
        for i in 0..<count {
            let e = table.read(frame &+ i)
            if e == 0 || IOMMUPageTable.device(of: e) != device.id { return false }
        }
        return true
    }

    /// Whether the IOVA page holding `address` has an entry now.
    public func isPresent(_ address: DMAAddress) -> Bool {
        guard let (frame, _) = frame(of: address) else { return false }
        return table.read(frame) != 0
    }

    // MARK: Statistics

    public var statistics: IOMMUStatistics {
        func sum(_ c: Counter) -> Int { counters.sum(c.rawValue) }
        var s = IOMMUStatistics()
        s.maps = sum(.maps); s.unmaps = sum(.unmaps); s.pteWrites = sum(.pteWrites); s.pteClears = sum(.pteClears)
        s.invalidations = sum(.invalidations); s.flushes = sum(.flushes); s.iovasQueued = sum(.iovasQueued)
        s.translationFaults = sum(.translationFaults); s.badUnmaps = sum(.badUnmaps)
        s.mappingsTornDown = sum(.mappingsTornDown); s.iovaExhausted = sum(.iovaExhausted)
        s.modelledNanoseconds = sum(.modelledNanoseconds)
        s.presentEntries = s.pteWrites - s.pteClears - sum(.entriesTornDown)
        return s
    }

    /// IOVA pages allocated now (mapped, or unmapped and waiting for a flush).
    public var allocatedIOVAPages: Int { state.withLock { $0.allocator.allocatedPages } }

    /// IOVA ranges waiting on the lazy flush queue.
    public var queuedIOVAs: Int { state.withLock { $0.queued } }

    // MARK: Helpers

    private func frame(of address: DMAAddress) -> (frame: Int, offset: Int)? {
        guard address.rawValue >= Self.iovaBase else { return nil }
        let iova = address.rawValue &- Self.iovaBase
        let frame = iova >> UInt64(PageGeometry.shift)
        guard frame < UInt64(table.count) else { return nil }
        return (Int(frame), Int(iova & UInt64(PageGeometry.size - 1)))
    }

    private func fault(_ text: String) -> Result<UnsafeMutableRawPointer, IOMMUFault> {
        counters.add(Counter.translationFaults.rawValue)
        return .failure(IOMMUFault(description: text))
    }

    /// Counts `nanoseconds` of modelled time and spins it when the model says so.
    @inline(__always)
    private func charge(_ nanoseconds: Int) {
        guard nanoseconds > 0 else { return }
        counters.add(Counter.modelledNanoseconds.rawValue, nanoseconds)
        if configuration.costs.charge == .spin { spin(nanoseconds: nanoseconds) }
    }
}

/// A device read the IOMMU refused.
public struct IOMMUFault: Error, Hashable, CustomStringConvertible {
    public var description: String
}
