import ArgumentParser
import DMAPools
import NetStack
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs designs on the same workload, interleaved in rounds, each on a fresh guest.
func runDesigns(_ kinds: [DesignKind], workload: Workload, rounds: Int, configuration: ExperimentConfiguration,
                output: OutputOptions) throws -> [TransmitResult] {
    if !output.quiet {
        printError("txsim: \(kinds.map(\.rawValue).joined(separator: ", ")): \(workload.senders) senders, \(workload.queues) queues, \(workload.flows) flows, \(workload.messageBytes) B messages, rtt \(workload.roundTripMicroseconds) us, \(fixed(workload.durationSeconds, 2)) s each in \(rounds) interleaved round(s)")
    }
    let total = kinds.count * rounds
    let counter = Mutex(0)
    let quiet = output.quiet
    let results = try Experiment.compare(kinds, workload: workload, rounds: rounds, configuration: configuration) { kind, round in
        let done = counter.withLock { n -> Int in n += 1; return n }
        if !quiet && (total > 1) {
            printError("txsim:   [\(done)/\(total)] round \(round + 1): \(kind.rawValue)")
        }
    }
    try emit(results, output: output)
    return results
}

/// Prints the results as the options ask, and writes the chart. A chart that
/// cannot be written is an error (exit 1), after the results are printed.
func emit(_ results: [TransmitResult], output: OutputOptions) throws {
    if output.json {
        print(ResultFormat.json(results))
    } else if output.csv {
        print(ResultFormat.csv(results), terminator: "")
    } else {
        print(ResultFormat.table(results))
    }
    if let path = output.svg {
        do {
            try ResultFormat.svg(results).write(toFile: path)
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
    @Option(help: "Comma-separated designs, each at most once (default: all).")
    var designs: String = DesignKind.allCases.map(\.rawValue).joined(separator: ",")
    @Option(parsing: .unconditional,
            help: "Interleaved rounds, 1...100: each design runs duration/rounds seconds per round (at least 0.05 s); Gbps is the median round.")
    var rounds: Int = 4

    func kinds() throws -> [DesignKind] {
        do { return try DesignKind.list(designs) } catch { throw ValidationError(error.description) }
    }

    func validate() throws {
        try checkExperiment(try kinds(), workload: workload, rounds: rounds, guest: guest)
    }

    func run() throws {
        try judge(try runDesigns(try kinds(), workload: try workload.workload(), rounds: rounds,
                                 configuration: try guest.configuration(), output: output))
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run one design on a workload.")

    @Option(help: "The design: \(DesignKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var design: String = DesignKind.pagePool.rawValue
    @OptionGroup var workload: WorkloadOptions
    @OptionGroup var guest: GuestOptions
    @OptionGroup var output: OutputOptions

    func kind() throws -> DesignKind {
        do { return try DesignKind.named(design) } catch { throw ValidationError("invalid --design: \(error.description)") }
    }

    func validate() throws {
        try checkExperiment([try kind()], workload: workload, guest: guest)
    }

    func run() throws {
        try judge(try runDesigns([try kind()], workload: try workload.workload(), rounds: 1,
                                 configuration: try guest.configuration(), output: output))
    }
}
