import ArgumentParser
import DMAPools
import NetStack
import NetStackReports

/// `txsim break-even`: the conversion cost at which inline decryption matches
/// bouncing, measured by sweeping the modelled hypercall cost (see
/// `BreakEvenSweep`).
struct BreakEven: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "break-even",
        abstract: "Sweep the modelled conversion cost: inline-decrypt and decrypted-pool against bounce, and the cost where inline-decrypt matches bounce.",
        discussion: """
        Each point is a paired comparison (bounce, inline-decrypt, decrypted-pool) with the \
        conversion hypercall costing the point's nanoseconds per call (per page 0) or per page \
        (per call 0), spun inside the measured figures. The sweep sets both costs itself: \
        --hypercall-ns and --hypercall-page-ns are not used; every other guest option is.
        """)

    @OptionGroup var workload: WorkloadOptions
    @OptionGroup var guest: GuestOptions
    @Option(name: .customLong("per-call-ns"), parsing: .unconditional,
            help: "Per-call costs to sweep (per page 0), comma-separated, each 0...\(HypercallCostModel.maximumPerCallNanoseconds); empty for none.")
    var perCall: String = BreakEvenSweep.defaultPerCall.map(String.init).joined(separator: ",")
    @Option(name: .customLong("per-page-ns"), parsing: .unconditional,
            help: "Per-page costs to sweep (per call 0), comma-separated, each 0...\(HypercallCostModel.maximumPerPageNanoseconds); empty for none.")
    var perPage: String = BreakEvenSweep.defaultPerPage.map(String.init).joined(separator: ",")
    @OptionGroup var sweep: SweepOptions
    var rounds: Int { sweep.rounds }
    var json: Bool { sweep.json }
    var quiet: Bool { sweep.quiet }

    static func costs(_ text: String, option: String, maximum: Int) throws -> [Int] {
        text.isEmpty ? [] : try sweepList(text, option: option, range: 0...maximum)
    }

    func lists() throws -> (perCall: [Int], perPage: [Int]) {
        let c = try Self.costs(perCall, option: "per-call-ns", maximum: HypercallCostModel.maximumPerCallNanoseconds)
        let p = try Self.costs(perPage, option: "per-page-ns", maximum: HypercallCostModel.maximumPerPageNanoseconds)
        guard !c.isEmpty || !p.isEmpty else { throw ValidationError("invalid --per-call-ns and --per-page-ns: both are empty, nothing to sweep") }
        return (c, p)
    }

    func plan() -> ComparisonPlan { ComparisonPlan(rounds: rounds, baseline: .bounce) }

    func validate() throws {
        _ = try lists()
        try checkExperiment(BreakEvenSweep.kinds, workload: workload, plan: plan(), guest: guest)
    }

    func run() throws {
        let (perCallCosts, perPageCosts) = try lists()
        let w = try workload.workload()
        let configuration = try guest.configuration()
        let quiet = self.quiet
        if !quiet {
            printError("txsim: break-even: \(perCallCosts.count + perPageCosts.count) points, each bounce, inline-decrypt and decrypted-pool in \(rounds) round(s) of \(fixed(w.durationSeconds / Double(rounds), 2)) s")
        }
        var sweeps: [(BreakEvenSweep.Axis, [BreakEvenSweep.Point])] = []
        for (axis, costs) in [(BreakEvenSweep.Axis.perCall, perCallCosts), (.perPage, perPageCosts)] where !costs.isEmpty {
            let points = try BreakEvenSweep.run(axis: axis, costs: costs, workload: w, plan: plan(), configuration: configuration) { axis, ns, kind, round in
                if !quiet { printError("txsim:   \(axis.rawValue) \(ns) ns, round \(round + 1): \(kind.name)") }
            }
            sweeps.append((axis, points))
        }
        if json {
            var parts: [String] = []
            for (axis, points) in sweeps {
                let objects = points.map { p in
                    "{\"nanoseconds\": \(p.nanoseconds), \"inline_ratio_to_bounce\": \(number(p.inlineRatio?.median)), "
                    + "\"inline_ratio_min\": \(number(p.inlineRatio?.minimum)), \"inline_ratio_max\": \(number(p.inlineRatio?.maximum)), "
                    + "\"decrypted_pool_ratio_to_bounce\": \(number(p.pooledRatio?.median)), "
                    + "\"bounce_gbps\": \(fixed(p.bounceGbps, 2)), \"inline_gbps\": \(fixed(p.inlineGbps, 2)), \"decrypted_pool_gbps\": \(fixed(p.pooledGbps, 2)), "
                    + "\"inline_conversion_calls_per_gb\": \(fixed(p.inlineCallsPerGB, 1)), \"decrypted_pool_conversion_calls_per_gb\": \(fixed(p.pooledCallsPerGB, 3)), "
                    + "\"inline_modelled_cpu_fraction\": \(fixed(p.inlineModelledShare, 3)), \"passed\": \(p.passed)}"
                }
                let key = axis == .perCall ? "per_call" : "per_page"
                parts.append("\"\(key)\": {\"points\": [\(objects.joined(separator: ", "))], \"break_even_ns\": \(number(BreakEvenSweep.crossing(points)))}")
            }
            print("{\"rounds\": \(rounds), \"round_seconds\": \(fixed(w.durationSeconds / Double(rounds), 3)), " + parts.joined(separator: ", ") + "}")
        } else {
            for (axis, points) in sweeps {
                print(axis == .perCall ? "Per-call cost (per page 0), modelled and spun:" : "Per-page cost (per call 0), modelled and spun:")
                print("  " + "ns".padded(8) + "inline/bounce (min-max)".padded(26) + "pool/bounce".padded(13) + "bounce Gbps".padded(13)
                      + "inline Gbps".padded(13) + "pool Gbps".padded(11) + "inline calls/GB".padded(17) + "pool calls/GB".padded(15) + "inline modelled share")
                for p in points {
                    let r = p.inlineRatio.map { "\(fixed($0.median, 2))x (\(fixed($0.minimum, 2))-\(fixed($0.maximum, 2)))" } ?? "-"
                    print("  " + "\(p.nanoseconds)".padded(8) + r.padded(26) + (p.pooledRatio.map { fixed($0.median, 2) + "x" } ?? "-").padded(13)
                          + fixed(p.bounceGbps, 1).padded(13) + fixed(p.inlineGbps, 1).padded(13) + fixed(p.pooledGbps, 1).padded(11)
                          + fixed(p.inlineCallsPerGB, 0).padded(17) + fixed(p.pooledCallsPerGB, 2).padded(15) + fixed(p.inlineModelledShare, 2)
                          + (p.passed ? "" : "  FAILED"))
                }
                if let ns = BreakEvenSweep.crossing(points) {
                    print("  inline-decrypt matches bounce at about \(fixed(ns, 0)) ns \(axis == .perCall ? "per call" : "per page") (interpolated between the measured points either side)")
                } else {
                    print("  inline-decrypt's ratio to bounce does not cross 1 inside this sweep")
                }
                print("")
            }
        }
        if sweeps.contains(where: { $0.1.contains { !$0.passed } }) { throw ExitCode(2) }
    }

    func number(_ value: Double?) -> String { value.map { fixed($0, 3) } ?? "null" }
}
