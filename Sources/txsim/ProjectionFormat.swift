import NetStack
import NetStackReports

/// `txsim project` output: table, JSON, CSV and the SVG charts; and the
/// validation's.
enum ProjectionFormat {
    /// A value of a JSON object or CSV cell: the comparison report's.
    typealias JSONValue = ResultFormat.JSONValue



    static func fields(_ p: Projection) -> [(String, JSONValue)] {
        [("design", .string(p.design)), ("senders", .int(p.point.senders)), ("queues", .int(p.point.queues)),
         ("flows", .int(p.point.flows)), ("message_bytes", .int(p.point.messageBytes)), ("rtt_us", .int(p.point.roundTripMicroseconds)),
         ("send_buffer_bytes", .int(p.point.sendBufferBytes)), ("swiotlb_bytes", .int(p.point.swiotlbBytes)),
         ("gbps", .double(p.gbps, digits: 2)), ("bound", .string(p.bound.rawValue)),
         ("copies_per_byte", .double(p.copiesPerByte, digits: 3)), ("zero_copy_fraction", .double(p.zeroCopyFraction, digits: 3)),
         ("sender_cpu_s_per_gb", .double(p.senderSecondsPerGB, digits: 4)), ("queue_cpu_s_per_gb", .double(p.queueSecondsPerGB, digits: 4)),
         ("zero_copy_demand_bytes", .int(Int(min(p.zeroCopyDemandBytes, 1e18)))), ("zero_copy_capacity_bytes", .int(Int(p.zeroCopyCapacityBytes)))]
        + Bound.allCases.filter { $0 != .bouncePool }.map { b in
            ("limit_gbps_" + b.rawValue.replacingSpaces, p.limits[b].map { JSONValue.double($0, digits: 2) } ?? .null)
        }
    }

    static func object(_ f: [(String, JSONValue)]) -> String {
        "{" + f.map { "\"\($0.0)\": \($0.1.json)" }.joined(separator: ", ") + "}"
    }

    static func json(_ rows: [Projection]) -> String {
        "[\n" + rows.map { "  " + object(fields($0)) }.joined(separator: ",\n") + "\n]"
    }

    static func csv(_ rows: [Projection]) -> String {
        guard let first = rows.first else { return "" }
        var text = fields(first).map(\.0).joined(separator: ",") + "\n"
        for r in rows { text += fields(r).map { csvCell($0.1) }.joined(separator: ",") + "\n" }
        return text
    }

    static func csvCell(_ v: JSONValue) -> String {
        switch v {
        case .string(let s): s.contains(",") || s.contains("\"") ? "\"" + s.replacingQuotes + "\"" : s
        case .null: ""
        default: v.text
        }
    }

    static func table(_ rows: [Projection], profile: CalibrationProfile, machine: MachineParameters) -> String {
        var lines: [String] = []
        lines.append("Projection from a profile of \(profile.designs.count) design(s): \(profile.calibratedCount) costs calibrated on \(profile.machine.cores) CPUs (\(profile.machine.date)), \(profile.givenCosts.count) given")
        for g in profile.givenCosts { lines.append("  given: \(g)") }
        lines.append("Machine parameters:")
        for (name, value, source) in ProjectionModel.describe(machine, profile: profile) {
            lines.append("  " + name.padded(34) + value.padded(36) + source)
        }
        lines.append("")
        let header = ["design", "senders", "queues", "flows", "Gbps", "bound", "copies/B", "zero-copy", "sender s/GB", "queue s/GB"]
        let widths = [16, 8, 7, 7, 9, 22, 9, 10, 12, 11]
        func row(_ cells: [String]) -> String {
            zip(cells, widths).enumerated().map { i, c in i == 0 || i == 5 ? c.0.padded(c.1) : c.0.leftPadded(c.1) }.joined(separator: " ")
        }
        lines.append(row(header))
        var last: (Int, Int)? = nil
        for p in rows {
            if let l = last, l != (p.point.queues, p.point.senders) && l.0 != p.point.queues { lines.append("") }
            last = (p.point.queues, p.point.senders)
            lines.append(row([p.design, String(p.point.senders), String(p.point.queues), String(p.point.flows), fixed(p.gbps, 1),
                              p.bound.rawValue, fixed(p.copiesPerByte, 3), fixed(p.zeroCopyFraction, 3),
                              fixed(p.senderSecondsPerGB, 4), fixed(p.queueSecondsPerGB, 4)]))
        }
        return lines.joined(separator: "\n")
    }

