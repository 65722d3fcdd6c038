import NetStack

// A small formatter over the public result fields, until txsim's report
// (table, JSON, CSV, SVG) moves into a library product a package can use:
// then this file goes and the example prints that report instead. Its rows
// are the headline rows of `txsim compare`, under the same labels.

/// The comparison as a table: one column per design, then each design's own
/// figures, then throughput relative to bounce.
func table(_ results: [TransmitResult]) -> String {
    guard let first = results.first else { return "(no results)" }
    let w = first.workload
    var lines = ["Workload: \(w.senders) senders, \(w.queues) queues, \(w.flows) flows, \(w.messageBytes) B messages, "
                 + "rtt \(w.roundTripMicroseconds) us, \(fixed(w.durationSeconds, 1)) s per design"
                 + (first.roundGbps.count > 1 ? " in \(first.roundGbps.count) interleaved rounds (Gbps: median round)" : "")
                 + (w.verify ? ", verify" : "")]
    lines.append("Guest: \(first.guestDescription); every design on a fresh guest, set up before the clock starts (not timed)")
    let rows: [(String, (TransmitResult) -> String)] = [
        ("design", { $0.design }),
        ("Gbps (payload)", { fixed($0.gbps, 2) }),
        ("bytes copied per payload byte", { fixed($0.copiesPerByte, 3) }),
        ("zero-copy fraction", { fixed($0.zeroCopyFraction, 3) }),
        ("DMA faults", { "\($0.dmaFaults)" }),
        ("bytes verified by the NIC", { "\($0.verifiedBytes)" }),
        ("pages lost", { "\($0.lostPages)" }),
        ("copy 2 bytes (swiotlb bounce)", { "\($0.bytesCopiedByDMALayer)" }),
        ("sender CPU s per GB", { fixed($0.senderCPUSecondsPerGB, 3) }),
        ("queue CPU s per GB", { fixed($0.queueCPUSecondsPerGB, 3) }),
        ("swiotlb peak slots", { "\($0.swiotlbPeakSlots)" }),
        ("conversion hypercalls", { "\($0.conversionCalls)" }),
        ("modelled hypercall seconds", { fixed($0.conversionModelledSeconds, 4) }),
        ("set-up seconds (not timed)", { fixed($0.setupSeconds, 3) }),
        ("passed", { $0.passed ? "yes" : "NO" }),
    ]
    let width = max(16, results.map { $0.design.count + 2 }.max() ?? 0)
    for (label, value) in rows {
        lines.append(label.padding(32) + results.map { value($0).leftPadding(width) }.joined())
    }
    for r in results where !r.designFigures.isEmpty {
        lines.append("")
        lines.append("\(r.design):")
        for (name, value) in r.designFigures { lines.append("  " + name.padding(30) + value) }
    }
    let problems = results.compactMap { r in r.firstProblem.map { "  \(r.design): \($0)" } }
    if !problems.isEmpty { lines += ["", "Problems:"] + problems }
    if let baseline = first.baselineDesign {
        lines += ["", "Throughput relative to \(baseline), paired round by round (median [slowest-fastest round]):"]
        for r in results {
            guard let s = r.ratioSpread else { continue }
            lines.append("  " + r.design.padding(30) + fixed(s.median, 2) + "x  [" + fixed(s.minimum, 2) + "-" + fixed(s.maximum, 2) + "]")
        }
    }
    return lines.joined(separator: "\n")
}

/// `value` with `digits` decimals.
func fixed(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (abs(value) * scale).rounded()
    let whole = Int(rounded / scale), fraction = Int(rounded.truncatingRemainder(dividingBy: scale))
    let sign = value < 0 && rounded > 0 ? "-" : ""
    guard digits > 0 else { return sign + "\(whole)" }
    let text = String(fraction)
    return sign + "\(whole)." + String(repeating: "0", count: digits - text.count) + text
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
    func leftPadding(_ width: Int) -> String { count >= width ? " " + self : String(repeating: " ", count: width - count) + self }
}
