import DMAPools
import NetStack

#if canImport(Glibc)
import Glibc
#endif

/// The system's load averages (1, 5 and 15 minutes), from `getloadavg`.
struct LoadAverage: Sendable {
    var one: Double, five: Double, fifteen: Double

    static func now() -> LoadAverage {
        var values = [Double](repeating: 0, count: 3)
        let n = getloadavg(&values, 3)
        return n == 3 ? LoadAverage(one: values[0], five: values[1], fifteen: values[2]) : LoadAverage(one: .nan, five: .nan, fifteen: .nan)
    }

    var text: String { "\(fixed(one, 2)) \(fixed(five, 2)) \(fixed(fifteen, 2))" }
}

/// A comparison and everything about the invocation that produced it.
struct Report: Sendable {
    let comparison: Comparison
    let configuration: ExperimentConfiguration
    let loadBefore: LoadAverage
    let loadAfter: LoadAverage

    var results: [TransmitResult] { comparison.results }
    var baseline: String { comparison.plan.baseline.name }
    var roundCount: Int { comparison.rounds.count }

    /// Every setting that produced the figures, one line each.
    var settings: [String] {
        guard let w = results.first?.workload else { return [] }
        let h = configuration.memory.hypercall
        let perRound = w.durationSeconds / Double(comparison.plan.rounds)
        let m = configuration.memory
        var lines = [
            "workload: \(w.senders) senders, \(w.queues) queue(s), \(w.flows) flows, \(w.messageBytes) B messages, rtt \(w.roundTripMicroseconds) us, send buffer \(w.sendBufferBytes) B"
                + (w.verify ? ", verify" : "") + (w.zeroCopy ? ", MSG_ZEROCOPY" : "") + (w.lineRateGbps.map { ", line rate \(fixed($0, 1)) Gbit/s" } ?? ""),
            "rounds: \(roundCount) of \(fixed(perRound, 3)) s per design (--rounds \(comparison.plan.rounds)\(comparison.plan.untilStableCap.map { ", --until-stable \($0)" } ?? "")), baseline \(baseline) before, between and after the others, their order rotated each round",
            "guest: \(m.guestBytes >> 20) MiB, swiotlb \(m.swiotlbBytes >> 20) MiB, zerocopy_tx_percent \(configuration.zeroCopyPercent), provider \(configuration.poolProvider.name), pool ring \(configuration.poolRingSize), memory \(m.residentAtBoot ? "resident at boot" : "on demand")",
            "modelled hypercall (an assumption, not a measurement): \(h.perCallNanoseconds) ns + \(h.perPageNanoseconds) ns/page, \(h.charge.rawValue)",
            "machine: memcpy \(comparison.copyRateBefore.copyBytes) B cache resident, GB/s 1 thread \(fixed(comparison.copyRateBefore.oneThreadGigabytesPerSecond, 1)) -> \(fixed(comparison.copyRateAfter.oneThreadGigabytesPerSecond, 1)), 2 threads \(fixed(comparison.copyRateBefore.twoThreadsGigabytesPerSecond, 1)) -> \(fixed(comparison.copyRateAfter.twoThreadsGigabytesPerSecond, 1)) (before -> after); load average \(loadBefore.text) -> \(loadAfter.text)",
        ]
        if comparison.plan.untilStableCap != nil {
            lines.append("until stable: \(comparison.stable ? "every ratio's IQR within +-5% after \(roundCount) rounds" : "NOT stable within +-5% after the cap of \(roundCount) rounds")")
        }
        return lines
    }
}
