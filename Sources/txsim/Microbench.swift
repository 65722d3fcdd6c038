import ArgumentParser
import NetStackReports
import DMAPools
import DMAPoolsMicrobench
import NetStack

/// Micro-measurements of the primitives every design is built from, all taken
/// in one run (medians of several batches) so that their ratios are meaningful.
/// The loops are `DMAPoolsMicrobench`'s, shared with Benchmarks/.
struct Microbench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the primitives (allocators, swiotlb, page_pool, memcpy) in one run.")

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Option(parsing: .unconditional, help: "Operations per timed batch, 1000...100000000.")
    var iterations: Int = 200_000

    func validate() throws {
        guard iterations >= 1000 && iterations <= 100_000_000 else {
            throw ValidationError("invalid --iterations: \(iterations) must be in 1000...100000000")
        }
    }

    func run() throws {
        var results = try DMAPoolsMicrobench.Microbench.run(iterations: iterations)
        results += try projectionTimings()
        let build = BuildConfiguration.label
        if json {
            // The build is part of the record: figures from a debug build or
            // one with invariant checks are labelled, never passed off as timings.
            let header = "\"build_configuration\": \"\(build)\", \"invariant_checks\": \(BuildConfiguration.invariantChecksEnabled), "
            print("{" + header + results.map { "\"\($0.key)\": \(fixed($0.value, 2))" }.joined(separator: ", ") + "}")
        } else {
            if !BuildConfiguration.isFitForTiming {
                print("NOTE: \(build) build: these figures include -Onone code or invariant checks and are not the library's speed (build with -c release)")
            }
            print("build".padded(40) + build)
            for (key, value) in results { print(key.padded(40) + fixed(value, 2)) }
        }
    }

    /// `txsim project`'s model: every built-in design (the illustrative
    /// profile) over the whole 1...64 senders x 1...8 queues sweep, and at
    /// 64 senders on 8 queues alone, in ms (the median of 5).
    func projectionTimings() throws -> [(key: String, value: Double)] {
        let profile = CalibrationProfile.illustrative()
        func median(_ body: () throws -> Void) rethrows -> Double {
            var samples: [Double] = []
            for _ in 0..<5 {
                let start = ContinuousClock.now
                try body()
                let d = ContinuousClock.now - start
                samples.append(Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15)
            }
            return samples.sorted()[2]
        }
        let sweep = try median { _ = try ProjectionModel.benchmarkSweep(profile) }
        let point = ProjectionPoint(senders: 64, queues: 8, flows: 64)
        let single = try median {
            for d in profile.designs {
                _ = try ProjectionModel.project(d.design, at: point, profile: profile, machine: MachineParameters(lineRateGbps: 200))
            }
        }
        return [("projection_sweep_5_designs_to_64x8_ms", sweep), ("projection_5_designs_at_64x8_ms", single)]
    }
}
