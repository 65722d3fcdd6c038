import DMAPools

/// What one design did on one workload: every figure counted during the run.
public struct TransmitResult: Sendable {
    public var design: String
    public var workload: Workload
    /// Wall-clock seconds from the first send to the last acknowledgement.
    public var seconds: Double
    /// Payload bytes the NIC consumed.
    public var payloadBytes: Int
    public var gbps: Double { seconds > 0 ? Double(payloadBytes) * 8 / seconds / 1e9 : 0 }
    /// Bytes copied by the CPU, by site (each counted where the copy happens).
    public var bytesCopiedBySender: Int      // copy 1: user -> socket page
    public var bytesCopiedByDMALayer: Int    // copy 2: swiotlb bounces (map and sync)
    public var bytesCopied: Int { bytesCopiedBySender + bytesCopiedByDMALayer }
    public var copiesPerByte: Double { payloadBytes > 0 ? Double(bytesCopied) / Double(payloadBytes) : 0 }
    /// Payload bytes mapped without a bounce copy, over all payload bytes mapped.
    public var bytesMappedDirect: Int
    public var bytesMappedBounced: Int
    public var bytesConvertedInPlace: Int
    public var zeroCopyFraction: Double {
        let total = bytesMappedDirect + bytesMappedBounced + bytesConvertedInPlace
        return total > 0 ? Double(bytesMappedDirect + bytesConvertedInPlace) / Double(total) : 0
    }
    /// CPU time by role, in seconds.
    public var senderCPUSeconds: Double
    public var queueCPUSeconds: Double
    public var senderCPUSecondsPerGB: Double { payloadBytes > 0 ? senderCPUSeconds / (Double(payloadBytes) / 1e9) : 0 }
    public var queueCPUSecondsPerGB: Double { payloadBytes > 0 ? queueCPUSeconds / (Double(payloadBytes) / 1e9) : 0 }
    /// swiotlb slots: total and the high-water mark during the run.
    public var swiotlbSlots: Int
    public var swiotlbPeakSlots: Int
    /// Modelled conversion hypercalls: calls and the time they stand for.
    public var conversionCalls: Int
    public var conversionModelledSeconds: Double
    public var dmaFaults: Int
    public var verifiedBytes: Int
    public var corruptBytes: Int
    public var framesDropped: Int
    public var requeues: Int
    /// Pages not back with their owner after teardown (must be 0).
    public var lostPages: Int
    /// Socket refills that found no page at any order.
    public var refillFailures: Int
    /// The first problem seen, if any.
    public var firstProblem: String?
    /// Design-specific figures (pool counters, fallbacks, hook checks...).
    public var designFigures: [(String, String)]
    /// Frames discarded because the NIC was removed (fault runs only).
    public var framesDiscardedDeviceGone: Int = 0
    /// Operations attempted on the NIC's device after its removal (must be 0).
    public var staleDeviceAccesses: Int = 0
    /// The block device's mappings, when it ran (fault runs only).
    public var blockDevice: BlockDeviceStatistics?

    /// Whether the run kept every promise: no DMA fault, nothing corrupt,
    /// nothing dropped, nothing lost.
    public var passed: Bool {
        dmaFaults == 0 && corruptBytes == 0 && framesDropped == 0 && lostPages == 0 && staleDeviceAccesses == 0
            && (blockDevice?.failures ?? 0) == 0
    }
}
