import DMAPools
import Synchronization

/// `decrypted-pool`: socket pages from the generic pre-decrypted allocator
/// (Mostafa Saleh's "CoCo allocators"): shared pages carved from chunks
/// converted once, each carrying its DMA address. The driver uses that address
/// as is: the pages are already device-visible, so nothing bounces. Freed pages
/// go back to the allocator by their owner, as pool pages do by `pp_recycle`.
public final class DecryptedPoolDesign: GuestDesign, @unchecked Sendable {
    public override var name: String { "decrypted-pool" }
    private let fallbacks = Atomic<Int>(0)

    public override func allocateSocketPage(order: Int, for socket: Socket) -> Page? {
        if let page = try? guest.decrypted.allocate(order: order) { return page }
        fallbacks.wrappingAdd(1, ordering: .relaxed)
        return try? guest.allocator.allocatePages(order: order)
    }

    public override func map(_ fragment: Fragment, socket: Socket, queue: TXQueue) throws(DMAError) -> FragmentMapping {
        guard fragment.page.head.owner == .decryptedAllocator else { return try mapThroughDMAAPI(fragment, queue: queue) }
        return try mapByStoredAddress(fragment, queue: queue)
    }

    public override func reportFigures() -> [DesignFigure] {
        let s = guest.decrypted.statistics
        return [
            .count("chunks converted", s.chunksConverted, unit: "chunks"),
            .count("fallbacks to general pages", fallbacks.load(ordering: .relaxed), unit: "refills"),
        ]
    }
}

/// The `decrypted-pool` design kind: the guest's pre-decrypted allocator
/// (its spare chunks reserved in private memory); nothing bounces but the
/// fallback pages.
public struct DecryptedPoolDesignKind: TransmitDesignKind {
    public init() {}
    public var name: String { "decrypted-pool" }
    public func unsupportedReason(on platform: Guest.Platform) -> String? {
        platform.iommu == nil ? nil : "its allocator converts private (encrypted) memory to shared, and no memory is encrypted on this platform (not applicable)"
    }
    public var summary: String { "socket pages from the generic pre-decrypted allocator (chunks converted once), mapped by their own address" }
    public func requirements(workload: Workload, configuration: ExperimentConfiguration) -> GuestRequirements {
        GuestRequirements(decryptedAllocator: true, bounces: false)
    }
    public func makeDesign(in context: DesignContext) throws -> any TransmitDesign {
        DecryptedPoolDesign(guest: context.guest, device: context.device)
    }
}

extension TransmitDesignKind where Self == DecryptedPoolDesignKind {
    /// `decrypted-pool`: socket pages from the pre-decrypted allocator.
    public static var decryptedPool: DecryptedPoolDesignKind { DecryptedPoolDesignKind() }
}

/// `inline-decrypt`: no special pages. `dma_map` converts the fragment's pages
/// to shared in place (a modelled hypercall) and the completion converts them
/// back, so nothing is copied but every mapping pays two conversions — the
/// approach the review measured as slower than copying. A page shared by
/// several in-flight fragments is converted once and converted back when the
/// last of them completes.
public final class InlineDecryptDesign: GuestDesign, @unchecked Sendable {
    public override var name: String { "inline-decrypt" }
    /// In-flight mappings per page of guest memory.
    private let sharers: UnsafeMutablePointer<Atomic<Int32>>
    private let pageCount: Int

    public override init(guest: Guest, device: Device) {
        pageCount = guest.memory.pageCount
        sharers = .allocate(capacity: pageCount)
        for i in 0..<pageCount { (sharers + i).initialize(to: Atomic(0)) }
        super.init(guest: guest, device: device)
    }

    deinit {
        sharers.deinitialize(count: pageCount)
        sharers.deallocate()
    }

    /// The page indices a fragment touches.
    private func pages(of fragment: Fragment) -> ClosedRange<Int> {
        let first = guest.memory.index(of: fragment.page) + fragment.offset >> PageGeometry.shift
        let last = guest.memory.index(of: fragment.page) + (fragment.offset + fragment.length - 1) >> PageGeometry.shift
        return first...last
    }

