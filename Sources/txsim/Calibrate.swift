import ArgumentParser
import FoundationEssentials
import NetStack
import NetStackReports

/// Reads and writes calibration profiles (JSON, `CalibrationProfile`'s keys).
enum ProfileFile {
    static func encode(_ profile: CalibrationProfile) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(profile), as: UTF8.self)
    }

    static func decode(_ text: String) throws -> CalibrationProfile {
        try JSONDecoder().decode(CalibrationProfile.self, from: Data(text.utf8))
    }

    /// The profile in `path`, checked; the error names --profile.
    static func read(_ path: String) throws -> CalibrationProfile {
        guard let file = fopen(path, "r") else {
            throw ValidationError("invalid --profile: cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, file)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        let profile: CalibrationProfile
        do { profile = try JSONDecoder().decode(CalibrationProfile.self, from: Data(bytes)) } catch {
            throw ValidationError("invalid --profile: \(path) is not a calibration profile: \(error)")
        }
        do { try profile.check() } catch { throw ValidationError("\(error.description) (in \(path))") }
        return profile
    }
}

/// Options shared by `calibrate` and `project` for the calibration runs.
struct CalibrationOptions: ParsableArguments {
    @Option(help: "Comma-separated designs to calibrate, each at most once (default: every design the framework can run).")
    var designs: String = ProjectionDesigns.allNames.joined(separator: ",")
    @Option(parsing: .unconditional, help: "Repetitions of every calibration run, \(Calibration.Options.repetitionRange).")
    var repetitions: Int = 3
    @Option(name: .customLong("seconds-per-run"), parsing: .unconditional,
            help: "Seconds of each calibration run, 0.05...10.")
    var secondsPerRun: Double = 0.15
    @Option(name: .customLong("calibration-flows"), parsing: .unconditional,
            help: "Flows of the calibration runs (the working set the costs are measured at), 1...\(Workload.maximumFlows).")
    var flows: Int = 2
    @Option(name: .customLong("calibration-rtt-us"), parsing: .unconditional,
            help: "Round trip of the calibration runs in microseconds, \(Workload.roundTripRange) (0: acknowledged at once).")
    var roundTripMicroseconds: Int = 0

    var designsGiven: Bool { designs != ProjectionDesigns.allNames.joined(separator: ",") }

    func rawNames() -> [String] { designs.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }

    /// The designs, each one the framework can run, each named once.
    func names() throws -> [String] {
        let names = rawNames()
        var seen = Set<String>()
        for name in names {
            do { _ = try ProjectionDesigns.resolve(name) } catch { throw ValidationError(error.description) }
            if !seen.insert(name).inserted { throw ValidationError("invalid --designs: \(name) is named twice") }
        }
        return names
    }

    func options(configuration: ExperimentConfiguration = .init()) throws -> Calibration.Options {
        var o = Calibration.Options(designs: try names(), repetitions: repetitions, secondsPerRun: secondsPerRun,
                                    configuration: configuration)
        o.flows = flows
        o.roundTripMicroseconds = roundTripMicroseconds
        do { try o.check() } catch { throw ValidationError(error.description) }
        return o
    }

}

struct Calibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure each design's TX costs by role (per byte, per frame) and the machine's copy, lock and bandwidth costs.",
        discussion: """
            Each design runs its own code on one sender and one queue (by default 2 flows and no round \
            trip; --calibration-flows and --calibration-rtt-us set the working set the costs are measured at) at \
            64 KiB and 16 KiB messages, repetitions interleaved; sender and queue CPU time per payload \
            byte at both sizes give the per-byte and per-frame costs. The profile (--profile FILE, JSON) \
            is what `txsim project` reads; each cost has its median, minimum, maximum, repetitions and source.
            """)

    @OptionGroup var calibration: CalibrationOptions
    @Flag(help: "Print the profile as JSON instead of a table.")
    var json = false
    @Option(help: "Also write the profile (JSON) to this file.")
    var profile: String?
    @Flag(help: "No progress lines on standard error.")
    var quiet = false

    func validate() throws {
        _ = try calibration.options()
        if let profile { try checkWritable(profile, option: "profile") }
    }

    func run() throws {
        let quiet = self.quiet
        let result = try Calibration.run(try calibration.options()) { if !quiet { printError("txsim calibrate: \($0)") } }
        let text = try ProfileFile.encode(result)
        if json { print(text) } else { print(CalibrationReport.table(result)) }
        if let path = profile {
            do { try (text + "\n").write(toFile: path) } catch { throw ValidationError("could not write --profile \(path): \(error)") }
            if !quiet { printError("txsim calibrate: wrote \(path)") }
        }
    }
}

