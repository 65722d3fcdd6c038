import NetStack

/// Renders results for people (table, SVG) and for programs (JSON, CSV).
enum ResultFormat {
    /// One row of the report: a label, a machine key, and the value per result.
    struct Row: Sendable {
        let label: String
        let key: String
        let value: @Sendable (TransmitResult) -> JSONValue
    }

    enum JSONValue: Sendable {
        case int(Int)
        case double(Double, digits: Int)
        case string(String)
        case bool(Bool)

        var json: String {
            switch self {
            case .int(let v): String(v)
            case .double(let v, let d): v.isFinite ? fixed(v, d) : "null"
            case .string(let s): "\"" + escaped(s) + "\""
            case .bool(let b): b ? "true" : "false"
            }
        }

        var text: String {
            switch self {
            case .int(let v): String(v)
            case .double(let v, let d): fixed(v, d)
            case .string(let s): s
            case .bool(let b): b ? "yes" : "NO"
            }
        }
    }

    /// The stable report columns. design, gbps, copies_per_byte, zero_copy_fraction,
    /// dma_faults, verified_bytes and lost_pages are the contract for checks.
    static let rows: [Row] = [
        Row(label: "design", key: "design") { .string($0.design) },
        Row(label: "Gbps (payload)", key: "gbps") { .double($0.gbps, digits: 2) },
        Row(label: "Gbps slowest round", key: "gbps_min") { .double($0.gbpsRange.lowerBound, digits: 2) },
        Row(label: "Gbps fastest round", key: "gbps_max") { .double($0.gbpsRange.upperBound, digits: 2) },
        Row(label: "bytes copied per payload byte", key: "copies_per_byte") { .double($0.copiesPerByte, digits: 3) },
        Row(label: "zero-copy fraction", key: "zero_copy_fraction") { .double($0.zeroCopyFraction, digits: 3) },
        Row(label: "DMA faults", key: "dma_faults") { .int($0.dmaFaults) },
        Row(label: "bytes verified by the NIC", key: "verified_bytes") { .int($0.verifiedBytes) },
        Row(label: "pages lost", key: "lost_pages") { .int($0.lostPages) },
        Row(label: "payload bytes", key: "payload_bytes") { .int($0.payloadBytes) },
        Row(label: "seconds", key: "seconds") { .double($0.seconds, digits: 3) },
        Row(label: "copy 1 bytes (sender)", key: "bytes_copied_sender") { .int($0.bytesCopiedBySender) },
        Row(label: "copy 2 bytes (swiotlb bounce)", key: "bytes_bounced") { .int($0.bytesCopiedByDMALayer) },
        Row(label: "bytes mapped without copy", key: "bytes_mapped_direct") { .int($0.bytesMappedDirect + $0.bytesConvertedInPlace) },
        Row(label: "sender CPU s per GB", key: "sender_cpu_s_per_gb") { .double($0.senderCPUSecondsPerGB, digits: 3) },
        Row(label: "queue CPU s per GB", key: "queue_cpu_s_per_gb") { .double($0.queueCPUSecondsPerGB, digits: 3) },
        Row(label: "swiotlb peak slots", key: "swiotlb_peak_slots") { .int($0.swiotlbPeakSlots) },
        Row(label: "swiotlb peak use", key: "swiotlb_peak_fraction") {
            .double($0.swiotlbSlots > 0 ? Double($0.swiotlbPeakSlots) / Double($0.swiotlbSlots) : 0, digits: 3)
        },
        Row(label: "conversion hypercalls", key: "conversion_calls") { .int($0.conversionCalls) },
        Row(label: "modelled hypercall seconds", key: "conversion_modelled_s") { .double($0.conversionModelledSeconds, digits: 4) },
        Row(label: "socket refill failures", key: "refill_failures") { .int($0.refillFailures) },
        Row(label: "frames requeued", key: "requeues") { .int($0.requeues) },
        Row(label: "frames dropped", key: "frames_dropped") { .int($0.framesDropped) },
        Row(label: "frames abandoned at drain limit", key: "frames_abandoned") { .int($0.framesAbandoned) },
        Row(label: "zerocopy_tx_percent (0: n/a)", key: "zerocopy_tx_percent") { .int($0.zeroCopyPercent) },
        Row(label: "corrupt bytes", key: "corrupt_bytes") { .int($0.corruptBytes) },
        Row(label: "passed", key: "passed") { .bool($0.passed) },
    ]