    /// Converts `[start, end)` to `domain` in one call.
    private func convert(_ start: Int, _ end: Int, to domain: MemoryDomain) throws(DMAError) {
        guard end > start else { return }
        do {
            try guest.memory.convert(guest.memory.page(at: start), count: end - start, to: domain)
        } catch {
            throw .conversionFailed("\(error)")
        }
    }

    public override func map(_ fragment: Fragment, socket: Socket, queue: TXQueue) throws(DMAError) -> FragmentMapping {
        let range = pages(of: fragment)
        var runStart = -1
        for index in range {
            let first = sharers[index].wrappingAdd(1, ordering: .acquiringAndReleasing).oldValue == 0
            if first && runStart < 0 { runStart = index }
            if !first && runStart >= 0 {
                do { try convert(runStart, index, to: .shared) } catch { undo(range, through: index); throw error }
                runStart = -1
            }
        }
        if runStart >= 0 {
            do { try convert(runStart, range.upperBound + 1, to: .shared) } catch { undo(range, through: range.upperBound); throw error }
        }
        let physical = fragment.page.physicalAddress + fragment.offset
        let address = guest.memory.unencryptedDMAAddress(of: physical)
        return FragmentMapping(address: address, length: fragment.length, kind: .convertedInPlace)
    }

    /// Gives back the share counts taken for `range` up to `last` after a failed
    /// conversion (pages converted earlier in the loop are converted back).
    private func undo(_ range: ClosedRange<Int>, through last: Int) {
        for index in range.lowerBound...last {
            if sharers[index].wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0,
               guest.memory.page(at: index).domain == .shared {
                makePrivate(index, index + 1)
            }
        }
    }

    /// Converts `[start, end)` back to private, retrying failed conversions: a
    /// page must never go back to the general allocator while shared. Each
    /// failure is counted by the memory's conversion statistics.
    private func makePrivate(_ start: Int, _ end: Int) {
        for attempt in 1...Self.conversionRetries {
            do {
                try convert(start, end, to: .private)
                return
            } catch {
                if attempt == Self.conversionRetries {
                    fatalError("inline-decrypt: pages \(start)..<\(end) could not be made private again after \(attempt) attempts: \(error)")
                }
            }
        }
    }

    /// Attempts at converting pages back before the model gives up (a trap).
    static let conversionRetries = 16

    public override func unmap(_ mapping: FragmentMapping, fragment: Fragment, queue: TXQueue) throws(DMAError) {
        let range = pages(of: fragment)
        var runStart = -1
        for index in range {
            let last = sharers[index].wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0
            if last && runStart < 0 { runStart = index }
            if !last && runStart >= 0 { makePrivate(runStart, index); runStart = -1 }
        }
        if runStart >= 0 { makePrivate(runStart, range.upperBound + 1) }
    }

    public override func reportFigures() -> [DesignFigure] {
        let c = guest.memory.conversionStatistics
        return [
            .count("conversion calls", c.calls, unit: "calls"),
            .counts("pages decrypted/encrypted", [c.pagesDecrypted, c.pagesEncrypted], unit: "pages"),
            .count("conversion failures", c.failures, unit: "calls"),
        ]
    }
}

/// The `inline-decrypt` design kind: a plain guest; a share count per page
/// of guest memory is set up before the clock starts.
public struct InlineDecryptDesignKind: TransmitDesignKind {
    public init() {}
    public var name: String { "inline-decrypt" }
    public func unsupportedReason(on platform: Guest.Platform) -> String? {
        platform.iommu == nil ? nil : "it converts pages between private and shared per mapping, and no memory is encrypted on this platform (not applicable)"
    }
    public var summary: String { "general pages converted to shared at map time and back at completion (two modelled hypercalls per mapping)" }
    public var convertsPerMapping: Bool { true }
    public func requirements(workload: Workload, configuration: ExperimentConfiguration) -> GuestRequirements {
        GuestRequirements(bounces: false)
    }
    public func makeDesign(in context: DesignContext) throws -> any TransmitDesign {
        InlineDecryptDesign(guest: context.guest, device: context.device)
    }
}

extension TransmitDesignKind where Self == InlineDecryptDesignKind {
    /// `inline-decrypt`: convert at map, convert back at completion.
    public static var inlineDecrypt: InlineDecryptDesignKind { InlineDecryptDesignKind() }
}