    // MARK: Validation

    static func validationFields(_ r: ProjectionValidation.Row) -> [(String, JSONValue)] {
        [("design", .string(r.design)), ("senders", .int(r.senders)), ("queues", .int(r.queues)), ("workload", .string(r.workload)),
         ("predicted_gbps", .double(r.predictedGbps, digits: 2)), ("measured_gbps", .double(r.measuredGbps, digits: 2)),
         ("measured_gbps_min", .double(r.measuredGbpsMin, digits: 2)), ("measured_gbps_max", .double(r.measuredGbpsMax, digits: 2)),
         ("gbps_error", .double(r.gbpsError, digits: 3)), ("cpu_share", .double(r.cpuShare, digits: 3)), ("predicted_bound", .string(r.predicted.bound.rawValue)),
         ("predicted_copies_per_byte", .double(r.predicted.copiesPerByte, digits: 3)),
         ("measured_copies_per_byte", .double(r.measuredCopiesPerByte, digits: 3)), ("copies_per_byte_error", .double(r.copiesError, digits: 3)),
         ("predicted_zero_copy_fraction", .double(r.predicted.zeroCopyFraction, digits: 3)),
         ("measured_zero_copy_fraction", .double(r.measuredZeroCopyFraction, digits: 3)),
         ("zero_copy_fraction_error", .double(r.zeroCopyError, digits: 3)), ("within_goal", .bool(r.withinGoal)),
         ("gbps_error_min", .double(r.roundErrors.min() ?? r.gbpsError, digits: 3)),
         ("gbps_error_max", .double(r.roundErrors.max() ?? r.gbpsError, digits: 3)), ("rounds", .int(r.roundErrors.count)),
         // "calibration/run" per round: near, far or - (not measured).
         ("round_distances", .string(zip(r.roundCalibrationDistances, r.roundRunDistances)
            .map { "\($0.0?.rawValue ?? "-")/\($0.1?.rawValue ?? "-")" }.joined(separator: " "))),
         ("rounds_same_distance", .int(r.sameDistanceErrors.count)),
         // Per round, the speedup over one sender the prediction assumed.
         ("round_parallel_speedups", .string(r.roundParallelSpeedups.map { fixed($0, 3) }.joined(separator: " "))),
         ("gbps_error_same_distance", r.gbpsErrorSameDistance.map { .double($0, digits: 3) } ?? .null)]
    }

    static func validationJSON(_ rows: [ProjectionValidation.Row]) -> String {
        "[\n" + rows.map { "  " + object(validationFields($0)) }.joined(separator: ",\n") + "\n]"
    }

    static func validationCSV(_ rows: [ProjectionValidation.Row]) -> String {
        guard let first = rows.first else { return "" }
        var text = validationFields(first).map(\.0).joined(separator: ",") + "\n"
        for r in rows { text += validationFields(r).map { csvCell($0.1) }.joined(separator: ",") + "\n" }
        return text
    }

