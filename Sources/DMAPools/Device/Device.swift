import Synchronization

/// A DMA-capable device (`struct device` with its DMA parameters).
///
/// A device can be removed (`device_del`). Removal bumps its registry's removal
/// serial, so code that caches a device (the frag-refill design's per-socket
/// bounce device) can tell its cache is stale without touching the device. Any
/// DMA operation on a removed device (map, unmap, sync) fails with
/// `DMAError.deviceRemoved` and is counted in `staleAccessCount`, which a
/// correct design keeps at zero: the driver quiesces its queues before
/// `device_del`, so no DMA operation may reach a removed device.
///
/// Asking swiotlb for new memory on behalf of a removed device is different: a
/// holder of a device reference (the seed patch's socket cache) may race the
/// removal by one read of the serial and ask once. That request is refused
/// before anything touches the device and is counted in
/// `refusedAllocationCount`, not as a stale access.
public final class Device: Sendable, CustomStringConvertible {
    /// A stable identity for reports and page tags.
    public let id: Int
    public let name: String
    /// `dma_mask`: the highest bus address the device can reach.
    public let dmaMask: UInt64
    /// `dev_is_dma_coherent`.
    public let isCoherent: Bool
    /// Whether every streaming mapping must bounce through swiotlb
    /// (`is_swiotlb_force_bounce`; forced for every device in a confidential VM).
    public let mustBounce: Bool
    /// `dma_get_min_align_mask`: low address bits a bounce must preserve.
    public let minAlignMask: UInt64
    /// The IOMMU the device sits behind (`dev->iommu_group`'s DMA domain), or
    /// nil: its DMA addresses are then bus addresses of guest memory. A device
    /// behind an IOMMU reaches memory only through its page table.
    public let iommu: IOMMU?

    private let removed = Atomic<Bool>(false)
    /// Set first by `remove()`: no new `whilePresent` section starts.
    private let removing = Atomic<Bool>(false)
    /// `whilePresent` sections running, which `remove()` waits for.
    private let presentSections = Atomic<Int>(0)
    private let staleAccesses = Atomic<Int>(0)
    private let refusedAllocations = Atomic<Int>(0)
    /// The registry's removal serial (shared without a reference back to the
    /// registry, which holds its devices: no cycle).
    private let removalSerial: RemovalSerial

    init(id: Int, name: String, dmaMask: UInt64, isCoherent: Bool, mustBounce: Bool,
         minAlignMask: UInt64, removalSerial: RemovalSerial, iommu: IOMMU? = nil) {
        self.iommu = iommu
        self.id = id
        self.name = name
        self.dmaMask = dmaMask
        self.isCoherent = isCoherent
        self.mustBounce = mustBounce
        self.minAlignMask = minAlignMask
        self.removalSerial = removalSerial
    }

    /// Whether the device has been removed.
    @inlinable
    public var isRemoved: Bool { _isRemoved }

    @usableFromInline
    var _isRemoved: Bool { removed.load(ordering: .acquiring) }

    /// Operations attempted on the device after its removal.
    public var staleAccessCount: Int { staleAccesses.load(ordering: .relaxed) }

    /// Allocation requests made for the device after its removal and refused
    /// before they reached it (`checkAdmitsAllocation`).
    public var refusedAllocationCount: Int { refusedAllocations.load(ordering: .relaxed) }

    /// Throws `deviceRemoved` (and counts the refused request) if the device is
    /// gone. Allocators that hand out memory for a device (swiotlb's zero-copy
    /// runs) call this first: a removed device gets no new memory, and the
    /// refusal touches nothing of the device.
    @inlinable
    public func checkAdmitsAllocation() throws(DMAError) {
        if _isRemoved { try throwRemoved(.allocation) }
    }

    /// Throws `deviceRemoved` (and counts the stale access) if the device is gone.
    /// Every DMA operation (map, unmap, sync) calls this first.
    @inlinable
    public func checkPresent() throws(DMAError) {
        if _isRemoved { try throwRemoved(.dmaOperation) }
    }

