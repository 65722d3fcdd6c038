import ArgumentParser
import NetStackReports
@_spi(DMAPoolsSupport) import DMAPools
import DMAPoolsTestSupport

/// The fuzz targets: random operation sequences checked against reference models.
enum FuzzTarget: String, CaseIterable, ExpressibleByArgument {
    case swiotlb
    case pagePool = "page-pool"
    case all

    var targets: [FuzzTarget] { self == .all ? [.swiotlb, .pagePool] : [self] }

    func run(_ source: inout FuzzSource, steps: Int) throws -> FuzzReport {
        switch self {
        case .swiotlb: try SWIOTLBFuzzer.run(&source, steps: steps)
        case .pagePool: try PagePoolFuzzer.run(&source, steps: steps)
        case .all: preconditionFailure("run each of .all's targets")
        }
    }
}

/// A fuzz seed on the command line: decimal, or hexadecimal with `0x` as the
/// reports print it.
struct Seed: ExpressibleByArgument {
    var value: UInt64

    init?(argument: String) {
        let hex = argument.lowercased().hasPrefix("0x")
        guard let value = UInt64(hex ? String(argument.dropFirst(2)) : argument, radix: hex ? 16 : 10) else { return nil }
        self.value = value
    }
}

/// What a bounded fuzz campaign did, summed over its runs.
struct FuzzTotals {
    var runs = 0
    var operations = 0
    var bytesVerified = 0
    var lostPages = 0
    var failures: [FuzzReport] = []

    mutating func add(_ report: FuzzReport) {
        runs += 1
        operations += report.operations
        bytesVerified += report.bytesVerified
        lostPages += report.lostPages
        if !report.passed { failures.append(report) }
    }

    /// Runs seeded runs of each target in turn, `seed`, `seed + 1`, ... until
    /// `seconds` have passed or `maximumRuns` runs are done.
    static func campaign(_ target: FuzzTarget, seconds: Double, seed: UInt64, steps: Int,
                         maximumRuns: Int?, stopOnFailure: Bool) throws -> FuzzTotals {
        var totals = FuzzTotals()
        let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
        var next = seed
        outer: while true {
            for t in target.targets {
                var source = FuzzSource(seed: next)
                totals.add(try t.run(&source, steps: steps))
                if stopOnFailure && !totals.failures.isEmpty { break outer }
                if let maximumRuns, totals.runs >= maximumRuns { break outer }
            }
            next &+= 1   // seeds are labels: wrapping is fine
            if monotonicNanoseconds() >= deadline { break }
        }
        return totals
    }
}

/// `txsim fuzz`: random operation sequences against swiotlb and page_pool,
/// each step checked against a reference model, for a bounded time.
struct Fuzz: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fuzz swiotlb and page_pool with random operation sequences checked against reference models.",
        discussion: """
            Each run is one seeded sequence of up to --steps operations (swiotlb: map, sync, unmap with random \
            sizes, alignments, devices and areas; page_pool: alloc, bulk alloc, direct and ring puts, extra \
            references, provider failures, fragments). Every step is checked against a reference model and the \
            structures' invariants; every run ends with teardown and every page accounted for. A failure prints \
            the seed that reproduces it (--seed S --runs 1). --input replays files of raw bytes (a corpus or a \
            crash from a coverage-guided fuzzer) through the same checks.
            """)

    @Option(help: "swiotlb, page-pool or all.")
    var target: FuzzTarget = .all
    @Option(parsing: .unconditional, help: "Seconds to keep starting new runs: (0, 86400].")
    var seconds: Double = 10
    @Option(parsing: .unconditional, help: "The first seed, decimal or 0x-hexadecimal (default: random); later runs use the next seeds.")
    var seed: Seed?
    @Option(parsing: .unconditional, help: "Operations per run, 1...10000000.")
    var steps: Int = 3000
    @Option(parsing: .unconditional, help: "Stop after this many runs (at least 1).")
    var runs: Int?
    @Option(name: .customLong("input"), help: "Replay a regular file of raw bytes as one run's choices (repeatable).")
    var inputs: [String] = []

    func validate() throws {
        guard seconds > 0 && seconds <= 86_400 else { throw ValidationError("invalid --seconds: \(seconds) must be in (0, 86400]") }
        guard (1...10_000_000).contains(steps) else { throw ValidationError("invalid --steps: \(steps) must be in 1...10000000") }
        if let runs, runs < 1 { throw ValidationError("invalid --runs: \(runs) must be at least 1") }
        for path in inputs { try checkReadable(path, option: "input") }
    }

    func run() throws {
        var totals = FuzzTotals()
        if !inputs.isEmpty {
            for path in inputs {
                let bytes = try readFile(path)
                for t in target.targets {
                    var source = FuzzSource(bytes: bytes)
                    let report = try t.run(&source, steps: steps)
                    print("\(path): \(report)")
                    totals.add(report)
                }
            }
        } else {
            let first = seed?.value ?? UInt64.random(in: 0...UInt64.max)
            print("fuzz: \(target.rawValue), \(fixed(seconds, 1)) s, seeds from 0x\(String(first, radix: 16)), \(steps) steps a run")
            totals = try FuzzTotals.campaign(target, seconds: seconds, seed: first, steps: steps,
                                            maximumRuns: runs, stopOnFailure: true)
        }
        for failure in totals.failures {
            print(failure)
            if let command = failure.reproduceCommand(steps: steps) { print("reproduce: \(command)") }
        }
        print("fuzz: \(totals.runs) runs, \(totals.operations) operations, \(totals.bytesVerified) bytes verified, "
              + "\(totals.lostPages) pages lost, \(totals.failures.count) failures")
        if !totals.failures.isEmpty || totals.lostPages != 0 { throw ExitCode(2) }
    }
}

/// Refuses, before anything runs, a path that is not a readable regular file
/// (a directory reads as 0 bytes, which would replay as a run of nothing).
func checkReadable(_ path: String, option: String) throws {
    var info = stat()
    guard stat(path, &info) == 0 else {
        throw ValidationError("invalid --\(option): cannot open \(path): \(String(cString: strerror(errno)))")
    }
    guard (info.st_mode & S_IFMT) == S_IFREG else {
        throw ValidationError("invalid --\(option): \(path) is \((info.st_mode & S_IFMT) == S_IFDIR ? "a directory" : "not a regular file"), not a file of raw bytes")
    }
    guard access(path, R_OK) == 0 else {
        throw ValidationError("invalid --\(option): cannot read \(path): \(String(cString: strerror(errno)))")
    }
}

extension FuzzReport {
    /// The one command that replays this run, for a seeded run.
    func reproduceCommand(steps: Int) -> String? {
        guard let seed else { return nil }
        let name = target == "swiotlb" ? FuzzTarget.swiotlb : .pagePool
        return "txsim fuzz --target \(name.rawValue) --seed 0x\(String(seed, radix: 16)) --runs 1 --steps \(steps)"
    }
}

/// The whole of a file, or a clear error naming it.
func readFile(_ path: String) throws -> [UInt8] {
    guard let file = fopen(path, "rb") else {
        throw ValidationError("cannot open \(path): \(String(cString: strerror(errno)))")
    }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = fread(&buffer, 1, buffer.count, file)
        if n > 0 { bytes.append(contentsOf: buffer[0..<n]) }
        if n < buffer.count { break }
    }
    if ferror(file) != 0 { throw ValidationError("cannot read \(path): \(String(cString: strerror(errno)))") }
    return bytes
}

#if canImport(Glibc)
import Glibc
#endif