enum CalibrationReport {
    static func cost(_ c: Cost, _ digits: Int = 4) -> String {
        var text = fixed(c.value, digits)
        if let lo = c.minimum, let hi = c.maximum, let n = c.repetitions {
            text += " (\(fixed(lo, digits))..\(fixed(hi, digits)), n=\(n))"
        } else if !c.isCalibrated {
            text += " (given: \(c.source))"
        }
        return text
    }

    static func table(_ p: CalibrationProfile) -> String {
        var lines: [String] = []
        lines.append("calibration on \(p.machine.cores) CPUs, LLC \(p.machine.lastLevelCacheBytes >> 20) MiB, \(p.machine.date): \(p.machine.note)")
        lines.append("method: \(p.method.senders) sender, \(p.method.queues) queue, \(p.method.flows) flows, rtt \(p.method.roundTripMicroseconds) us, messages \(p.method.messageBytes.map(String.init).joined(separator: " and ")) B")
        lines.append("median (min..max, n = repetitions)")
        lines.append("")
        lines.append("machine costs")
        let m = p.machineCosts
        let rows: [(String, Cost)] = [
            ("copy 32 KiB, source hot on this core, ns/byte", m.copySameCoreHotNsPerByte),
            ("copy 32 KiB, source written by the other core, ns/byte", m.copyOtherCoreNsPerByte),
            ("copy 32 KiB, cold (beyond the LLC), ns/byte", m.copyColdNsPerByte),
        ] + [
            ("copy 2 shape: 32 KiB into cold bounce slots, source from this core, ns/byte", m.copyToBounceSameCoreNsPerByte),
            ("copy 2 shape: 32 KiB into cold bounce slots, source from the other core, ns/byte", m.copyToBounceOtherCoreNsPerByte),
        ].compactMap { label, c in c.map { (label, $0) } } + [
            ("swiotlb map+unmap 32 KiB, one area, alone, ns", m.swiotlbMapUnmapNs),
            ("swiotlb map+unmap 32 KiB, other core on the same area, ns", m.swiotlbMapUnmapContendedNs),
            ("page_pool alloc + recycle into its cache, ns/page", m.poolCacheRecycleNs),
            ("page_pool alloc + put through the ring by the other core, ns/page (both CPUs)", m.poolRingRecycleContendedNs),
            ("cold copy bandwidth, 1 thread, GB/s", m.copyBandwidthOneThreadGBps),
            ("cold copy bandwidth, 2 threads, GB/s", m.copyBandwidthTwoThreadsGBps),
        ]
        for (label, c) in rows { lines.append("  " + label.padded(84) + cost(c)) }
        for d in p.designs {
            lines.append("")
            lines.append("\(d.design) (pages: \(d.pageSource.rawValue))")
            let rows: [(String, Cost)] = [
                ("sender ns/byte", d.senderNsPerByte), ("sender ns/frame", d.senderNsPerFrame),
                ("queue ns/byte", d.queueNsPerByte), ("queue ns/frame", d.queueNsPerFrame),
                ("copies per byte", d.copiesPerByte), ("zero-copy fraction", d.zeroCopyFraction),
                ("pool recycles per byte", d.poolRecyclesPerByte), ("pool recycles through the ring", d.poolRingFraction),
                ("CPU share the runs got", d.cpuShare),
            ] + (d.twoSenderWorkPerCPUSecond.map { [("work per CPU s, 2 senders at once", $0)] } ?? [])
              + (d.sharedQueueSenderNsPerFrame.map { [("shared queue, sender ns/frame", $0)] } ?? [])
              + (d.sharedQueueQueueNsPerFrame.map { [("shared queue, queue ns/frame", $0)] } ?? [])
            for (label, c) in rows { lines.append("  " + label.padded(36) + cost(c, label.contains("frame") ? 1 : label.contains("recycles per") ? 8 : 4)) }
        }
        return lines.joined(separator: "\n")
    }
}

#if canImport(Glibc)
import Glibc
#endif
