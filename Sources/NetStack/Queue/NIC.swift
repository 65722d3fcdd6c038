@_spi(DMAPoolsSupport) import DMAPools

/// Counters of a NIC transmit ring.
public struct NICStatistics: Sendable, Hashable {
    public var descriptors = 0
    public var bytes = 0
    /// DMA attempts the NIC refused: an address without the shared bit, memory
    /// that is private, beyond the device's mask, or outside guest memory. Each
    /// one is a failure of the design under test.
    public var dmaFaults = 0
    /// Bytes read and checked against the sender's pattern (verify mode).
    public var verifiedBytes = 0
    /// Bytes that differed from what the sender wrote.
    public var corruptBytes = 0
    /// The first fault or corruption, described.
    public var firstProblem: String?

    /// How each field adds up: the one list `+` is made from.
    static var fields: [FieldRule<Self>] {
        [.sum(\.descriptors), .sum(\.bytes), .sum(\.dmaFaults), .sum(\.verifiedBytes), .sum(\.corruptBytes),
         .first(\.firstProblem)]
    }

    /// Two rings' counters added up (the first problem seen kept).
    public static func + (a: Self, b: Self) -> Self { fields.combine(a, b) }
}

/// A NIC transmit ring's consumer: it reads descriptors as the hardware would.
/// It refuses any DMA outside shared memory or beyond the device's mask, and in
/// verify mode reads every byte it is handed and checks it against the sender's
/// pattern. With a line rate it paces itself like a wire of that speed.
///
/// One NIC ring belongs to one TX queue and runs on that queue's thread.
public final class NICRing: @unchecked Sendable {
    public let memory: GuestMemory
    public let device: Device
    public let verify: Bool
    /// Nanoseconds per byte at the line rate (0 = unlimited).
    let nanosecondsPerByte: Double
    private var wireFreeAt: Double = 0
    /// The NIC never holds its queue past this time (`monotonicNanoseconds()`).
    private var pacingDeadline = Double.infinity
    public private(set) var statistics = NICStatistics()

    public init(memory: GuestMemory, device: Device, verify: Bool, lineRateGbps: Double? = nil) {
        self.memory = memory
        self.device = device
        self.verify = verify
        self.nanosecondsPerByte = lineRateGbps.map { 8 / $0 } ?? 0
    }

    /// DMA-reads one descriptor: `length` bytes at `address`, which carry the
    /// flow's stream from `streamOffset`. Returns false on a DMA fault.
    @discardableResult
    public func consume(_ address: DMAAddress, length: Int, flow: Int, streamOffset: UInt64) -> Bool {
        statistics.descriptors += 1
        let bytes: UnsafeMutableRawPointer
        switch DeviceAccess.resolve(address, length: length, memory: memory, device: device) {
        case .failure(let problem): return fault(problem.description)
        case .success(let pointer): bytes = pointer
        }
        statistics.bytes += length
        if verify {
            let pattern = PayloadPattern(flow: flow)
            if let bad = pattern.firstMismatch(in: bytes, count: length, streamOffset: streamOffset) {
                var corrupt = 0
                for i in bad..<length where bytes.load(fromByteOffset: i, as: UInt8.self) != pattern.byte(at: streamOffset + UInt64(i)) {
                    corrupt += 1
                }
                statistics.corruptBytes += corrupt
                if statistics.firstProblem == nil {
                    statistics.firstProblem = "flow \(flow) byte \(streamOffset + UInt64(bad)) differs from what the sender wrote (\(corrupt) bad bytes in the descriptor)"
                }
            }
            statistics.verifiedBytes += length
        }
        pace(length)
        return true
    }

    private func fault(_ what: String) -> Bool {
        statistics.dmaFaults += 1
        if statistics.firstProblem == nil { statistics.firstProblem = what }
        return false
    }

    /// Holds the queue back as a wire of the configured rate would, never
    /// past the pacing deadline.
    private func pace(_ bytes: Int) {
        guard nanosecondsPerByte > 0 else { return }
        let now = Double(monotonicNanoseconds())
        wireFreeAt = max(wireFreeAt, now) + Double(bytes) * nanosecondsPerByte
        let ahead = min(wireFreeAt, pacingDeadline) - now
        if ahead > 50_000 { sleep(nanoseconds: UInt64(ahead - 20_000)) }
    }

    /// Set before the ring's queue runs (the queue's thread sees it when it starts).
    func stopPacing(at nanoseconds: UInt64) { pacingDeadline = Double(nanoseconds) }
}

/// What a device sees at a DMA address: the bytes, if the address is one it
/// may reach (within its DMA mask, shared, inside guest memory, every page
/// shared; behind an IOMMU: every page mapped for it now), or the DMA fault. The NIC and the block device check the same way.
enum DeviceAccess {
    struct Fault: Error, CustomStringConvertible {
        var description: String
    }

    static func resolve(_ address: DMAAddress, length: Int, memory: GuestMemory,
                        device: Device) -> Result<UnsafeMutableRawPointer, Fault> {
        guard device.canAddress(address, size: length) else {
            return .failure(Fault(description: "\(address) +\(length) is beyond \(device.name)'s DMA mask"))
        }
        if let iommu = device.iommu {
            // Behind an IOMMU: only what its page table maps now is reachable.
            switch iommu.translate(address, length: length, device: device) {
            case .success(let pointer): return .success(pointer)
            case .failure(let fault): return .failure(Fault(description: fault.description))
            }
        }
        guard let physical = memory.physicalAddress(ofShared: address) else {
            return .failure(Fault(description: "\(address) has no shared bit: private memory is not reachable by devices"))
        }
        guard let first = try? memory.page(containing: physical),
              let last = try? memory.page(containing: physical + (length - 1)) else {
            return .failure(Fault(description: "\(address) +\(length) is outside guest memory"))
        }
        var page = first.descriptor
        while page <= last.descriptor {
            if Page(descriptor: page).domain != .shared {
                return .failure(Fault(description: "DMA to private (encrypted) memory at \(Page(descriptor: page).physicalAddress)"))
            }
            page += 1
        }
        return .success(first.bytes + physical.pageOffset)
    }
}
