import Synchronization

/// An IOMMU's page table: one entry per IOVA page, naming the guest-physical
/// page it translates to and the device whose domain it belongs to, or 0 when
/// not present. A single level, where hardware walks four: the entries are
/// real (written at map, cleared at unmap, read by every device access), the
/// walk's depth is in the modelled per-entry cost.
///
/// Entries are atomics: the map path stores one with releasing ordering
/// before the descriptor naming its IOVA reaches the device, and the device's
/// walk loads it with acquiring ordering, so a device that sees an entry sees
/// the page it names. Owns its one allocation (`~Copyable`).
struct IOMMUPageTable: ~Copyable, @unchecked Sendable {
    let entries: UnsafeMutablePointer<Atomic<UInt64>>
    let count: Int

    /// Bits of an entry below the page frame: the owning device's id + 1.
    static let deviceBits: UInt64 = 16

    init(count: Int) {
        self.count = count
        entries = .allocate(capacity: count)
        for i in 0..<count { (entries + i).initialize(to: Atomic(0)) }
    }

    deinit {
        entries.deinitialize(count: count)
        entries.deallocate()
    }

    /// The entry for `frame` translating to guest page frame `physicalFrame` for device `device`.
    static func entry(physicalFrame: UInt64, device: Int) -> UInt64 {
        physicalFrame << deviceBits | UInt64(device &+ 1)
    }

    static func physicalFrame(of entry: UInt64) -> UInt64 { entry >> deviceBits }
    static func device(of entry: UInt64) -> Int { Int(truncatingIfNeeded: entry & ((1 << deviceBits) - 1)) &- 1 }

    @inline(__always)
    func write(_ frame: Int, _ entry: UInt64) { entries[frame].store(entry, ordering: .releasing) }

    @inline(__always)
    func clear(_ frame: Int) -> UInt64 { entries[frame].exchange(0, ordering: .acquiringAndReleasing) }

    @inline(__always)
    func read(_ frame: Int) -> UInt64 { entries[frame].load(ordering: .acquiring) }
}