    static func validationTable(_ rows: [ProjectionValidation.Row], profiles: [CalibrationProfile]) -> String {
        var lines: [String] = []
        lines.append("Predicted (model, calibrated just before each round) against measured (that round's real run); Gbps: median rounds; error: median of the per-round paired errors.")
        lines.append("Goal: Gbps within \(Int(ProjectionValidation.gbpsGoal * 100))%, copies per byte and zero-copy fraction within \(ProjectionValidation.fractionGoal).")
        let header = ["workload", "S", "Q", "design", "CPU share", "pred Gbps", "meas Gbps", "(min..max)", "error", "bound", "copies p/m", "zero-copy p/m", "ok"]
        let widths = [9, 2, 2, 15, 9, 9, 9, 14, 7, 20, 12, 14, 3]
        func row(_ cells: [String]) -> String {
            zip(cells, widths).enumerated().map { i, c in [0, 3, 9].contains(i) ? c.0.padded(c.1) : c.0.leftPadded(c.1) }.joined(separator: " ")
        }
        lines.append(row(header))
        for r in rows {
            lines.append(row([r.workload, String(r.senders), String(r.queues), r.design, fixed(r.cpuShare, 2), fixed(r.predictedGbps, 2), fixed(r.measuredGbps, 2),
                              "\(fixed(r.measuredGbpsMin, 1))..\(fixed(r.measuredGbpsMax, 1))",
                              (r.gbpsError >= 0 ? "+" : "") + fixed(r.gbpsError * 100, 1) + "%", r.predicted.bound.rawValue,
                              "\(fixed(r.predicted.copiesPerByte, 2))/\(fixed(r.measuredCopiesPerByte, 2))",
                              "\(fixed(r.predicted.zeroCopyFraction, 3))/\(fixed(r.measuredZeroCopyFraction, 3))", r.withinGoal ? "yes" : "NO"]))
        }
        let errors = rows.map { abs($0.gbpsError) }.filter(\.isFinite).sorted()
        if !errors.isEmpty {
            lines.append("")
            lines.append("\(rows.filter(\.withinGoal).count) of \(rows.count) within goal; |Gbps error| median \(fixed(errors[errors.count / 2] * 100, 1))%, largest \(fixed(errors.last! * 100, 1))%")
        }
        // The same, over the rounds in which the host kept the vCPUs where
        // the calibration found them (CPUDistance).
        let same = rows.compactMap { r in r.gbpsErrorSameDistance.map { (row: r, error: $0) } }
        let rounds = rows.map(\.roundErrors.count).reduce(0, +), sameRounds = rows.map(\.sameDistanceErrors.count).reduce(0, +)
        if rounds > 0, rows.contains(where: { $0.roundCalibrationDistances.contains { $0 != nil } }) {
            let within = same.filter { $0.row.meetsGoals(gbpsError: $0.error) }
            lines.append("CPU distance (hand-off probe; far from \(fixed(CPUDistance.farHandoffNanosecondsPerByte, 1)) ns/B): \(sameRounds) of \(rounds) design rounds "
                         + "found the CPUs at the same distance in their calibration and their run; over those rounds alone, "
                         + "\(within.count) of \(same.count) points within goal (JSON: round_distances, gbps_error_same_distance)")
        }
        return lines.joined(separator: "\n")
    }

    // MARK: SVG

    static let palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#9c755f", "#bab0ac"]

    struct Series {
        var label: String
        var color: String
        var dashed: Bool = false
        var points: [(Double, Double)]
    }