    /// What was asked of a removed device: which counter counts it.
    @usableFromInline
    enum RemovedDeviceUse { case dmaOperation, allocation }

    @inline(never)
    @usableFromInline
    func throwRemoved(_ use: RemovedDeviceUse) throws(DMAError) -> Never {
        switch use {
        case .dmaOperation: staleAccesses.wrappingAdd(1, ordering: .relaxed)
        case .allocation: refusedAllocations.wrappingAdd(1, ordering: .relaxed)
        }
        throw .deviceRemoved(name)
    }

    /// Whether the device can address `[address, address + size)` (`dma_capable`).
    @inlinable
    public func canAddress(_ address: DMAAddress, size: Int) -> Bool {
        guard size > 0 else { return false }
        let end = address.rawValue.addingReportingOverflow(UInt64(size - 1))
        return !end.overflow && end.partialValue <= dmaMask
    }

    /// Removes the device (`device_del`): later DMA operations fail, and the
    /// registry's removal serial moves so cached references can be invalidated.
    /// Behind an IOMMU, its domain goes with it: every mapping it still has
    /// is torn down (`IOMMU.detach`).
    ///
    /// It first waits for every `whilePresent` section to end (new ones are
    /// refused from the moment it starts), as a driver's unregister path
    /// waits (`synchronize_rcu`) for paths that may still reach the device.
    /// - Precondition: the caller is not inside a `whilePresent` section of
    ///   this device (it would wait for itself).
    public func remove() {
        guard !removing.exchange(true, ordering: .sequentiallyConsistent) else { return }
        while presentSections.load(ordering: .sequentiallyConsistent) > 0 { sched_yield() }
        removed.store(true, ordering: .releasing)
        removalSerial.value.wrappingAdd(1, ordering: .releasing)
        iommu?.detach(self)
    }

    /// Runs `body` only if the device is present and not being removed, and
    /// holds off its removal until `body` returns; nil, without running it,
    /// otherwise. For a path that reaches the device from outside the
    /// driver's quiesced queues, such as a pool's refill mapping new pages
    /// from a sender, or a page returned while the device goes: its check
    /// and its DMA operation cannot be split by a removal. Two atomic
    /// operations on a line every caller writes: for slow paths.
    public func whilePresent<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result? {
        presentSections.wrappingAdd(1, ordering: .sequentiallyConsistent)
        defer { presentSections.wrappingSubtract(1, ordering: .releasing) }
        guard !removing.load(ordering: .sequentiallyConsistent) else { return nil }
        return try body()
    }

    /// `whilePresent` for an allocation that maps memory for the device: a
    /// removed device (or one being removed) refuses it, counted as a refused
    /// allocation (`refusedAllocationCount`), with `deviceRemoved`.
    public func admittingAllocation<Result>(_ body: () throws(DMAError) -> Result) throws(DMAError) -> Result {
        guard let result = try whilePresent(body) else { try throwRemoved(.allocation) }
        return result
    }

    public var description: String {
        "device \(name) (mask 0x\(String(dmaMask, radix: 16))\(mustBounce ? ", bounce" : "")\(iommu != nil ? ", behind an IOMMU" : "")\(isRemoved ? ", removed" : ""))"
    }
}

/// The global device-removal serial the seed patch adds (`global_device_serial`).
final class RemovalSerial: Sendable {
    let value = Atomic<UInt32>(0)
}

/// The set of devices in a guest, with the global device-removal serial the seed
/// patch adds (`global_device_serial`).
public final class DeviceRegistry: Sendable {
    private let serial = RemovalSerial()
    private let devices = Lock<[Device]>([])
    /// Whether the guest forces bouncing (a confidential VM does).
    public let forceBounce: Bool
    /// The IOMMU every device added sits behind (nil: none).
    public let iommu: IOMMU?

    public init(forceBounce: Bool = true, iommu: IOMMU? = nil) {
        precondition(!(forceBounce && iommu != nil), "DeviceRegistry: a platform either bounces (confidential) or translates (IOMMU)")
        self.forceBounce = forceBounce
        self.iommu = iommu
    }

