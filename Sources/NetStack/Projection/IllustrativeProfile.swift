extension CalibrationProfile {
    /// A profile of round, made-up costs for the five built-in designs, every
    /// cost marked given ("illustrative: not measured"): for tests of the
    /// model's rules, the projection benchmark, and as a template for a
    /// hand-written profile. It projects nothing about any machine.
    public static func illustrative() -> CalibrationProfile {
        let note = "illustrative: not measured"
        func g(_ v: Double) -> Cost { .given(v, note) }
        func design(_ name: String, sender: Double, queue: Double, copies: Double, zeroCopy: Double,
                    source: PageSource, recycles: Double = 0) -> DesignCosts {
            DesignCosts(design: name, senderNsPerByte: g(sender), senderNsPerFrame: g(2000),
                        queueNsPerByte: g(queue), queueNsPerFrame: g(1500), copiesPerByte: g(copies),
                        zeroCopyFraction: g(zeroCopy), poolRecyclesPerByte: g(recycles), poolRingFraction: g(0),
                        cpuShare: g(1), pageSource: source)
        }
        return CalibrationProfile(
            machine: CalibrationMachine(cores: 2, lastLevelCacheBytes: 32 << 20, date: "-", note: note),
            method: CalibrationMethod(senders: 1, queues: 1, flows: 2, roundTripMicroseconds: 0, messageBytes: [65536, 16384],
                                      secondsPerRun: 0, repetitions: 0),
            machineCosts: MachineCosts(copySameCoreHotNsPerByte: g(0.03), copyOtherCoreNsPerByte: g(0.05),
                                       copyColdNsPerByte: g(0.12), swiotlbMapUnmapNs: g(1500),
                                       swiotlbMapUnmapContendedNs: g(2500), poolCacheRecycleNs: g(20),
                                       poolRingRecycleContendedNs: g(120), copyBandwidthOneThreadGBps: g(8),
                                       copyBandwidthTwoThreadsGBps: g(14)),
            designs: [
                design("bounce", sender: 0.10, queue: 0.12, copies: 2, zeroCopy: 0, source: .general),
                design("frag-refill", sender: 0.14, queue: 0.02, copies: 1, zeroCopy: 1, source: .swiotlbCapped),
                design("page-pool", sender: 0.08, queue: 0.02, copies: 1, zeroCopy: 1, source: .swiotlbCapped, recycles: 1.0 / 32768),
                design("decrypted-pool", sender: 0.08, queue: 0.02, copies: 1, zeroCopy: 1, source: .uncapped),
                design("inline-decrypt", sender: 0.10, queue: 0.40, copies: 1, zeroCopy: 1, source: .uncapped),
            ])
    }
}