    /// One panel: x on a log2 axis, y linear from 0; reference lines drawn dashed.
    static func panel(x0: Int, y0: Int, width: Int, height: Int, title: String, xLabel: String, series: [Series],
                      references: [(String, Double)], yMax fixedMax: Double? = nil, digits: Int = 0) -> String {
        var s = ""
        let left = x0 + 50, right = x0 + width - 10, top = y0 + 24, bottom = y0 + height - 34
        let xs = series.flatMap { $0.points.map(\.0) }.filter { $0 > 0 }
        let lo = log2(xs.min() ?? 1), hi = max(log2(xs.max() ?? 2), lo + 1)
        let yTop = fixedMax ?? max(1e-9, (series.flatMap { $0.points.map(\.1) } + references.map(\.1)).filter(\.isFinite).max() ?? 1) * 1.1
        func px(_ x: Double) -> Double { Double(left) + (log2(x) - lo) / (hi - lo) * Double(right - left) }
        func py(_ y: Double) -> Double { Double(bottom) - min(1.05, max(0, y / yTop)) * Double(bottom - top) }
        s += "<text x=\"\(x0 + width / 2)\" y=\"\(y0 + 14)\" text-anchor=\"middle\" font-weight=\"bold\">\(ResultFormat.xmlEscaped(title))</text>\n"
        s += "<line x1=\"\(left)\" y1=\"\(bottom)\" x2=\"\(right)\" y2=\"\(bottom)\" stroke=\"#333\"/>\n"
        s += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(bottom)\" stroke=\"#333\"/>\n"
        for tick in 0...4 {
            let v = yTop * Double(tick) / 4
            s += "<line x1=\"\(left)\" y1=\"\(fixed(py(v), 1))\" x2=\"\(right)\" y2=\"\(fixed(py(v), 1))\" stroke=\"#eee\"/>\n"
            s += "<text x=\"\(left - 4)\" y=\"\(fixed(py(v) + 4, 1))\" text-anchor=\"end\" fill=\"#555\" font-size=\"10\">\(fixed(v, digits))</text>\n"
        }
        var e = lo
        while e <= hi + 1e-9 {
            let x = pow2(e)
            s += "<text x=\"\(fixed(px(x), 1))\" y=\"\(bottom + 13)\" text-anchor=\"middle\" fill=\"#555\" font-size=\"10\">\(Int(x.rounded()))</text>\n"
            e += 1
        }
        s += "<text x=\"\((left + right) / 2)\" y=\"\(bottom + 27)\" text-anchor=\"middle\" fill=\"#333\" font-size=\"11\">\(ResultFormat.xmlEscaped(xLabel))</text>\n"
        for (label, y) in references {
            s += "<line x1=\"\(left)\" y1=\"\(fixed(py(y), 1))\" x2=\"\(right)\" y2=\"\(fixed(py(y), 1))\" stroke=\"#999\" stroke-dasharray=\"5,4\"/>\n"
            s += "<text x=\"\(right - 2)\" y=\"\(fixed(py(y) - 3, 1))\" text-anchor=\"end\" fill=\"#777\" font-size=\"10\">\(ResultFormat.xmlEscaped(label))</text>\n"
        }
        for line in series where !line.points.isEmpty {
            let path = line.points.map { "\(fixed(px($0.0), 1)),\(fixed(py($0.1), 1))" }.joined(separator: " ")
            s += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(line.color)\" stroke-width=\"2\"\(line.dashed ? " stroke-dasharray=\"6,3\"" : "")/>\n"
            for p in line.points {
                s += "<circle cx=\"\(fixed(px(p.0), 1))\" cy=\"\(fixed(py(p.1), 1))\" r=\"2.5\" fill=\"\(line.color)\"/>\n"
            }
        }
        return s
    }

    static func legend(x: Int, y: Int, _ items: [(String, String, Bool)]) -> String {
        var s = ""
        for (i, item) in items.enumerated() {
            let xi = x + (i % 4) * 200, yi = y + (i / 4) * 16
            s += "<line x1=\"\(xi)\" y1=\"\(yi - 4)\" x2=\"\(xi + 22)\" y2=\"\(yi - 4)\" stroke=\"\(item.1)\" stroke-width=\"2\"\(item.2 ? " stroke-dasharray=\"6,3\"" : "")/>\n"
            s += "<text x=\"\(xi + 28)\" y=\"\(yi)\" font-size=\"11\">\(ResultFormat.xmlEscaped(item.0))</text>\n"
        }
        return s
    }

    /// Chart 1: Gbps against senders, a line per design, a panel per queue
    /// count, the line rate and the seed's figures drawn. Chart 2: zero-copy
    /// fraction and Gbps against flows for 64 MiB, 256 MiB and 1 GiB pools.
    static func svg(_ rows: [Projection], designs: [String], lineRate: Double?, pools: [(Int, [Projection])],
                    senders: Int, queues: Int) -> String {
        let queueCounts = Array(Set(rows.map(\.point.queues))).sorted()
        let panelWidth = 420, panelHeight = 260, columns = 2
        let chartOneRows = (queueCounts.count + columns - 1) / columns
        let chartOneHeight = 60 + chartOneRows * panelHeight + 40
        let width = columns * panelWidth + 20
        let height = chartOneHeight + 60 + panelHeight + 80
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        let first = rows.first?.point
        s += "<text x=\"\(width / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">Projected throughput against senders (model calibrated on this machine)</text>\n"
        s += "<text x=\"\(width / 2)\" y=\"40\" text-anchor=\"middle\" fill=\"#555\">\(first.map { "\($0.messageBytes) B messages, rtt \($0.roundTripMicroseconds) us, \($0.sendBufferBytes >> 20) MiB send buffers, \($0.swiotlbBytes >> 20) MiB swiotlb" } ?? ""); dashed: line rate and the seed's figures at 1-2 queues</text>\n"
        for (i, q) in queueCounts.enumerated() {
            let series = designs.enumerated().map { j, d in
                Series(label: d, color: palette[j % palette.count],
                       points: rows.filter { $0.design == d && $0.point.queues == q }.map { (Double($0.point.senders), $0.gbps) })
            }
            var refs: [(String, Double)] = []
            if let lineRate { refs.append(("line rate \(fixed(lineRate, 0))", lineRate)) }
            if q <= 2 { refs += [("seed: bounce ~50", 50), ("seed: with the feature >170", 170)] }
            s += panel(x0: 10 + (i % columns) * panelWidth, y0: 50 + (i / columns) * panelHeight, width: panelWidth, height: panelHeight,
                       title: "\(q) queue\(q == 1 ? "" : "s"): Gbps", xLabel: "senders", series: series, references: refs)
        }
        s += legend(x: 30, y: 50 + chartOneRows * panelHeight + 14, designs.enumerated().map { ($0.1, palette[$0.0 % palette.count], false) })

        let y2 = chartOneHeight + 20
        s += "<text x=\"\(width / 2)\" y=\"\(y2 + 12)\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">Bounce-pool capacity: \(senders) senders, \(queues) queue(s), 4 MiB send buffers</text>\n"
        let capped = designs.filter { d in pools.first?.1.contains { $0.design == d && $0.zeroCopyCapacityBytes > 0 } ?? false }
        let shown = capped.isEmpty ? designs : capped
        var zSeries: [Series] = [], gSeries: [Series] = [], items: [(String, String, Bool)] = []
        let dashes = [false, true, false]
        for (k, (mib, list)) in pools.enumerated() {
            for (j, d) in shown.enumerated() {
                let color = palette[(j + k * 3) % palette.count]
                let pts = list.filter { $0.design == d }
                let label = "\(d), \(mib >= 1024 ? "\(mib >> 10) GiB" : "\(mib) MiB") pool"
                zSeries.append(Series(label: label, color: color, dashed: dashes[k], points: pts.map { (Double($0.point.flows), $0.zeroCopyFraction) }))
                gSeries.append(Series(label: label, color: color, dashed: dashes[k], points: pts.map { (Double($0.point.flows), $0.gbps) }))
                items.append((label, color, dashes[k]))
            }
        }
        if let bounce = pools.first?.1.filter({ $0.design == "bounce" }), !bounce.isEmpty {
            gSeries.append(Series(label: "bounce", color: "#000", dashed: true, points: bounce.map { (Double($0.point.flows), $0.gbps) }))
            items.append(("bounce (any pool)", "#000", true))
        }
        s += panel(x0: 10, y0: y2 + 24, width: panelWidth, height: panelHeight, title: "zero-copy fraction", xLabel: "flows",
                   series: zSeries, references: [], yMax: 1.05, digits: 2)
        s += panel(x0: 10 + panelWidth, y0: y2 + 24, width: panelWidth, height: panelHeight, title: "Gbps", xLabel: "flows",
                   series: gSeries, references: lineRate.map { [("line rate", $0)] } ?? [])
        s += legend(x: 30, y: y2 + 24 + panelHeight + 14, items)
        s += "</svg>\n"
        return s
    }

    static func log2(_ x: Double) -> Double { Glibc.log2(x) }
    static func pow2(_ e: Double) -> Double { pow(2, e) }
}

extension String {
    var replacingSpaces: String { String(map { $0 == " " || $0 == "-" ? "_" : $0 }) }
    var replacingQuotes: String { replacingOccurrences("\"", "\"\"") }
    func replacingOccurrences(_ a: Character, _ b: String) -> String {
        var out = ""
        for c in self { if c == a { out += b } else { out.append(c) } }
        return out
    }
}

#if canImport(Glibc)
import Glibc
#endif
