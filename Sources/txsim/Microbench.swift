import ArgumentParser
import DMAPools
import DMAPoolsMicrobench

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
        let results = try DMAPoolsMicrobench.Microbench.run(iterations: iterations)
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
}