    static func table(_ results: [TransmitResult]) -> String {
        guard let first = results.first else { return "(no results)" }
        let w = first.workload
        var lines: [String] = []
        let rounds = first.roundGbps.count
        lines.append("Workload: \(w.senders) senders, \(w.queues) queues, \(w.flows) flows, \(w.messageBytes) B messages, rtt \(w.roundTripMicroseconds) us, \(fixed(w.durationSeconds, 1)) s per design\(rounds > 1 ? " in \(rounds) interleaved rounds (Gbps: median round)" : "")\(w.verify ? ", verify" : "")\(w.zeroCopy ? ", MSG_ZEROCOPY" : "")\(w.lineRateGbps.map { ", line rate \(fixed($0, 1)) Gbps" } ?? "")")
        if let guest = results.first(where: { $0.design == "page-pool" })?.guestDescription ?? results.first?.guestDescription,
           !guest.isEmpty {
            lines.append("Guest: " + guest + "; every design on a fresh guest")
        }
        let labelWidth = 32
        let columnWidth = max(16, results.map { $0.design.count + 2 }.max() ?? 0)
        for row in rows {
            var line = row.label.padded(labelWidth)
            for r in results { line += row.value(r).text.leftPadded(columnWidth) }
            lines.append(line)
        }
        // Design-specific figures, grouped by design.
        for r in results where !r.designFigures.isEmpty {
            lines.append("")
            lines.append("\(r.design):")
            for (name, value) in r.designFigures { lines.append("  " + name.padded(labelWidth - 2) + value) }
        }
        var problems = results.compactMap { r in r.firstProblem.map { "\(r.design): \($0)" } }
        for r in results where r.payloadBytes == 0 {
            problems.append("\(r.design): moved no payload bytes in \(fixed(r.seconds, 3)) s: the result means nothing")
        }
        for r in results where r.framesAbandoned > 0 {
            problems.append("\(r.design): \(r.framesAbandoned) frames (\(r.bytesAbandoned) bytes) still queued at the drain limit were abandoned, not sent (their pages came home)")
        }
        if !problems.isEmpty {
            lines.append("")
            lines.append("Problems:")
            lines.append(contentsOf: problems.map { "  " + $0 })
        }
        if let bounce = results.first(where: { $0.design == "bounce" }), bounce.gbps > 0 {
            lines.append("")
            lines.append("Throughput relative to bounce (same run):")
            for r in results { lines.append("  " + r.design.padded(labelWidth - 2) + fixed(r.gbps / bounce.gbps, 2) + "x") }
        }
        return lines.joined(separator: "\n")
    }

    static func json(_ results: [TransmitResult]) -> String {
        let objects = results.map { r -> String in
            var fields = rows.map { "\"\($0.key)\": \($0.value(r).json)" }
            let figures = r.designFigures.map { "\"\(escaped($0.0))\": \"\(escaped($0.1))\"" }.joined(separator: ", ")
            fields.append("\"figures\": {\(figures)}")
            fields.append("\"first_problem\": " + (r.firstProblem.map { "\"" + escaped($0) + "\"" } ?? "null"))
            return "  {" + fields.joined(separator: ", ") + "}"
        }
        return "[\n" + objects.joined(separator: ",\n") + "\n]"
    }

    static func csv(_ results: [TransmitResult]) -> String {
        var out = rows.map(\.key).joined(separator: ",") + "\n"
        for r in results {
            out += rows.map { row in
                let v = row.value(r)
                if case .string(let s) = v { return "\"" + s.replacingAll("\"", with: "\"\"") + "\"" }
                return v.json
            }.joined(separator: ",") + "\n"
        }
        return out
    }

    /// Two panels of bars: throughput, and bytes copied per payload byte.
    static func svg(_ results: [TransmitResult]) -> String {
        let width = 760, panelHeight = 220, top = 60, left = 70, barGap = 18  // pixels
        let barWidth = max(30, (width - left - 40) / max(1, results.count) - barGap)
        let maxGbps = max(1, results.map(\.gbps).max() ?? 1)
        let maxCopies = max(2.0, results.map(\.copiesPerByte).max() ?? 2) * 1.15
        let palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"]
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(top + 2 * panelHeight + 40)\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        if let w = results.first?.workload {
            s += "<text x=\"\(width / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">TX designs in a confidential VM: \(w.senders) senders, \(w.queues) queue(s), \(w.flows) flows, \(w.messageBytes) B messages</text>\n"
            s += "<text x=\"\(width / 2)\" y=\"40\" text-anchor=\"middle\" fill=\"#555\">measured side by side in one run; every design on a fresh guest</text>\n"
        }
        func panel(_ title: String, y0: Int, maxValue: Double, value: (TransmitResult) -> Double, digits: Int) {
            let plot = panelHeight - 60
            s += "<text x=\"\(left)\" y=\"\(y0 + 14)\" font-weight=\"bold\">\(title)</text>\n"
            let baseY = y0 + 30 + plot
            s += "<line x1=\"\(left)\" y1=\"\(baseY)\" x2=\"\(width - 20)\" y2=\"\(baseY)\" stroke=\"#333\"/>\n"
            for tick in 0...4 {
                let v = maxValue * Double(tick) / 4
                let y = baseY - Int(Double(plot) * Double(tick) / 4)
                s += "<line x1=\"\(left - 4)\" y1=\"\(y)\" x2=\"\(width - 20)\" y2=\"\(y)\" stroke=\"#ddd\"/>\n"
                s += "<text x=\"\(left - 8)\" y=\"\(y + 4)\" text-anchor=\"end\" fill=\"#555\">\(fixed(v, digits))</text>\n"
            }
            for (i, r) in results.enumerated() {
                let v = value(r)
                let h = Int(Double(plot) * min(1, v / maxValue))
                let x = left + 20 + i * (barWidth + barGap)
                s += "<rect x=\"\(x)\" y=\"\(baseY - h)\" width=\"\(barWidth)\" height=\"\(h)\" fill=\"\(palette[i % palette.count])\"/>\n"
                s += "<text x=\"\(x + barWidth / 2)\" y=\"\(baseY - h - 5)\" text-anchor=\"middle\">\(fixed(v, digits))</text>\n"
                s += "<text x=\"\(x + barWidth / 2)\" y=\"\(baseY + 16)\" text-anchor=\"middle\">\(escaped(r.design))</text>\n"
            }
        }
        panel("Throughput (Gbps of payload)", y0: top, maxValue: maxGbps * 1.1, value: \.gbps, digits: 1)
        panel("Bytes copied per payload byte", y0: top + panelHeight + 20, maxValue: maxCopies, value: \.copiesPerByte, digits: 2)
        s += "</svg>\n"
        return s
    }

    static func escaped(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "<": out += "\\u003c"
            case "&": out += "\\u0026"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

extension String {
    func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for c in self { if c == target { out += replacement } else { out.append(c) } }
        return out
    }
}
