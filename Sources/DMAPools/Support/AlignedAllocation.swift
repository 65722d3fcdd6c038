/// Memory aligned to more than malloc's 16 bytes (cache lines, per-CPU
/// stripes), carved from a plain allocation.
///
/// `allocate(byteCount:alignment:)` with an alignment above 16 goes to
/// `posix_memalign`, whose blocks a malloc interposer cannot prefix with its
/// header. ordo-one's interposer (the benchmark suite's malloc counter) tells
/// its own blocks from others on `free` by reading the 8 bytes before the
/// pointer, and a `posix_memalign` block that is the first of a fresh page has
/// an unmapped page there: `Bad pointer dereference` in `replacement_free`,
/// from `_RecycleRing.deallocate` (1 run in 40 of the suite). A plain
/// allocation carries the header and is freed through the path that reads it.
/// These are set-up allocations: the `alignment - 16` bytes are not on a hot path.
@usableFromInline
package struct AlignedAllocation {
    /// What was allocated (and is freed).
    @usableFromInline package let base: UnsafeMutableRawPointer
    /// `alignment`-aligned, `byteCount` bytes inside `base`'s block.
    @usableFromInline package let pointer: UnsafeMutableRawPointer

    package init(byteCount: Int, alignment: Int) {
        precondition(alignment >= 16 && alignment & (alignment - 1) == 0, "alignment \(alignment) must be a power of two >= 16")
        base = .allocate(byteCount: byteCount + alignment - 16, alignment: 16)
        let misalignment = Int(bitPattern: base) & (alignment - 1)
        pointer = misalignment == 0 ? base : base + (alignment - misalignment)
    }

    package func deallocate() { base.deallocate() }
}