    /// The removal serial (`swiotlb_get_device_serial`): it changes whenever a
    /// device is removed. Read with acquiring ordering so that a reader that sees
    /// the old value also sees the device as present.
    @inlinable
    public var removalSerial: UInt32 { _removalSerial }

    @usableFromInline
    var _removalSerial: UInt32 { serial.value.load(ordering: .acquiring) }

    /// Adds a device.
    /// - Parameters:
    ///   - dmaMaskBits: width of the device's DMA mask (`DMA_BIT_MASK(n)`), 1...64.
    ///   - minAlignMask: low bits a bounce must preserve (NVMe uses 4 KiB - 1).
    public func add(name: String, dmaMaskBits: Int = 64, isCoherent: Bool = true,
                    minAlignMask: UInt64 = 0) throws(DMAError) -> Device {
        guard !name.isEmpty else { throw .invalidArgument("device name must not be empty") }
        guard (1...64).contains(dmaMaskBits) else {
            throw .invalidArgument("dmaMaskBits \(dmaMaskBits) must be in 1...64")
        }
        guard minAlignMask & (minAlignMask &+ 1) == 0, minAlignMask < UInt64(PageGeometry.size) * 64 else {
            throw .invalidArgument("minAlignMask 0x\(String(minAlignMask, radix: 16)) must be 2^n - 1 and below 256 KiB")
        }
        let mask = dmaMaskBits == 64 ? UInt64.max : (UInt64(1) << dmaMaskBits) - 1
        return devices.withLock { list in
            let device = Device(id: list.count, name: name, dmaMask: mask, isCoherent: isCoherent,
                                mustBounce: forceBounce, minAlignMask: minAlignMask, removalSerial: serial,
                                iommu: iommu)
            list.append(device)
            return device
        }
    }

    /// Every device ever added, removed ones included.
    public var all: [Device] { devices.withLock { $0 } }
}

/// Errors from the DMA API, swiotlb and devices.
public enum DMAError: Error, Hashable, CustomStringConvertible {
    /// An argument is out of range; the text names it.
    case invalidArgument(String)
    /// The device was removed.
    case deviceRemoved(String)
    /// The device's mask cannot reach the memory it would have to use.
    case addressNotReachable(device: String, address: DMAAddress, size: Int)
    /// The memory is private and the operation needs shared memory.
    case privateMemory(PhysicalAddress)
    /// swiotlb has no run of free slots for the request.
    case swiotlbExhausted(size: Int, usedSlots: Int, totalSlots: Int)
    /// The zero-copy allocation mode is disabled or over its cap.
    case zeroCopyCapReached(percent: Int, usedSlots: Int, totalSlots: Int)
    /// The address is not a live mapping.
    case notMapped(DMAAddress)
    /// A modelled private <-> shared conversion failed while mapping.
    case conversionFailed(String)
    /// The IOMMU's IOVA space has no free range of the size asked for.
    case iovaExhausted(size: Int, iovaPages: Int)

    public var description: String {
        switch self {
        case .invalidArgument(let why): "invalid argument: \(why)"
        case .deviceRemoved(let name): "device \(name) has been removed"
        case .addressNotReachable(let device, let address, let size):
            "device \(device) cannot reach \(size) bytes at \(address) (DMA mask)"
        case .privateMemory(let a): "\(a) is private (encrypted) memory: no device may DMA to it"
        case .swiotlbExhausted(let size, let used, let total):
            "swiotlb buffer is full (sz: \(size) bytes), total \(total) (slots), used \(used) (slots)"
        case .zeroCopyCapReached(let pct, let used, let total):
            "swiotlb zero-copy cap reached: zerocopy_tx_percent \(pct), used \(used) of \(total) slots"
        case .notMapped(let a): "\(a) is not a live DMA mapping"
        case .conversionFailed(let why): "in-place conversion failed: \(why)"
        case .iovaExhausted(let size, let pages): "IOMMU: no free IOVA range for \(size) bytes in a space of \(pages) pages"
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
