import DMAPools
import NetStack

#if canImport(Glibc)
import Glibc
#endif

/// The system's load averages (1, 5 and 15 minutes), from `getloadavg`.
public struct LoadAverage: Sendable, Hashable {
    public var one: Double, five: Double, fifteen: Double

    public init(one: Double, five: Double, fifteen: Double) {
        self.one = one
        self.five = five
        self.fifteen = fifteen
    }

    /// The load averages now (NaN where the system does not say).
    public static func now() -> LoadAverage {
        var values = [Double](repeating: 0, count: 3)
        let n = getloadavg(&values, 3)
        return n == 3 ? LoadAverage(one: values[0], five: values[1], fifteen: values[2]) : LoadAverage(one: .nan, five: .nan, fifteen: .nan)
    }

    var text: String { "\(fixed(one, 2)) \(fixed(five, 2)) \(fixed(fifteen, 2))" }
}

/// What produced a report, so that a saved file says what was run: the
/// source revision of swift-dma-pools and how DMAPools was built.
public struct Provenance: Sendable, Hashable {
    /// `git rev-parse HEAD` of the swift-dma-pools checkout the library was
    /// built from, read when the report is made; `unknown` without git or a
    /// checkout.
    public var gitRevision: String
    /// Whether that checkout had changes to tracked files not in the
    /// revision (nil when unknown).
    public var gitTreeModified: Bool?
    /// `debug`, `release` or `release+invariants` (`BuildConfiguration.label`).
    public var buildConfiguration: String
    /// Whether DMAPools' invariant checks were compiled in (their cost is in
    /// every timed figure).
    public var invariantChecks: Bool

    public init(gitRevision: String, gitTreeModified: Bool?, buildConfiguration: String, invariantChecks: Bool) {
        self.gitRevision = gitRevision
        self.gitTreeModified = gitTreeModified
        self.buildConfiguration = buildConfiguration
        self.invariantChecks = invariantChecks
    }

    /// This process's: the revision read now with `git` in the directory the
    /// library's sources were built from, and DMAPools' build configuration.
    public static func current() -> Provenance {
        let directory = sourceDirectory()
        let revision = run("git -C \(quoted(directory)) rev-parse HEAD")
        let modified = revision == nil ? nil : run("git -C \(quoted(directory)) status --porcelain --untracked-files=no").map { !$0.isEmpty }
        return Provenance(gitRevision: revision ?? "unknown", gitTreeModified: modified,
                          buildConfiguration: BuildConfiguration.label,
                          invariantChecks: BuildConfiguration.invariantChecksEnabled)
    }

    /// The directory of this source file, inside the checkout.
    static func sourceDirectory(_ path: String = #filePath) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return String(path[..<slash])
    }

    static func quoted(_ text: String) -> String {
        "'" + text.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }

    /// The command's standard output without its last newline, or nil when it
    /// could not run or failed.
    static func run(_ command: String) -> String? {
        guard let pipe = popen(command + " 2>/dev/null", "r") else { return nil }
        var output = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, pipe)
            if n <= 0 { break }
            output += buffer[..<n]
        }
        guard pclose(pipe) == 0 else { return nil }
        var text = String(decoding: output, as: UTF8.self)
        while text.last == "\n" { text.removeLast() }
        return text
    }
}

/// A comparison and everything about the invocation that produced it, with
/// the report `txsim compare` prints: a table for people (`table()`), JSON and
/// CSV for programs (`json()`, `csv()`), and a chart (`svg()`). A package
/// that runs its own designs prints the same report as `txsim`.
///
/// JSON and CSV carry, beside each design's figures, the workload and guest
/// settings they were produced with, the git revision and the build
/// configuration (`Provenance`). Their keys are stable.
public struct Report: Sendable {
    public let comparison: Comparison
    public let configuration: ExperimentConfiguration
    public let loadBefore: LoadAverage
    public let loadAfter: LoadAverage
    public let provenance: Provenance

    public init(comparison: Comparison, configuration: ExperimentConfiguration, loadBefore: LoadAverage,
                loadAfter: LoadAverage, provenance: Provenance = .current()) {
        self.comparison = comparison
        self.configuration = configuration
        self.loadBefore = loadBefore
        self.loadAfter = loadAfter
        self.provenance = provenance
    }

