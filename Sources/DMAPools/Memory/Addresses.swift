/// Page geometry shared by every model in the framework (x86-64 / arm64 4 KiB pages).
public enum PageGeometry {
    /// `PAGE_SHIFT`.
    public static let shift = 12
    /// `PAGE_SIZE`: 4 KiB.
    public static let size = 1 << shift
    /// The highest page order the framework's own allocators hand out (order 9 = 2 MiB, a THP).
    public static let maxOrder = 9
    /// `MAX_PAGE_ORDER`: the highest order the kernel's page allocator (and so
    /// `page_pool_init`) accepts (order 10 = 4 MiB).
    public static let maxPageOrder = 10
    /// `SKB_FRAG_PAGE_ORDER`: the socket page-frag order (32 KiB).
    public static let socketFragOrder = 3

    /// Bytes in a run of `1 << order` pages.
    @inlinable
    public static func bytes(order: Int) -> Int { size << order }
}

/// A guest-physical address (`phys_addr_t`).
public struct PhysicalAddress: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    @inlinable
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    @inlinable
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// The page frame number.
    @inlinable
    public var pageFrameNumber: UInt64 { rawValue >> UInt64(PageGeometry.shift) }

    /// The offset inside the page.
    @inlinable
    public var pageOffset: Int { Int(truncatingIfNeeded: rawValue) & (PageGeometry.size - 1) }

    @inlinable
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    /// Offsets an address. Overflow is a programming error and traps.
    @inlinable
    public static func + (lhs: Self, rhs: Int) -> Self { Self(lhs.rawValue + UInt64(rhs)) }

    public var description: String { "phys:0x" + String(rawValue, radix: 16) }
}

/// A bus address as a device sees it (`dma_addr_t`).
///
/// In a confidential VM, shared (decrypted) memory is addressed with the platform's
/// shared bit set (TDX's GPA shared bit; SEV's cleared C-bit plays the same role).
/// Private memory has no device-visible address at all.
public struct DMAAddress: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    @inlinable
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    @inlinable
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// `DMA_MAPPING_ERROR`.
    public static let mappingError = DMAAddress(~0)

    @inlinable
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    @inlinable
    public static func + (lhs: Self, rhs: Int) -> Self { Self(lhs.rawValue + UInt64(rhs)) }

    public var description: String { "dma:0x" + String(rawValue, radix: 16) }
}

/// The direction of a streaming DMA mapping (`enum dma_data_direction`).
public enum DMADirection: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// `DMA_BIDIRECTIONAL`.
    case bidirectional = 0
    /// `DMA_TO_DEVICE`: the device reads (transmit).
    case toDevice = 1
    /// `DMA_FROM_DEVICE`: the device writes (receive).
    case fromDevice = 2

    /// Whether the CPU's data must reach the device (`map`, `sync_for_device`).
    @inlinable
    public var copiesToDevice: Bool { self != .fromDevice }

    /// Whether the device's data must reach the CPU (`unmap`, `sync_for_cpu`).
    @inlinable
    public var copiesFromDevice: Bool { self != .toDevice }

    public var description: String {
        switch self {
        case .bidirectional: "DMA_BIDIRECTIONAL"
        case .toDevice: "DMA_TO_DEVICE"
        case .fromDevice: "DMA_FROM_DEVICE"
        }
    }
}

/// Whether guest memory is encrypted to the host and devices, or shared with them.
public enum MemoryDomain: UInt8, Sendable, CustomStringConvertible {
    /// Encrypted guest-private memory: no device may DMA to or from it.
    case `private` = 0
    /// Decrypted memory shared with the host: devices may DMA to it.
    case shared = 1

    public var description: String { self == .private ? "private" : "shared" }
}
