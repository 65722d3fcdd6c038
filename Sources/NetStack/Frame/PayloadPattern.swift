/// The bytes a sender writes, as a pure function of (flow, stream offset), so the
/// NIC in verify mode can check every byte it is handed without keeping a copy.
///
/// Each aligned 8-byte word of a flow's byte stream is a SplitMix64 hash of the
/// flow id and the word's offset modulo `period`; a byte at offset `o` is byte
/// `o % 8` of the word at `o & ~7` (little-endian). The period lets a sender fill
/// its user buffer once and send from it forever (copy 1 stays a pure memcpy);
/// it is a multiple of 8 and deliberately not a power of two, so it never lines
/// up with page or frame boundaries.
public struct PayloadPattern: Sendable, Hashable {
    /// The default period: 1 MiB + 8 bytes.
    public static let defaultPeriod: UInt64 = (1 << 20) + 8

    public let flow: UInt64
    public let period: UInt64

    @inlinable
    public init(flow: Int, period: UInt64 = PayloadPattern.defaultPeriod) {
        precondition(period > 0 && period % 8 == 0, "pattern period \(period) must be a positive multiple of 8")
        self.flow = UInt64(truncatingIfNeeded: flow)
        self.period = period
    }

    /// The 8-byte word at stream offset `wordOffset` (a multiple of 8).
    @inlinable
    public func word(at wordOffset: UInt64) -> UInt64 {
        // SplitMix64 finaliser over (flow, offset); wrapping arithmetic is the hash.
        var z = (flow &* 0x9E37_79B9_7F4A_7C15) ^ (wordOffset % period)
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The byte at stream offset `offset`.
    @inlinable
    public func byte(at offset: UInt64) -> UInt8 {
        UInt8(truncatingIfNeeded: word(at: offset & ~7) >> ((offset & 7) * 8))
    }

    /// Writes `count` bytes of the stream starting at `offset` into `destination`.
    public func fill(_ destination: UnsafeMutableRawPointer, count: Int, streamOffset offset: UInt64) {
        var i = 0
        // Head: bytes until the stream offset is word aligned.
        while i < count, (offset &+ UInt64(i)) & 7 != 0 {
            destination.storeBytes(of: byte(at: offset &+ UInt64(i)), toByteOffset: i, as: UInt8.self)
            i &+= 1  // i < count <= Int.max
        }
        while i &+ 8 <= count {  // i + 8 <= count cannot overflow: count is a buffer size
            destination.storeBytes(of: word(at: offset &+ UInt64(i)).littleEndian, toByteOffset: i, as: UInt64.self)
            i &+= 8
        }
        while i < count {
            destination.storeBytes(of: byte(at: offset &+ UInt64(i)), toByteOffset: i, as: UInt8.self)
            i &+= 1
        }
    }

    /// The first offset in `[0, count)` of `source` whose byte differs from the
    /// stream at `offset`, or nil when every byte matches.
    public func firstMismatch(in source: UnsafeRawPointer, count: Int, streamOffset offset: UInt64) -> Int? {
        var i = 0
        while i < count, (offset &+ UInt64(i)) & 7 != 0 {
            if source.load(fromByteOffset: i, as: UInt8.self) != byte(at: offset &+ UInt64(i)) { return i }
            i &+= 1
        }
        while i &+ 8 <= count {
            if source.loadUnaligned(fromByteOffset: i, as: UInt64.self) != word(at: offset &+ UInt64(i)).littleEndian {
                for j in i..<(i + 8) where source.load(fromByteOffset: j, as: UInt8.self) != byte(at: offset &+ UInt64(j)) {
                    return j
                }
            }
            i &+= 8
        }
        while i < count {
            if source.load(fromByteOffset: i, as: UInt8.self) != byte(at: offset &+ UInt64(i)) { return i }
            i &+= 1
        }
        return nil
    }
}

extension PayloadPattern {
    /// The bytes a sender writes as the protocol headers of `flow`'s frames
    /// (each frame's head at its own stream offset), a pattern of its own so
    /// that a head mistaken for payload, or payload for a head, is caught.
    public static func header(flow: Int) -> PayloadPattern { PayloadPattern(flow: 0x4ead_0000 + flow) }
}
