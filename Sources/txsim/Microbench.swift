import ArgumentParser
import DMAPools

/// Micro-measurements of the primitives every design is built from, all taken in
/// one run so that their ratios are meaningful.
struct Microbench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the primitives (allocators, swiotlb, page_pool, memcpy) in one run.")

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func run() throws {
        var results: [(String, Double)] = []
        results.append(("memcpy_gbps", Measure.memcpyGigabytesPerSecond()))
        if json {
            print("{" + results.map { "\"\($0.0)\": \(formatted($0.1))" }.joined(separator: ", ") + "}")
        } else {
            for (key, value) in results { print(key.padded(28) + formatted(value)) }
        }
    }

    private func formatted(_ value: Double) -> String {
        fixed(value, 2)
    }
}
