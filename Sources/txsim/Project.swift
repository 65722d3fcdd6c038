import ArgumentParser
import NetStack
import NetStackReports

/// Parses "1,2,4" into integers; the error names the option.
func integerList(_ text: String, option: String, range: ClosedRange<Int>) throws -> [Int] {
    var values: [Int] = []
    for part in text.split(separator: ",", omittingEmptySubsequences: false) {
        guard let v = Int(part), range.contains(v) else {
            throw ValidationError("invalid --\(option): '\(part)' in '\(text)' must be an integer in \(range)")
        }
        values.append(v)
    }
    return values
}

struct Project: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Project every design past this machine's cores: an analytic bottleneck model driven by a calibration profile.",
        discussion: """
            Without --profile the designs are calibrated first, in the same invocation. The model and \
            every assumption: Design/projection.md. --validate runs the real comparison at 1 and 2 \
            senders x 1 and 2 queues on the default and the pressure workload (--flows 32 --rtt-us 2000), \
            calibrating before each point, and prints predicted against measured figures.
            """)

    @Option(help: "A calibration profile (JSON, from `txsim calibrate --profile`); default: calibrate now.")
    var profile: String?
    @OptionGroup var calibration: CalibrationOptions
    @Option(help: "Senders to sweep, comma-separated, each in 1...64.")
    var senders: String = "1,2,4,8,16,32,64"
    @Option(help: "Queues to sweep, comma-separated, each in 1...64.")
    var queues: String = "1,2,4,8"
    @Option(help: "Flows to sweep, comma-separated, each in 1...4096 (default: one flow per sender).")
    var flows: String?
    @Option(name: .customLong("message"), parsing: .unconditional, help: "Bytes per sendmsg: 1...send buffer.")
    var messageBytes: Int = 65536
    @Option(name: .customLong("rtt-us"), parsing: .unconditional, help: "Round-trip time, microseconds: 0...1000000.")
    var roundTripMicroseconds: Int = 50
    @Option(name: .customLong("send-buffer"), parsing: .unconditional, help: "Socket send buffer in bytes: 4096...1073741824.")
    var sendBufferBytes: Int = 4 << 20
    @Option(name: .customLong("swiotlb-mib"), parsing: .unconditional, help: "Bounce pool (swiotlb) size in MiB: 1...65536.")
    var swiotlbMiB: Int = 64
    @Option(name: .customLong("zerocopy-percent"), parsing: .unconditional, help: "zerocopy_tx_percent: 1...90.")
    var zeroCopyPercent: Int = 90
    @Option(name: .customLong("pool-ring"), parsing: .unconditional, help: "page_pool ring size: 1...16384.")
    var poolRing: Int = 1024
    @Option(parsing: .unconditional, help: "CPUs the senders run on, 1...4096 (default: one per sender).")
    var cores: Int?
    @Option(name: .customLong("cpu-share"), parsing: .unconditional, help: "Share of each CPU the threads get, (0, 1] (default 1).")
    var cpuShare: Double = 1
    @Option(name: .customLong("parallel-speedup"), parsing: .unconditional,
            help: "Work the sender CPUs get done together, in CPUs, (0, 4096] (default: one per sender: dedicated physical cores).")
    var parallelSpeedup: Double?
    @Option(name: .customLong("memory-bandwidth-gbytes"), parsing: .unconditional,
            help: "DRAM bandwidth, GB/s of reads + writes (default: the calibrated 2-thread cold copy rate x 2 per 2 cores, times the cores in use).")
    var memoryBandwidth: Double?
    @Option(name: .customLong("llc-mib"), parsing: .unconditional, help: "Last-level cache, MiB (default: the calibrated machine's).")
    var llcMiB: Int?
    @Option(name: .customLong("line-rate-gbps"), parsing: .unconditional, help: "NIC line rate, all queues together, 0.001...10000 Gbps (default: unlimited).")
    var lineRateGbps: Double?
    @Option(name: .customLong("remote-free-fraction"), parsing: .unconditional,
            help: "Share of pool pages freed off the owning CPU, 0...1 (default: as calibrated).")
    var remoteFreeFraction: Double?
    @Option(name: .customLong("swiotlb-areas"), parsing: .unconditional, help: "swiotlb areas, 1...4096 (default: CPUs rounded up).")
    var swiotlbAreas: Int?
    @Flag(name: .customLong("validate"), help: "Run the real comparison at the points this machine can run and print predicted against measured.")
    var validation = false
    @Option(parsing: .unconditional, help: "With --validate: rounds per point, 1...100: each calibrates every design (--repetitions / rounds repetitions, at least 1), then runs one round of the real comparison; the error is the median of the per-round paired errors.")
    var rounds: Int = 3
    @Option(name: .customLong("duration"), parsing: .unconditional,
            help: "With --validate: seconds each design runs per point, in --rounds rounds (at least 0.05 s per round), up to 3600.")
    var duration: Double = 0.6
    @Flag(help: "Print JSON: one object per design and point.")
    var json = false
    @Flag(help: "Print CSV: one row per design and point.")
    var csv = false
    @Option(help: "Also write the charts (SVG) to this file.")
    var svg: String?
    @Flag(help: "No progress lines on standard error.")
    var quiet = false

    func points() throws -> [ProjectionPoint] {
        let s = try integerList(senders, option: "senders", range: Workload.senderRange)
        let q = try integerList(queues, option: "queues", range: Workload.queueRange)
        let f = try flows.map { try integerList($0, option: "flows", range: ProjectionPoint.flowRange) }
        var points: [ProjectionPoint] = []
        for queues in q {
            for senders in s {
                for flows in f ?? [senders] {
                    points.append(point(senders: senders, queues: queues, flows: flows))
                }
            }
        }
        for p in points { do { try p.check() } catch { throw ValidationError(error.description) } }
        return points
    }

    func point(senders: Int, queues: Int, flows: Int, swiotlbBytes: Int? = nil) -> ProjectionPoint {
        let (bytes, overflow) = swiotlbMiB.multipliedReportingOverflow(by: 1 << 20)
        return ProjectionPoint(senders: senders, queues: queues, flows: flows, messageBytes: messageBytes,
                               roundTripMicroseconds: roundTripMicroseconds, sendBufferBytes: sendBufferBytes,
                               swiotlbBytes: swiotlbBytes ?? (overflow ? Int.max : bytes),
                               zeroCopyPercent: zeroCopyPercent, poolRingSize: poolRing)
    }

    func machine() throws -> MachineParameters {
        let m = MachineParameters(cores: cores, cpuShare: cpuShare, parallelSpeedup: parallelSpeedup, memoryBandwidthGBps: memoryBandwidth,
                                  lastLevelCacheBytes: llcMiB.map { $0 < 0 || $0 > 1 << 20 ? -1 : $0 << 20 },
                                  lineRateGbps: lineRateGbps, remoteFreeFraction: remoteFreeFraction, swiotlbAreas: swiotlbAreas)
        do { try m.check() } catch { throw ValidationError(error.description) }
        return m
    }

    func validate() throws {
        if json && csv { throw ValidationError("--json and --csv are exclusive") }
        if let svg { try checkWritable(svg, option: "svg") }
        if let profile { _ = try ProfileFile.read(profile) }
        if profile == nil || validation { _ = try calibration.options() }
        _ = try points()
        _ = try machine()
        if validation {
            guard Experiment.roundsRange.contains(rounds) else {
                throw ValidationError("invalid --rounds: \(rounds) must be in \(Experiment.roundsRange)")
            }
            guard duration <= 3600, Experiment.roundSeconds(duration: duration, rounds: rounds) >= Workload.durationRange.lowerBound else {
                throw ValidationError("invalid --duration: \(duration) must be in \(fixed(Workload.durationRange.lowerBound * Double(rounds), 2))...3600 seconds (0.05 s per round of --rounds \(rounds))")
            }
            if svg != nil { throw ValidationError("invalid --svg: --validate writes no chart") }
        }
    }

    func progress() -> @Sendable (String) -> Void {
        let quiet = self.quiet
        return { if !quiet { printError("txsim project: \($0)") } }
    }

    func run() throws {
        if validation { return try runValidation() }
        let profile = try profile.map { try ProfileFile.read($0) } ?? Calibration.run(try calibration.options(), progress: progress())
        // A profile's own designs (a user's included) unless --designs names some.
        let designs = self.profile != nil && !calibration.designsGiven ? profile.designs.map(\.design) : calibration.rawNames()
        let machine = try machine()
        var rows: [Projection] = []
        for p in try points() {
            for d in designs {
                do { rows.append(try ProjectionModel.project(d, at: p, profile: profile, machine: machine)) } catch {
                    throw ValidationError(error.description)
                }
            }
        }
        if json { print(ProjectionFormat.json(rows)) }
        else if csv { print(ProjectionFormat.csv(rows), terminator: "") }
        else { print(ProjectionFormat.table(rows, profile: profile, machine: machine)) }
        if let path = svg {
            let flowsSweep = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
            let s = try integerList(senders, option: "senders", range: Workload.senderRange).max() ?? 64
            let q = try integerList(queues, option: "queues", range: Workload.queueRange).min() ?? 1
            var pressure: [(Int, [Projection])] = []
            for mib in [64, 256, 1024] {
                var list: [Projection] = []
                for f in flowsSweep {
                    var p = point(senders: s, queues: q, flows: f, swiotlbBytes: mib << 20)
                    p.sendBufferBytes = 4 << 20
                    for d in designs { list.append(try ProjectionModel.project(d, at: p, profile: profile, machine: machine)) }
                }
                pressure.append((mib, list))
            }
            let text = ProjectionFormat.svg(rows, designs: designs, lineRate: machine.lineRateGbps, pools: pressure,
                                            senders: s, queues: q)
            do { try text.write(toFile: path) } catch { throw ValidationError("could not write --svg \(path): \(error)") }
            if !quiet { printError("txsim project: wrote \(path)") }
        }
    }

    func runValidation() throws {
        var options = ProjectionValidation.Options(designs: try calibration.names(), calibration: try calibration.options(),
                                                   rounds: rounds, seconds: duration)
        options.senders = [1, 2]
        options.queues = [1, 2]
        let (rows, profiles) = try ProjectionValidation.run(options, progress: progress())
        if json { print(ProjectionFormat.validationJSON(rows)) }
        else if csv { print(ProjectionFormat.validationCSV(rows), terminator: "") }
        else { print(ProjectionFormat.validationTable(rows, profiles: profiles)) }
    }
}
