import CJemalloc

/// Thin typed wrappers over the jemalloc calls the general allocator uses.
///
/// The `MALLOCX_*` flag macros are function-like C macros that Swift cannot
/// import; they are spelled out here with the values of jemalloc 5.3's header.
@usableFromInline
enum Jemalloc {
    /// `MALLOCX_LG_ALIGN(la)`: align to `1 << la` bytes.
    @inlinable
    static func lgAlign(_ lgAlignment: Int) -> Int32 { Int32(truncatingIfNeeded: lgAlignment) }

    /// `MALLOCX_ARENA(a)`: `(a + 1) << 20`.
    @inlinable
    static func arena(_ index: UInt32) -> Int32 { Int32(truncatingIfNeeded: (Int(index) + 1) << 20) }

    /// `MALLOCX_TCACHE(tc)`: `(tc + 2) << 8`.
    @inlinable
    static func tcache(_ index: UInt32) -> Int32 { Int32(truncatingIfNeeded: (Int(index) + 2) << 8) }

    /// `MALLOCX_TCACHE_NONE` = `MALLOCX_TCACHE(-1)` = `1 << 8`.
    @usableFromInline
    static let tcacheNone: Int32 = 1 << 8

    /// Reads a control value (`mallctl(name, &value, &size, NULL, 0)`).
    static func read<T>(_ name: String, as type: T.Type = T.self) throws(AllocatorError) -> T
    where T: BitwiseCopyable {
        let value = UnsafeMutablePointer<T>.allocate(capacity: 1)
        defer { value.deallocate() }
        var size = MemoryLayout<T>.size
        let code = mallctl(name, value, &size, nil, 0)
        guard code == 0, size == MemoryLayout<T>.size else {
            throw .jemallocControlFailed(name: name, code: code)
        }
        return value.pointee
    }

    /// Writes a control value (`mallctl(name, NULL, NULL, &value, size)`).
    static func write<T>(_ name: String, _ newValue: T) throws(AllocatorError) where T: BitwiseCopyable {
        var value = newValue
        let code = withUnsafeMutableBytes(of: &value) { bytes in
            mallctl(name, nil, nil, bytes.baseAddress, bytes.count)
        }
        guard code == 0 else { throw .jemallocControlFailed(name: name, code: code) }
    }

    /// Runs a `(void)` control (`mallctl(name, NULL, NULL, NULL, 0)`).
    static func run(_ name: String) throws(AllocatorError) {
        let code = mallctl(name, nil, nil, nil, 0)
        guard code == 0 else { throw .jemallocControlFailed(name: name, code: code) }
    }

    /// Writes `newValue` and reads back the result in one call
    /// (`arenas.create` with extent hooks, `tcache.create`).
    static func exchange<In, Out>(_ name: String, writing newValue: In?, reading: Out.Type)
        throws(AllocatorError) -> Out where In: BitwiseCopyable, Out: BitwiseCopyable {
        let out = UnsafeMutablePointer<Out>.allocate(capacity: 1)
        defer { out.deallocate() }
        var outSize = MemoryLayout<Out>.size
        let code: Int32
        if var input = newValue {
            code = withUnsafeMutableBytes(of: &input) { bytes in
                mallctl(name, out, &outSize, bytes.baseAddress, bytes.count)
            }
        } else {
            code = mallctl(name, out, &outSize, nil, 0)
        }
        guard code == 0, outSize == MemoryLayout<Out>.size else {
            throw .jemallocControlFailed(name: name, code: code)
        }
        return out.pointee
    }
}
