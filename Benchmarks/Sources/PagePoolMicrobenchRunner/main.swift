import DMAPoolsMicrobench

// Prints `PagePoolMicrobench.run()` as JSON (the keys txsim's microbench reports),
// with fractional nanoseconds: `swift run -c release --package-path Benchmarks PagePoolMicrobenchRunner`.
let iterations = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? (1 << 22)
let results = try PagePoolMicrobench.run(iterations: iterations)
let body = results.keys.sorted().map { key in
    let value = ((results[key] ?? 0) * 100).rounded() / 100
    return "  \"\(key)\": \(value)"
}
print("{\n" + body.joined(separator: ",\n") + "\n}")
