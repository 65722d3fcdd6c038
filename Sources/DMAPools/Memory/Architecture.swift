/// The architecture constants the DMA and page_pool code reads, with the
/// kernel's values for the two architectures confidential guests run on.
public struct Architecture: Sendable, Hashable, CustomStringConvertible {
    /// A name for reports (`x86_64`, `arm64`).
    public var name: String
    /// `dma_get_cache_alignment()`: `ARCH_DMA_MINALIGN` where the architecture
    /// defines it, else 1. page_pool rounds fragment sizes up to it.
    public var dmaCacheAlignment: Int
    /// `SMP_CACHE_BYTES` (`L1_CACHE_BYTES`): sets the `ptr_ring` consumer batch
    /// (`2 * SMP_CACHE_BYTES / sizeof(void *)`).
    public var cacheLineBytes: Int

    /// A custom architecture. Both sizes must be powers of two.
    public init(name: String, dmaCacheAlignment: Int, cacheLineBytes: Int) {
        self.name = name
        self.dmaCacheAlignment = dmaCacheAlignment
        self.cacheLineBytes = cacheLineBytes
    }

    /// x86-64: no `ARCH_DMA_MINALIGN` (DMA is cache-coherent), so
    /// `dma_get_cache_alignment()` is 1; 64-byte cache lines.
    public static let x86_64 = Architecture(name: "x86_64", dmaCacheAlignment: 1, cacheLineBytes: 64)

    /// arm64: `ARCH_DMA_MINALIGN` 128 (the largest cache-writeback granule of
    /// non-coherent devices); `L1_CACHE_BYTES` 64.
    public static let arm64 = Architecture(name: "arm64", dmaCacheAlignment: 128, cacheLineBytes: 64)

    /// Whether both sizes are positive powers of two.
    public var isValid: Bool {
        func powerOfTwo(_ n: Int) -> Bool { n > 0 && n & (n - 1) == 0 }
        return !name.isEmpty && powerOfTwo(dmaCacheAlignment) && powerOfTwo(cacheLineBytes)
    }

    public var description: String {
        "\(name) (dma_get_cache_alignment \(dmaCacheAlignment), SMP_CACHE_BYTES \(cacheLineBytes))"
    }
}
