import ArgumentParser
import DMAPools
import NetStack
import NetStackReports

/// `txsim zerocopy-mix`: the review's mixed-sends question ("some applications
/// setting this flag can mix tcp sendmsg() with or without zero-copy"), one
/// paired comparison per fraction of MSG_ZEROCOPY calls on SO_ZEROCOPY sockets.
struct ZeroCopyMix: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zerocopy-mix",
        abstract: "Compare the designs with SO_ZEROCOPY sockets that pass MSG_ZEROCOPY on a fraction of their sendmsg calls.",
        discussion: """
        For each fraction P, every design runs the workload with SO_ZEROCOPY set on every socket and \
        MSG_ZEROCOPY on P of the sendmsg calls (the rest copied), paired against the baseline round by \
        round. The seed patch takes no swiotlb pages for a SOCK_ZEROCOPY socket, so its copied sends \
        bounce; the page-pool design does not look at the flag. --msg-zerocopy and --zerocopy-mix are \
        set by the sweep and must not be given.
        """)

    @OptionGroup var workload: WorkloadOptions
    @OptionGroup var guest: GuestOptions
    @Option(parsing: .unconditional, help: "Fractions of MSG_ZEROCOPY sendmsg calls, comma-separated, each 0...1.")
    var fractions: String = "0,0.25,0.5,0.75,1"
    @Option(help: "Comma-separated designs (default: all registered: \(DesignRegistry.shared.designNames)).")
    var designs: String = DesignRegistry.shared.designs.map(\.name).joined(separator: ",")
    @OptionGroup var sweep: SweepOptions
    var rounds: Int { sweep.rounds }
    var json: Bool { sweep.json }
    var quiet: Bool { sweep.quiet }

    func mixes() throws -> [Double] { try sweepList(fractions, option: "fractions", range: 0.0...1.0) }

    func kinds() throws -> [any TransmitDesignKind] {
        do { return try DesignRegistry.shared.designs(named: designs) } catch { throw ValidationError(error.description) }
    }

    func baseWorkload() throws -> Workload {
        if workload.msgZeroCopy || workload.zeroCopyMix != nil {
            throw ValidationError("invalid --msg-zerocopy / --zerocopy-mix: the sweep sets the mix itself (--fractions)")
        }
        return try workload.workload()
    }

    func validate() throws {
        let kinds = try kinds()
        var w = try baseWorkload()
        for mix in try mixes() {
            w.zeroCopyMix = mix
            do {
                try Experiment.check(kinds, workload: w, plan: ComparisonPlan(rounds: rounds, baseline: Experiment.defaultBaseline(kinds)),
                                     configuration: try guest.configuration())
            } catch let error as ExperimentError {
                throw ValidationError(error.description)
            }
        }
    }

    func run() throws {
        let kinds = try kinds()
        let configuration = try guest.configuration()
        let plan = ComparisonPlan(rounds: rounds, baseline: Experiment.defaultBaseline(kinds))
        var rows: [(mix: Double, result: TransmitResult)] = []
        let quiet = self.quiet
        for mix in try mixes() {
            var w = try baseWorkload()
            w.zeroCopyMix = mix
            let comparison = try Experiment.comparison(kinds, workload: w, plan: plan, configuration: configuration) { kind, round in
                if !quiet { printError("txsim:   MSG_ZEROCOPY on \(fixed(mix * 100, 0))%, round \(round + 1): \(kind.name)") }
            }
            rows += comparison.results.map { (mix, $0) }
        }
        if json {
            let objects = rows.map { row in
                let r = row.result
                return "  {\"zerocopy_mix\": \(fixed(row.mix, 2)), \"design\": \"\(r.design)\", \"gbps\": \(fixed(r.gbps, 2)), "
                    + "\"baseline\": \"\(plan.baseline.name)\", \"ratio_to_baseline\": \(r.ratioSpread.map { fixed($0.median, 3) } ?? "null"), "
                    + "\"copies_per_byte\": \(fixed(r.copiesPerByte, 3)), \"zero_copy_fraction\": \(fixed(r.zeroCopyFraction, 3)), "
                    + "\"bytes_copied_sender\": \(r.bytesCopiedBySender), \"bytes_bounced\": \(r.bytesCopiedByDMALayer), \"passed\": \(r.passed)}"
            }
            print("[\n" + objects.joined(separator: ",\n") + "\n]")
        } else {
            print("SO_ZEROCOPY sockets, MSG_ZEROCOPY on a fraction of sendmsg calls; \(rounds) round(s) per fraction, ratios paired against \(plan.baseline.name):")
            print("  " + "MSG_ZEROCOPY".padded(14) + "design".padded(16) + "Gbps".padded(10) + "ratio".padded(9) + "copies/byte".padded(13) + "zero-copy map")
            for (mix, r) in rows {
                print("  " + "\(fixed(mix * 100, 0))%".padded(14) + r.design.padded(16) + fixed(r.gbps, 1).padded(10)
                      + (r.ratioSpread.map { fixed($0.median, 2) + "x" } ?? "-").padded(9) + fixed(r.copiesPerByte, 2).padded(13)
                      + fixed(r.zeroCopyFraction, 2) + (r.passed ? "" : "  FAILED: \(r.firstProblem ?? "")"))
            }
        }
        if rows.contains(where: { !$0.result.passed }) { throw ExitCode(2) }
    }
}
