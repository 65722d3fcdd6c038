import Benchmark
import NetStack

/// `txsim project`'s model, timed: the five built-in designs (the
/// illustrative profile, so nothing is calibrated) over the whole sweep of
/// 1...64 senders on 1, 2, 4 and 8 queues, and at 64 senders on 8 queues
/// alone (the bar: under 10 s). `txsim microbench` times the same
/// two loops (`projection_*_ms`).
///
///     swift package --package-path Benchmarks benchmark --target ProjectionBenchmarks
let benchmarks: @Sendable () -> Void = {
    let profile = CalibrationProfile.illustrative()
    Benchmark("project all designs, 1...64 senders x 1...8 queues",
              configuration: .init(metrics: [.wallClock], maxDuration: .seconds(5))) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(try ProjectionModel.benchmarkSweep(profile)) }
    }
    Benchmark("project all designs at 64 senders x 8 queues",
              configuration: .init(metrics: [.wallClock], maxDuration: .seconds(5))) { benchmark in
        let point = ProjectionPoint(senders: 64, queues: 8, flows: 64)
        for _ in benchmark.scaledIterations {
            for d in profile.designs {
                blackHole(try ProjectionModel.project(d.design, at: point, profile: profile, machine: MachineParameters(lineRateGbps: 200)))
            }
        }
    }
}
