import ArgumentParser
import NetStackReports
import DMAPools
import NetStack
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs designs on the same workload, interleaved in rounds, each on a fresh
/// guest, every figure paired with the baseline's from the same round.
func runDesigns(_ kinds: [any TransmitDesignKind], workload: Workload, plan: ComparisonPlan, configuration: ExperimentConfiguration,
                output: OutputOptions) throws -> [TransmitResult] {
    if !output.quiet {
        printError("txsim: \(kinds.map(\.name).joined(separator: ", ")): \(workload.senders) senders, \(workload.queues) queues, \(workload.flows) flows, \(workload.messageBytes) B messages, rtt \(workload.roundTripMicroseconds) us, \(fixed(workload.durationSeconds, 2)) s per design, split over \(plan.rounds) interleaved round(s) of \(fixed(workload.durationSeconds / Double(plan.rounds), 3)) s\(plan.untilStableCap.map { ", more up to \($0) until stable" } ?? "")")
    }
    let counter = Mutex(0)
    let quiet = output.quiet
    let total = Comparison.schedule(kinds, baseline: plan.baseline, round: 0).count * plan.rounds
    let report = try Report.compare(kinds, workload: workload, plan: plan, configuration: configuration) { kind, round in
        let done = counter.withLock { n -> Int in n += 1; return n }
        if !quiet && total > 1 {
            printError("txsim:   [\(done)/\(done > total ? "+" : String(total))] round \(round + 1): \(kind.name)")
        }
    }
    try emit(report, output: output)
    return report.results
}

/// Prints the results as the options ask, and writes the chart. A chart that
/// cannot be written is an error (exit 1), after the results are printed.
func emit(_ report: Report, output: OutputOptions) throws {
    if output.json {
        print(report.json())
    } else if output.csv {
        print(report.csv(), terminator: "")
    } else {
        print(report.table())
    }
    if let path = output.svg {
        do {
            try report.svg().write(toFile: path)
        } catch {
            throw ValidationError("could not write --svg \(path): \(error)")
        }
        if !output.quiet { printError("txsim: wrote \(path)") }
    }
}

/// Exit status 2 when any design broke a promise or moved nothing.
func judge(_ results: [TransmitResult]) throws {
    if results.contains(where: { !$0.passed }) { throw ExitCode(2) }
}

func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}

extension String {
    /// Writes the string to a file, replacing it.
    func write(toFile path: String) throws {
        guard let file = fopen(path, "w") else { throw FileError(path: path, errno: errno) }
        defer { fclose(file) }
        fputs(self, file)
    }
}

struct FileError: Error, CustomStringConvertible {
    let path: String
    let errno: Int32
    var description: String { "\(path): \(String(cString: strerror(errno)))" }
}

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run every design on the same workload and compare them side by side.")

    @OptionGroup var workload: WorkloadOptions
    @OptionGroup var guest: GuestOptions
    @OptionGroup var output: OutputOptions
    @Option(help: "Comma-separated designs, each at most once (default: all registered that apply to --platform: \(DesignRegistry.shared.designNames)).")
    var designs: String?
    @Option(parsing: .unconditional,
            help: "Interleaved rounds, 1...100: each design runs duration/rounds seconds per round (at least 0.05 s), the baseline before, between and after the others, whose order rotates each round; Gbps is the median round, ratios the median of per-round paired ratios.")
    var rounds: Int = Compare.defaultRounds
    @Option(help: "The design every ratio is paired against, round by round: one of --designs (default: bounce, or the first design when bounce is not run).")
    var baseline: String?
    @Option(name: .customLong("until-stable"), parsing: .unconditional,
            help: "Add rounds of the same length, up to this many rounds in all (--rounds...100), until every ratio's interquartile range is within +-5% of its median.")
    var untilStable: Int?

    /// Many short rounds: 2 s per design in 40 rounds of 0.05 s. Short
    /// enough that the host seldom moves the two vCPUs during a pair of
    /// runs, so most pairs get a CPU distance (Design/netstack.md, "The
    /// host's placement of the two vCPUs"); with 10 rounds of 0.2 s most
    /// pairs straddled a move.
    static let defaultRounds = 40

    func kinds() throws -> [any TransmitDesignKind] {
        guard let designs else {
            let platform = try guest.guestPlatform()
            return DesignRegistry.shared.designs.filter { $0.unsupportedReason(on: platform) == nil }
        }
        do { return try DesignRegistry.shared.designs(named: designs) } catch { throw ValidationError(error.description) }
    }

    /// The registered designs the default list leaves out on this platform, with why.
    func designsLeftOut() throws -> [String] {
        guard designs == nil else { return [] }
        let platform = try guest.guestPlatform()
        return DesignRegistry.shared.designs.compactMap { kind in kind.unsupportedReason(on: platform).map { "\(kind.name): \($0)" } }
    }

    func plan() throws -> ComparisonPlan {
        let kinds = try kinds()
        guard let baseline else {
            return ComparisonPlan(rounds: rounds, baseline: Experiment.defaultBaseline(kinds), untilStableCap: untilStable)
        }
        do {
            return ComparisonPlan(rounds: rounds, baseline: try DesignRegistry.shared.design(named: baseline, parameter: "baseline"),
                                  untilStableCap: untilStable)
        } catch {
            throw ValidationError(error.description)
        }
    }

    func validate() throws {
        try checkExperiment(try kinds(), workload: workload, plan: try plan(), guest: guest)
    }

    func run() throws {
        if !output.quiet {
            for line in try designsLeftOut() { printError("txsim: left out on --platform \(guest.platform): \(line)") }
        }
        try judge(try runDesigns(try kinds(), workload: try workload.workload(), plan: try plan(),
                                 configuration: try guest.configuration(), output: output))
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run one design on a workload.")

    @Option(help: "The design, one of those registered: \(DesignRegistry.shared.designNames).")
    var design: String = PagePoolDesignKind().name
    @OptionGroup var workload: WorkloadOptions
    @OptionGroup var guest: GuestOptions
    @OptionGroup var output: OutputOptions

    func kind() throws -> any TransmitDesignKind {
        do { return try DesignRegistry.shared.design(named: design) } catch { throw ValidationError(error.description) }
    }

    func validate() throws {
        try checkExperiment([try kind()], workload: workload, plan: ComparisonPlan(rounds: 1, baseline: try kind()), guest: guest)
    }

    func run() throws {
        try judge(try runDesigns([try kind()], workload: try workload.workload(), plan: ComparisonPlan(rounds: 1, baseline: try kind()),
                                 configuration: try guest.configuration(), output: output))
    }
}