    /// Runs `Experiment.comparison` and reports it, with the load average
    /// before and after and this process's provenance.
    public static func compare(_ kinds: [any TransmitDesignKind], workload: Workload, plan: ComparisonPlan,
                               configuration: ExperimentConfiguration = .init(),
                               progress: (@Sendable (_ design: any TransmitDesignKind, _ round: Int) -> Void)? = nil) throws -> Report {
        let before = LoadAverage.now()
        let comparison = try Experiment.comparison(kinds, workload: workload, plan: plan, configuration: configuration,
                                                   progress: progress)
        return Report(comparison: comparison, configuration: configuration, loadBefore: before, loadAfter: LoadAverage.now())
    }

    public var results: [TransmitResult] { comparison.results }
    /// The baseline's name.
    public var baseline: String { comparison.plan.baseline.name }
    public var roundCount: Int { comparison.rounds.count }

    /// The report as a table, for people.
    public func table() -> String { ResultFormat.table(self) }
    /// A JSON array, one object per design (stable keys).
    public func json() -> String { ResultFormat.json(self) }
    /// CSV: a header, then one row per design (stable columns).
    public func csv() -> String { ResultFormat.csv(self) }
    /// A bar chart: throughput, paired ratio, copies per byte, and every setting.
    public func svg() -> String { ResultFormat.svg(self) }

    /// Every setting that produced the figures, one line each.
    public var settings: [String] {
        guard let w = results.first?.workload else { return [] }
        let h = configuration.memory.hypercall
        let perRound = w.durationSeconds / Double(comparison.plan.rounds)
        let m = configuration.memory
        var lines = [
            "workload: \(w.senders) senders, \(w.queues) queue(s), \(w.flows) flows, \(w.messageBytes) B messages, rtt \(w.roundTripMicroseconds) us, send buffer \(w.sendBufferBytes) B"
                + (w.verify ? ", verify" : "") + (w.zeroCopy ? ", MSG_ZEROCOPY" : "") + (w.zeroCopyMix.map { ", SO_ZEROCOPY, MSG_ZEROCOPY on \(fixed($0 * 100, 0))% of sendmsg calls" } ?? "") + (w.lineRateGbps.map { ", line rate \(fixed($0, 1)) Gbit/s" } ?? ""),
            "rounds: \(roundCount) of \(fixed(perRound, 3)) s per design (--rounds \(comparison.plan.rounds)\(comparison.plan.untilStableCap.map { ", --until-stable \($0)" } ?? "")), baseline \(baseline) before, between and after the others, their order rotated each round",
            "guest: \(m.guestBytes >> 20) MiB, swiotlb \(m.swiotlbBytes >> 20) MiB, zerocopy_tx_percent \(configuration.zeroCopyPercent), provider \(configuration.poolProvider.name), pool ring \(configuration.poolRingSize), memory \(m.residentAtBoot ? "resident at boot" : "on demand"), direct map on \(m.directMapHugePages ? "2 MiB pages where the host grants them" : "4 KiB pages")",
            "modelled hypercall (an assumption, not a measurement): \(h.perCallNanoseconds) ns + \(h.perPageNanoseconds) ns/page, \(h.charge.rawValue)",
            "platform: \(configuration.platform.name)" + (configuration.platform.iommu.map { c in
                ", IOMMU \(c.mode.rawValue), modelled map \(c.costs.mapNanoseconds) ns, PTE \(c.costs.pteNanoseconds) ns, invalidation \(c.costs.invalidateNanoseconds) ns, flush \(c.costs.flushNanoseconds) ns per \(c.flushQueueSize) IOVAs, \(c.costs.charge.rawValue)"
            } ?? ", confidential VM (every device bounces through swiotlb)"),
            "machine: memcpy \(comparison.copyRateBefore.copyBytes) B cache resident, GB/s 1 thread \(fixed(comparison.copyRateBefore.oneThreadGigabytesPerSecond, 1)) -> \(fixed(comparison.copyRateAfter.oneThreadGigabytesPerSecond, 1)), 2 threads \(fixed(comparison.copyRateBefore.twoThreadsGigabytesPerSecond, 1)) -> \(fixed(comparison.copyRateAfter.twoThreadsGigabytesPerSecond, 1)) (before -> after); load average \(loadBefore.text) -> \(loadAfter.text)",
            "build: swift-dma-pools \(provenance.gitRevision)\(provenance.gitTreeModified == true ? " (modified)" : ""), \(provenance.buildConfiguration)\(provenance.invariantChecks ? ", invariant checks on" : "")",
        ]
        if comparison.plan.untilStableCap != nil {
            lines.append("until stable: \(comparison.stable ? "every ratio's IQR within +-5% after \(roundCount) rounds" : "NOT stable within +-5% after the cap of \(roundCount) rounds")")
        }
        return lines
    }
}
