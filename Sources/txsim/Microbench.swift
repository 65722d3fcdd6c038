import ArgumentParser
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
        if json {
            print("{" + results.map { "\"\($0.key)\": \(fixed($0.value, 2))" }.joined(separator: ", ") + "}")
        } else {
            for (key, value) in results { print(key.padded(40) + fixed(value, 2)) }
        }
    }
}
