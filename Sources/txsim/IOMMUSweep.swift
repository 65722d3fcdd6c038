import ArgumentParser
import DMAPools
import NetStack
import NetStackReports

/// `txsim iommu-sweep`: on `--platform iommu`, what page-pool saves against
/// the per-frame mapping design (bounce's path, plain map and unmap per
/// fragment) as every modelled IOMMU cost is scaled together.
struct IOMMUSweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iommu-sweep",
        abstract: "Sweep the modelled IOMMU costs on --platform iommu: page-pool against per-frame map/unmap (bounce), and where the saving stops mattering.",
        discussion: """
        Each point is a paired comparison of bounce (every fragment mapped and unmapped \
        through the IOMMU) and page-pool (each pool page mapped once when it enters the pool) \
        with every IOMMU cost (--iommu-map-ns, --iommu-pte-ns, --iommu-invalidate-ns, \
        --iommu-flush-ns) multiplied by the point's scale, spun inside the measured figures. \
        The platform is iommu whatever --platform says.
        """)

    @OptionGroup var workload: WorkloadOptions
    @OptionGroup var guest: GuestOptions
    @Option(parsing: .unconditional, help: "Scales of every modelled IOMMU cost, comma-separated, each 0...100.")
    var scales: String = "0,0.25,1,4"
    @OptionGroup var sweep: SweepOptions

    static let kinds: [any TransmitDesignKind] = [.bounce, .pagePool]

    func scaleList() throws -> [Double] { try sweepList(scales, option: "scales", range: 0...100) }

    func configuration(scale: Double) throws -> ExperimentConfiguration {
        var g = guest
        g.platform = "iommu"
        var c = try g.configuration()
        guard var iommu = c.platform.iommu else { throw ValidationError("invalid --platform: the sweep needs iommu") }
        iommu.costs = iommu.costs.scaled(by: scale)
        c.platform = .iommu(iommu)
        do { try c.validate() } catch { throw ValidationError(error.description) }
        return c
    }

    func plan() -> ComparisonPlan { ComparisonPlan(rounds: sweep.rounds, baseline: .bounce) }

    func validate() throws {
        for scale in try scaleList() {
            do {
                try Experiment.check(Self.kinds, workload: try workload.workload(), plan: plan(), configuration: try configuration(scale: scale))
            } catch let error as ExperimentError {
                throw ValidationError(error.description)
            }
        }
    }

    struct Point {
        var scale: Double
        var ratio: Spread?
        var bounceShare: Double
        var saving: ResultFormat.IOMMUSaving?
        var bounceOperationsPerGB: Double
        var poolOperationsPerGB: Double
        var passed: Bool
    }

    func run() throws {
        let w = try workload.workload()
        var points: [Point] = []
        for scale in try scaleList() {
            let c = try configuration(scale: scale)
            if !sweep.quiet { printError("txsim: iommu-sweep: scale \(scale), \(c.platform.iommu!.mode.rawValue), bounce and page-pool in \(sweep.rounds) round(s)") }
            let results = try Experiment.comparison(Self.kinds, workload: w, plan: plan(), configuration: c).results
            guard let b = results.first(where: { $0.design == "bounce" }), let p = results.first(where: { $0.design == "page-pool" }) else { continue }
            points.append(Point(scale: scale, ratio: p.ratioSpread, bounceShare: b.iommuModelledShareOfCPU,
                                saving: ResultFormat.iommuSavings(results, baseline: "bounce").first.map { saving in
                                    // The point's own threshold is relative to its scaled costs: as a scale of scale 1.
                                    var s = saving
                                    s.scaleAtThreshold = saving.scaleAtThreshold.map { $0 * scale }
                                    return s
                                },
                                bounceOperationsPerGB: b.perGB(Double(b.iommu.operations)), poolOperationsPerGB: p.perGB(Double(p.iommu.operations)),
                                passed: b.passed && p.passed))
        }
        let base = try configuration(scale: 1).platform.iommu!
        if sweep.json {
            let objects = points.map { pt in
                "{\"scale\": \(fixed(pt.scale, 3)), \"page_pool_ratio_to_bounce\": \(number(pt.ratio?.median)), "
                + "\"ratio_min\": \(number(pt.ratio?.minimum)), \"ratio_max\": \(number(pt.ratio?.maximum)), "
                + "\"bounce_iommu_modelled_cpu_fraction\": \(fixed(pt.bounceShare, 3)), "
                + "\"bounce_iommu_operations_per_gb\": \(fixed(pt.bounceOperationsPerGB, 1)), \"page_pool_iommu_operations_per_gb\": \(fixed(pt.poolOperationsPerGB, 1)), "
                + "\"iommu_modelled_s_saved_per_gb\": \(number(pt.saving?.modelledSecondsSavedPerGB, 5)), "
                + "\"iommu_cost_scale_at_5_percent\": \(number(pt.saving?.scaleAtThreshold, 4)), \"passed\": \(pt.passed)}"
            }
            print("{\"iommu_mode\": \"\(base.mode.rawValue)\", \"iommu_map_ns\": \(base.costs.mapNanoseconds), \"iommu_pte_ns\": \(base.costs.pteNanoseconds), "
                  + "\"iommu_invalidate_ns\": \(base.costs.invalidateNanoseconds), \"iommu_flush_ns\": \(base.costs.flushNanoseconds), "
                  + "\"rounds\": \(sweep.rounds), \"points\": [\(objects.joined(separator: ", "))]}")
        } else {
            let k = base.costs
            print("IOMMU \(base.mode.rawValue); scale 1 = map \(k.mapNanoseconds) ns, PTE \(k.pteNanoseconds) ns, invalidation \(k.invalidateNanoseconds) ns, flush \(k.flushNanoseconds) ns (modelled, spun)")
            print("  " + "scale".padded(8) + "page-pool/bounce (min-max)".padded(30) + "bounce IOMMU share".padded(20)
                  + "ops/GB bounce".padded(15) + "ops/GB page-pool".padded(18) + "ms saved/GB".padded(13) + "5% scale")
            for pt in points {
                let r = pt.ratio.map { "\(fixed($0.median, 2))x (\(fixed($0.minimum, 2))-\(fixed($0.maximum, 2)))" } ?? "-"
                print("  " + fixed(pt.scale, 2).padded(8) + r.padded(30) + fixed(pt.bounceShare, 3).padded(20)
                      + fixed(pt.bounceOperationsPerGB, 0).padded(15) + fixed(pt.poolOperationsPerGB, 0).padded(18)
                      + (pt.saving.map { fixed($0.modelledSecondsSavedPerGB * 1000, 2) } ?? "-").padded(13)
                      + (pt.saving?.scaleAtThreshold.map { fixed($0, 3) } ?? "-") + (pt.passed ? "" : "  FAILED"))
            }
            print("  '5% scale': computed from that point's run (its bounce CPU per GB less its modelled IOMMU time taken as fixed), the scale of every IOMMU cost, relative to scale 1, below which page-pool's modelled saving is under 5% of bounce's CPU per GB.")
        }
        if points.contains(where: { !$0.passed }) { throw ExitCode(2) }
    }

    func number(_ value: Double?, _ digits: Int = 3) -> String { value.map { fixed($0, digits) } ?? "null" }
}
