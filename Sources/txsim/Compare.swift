import ArgumentParser
import DMAPools
import NetStack
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs designs on the same workload, interleaved in rounds, each on a fresh guest.
func runDesigns(_ kinds: [DesignKind], workload: Workload, rounds: Int, guest: GuestOptions,
                output: OutputOptions) throws -> [TransmitResult] {
    if !output.quiet {
        printError("txsim: \(kinds.map(\.rawValue).joined(separator: ", ")): \(workload.senders) senders, \(workload.queues) queues, \(workload.flows) flows, \(workload.messageBytes) B messages, rtt \(workload.roundTripMicroseconds) us, \(fixed(workload.durationSeconds, 1)) s each in \(rounds) interleaved round(s)")
    }
    let total = kinds.count * rounds
    let counter = Mutex(0)
    let quiet = output.quiet
    let results = try Experiment.compare(kinds, workload: workload, rounds: rounds, configuration: guest.configuration) { kind, round in
        let done = counter.withLock { n -> Int in n += 1; return n }
        if !quiet && (total > 1) {
            printError("txsim:   [\(done)/\(total)] round \(round + 1): \(kind.rawValue)")
        }
    }
    emit(results, output: output)
    return results
}

/// Prints the results as the options ask, and writes the chart.
func emit(_ results: [TransmitResult], output: OutputOptions) {
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
            if !output.quiet { printError("txsim: wrote \(path)") }
        } catch {
            printError("txsim: could not write \(path): \(error)")
        }
    }
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
    @Option(help: "Comma-separated designs (default: all).")
    var designs: String = DesignKind.allCases.map(\.rawValue).joined(separator: ",")
    @Option(help: "Interleaved rounds: each design runs duration/rounds seconds per round; Gbps is the median round.")
    var rounds: Int = 4

    func validate() throws {
        guard (1...100).contains(rounds) else { throw ValidationError("--rounds \(rounds) must be in 1...100") }
        for name in designs.split(separator: ",") {
            do { _ = try DesignKind.named(String(name)) } catch { throw ValidationError(error.description) }
        }
    }

    func run() throws {
        let kinds = try designs.split(separator: ",").map { name throws(DesignError) in try DesignKind.named(String(name)) }
        let results = try runDesigns(kinds, workload: workload.workload, rounds: rounds, guest: guest, output: output)
        if results.contains(where: { !$0.passed }) { throw ExitCode(2) }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run one design on a workload.")

    @Option(help: "The design: \(DesignKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var design: String = DesignKind.pagePool.rawValue
    @OptionGroup var workload: WorkloadOptions
    @OptionGroup var guest: GuestOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        do { _ = try DesignKind.named(design) } catch { throw ValidationError(error.description) }
    }

    func run() throws {
        let results = try runDesigns([try DesignKind.named(design)], workload: workload.workload, rounds: 1, guest: guest, output: output)
        if results.contains(where: { !$0.passed }) { throw ExitCode(2) }
    }
}
